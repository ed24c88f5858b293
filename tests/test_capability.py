"""The CapabilityStatement advertises only what works: every advertised interaction and operation is
exercised against the running server, for every resource type."""
from __future__ import annotations

import json
from typing import Any

from tests.conftest import EXAMPLES, Fhir


def _example(rtype: str) -> dict[str, Any]:
    """A valid resource of ``rtype``: its first official example."""
    for path in sorted(EXAMPLES.glob(f"{rtype}-*.json")):
        resource: dict[str, Any] = json.loads(path.read_bytes())
        if resource.get("resourceType") == rtype and path.stat().st_size < 200_000:
            return resource
    return {"resourceType": rtype}


def _exercise(fhir: Fhir, rtype: str, interactions: set[str]) -> None:
    body = _example(rtype)
    rid = f"cap-{rtype.lower()}"[:64]
    versions = 2
    if "create" in interactions:
        created = fhir.post(rtype, body)
        assert created.status_code == 201, (rtype, created.text)
    if "update" in interactions:
        assert fhir.put(f"{rtype}/{rid}", {**body, "id": rid}).status_code == 201
        assert fhir.put(f"{rtype}/{rid}", {**body, "id": rid}).status_code == 200
    else:  # append-only (AuditEvent): one version, the one created
        rid, versions = created.json()["id"], 1
    if "patch" in interactions:
        tag = [{"op": "add", "path": "/meta/tag", "value": [{"system": "urn:test", "code": "patched"}]}]
        patched = fhir.request("PATCH", f"{rtype}/{rid}", json.dumps(tag),
                               headers={"Content-Type": "application/json-patch+json"})
        assert patched.status_code == 200, (rtype, patched.text)
        assert patched.json()["meta"]["tag"] == tag[0]["value"]
        versions += 1
    if "read" in interactions:
        assert fhir.get(f"{rtype}/{rid}").status_code == 200
    if "vread" in interactions:
        assert fhir.get(f"{rtype}/{rid}/_history/{versions}").json()["meta"]["versionId"] == str(versions)
    if "history-instance" in interactions:
        assert fhir.get(f"{rtype}/{rid}/_history").json()["total"] == versions
    if "search-type" in interactions:
        found = fhir.get(rtype, params={"_id": rid}).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [rid], (rtype, found)
    if "history-type" in interactions:
        assert fhir.get(f"{rtype}/_history", params={"_count": "1"}).json()["type"] == "history"
    if "delete" in interactions:
        assert fhir.delete(f"{rtype}/{rid}").status_code == 200
        assert fhir.get(f"{rtype}/{rid}").status_code == 410


def test_capability_statement_is_valid_and_complete(fhir: Fhir) -> None:
    statement = fhir.get("metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == fhir.base
    outcome = fhir.post("CapabilityStatement/$validate", statement).json()
    assert outcome["issue"][0]["severity"] == "information", outcome
    assert len(statement["rest"][0]["resource"]) == 146


def test_every_advertised_interaction_works(fhir: Fhir) -> None:
    rest = fhir.get("metadata").json()["rest"][0]
    exercised = set()
    for resource in rest["resource"]:
        interactions = {i["code"] for i in resource["interaction"]}
        assert resource["versioning"] == "versioned-update"
        _exercise(fhir, resource["type"], interactions)
        exercised |= interactions
    assert exercised == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                         "search-type"}
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system", "search-system"}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c6d3ab5-5e0e-4c4a-9f3b-cap000000001", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}}]}
    done = fhir.post("", transaction).json()
    assert done["type"] == "transaction-response" and done["entry"][0]["response"]["status"] == "201 Created"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": done["entry"][0]["response"]["location"]}}]}
    assert fhir.post("", batch).json()["entry"][0]["response"]["status"] == "200 OK"
    assert fhir.get("_history", params={"_count": "1"}).json()["type"] == "history"
    assert fhir.get("", params={"_type": "Patient", "_count": "1"}).json()["type"] == "searchset"


def test_every_advertised_operation_works(fhir: Fhir) -> None:
    rest = fhir.get("metadata").json()["rest"][0]
    assert "operation" not in rest  # $validate is a type and instance operation (Resource-validate: system false)
    names = set()
    for resource in rest["resource"]:
        for operation in resource.get("operation", []):
            names.add(operation["name"])
            if operation["name"] == "validate":
                response = fhir.post(f"{resource['type']}/$validate", _example(resource["type"]))
                assert response.json()["issue"][0]["severity"] == "information", (resource["type"], response.text)
            elif operation["name"] == "everything":
                assert resource["type"] == "Patient"
                rid = fhir.post("Patient", {"resourceType": "Patient"}).json()["id"]
                bundle = fhir.get(f"Patient/{rid}/$everything").json()
                assert [e["resource"]["id"] for e in bundle["entry"]] == [rid]
            elif operation["definition"].startswith("urn:fhir-server:OperationDefinition/Patient-") and \
                    operation["name"] != "access-history":  # the patient's controls (test_controls.py)
                assert resource["type"] == "Patient"
                rid = fhir.post("Patient", {"resourceType": "Patient"}).json()["id"]
                answer = fhir.post(f"Patient/{rid}/${operation['name']}", {"resourceType": "Parameters"})
                assert answer.status_code in (200, 400), (operation["name"], answer.text)
            else:
                assert (resource["type"], operation["name"]) == ("Patient", "access-history")
                rid = fhir.post("Patient", {"resourceType": "Patient"}).json()["id"]
                fhir.get(f"Patient/{rid}")
                history = fhir.get(f"Patient/{rid}/$access-history").json()
                assert history["resourceType"] == "Parameters" and history["parameter"][0]["name"] == "access"
    assert names == {"validate", "everything", "access-history", "mask", "unmask", "block", "unblock", "authorize",
                     "revoke", "emergency", "close", "reopen", "register-representative", "revoke-representative"}
