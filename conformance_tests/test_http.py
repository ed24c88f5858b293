"""Headers and status codes of https://hl7.org/fhir/R4/http.html: the CapabilityStatement, content type
and charset, ETag / Last-Modified / Location, Prefer, If-Match, If-None-Exist, 404 and 410, _format.
Tested on the plain Patient the suite creates (a type every server here must store)."""
from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from .data import PLAIN, Instances, tagged
from .support import (FHIR_JSON, WEAK_ETAG, assert_fhir_json, assert_outcome, assert_status, describe, interactions,
                      json_body, resource_entry)


def _patient_with(interaction: str, capability: dict[str, Any]) -> None:
    if interaction not in interactions(capability, "Patient"):
        pytest.skip(f"the CapabilityStatement does not advertise {interaction} for Patient")


def test_capability_statement(http: requests.Session, base_url: str) -> None:
    """http.html#capabilities: GET [base]/metadata answers the CapabilityStatement; this suite tests R4,
    so fhirVersion is 4.0.x; a server (kind instance) lists JSON among its formats."""
    response = http.get(f"{base_url}/metadata")
    assert_status(response, 200)
    assert_fhir_json(response)
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert str(body.get("fhirVersion", "")).startswith("4.0."), f"fhirVersion {body.get('fhirVersion')}"
    assert any("json" in f for f in body.get("format") or ()), f"format {body.get('format')} has no JSON"
    assert any(rest.get("mode") == "server" for rest in body.get("rest") or ()), "no rest entry in mode server"


