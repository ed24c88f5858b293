"""The instance and type interactions of https://hl7.org/fhir/R4/http.html, for every resource type the
CapabilityStatement lists with them: create, read, vread, update, patch, delete. Each type is tested with
its official R4 example (data.py); a type whose example the server refuses is reported as not testable."""
from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from .data import Created, Instances, comparable
from .support import FHIR_JSON, WEAK_ETAG, assert_status, describe, skip_if_refused, types_with

PLAIN_TYPES = ("Patient", "Practitioner", "Organization", "Observation")


@pytest.fixture(autouse=True, scope="module")
def _examples(instances: Instances, capability: dict[str, Any]) -> None:
    """Every example created up front, a few at a time (to keep the run short)."""
    instances.create_all(types_with(capability, "create"))


def _location_version(created: Created, base_url: str) -> str:
    """http.html#create: "a Location header which contains the new Logical Id and Version Id of the
    created resource version: Location: [base]/[type]/[id]/_history/[vid]" (SHALL)."""
    location = created.response.headers.get("Location", "")
    match = re.fullmatch(rf"(?:{re.escape(base_url)}/)?{created.rtype}/{re.escape(created.id)}/_history/([^/]+)", location)
    assert match, f"Location {location!r} is not [base]/{created.rtype}/{created.id}/_history/[vid]: {describe(created.response)}"
    return match.group(1)


@pytest.mark.parametrize("plain_type", PLAIN_TYPES)
def test_plain_resource_is_created(plain_type: str, instances: Instances, capability: dict[str, Any]) -> None:
    """A minimal, valid Patient, Practitioner, Organization and Observation: any server storing them
    accepts them (create answers 201 Created)."""
    if plain_type not in instances.creatable:
        pytest.skip(f"the CapabilityStatement does not advertise create for {plain_type}")
    created = instances.plain(plain_type)
    assert created.stored["resourceType"] == plain_type and created.stored["id"] == created.id


@pytest.mark.interaction("create")
def test_create(rtype: str, instances: Instances, base_url: str) -> None:
    created = instances.of(rtype)
    assert_status(created.response, 201)
    version = _location_version(created, base_url)
    # the server assigns the id and the version (http.html#create)
    assert created.stored.get("meta", {}).get("versionId") in (None, version), \
        f"Location names version {version}, the stored resource {created.stored.get('meta')}"


@pytest.mark.interaction("read")
def test_read(rtype: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    created = instances.of(rtype)
    response = http.get(f"{base_url}/{rtype}/{created.id}")
    assert_status(response, 200)
    body = response.json()
    assert body["resourceType"] == rtype and body["id"] == created.id, describe(response)


@pytest.mark.should
@pytest.mark.interaction("read")
def test_read_returns_what_was_created(rtype: str, instances: Instances) -> None:
    """What the server stored is what it was sent, apart from id, meta and narrative. http.html#update:
    servers SHOULD keep the content they receive (they MAY drop what they do not support). Values are
    compared, not their lexical forms: a base64Binary is its bytes (datatypes.html#primitive: its
    regex ``(\\s*([0-9a-zA-Z\\+/=]){4}\\s*)+`` makes whitespace insignificant), so a server may store the
    base64 of the examples without their line breaks."""
    created = instances.of(rtype)
    stored = created.stored
    sent_values, stored_values = comparable(created.sent), comparable(stored)
    differing = sorted(key for key in created.sent if key not in ("id", "meta", "text")
                       and stored_values.get(key) != sent_values[key])
    assert not differing, f"{rtype}: {differing} read back differ from what was created: " \
                          f"sent {[created.sent[k] for k in differing]!r:.500}, read {[stored.get(k) for k in differing]!r:.500}"


@pytest.mark.interaction("vread")
def test_vread(rtype: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    created = instances.of(rtype)
    version = created.stored.get("meta", {}).get("versionId")
    if not version:
        pytest.skip("the stored resource has no meta.versionId to read")
    response = http.get(f"{base_url}/{rtype}/{created.id}/_history/{version}")
    assert_status(response, 200)
    body = response.json()
    assert body["id"] == created.id and body.get("meta", {}).get("versionId") == version, describe(response)


def _changed_language(resource: dict[str, Any]) -> str:
    """A change every resource type allows: Resource.language (every type has it)."""
    return "de" if resource.get("language") != "de" else "fr"


@pytest.mark.interaction("update", "read")
def test_update(rtype: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#update: PUT [base]/[type]/[id] answers 200 OK for an existing resource, and a new
    version is created (when the server keeps versions)."""
    created = instances.of(rtype)
    before = created.stored.get("meta", {}).get("versionId")
    changed = {**created.stored, "language": _changed_language(created.stored)}
    response = http.put(f"{base_url}/{rtype}/{created.id}", json=changed, headers={"Content-Type": FHIR_JSON})
    skip_if_refused(response, "update")
    assert_status(response, 200)
    after = instances.current(created)
    assert after.get("language") == changed["language"], f"the update did not change language: {after.get('language')!r}"
    version = after.get("meta", {}).get("versionId")
    if before and version:
        assert version != before, f"an update kept versionId {before}"
    etag = WEAK_ETAG.match(response.headers.get("ETag", ""))
    if etag and version:
        assert etag.group(1) == version, f"ETag {response.headers['ETag']} for version {version}"


@pytest.mark.interaction("patch", "read")
def test_patch(rtype: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#patch: JSON Patch (application/json-patch+json) is the format the specification names
    for JSON; a server advertising patch accepts it. ("add" replaces an existing member: RFC 6902.)"""
    created = instances.of(rtype)
    response = http.patch(f"{base_url}/{rtype}/{created.id}", json=[{"op": "add", "path": "/language", "value": "nl"}],
                          headers={"Content-Type": "application/json-patch+json"})
    skip_if_refused(response, "patch")
    assert_status(response, 200)
    assert instances.current(created).get("language") == "nl", "the patch was not applied"


@pytest.mark.interaction("delete", "read")
def test_delete(rtype: str, instances: Instances, http: requests.Session, base_url: str) -> None:
    """http.html#delete: 200 OK (with a body), 202 Accepted or 204 No Content; a read afterwards answers
    410 Gone, or 404 Not Found for a server that does not track deletions."""
    created = instances.fresh(rtype)
    response = http.delete(f"{base_url}/{rtype}/{created.id}")
    skip_if_refused(response, "delete")
    assert_status(response, 200, 202, 204)
    assert_status(http.get(f"{base_url}/{rtype}/{created.id}"), 404, 410)
