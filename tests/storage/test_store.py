"""Store behaviour that HTTP cannot reach: recovery from a writer that died mid-write, compression."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest

from fhir_server.storage import Store
from fhir_server.storage.store import now


@pytest.fixture()
def store(mongo: Any) -> Store:
    s = Store(mongo[f"store_{uuid.uuid4().hex[:8]}"], compress_above=2000)
    s.ensure_indexes()
    return s


def test_a_version_claimed_by_a_dead_writer_is_rolled_forward(store: Store) -> None:
    version, created = store.update("Patient", "p1", {"resourceType": "Patient", "id": "p1"})
    assert created and version.version == 1
    # A writer claimed version 2 in history, then died before moving the current document.
    orphan = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "2"}, "gender": "male"}
    store.history.insert_one({"_id": "Patient/p1/2", "t": "Patient", "i": "p1", "v": 2,
                              "ts": now() - timedelta(seconds=10), "m": "PUT", "json": orjson.dumps(orphan)})
    version, _ = store.update("Patient", "p1", {"resourceType": "Patient", "id": "p1", "gender": "female"})
    assert version.version == 3
    assert store.read("Patient", "p1").version == 3  # type: ignore[union-attr]
    assert [v.version for v in store.history_page({"t": "Patient", "i": "p1"}, 10, None)[0]] == [3, 2, 1]


def test_large_resources_are_compressed_and_read_back_identical(store: Store, mongo: Any) -> None:
    big = {"resourceType": "Patient", "id": "big", "name": [{"family": "x" * 5000}]}
    version, _ = store.update("Patient", "big", big)
    raw = store.db["Patient"].find_one({"_id": "big"})
    assert raw["z"] is True and len(raw["json"]) < 1000
    read = store.read("Patient", "big")
    assert read is not None and read.json == version.json
    assert orjson.loads(read.json)["name"] == big["name"]
    small, _ = store.update("Patient", "big", {"resourceType": "Patient", "id": "big"})
    assert "z" not in store.db["Patient"].find_one({"_id": "big"})
    assert store.read("Patient", "big").json == small.json  # type: ignore[union-attr]


def test_if_match_on_a_missing_resource_fails(store: Store) -> None:
    from fhir_server.errors import PreconditionFailed
    with pytest.raises(PreconditionFailed):
        store.update("Patient", "nobody", {"resourceType": "Patient", "id": "nobody"}, if_match=1)
    assert store.read("Patient", "nobody") is None


def test_the_generation_counts_the_writes_of_the_watched_types(mongo: Any) -> None:
    """Workers keep what they learnt of these types (guard.py) while the generation stays the same."""
    from fhir_server.storage.transaction import Write
    store = Store(mongo[f"store_{uuid.uuid4().hex[:8]}"], watched=frozenset({"Consent"}))
    assert store.generation() == 0
    store.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert store.generation() == 0
    store.update("Consent", "c1", {"resourceType": "Consent", "id": "c1", "status": "active"})
    assert store.generation() == 1
    store.delete("Consent", "c1")
    assert store.generation() == 2
    store.commit([Write("Consent", "c2", {"resourceType": "Consent", "id": "c2", "status": "draft"}, "PUT")])
    assert store.generation() == 3
    store.commit([Write("Observation", "o2", {"resourceType": "Observation", "id": "o2"}, "PUT")])
    assert store.generation() == 3


def test_documents_of_an_earlier_index_format_are_reindexed_once(mongo: Any, monkeypatch: Any) -> None:
    from fhir_server.search.index import index
    monkeypatch.setattr("fhir_server.storage.store.UPGRADE_PAGE", 2)
    store = Store(mongo[f"store_{uuid.uuid4().hex[:8]}"], indexer=index)
    fresh = store.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                         "subject": {"reference": "Patient/p1"}})
    # as an earlier version stored it: columns nested per parameter, sort keys under "sortkey"
    store.db["Observation"].update_one({"_id": fresh.id}, {"$set": {
        "search": {"subject": {"r": ["Patient/p1"]}}, "sortkey": {"subject": {"a": "Patient/p1", "d": "Patient/p1"}}},
        "$unset": {"sa": "", "sd": ""}})
    for n in range(3):  # two pages
        store.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": str(n)}})
    store._secondary = True  # as on MongoDB (FerretDB creates indexes too, though it serves nothing from them)
    store.db["Observation"].create_index([("search.subject.r", 1)], name="search.subject.r")
    assert store.upgrade() == 4
    assert "search.subject.r" not in {i["name"] for i in store.db["Observation"].list_indexes()}
    doc = store.db["Observation"].find_one({"_id": fresh.id})
    assert "sortkey" not in doc and doc["search"]["subject:r"] == ["Patient/p1"] and doc["sa"]["subject"] == "Patient/p1"
    assert doc["search"] == index({**orjson.loads(fresh.json)})["search"]
    assert store.upgrade() == 0  # once: the database records its format


def test_reindex_recomputes_the_columns_of_the_types_named(mongo: Any) -> None:
    from fhir_server.search.index import index
    store = Store(mongo[f"store_{uuid.uuid4().hex[:8]}"], indexer=index)
    observation = store.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    patient = store.create("Patient", {"resourceType": "Patient", "gender": "female"})
    for rtype in ("Observation", "Patient"):  # as if indexed before a parameter existed
        store.db[rtype].update_one({}, {"$set": {"search": {}}})
    assert store.reindex(["Observation"]) == 1
    assert store.db["Observation"].find_one({"_id": observation.id})["search"]["status:k"] == ["final", "|final"]
    assert store.db["Patient"].find_one({"_id": patient.id})["search"] == {}  # not named: left alone
    assert store.reindex() == 2
    assert store.db["Patient"].find_one({"_id": patient.id})["search"]["gender:k"] == ["female", "|female"]