def test_read_content_type(instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#mime-type: application/fhir+json with charset=utf-8 (SHALL)."""
    response = http.get(f"{base_url}/Patient/{instances.plain('Patient').id}")
    assert_status(response, 200)
    assert_fhir_json(response)


@pytest.mark.should
def test_read_etag_and_last_modified(instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#read: servers SHOULD return an ETag with the versionId (W/"[versionId]") and a
    Last-Modified header (meta.lastUpdated, to the second)."""
    response = http.get(f"{base_url}/Patient/{instances.plain('Patient').id}")
    assert_status(response, 200)
    meta = response.json().get("meta", {})
    etag = WEAK_ETAG.match(response.headers.get("ETag", ""))
    assert etag and etag.group(1) == meta.get("versionId"), f"ETag {response.headers.get('ETag')!r}, meta {meta}"
    modified = parsedate_to_datetime(response.headers["Last-Modified"])
    stored = _instant(meta["lastUpdated"])
    assert abs((modified - stored).total_seconds()) < 1, f"Last-Modified {modified} for lastUpdated {stored}"


def _instant(text: str) -> Any:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.should
def test_create_etag_and_last_modified(instances: Instances) -> None:
    """http.html#create: servers SHOULD return an ETag with the versionId and a Last-Modified header;
    the ETag names the version of the Location header."""
    response = instances.plain("Patient").response
    etag = WEAK_ETAG.match(response.headers.get("ETag", ""))
    assert etag, f"no weak ETag: {response.headers.get('ETag')!r}"
    assert response.headers.get("Location", "").endswith(f"/_history/{etag.group(1)}"), \
        f"ETag {response.headers['ETag']} and Location {response.headers.get('Location')} disagree"
    parsedate_to_datetime(response.headers["Last-Modified"])


def test_create_ignores_id_and_meta(instances: Instances, capability: dict[str, Any]) -> None:
    """http.html#create: "If an id is provided, the server SHALL ignore it", and likewise
    meta.versionId and meta.lastUpdated."""
    _patient_with("create", capability)
    resource = {**tagged(PLAIN["Patient"]), "id": "conformance-client-id"}
    resource["meta"] = {**resource["meta"], "versionId": "999", "lastUpdated": "2001-01-01T00:00:00Z"}
    response = instances.create(resource)
    assert_status(response, 201)
    assert "conformance-client-id" not in response.headers.get("Location", ""), describe(response)
    stored = instances.current(instances.created(resource, response))
    assert stored["id"] != "conformance-client-id"
    assert stored.get("meta", {}).get("versionId") != "999" and not stored["meta"].get("lastUpdated", "").startswith("2001"), stored["meta"]


@pytest.mark.should
@pytest.mark.parametrize("prefer", ["minimal", "representation", "OperationOutcome"])
def test_prefer_return(prefer: str, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#ops: Prefer: return=minimal (no body), return=representation (the resource),
    return=OperationOutcome (an OperationOutcome); servers SHOULD honour it."""
    _patient_with("create", capability)
    response = http.post(f"{base_url}/Patient", json=tagged(PLAIN["Patient"]),
                         headers={"Content-Type": FHIR_JSON, "Prefer": f"return={prefer}"})
    assert_status(response, 201)
    body = json_body(response)
    if prefer == "minimal":
        assert not response.content.strip(), f"return=minimal gave a body: {describe(response)}"
    else:
        expected = "Patient" if prefer == "representation" else "OperationOutcome"
        assert isinstance(body, dict) and body.get("resourceType") == expected, describe(response)


def _versioned_update(capability: dict[str, Any]) -> None:
    _patient_with("update", capability)
    if resource_entry(capability, "Patient").get("versioning") != "versioned-update":
        pytest.skip("Patient's versioning is not versioned-update: If-Match is not promised")


def test_if_match_stale_version_is_412(instances: Instances, http: requests.Session, base_url: str,
                                       capability: dict[str, Any]) -> None:
    """http.html#concurrency: with versioned-update, "If the version id given in the If-Match header does
    not match, the server returns a 412 Precondition Failed status code instead of updating"."""
    _versioned_update(capability)
    created = instances.new_plain("Patient")
    url = f"{base_url}/Patient/{created.id}"
    response = http.put(url, json={**created.stored, "gender": "male"},
                        headers={"Content-Type": FHIR_JSON, "If-Match": 'W/"zzqx-stale"'})
    assert_outcome(response, 412)
    assert instances.current(created).get("gender") == "female", "the update happened despite the 412"


def test_if_match_current_version_updates(instances: Instances, http: requests.Session, base_url: str,
                                          capability: dict[str, Any]) -> None:
    _versioned_update(capability)
    created = instances.new_plain("Patient")
    version = created.stored["meta"]["versionId"]
    response = http.put(f"{base_url}/Patient/{created.id}", json={**created.stored, "gender": "male"},
                        headers={"Content-Type": FHIR_JSON, "If-Match": f'W/"{version}"'})
    assert_status(response, 200)
    assert instances.current(created).get("gender") == "male"


def test_if_none_exist(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#ccreate: with If-None-Exist, no match creates (201); one match: "the server ignores the
    post and returns 200 OK"; several matches: 412 Precondition Failed."""
    _patient_with("create", capability)
    if not resource_entry(capability, "Patient").get("conditionalCreate"):
        pytest.skip("conditionalCreate is not advertised for Patient")
    system, value = "urn:oid:1.2.3.4.5.6.7.8.9", f"conformance-{uuid.uuid4().hex}"
    patient = {**tagged(PLAIN["Patient"]), "identifier": [{"system": system, "value": value}]}
    condition = {"If-None-Exist": f"identifier={system}|{value}", "Content-Type": FHIR_JSON}
    first = http.post(f"{base_url}/Patient", json=patient, headers=condition)
    assert_status(first, 201)
    second = http.post(f"{base_url}/Patient", json=patient, headers=condition)
    assert_status(second, 200)
    found = http.get(f"{base_url}/Patient", params={"identifier": f"{system}|{value}"}).json()
    assert len(found.get("entry") or ()) == 1, "a conditional create with one match created another resource"
    assert_status(http.post(f"{base_url}/Patient", json=patient, headers={"Content-Type": FHIR_JSON}), 201)
    assert_outcome(http.post(f"{base_url}/Patient", json=patient, headers=condition), 412)


def test_unknown_id_is_404(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#read: a GET for an unknown resource returns 404 Not Found."""
    _patient_with("read", capability)
    assert_outcome(http.get(f"{base_url}/Patient/zzqx-{uuid.uuid4().hex[:20]}"), 404)


def test_deleted_is_410(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#read: "a GET for a deleted resource returns a 410 status code" (404 only for systems that
    do not track deleted records: one that advertises vread or history keeps them)."""
    _patient_with("delete", capability)
    created = instances.new_plain("Patient")
    assert_status(http.delete(f"{base_url}/Patient/{created.id}"), 200, 202, 204)
    tracked = {"vread", "history-instance"} & interactions(capability, "Patient")
    assert_outcome(http.get(f"{base_url}/Patient/{created.id}"), *((410,) if tracked else (404, 410)))


@pytest.mark.should
def test_delete_twice(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#delete: deleting a deleted resource "has no effect, and the server should return either a
    200 OK or 204 No Content"."""
    _patient_with("delete", capability)
    created = instances.new_plain("Patient")
    assert_status(http.delete(f"{base_url}/Patient/{created.id}"), 200, 202, 204)
    assert_status(http.delete(f"{base_url}/Patient/{created.id}"), 200, 204)


@pytest.mark.should
@pytest.mark.parametrize("fmt", ["json", "application/fhir+json"])
def test_format_overrides_accept(fmt: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#mime-type: the _format parameter overrides the Accept header (for clients that cannot
    set it); servers SHOULD support it."""
    response = http.get(f"{base_url}/Patient/{instances.plain('Patient').id}", params={"_format": fmt},
                        headers={"Accept": "text/html"})
    assert_status(response, 200)
    assert_fhir_json(response)
    assert response.json()["resourceType"] == "Patient"
