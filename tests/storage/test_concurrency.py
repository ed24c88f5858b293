"""Concurrent writers never lose an update (compare-and-swap on the version, history as commit point)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import Fhir


def _patient(fhir: Fhir) -> str:
    rid: str = fhir.post("Patient", {"resourceType": "Patient"}).json()["id"]
    return rid


def test_parallel_updates_with_the_same_if_match_let_exactly_one_win(fhir: Fhir) -> None:
    rid = _patient(fhir)

    def update(n: int) -> int:
        client = Fhir(fhir.base, fhir.token)
        body = {"resourceType": "Patient", "id": rid, "birthDate": f"{1950 + n}"}
        return client.put(f"Patient/{rid}", body, headers={"If-Match": 'W/"1"'}).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(update, range(20)))
    assert sorted(statuses) == [200] + [412] * 19
    history = fhir.get(f"Patient/{rid}/_history").json()
    assert history["total"] == 2


def test_parallel_updates_without_if_match_all_land_as_consecutive_versions(fhir: Fhir, db: Any) -> None:
    rid = _patient(fhir)

    def update(n: int) -> str:
        client = Fhir(fhir.base, fhir.token)
        response = client.put(f"Patient/{rid}", {"resourceType": "Patient", "id": rid, "birthDate": f"{1900 + n}"})
        assert response.status_code == 200, response.text
        return str(response.json()["birthDate"])

    with ThreadPoolExecutor(20) as pool:
        written = set(pool.map(update, range(20)))
    assert len(written) == 20
    history = fhir.get(f"Patient/{rid}/_history", params={"_count": "100"}).json()
    versions = [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]]
    assert versions == list(range(21, 0, -1))
    # every write is in history exactly once, and the current version is the newest one
    assert {e["resource"].get("birthDate") for e in history["entry"][:-1]} == written
    assert fhir.get(f"Patient/{rid}").json()["meta"]["versionId"] == "21"
    assert db["Patient"].find_one({"_id": rid})["v"] == 21
