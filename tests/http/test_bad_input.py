"""Bad input: the right 4xx, an OperationOutcome, nothing stored, never a 500."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir, assert_outcome, snapshot

GOOD: dict[str, Any] = {"resourceType": "Patient", "gender": "female"}


def _deep(levels: int) -> bytes:
    return b'{"resourceType":"Patient","extension":' + b"[" * levels + b"]" * levels + b"}"


# (name, method, path, body, headers, status, codes, expression)
CASES: list[tuple[str, str, str, Any, dict[str, str], int, tuple[str, ...], str | None]] = [
    ("malformed JSON", "POST", "Patient", b'{"resourceType": "Patient",', {}, 400, ("invalid",), None),
    ("not UTF-8", "POST", "Patient", b'{"resourceType":"Patient","name":[{"family":"\xe9t\xe9"}]}', {}, 400, ("invalid",), None),
    ("JSON array", "POST", "Patient", b"[1, 2]", {}, 400, ("invalid",), None),
    ("JSON scalar", "POST", "Patient", b'"Patient"', {}, 400, ("invalid",), None),
    ("empty body", "POST", "Patient", b"", {}, 400, ("invalid",), None),
    ("no resourceType", "POST", "Patient", {"gender": "male"}, {}, 400, ("required",), None),
    ("resourceType mismatch", "POST", "Patient", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}, {}, 400, ("invalid",), "Observation.resourceType"),
    ("unknown resource type in body", "POST", "Patient", {"resourceType": "Patientt"}, {}, 400, ("not-supported",), None),
    ("unknown resource type in URL", "POST", "Patientt", GOOD, {}, 404, ("not-found",), None),
    ("id mismatch on PUT", "PUT", "Patient/abc", {**GOOD, "id": "xyz"}, {}, 400, ("invalid",), "Patient.id"),
    ("no id on PUT", "PUT", "Patient/abc", GOOD, {}, 400, ("required",), "Patient.id"),
    ("invalid id syntax", "PUT", "Patient/a_b", {**GOOD, "id": "a_b"}, {}, 400, ("invalid",), None),
    ("id too long", "PUT", "Patient/" + "a" * 65, {**GOOD, "id": "a" * 65}, {}, 400, ("invalid",), None),
    ("unknown element", "POST", "Patient", {**GOOD, "colour": "blue"}, {}, 400, ("structure",), "Patient.colour"),
    ("unknown nested element", "POST", "Patient", {**GOOD, "name": [{"famly": "X"}]}, {}, 400, ("structure",), "Patient.name[0].famly"),
    ("wrong JSON type", "POST", "Patient", {**GOOD, "active": "yes"}, {}, 400, ("structure",), "Patient.active"),
    ("number as string", "POST", "Patient", {**GOOD, "multipleBirthInteger": "2"}, {}, 400, ("structure",), "Patient.multipleBirthInteger"),
    ("required binding", "POST", "Patient", {**GOOD, "gender": "femme"}, {}, 400, ("code-invalid",), "Patient.gender"),
    ("invalid date", "POST", "Patient", {**GOOD, "birthDate": "2020-13-01"}, {}, 400, ("value",), "Patient.birthDate"),
    ("impossible date", "POST", "Patient", {**GOOD, "birthDate": "2021-02-30"}, {}, 400, ("value",), "Patient.birthDate"),
    ("missing required element", "POST", "Observation", {"resourceType": "Observation", "status": "final"}, {}, 400, ("required",), "Observation.code"),
    ("nested too deep", "POST", "Patient", _deep(1000), {}, 400, ("invalid",), None),
    ("key starting with $", "POST", "Patient", {**GOOD, "$where": "1"}, {}, 400, ("invalid",), None),
    ("key containing a dot", "POST", "Patient", {**GOOD, "name": [{"a.b": 1}]}, {}, 400, ("invalid",), None),
    ("operator inside a value", "POST", "Patient", {**GOOD, "name": [{"family": {"$ne": None}}]}, {}, 400, ("invalid",), None),
    ("XML content type", "POST", "Patient", b"<Patient/>", {"Content-Type": "application/fhir+xml"}, 415, ("not-supported",), None),
    ("no content type", "POST", "Patient", b'{"resourceType":"Patient"}', {"Content-Type": ""}, 415, ("not-supported",), None),
    ("form content type", "POST", "Patient", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415, ("not-supported",), None),
    ("unsupported _format", "POST", "Patient?_format=xml", GOOD, {}, 406, ("not-supported",), None),
    ("unsupported Accept", "POST", "Patient", GOOD, {"Accept": "application/fhir+xml"}, 406, ("not-supported",), None),
    ("unsupported method", "TRACE", "Patient/abc", GOOD, {}, 405, ("not-supported",), None),
    ("patch of a missing resource", "PATCH", "Patient/abc", b"[]", {"Content-Type": "application/json-patch+json"}, 404, ("not-found",), None),
    ("no such endpoint", "GET", "Patient/abc/def/ghi/jkl", None, {}, 404, ("not-found",), None),
]


@pytest.mark.parametrize("name,method,path,body,headers,status,codes,expression", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_stores_nothing(fhir: Fhir, db: Any, name: str, method: str, path: str, body: Any,
                                                 headers: dict[str, str], status: int, codes: tuple[str, ...],
                                                 expression: str | None) -> None:
    before = snapshot(db)
    outcome = assert_outcome(fhir.request(method, path, body, headers=headers), status, *codes)
    if expression:
        assert expression in [e for issue in outcome["issue"] for e in issue.get("expression", [])], outcome
    assert snapshot(db) == before


def test_all_findings_are_reported_together(fhir: Fhir) -> None:
    outcome = assert_outcome(fhir.post("Patient", {**GOOD, "active": "yes", "gender": "femme", "birthDate": "x"}), 400)
    locations = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert {"Patient.active", "Patient.gender", "Patient.birthDate"} <= locations


def test_body_over_the_limit_is_413(server: Any, tmp_path: Any, ferretdb: Any, mongo: Any) -> None:
    from tests.conftest import LiveServer
    small = LiveServer(ferretdb.uri, "fhir_small_limit", tmp_path, FHIR_MAX_BODY_BYTES="1000").start()
    try:
        db = mongo["fhir_small_limit"]
        client = small.client()
        before = snapshot(db)
        big = {**GOOD, "name": [{"family": "x" * 2000}]}
        assert_outcome(client.post("Patient", big), 413, "too-costly")
        assert snapshot(db) == before
        assert client.post("Patient", GOOD).status_code == 201
    finally:
        small.kill()
