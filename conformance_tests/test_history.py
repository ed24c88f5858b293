"""History (https://hl7.org/fhir/R4/http.html#history): "a Bundle with type set to history containing the
specified version history, sorted with oldest versions last, and including deleted resources"; each entry
has a request and a response (Bundle invariants bdl-3 and bdl-4)."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .data import Instances
from .support import FHIR_JSON, assert_status, bundle_ids, describe, fetch_all, interactions, json_body, types_with, url_with


def _history(response: requests.Response) -> dict[str, Any]:
    assert_status(response, 200)
    bundle = json_body(response)
    assert isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" and bundle.get("type") == "history", \
        f"not a history Bundle: {describe(response)}"
    for entry in bundle.get("entry") or ():
        assert entry.get("request", {}).get("method") and entry["request"].get("url"), f"an entry without request: {entry}"
        assert entry.get("response", {}).get("status"), f"an entry without response.status: {entry}"
    return bundle


def _instance_url(base_url: str, rtype: str, rid: str) -> str:
    return f"{base_url}/{rtype}/{rid}/_history"


def _type_url(base_url: str, rtype: str, since: str) -> str:
    """_since: "only include resource versions that were created at or after the given instant"."""
    return url_with(f"{base_url}/{rtype}/_history", {"_since": since, "_count": "100"})


@pytest.fixture(scope="module")
def answers(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> dict[str, requests.Response]:
    """The per-type history requests, run a few at a time; each test checks its own answer."""
    instances.create_all(types_with(capability, "create"))
    urls = []
    for rtype in types_with(capability, "history-instance") + types_with(capability, "history-type"):
        try:
            created = instances.of(rtype)
        except pytest.skip.Exception:
            continue
        urls.append(_instance_url(base_url, rtype, created.id))
        if created.stored.get("meta", {}).get("lastUpdated"):
            urls.append(_type_url(base_url, rtype, created.stored["meta"]["lastUpdated"]))
    return fetch_all(http, urls)


@pytest.mark.interaction("history-instance")
def test_history_instance(rtype: str, instances: Instances, answers: dict[str, requests.Response], base_url: str) -> None:
    created = instances.of(rtype)
    bundle = _history(answers[_instance_url(base_url, rtype, created.id)])
    assert created.id in bundle_ids(bundle, rtype), f"the history of {rtype}/{created.id} does not hold it"


@pytest.mark.interaction("history-type")
def test_history_type(rtype: str, instances: Instances, answers: dict[str, requests.Response], base_url: str) -> None:
    created = instances.of(rtype)
    since = created.stored.get("meta", {}).get("lastUpdated")
    if not since:
        pytest.skip("the stored resource has no meta.lastUpdated")
    bundle = _history(answers[_type_url(base_url, rtype, since)])
    assert created.id in bundle_ids(bundle, rtype), f"{rtype}/_history?_since={since} does not hold {rtype}/{created.id}"


def test_history_orders_versions_and_keeps_deletions(instances: Instances, http: requests.Session, base_url: str,
                                                     capability: dict[str, Any]) -> None:
    """Create, update, delete: the instance history lists the three, newest first, the deletion as a
    DELETE entry (without a resource)."""
    if not {"create", "update", "delete", "history-instance"} <= interactions(capability, "Patient"):
        pytest.skip("needs create, update, delete and history-instance on Patient")
    created = instances.new_plain("Patient")
    url = f"{base_url}/Patient/{created.id}"
    assert_status(http.put(url, json={**created.stored, "gender": "other"}, headers={"Content-Type": FHIR_JSON}), 200)
    assert_status(http.delete(url), 200, 202, 204)
    entries = _history(http.get(f"{url}/_history")).get("entry") or []
    methods = [entry["request"]["method"] for entry in entries]
    assert methods == ["DELETE", "PUT", "POST"], f"history of a created, updated, deleted Patient: {methods}"
    assert "resource" not in entries[0], "the deletion entry carries a resource"
    assert entries[1]["resource"].get("gender") == "other" and entries[2]["resource"].get("gender") == "female"


def test_history_system(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    if "history-system" not in interactions(capability):
        pytest.skip("the server does not advertise history-system")
    created = instances.new_plain("Patient")
    since = created.stored["meta"]["lastUpdated"]
    bundle = _history(http.get(f"{base_url}/_history", params={"_since": since, "_count": 100}))
    assert created.id in bundle_ids(bundle, "Patient"), f"_history?_since={since} does not hold Patient/{created.id}"
