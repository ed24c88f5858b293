"""Batch and transaction (https://hl7.org/fhir/R4/http.html#transaction), when the CapabilityStatement
advertises them at system level: POST [base] with a Bundle answers a batch-response / transaction-response
with one entry per request entry, in order, each with response.status."""
from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from .data import PLAIN, PLAIN_OBSERVATION, Instances, tagged
from .support import FHIR_JSON, assert_status, describe, interactions, json_body


def _needs(capability: dict[str, Any], code: str) -> None:
    if code not in interactions(capability):
        pytest.skip(f"the server does not advertise {code}")


def _response_bundle(response: requests.Response, kind: str, entries: int) -> list[dict[str, Any]]:
    assert_status(response, 200)
    bundle = json_body(response)
    assert isinstance(bundle, dict) and bundle.get("type") == f"{kind}-response", f"not a {kind}-response: {describe(response)}"
    found = bundle.get("entry") or []
    assert len(found) == entries, f"{entries} entries sent, {len(found)} answered: {describe(response)}"
    for entry in found:
        assert entry.get("response", {}).get("status"), f"an entry without response.status: {entry}"
    return found


def test_batch(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """Batch entries succeed or fail on their own: a create, a read, and a read of an unknown id (its
    entry answers 404 while the others succeed)."""
    _needs(capability, "batch")
    patient = instances.plain("Patient")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": tagged(PLAIN["Practitioner"]), "request": {"method": "POST", "url": "Practitioner"}},
        {"request": {"method": "GET", "url": f"Patient/{patient.id}"}},
        {"request": {"method": "GET", "url": f"Patient/zzqx-{uuid.uuid4().hex[:16]}"}},
    ]}
    entries = _response_bundle(http.post(base_url, json=bundle, headers={"Content-Type": FHIR_JSON}), "batch", 3)
    statuses = [entry["response"]["status"].split()[0] for entry in entries]
    assert statuses[:2] == ["201", "200"] and statuses[2] == "404", f"batch statuses {statuses}"
    assert entries[1].get("resource", {}).get("id") == patient.id


def test_transaction_resolves_references(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """A reference to another entry's fullUrl (urn:uuid) is replaced by the new resource's id ("the
    server SHALL update all references to it" within the transaction)."""
    _needs(capability, "transaction")
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    observation = {**tagged(PLAIN_OBSERVATION), "subject": {"reference": patient_url}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_url, "resource": tagged(PLAIN["Patient"]), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation, "request": {"method": "POST", "url": "Observation"}},
    ]}
    entries = _response_bundle(http.post(base_url, json=bundle, headers={"Content-Type": FHIR_JSON}), "transaction", 2)
    locations = [entry["response"].get("location", "") for entry in entries]
    assert all(entry["response"]["status"].startswith("201") for entry in entries), [e["response"] for e in entries]
    patient_id = locations[0].split("Patient/")[1].split("/")[0]
    observation_id = locations[1].split("Observation/")[1].split("/")[0]
    stored = http.get(f"{base_url}/Observation/{observation_id}").json()
    assert stored["subject"]["reference"].endswith(f"Patient/{patient_id}"), f"subject {stored['subject']} for Patient/{patient_id}"


def test_transaction_is_atomic(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """"For a transaction ... either all entries succeed, or none": an invalid entry fails the whole
    Bundle (4xx with an OperationOutcome), and the valid entry's resource was not created."""
    _needs(capability, "transaction")
    system, value = "urn:oid:1.2.3.4.5.6.7.8.9", f"atomic-{uuid.uuid4().hex}"
    patient = {**tagged(PLAIN["Patient"]), "identifier": [{"system": system, "value": value}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {**tagged(PLAIN["Patient"]), "birthDate": "not-a-date"},
         "request": {"method": "POST", "url": "Patient"}},
    ]}
    response = http.post(base_url, json=bundle, headers={"Content-Type": FHIR_JSON})
    assert 400 <= response.status_code < 500, f"a transaction with an invalid entry: {describe(response)}"
    body = json_body(response)
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", describe(response)
    found = http.get(f"{base_url}/Patient", params={"identifier": f"{system}|{value}"}).json()
    assert not found.get("entry"), "the valid entry of a failed transaction was created"
