"""The FHIR REST interactions over real HTTP (https://hl7.org/fhir/R4/http.html)."""
from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime
from typing import Any

from tests.conftest import FHIR_JSON, Fhir, assert_outcome

PATIENT: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Martin", "given": ["Hélène"]}],
                           "gender": "female", "birthDate": "1970-03-04"}


def _create(fhir: Fhir, resource: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    response = fhir.post("Patient", resource or PATIENT)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body


def test_create_assigns_id_and_version(fhir: Fhir) -> None:
    response = fhir.post("Patient", {**PATIENT, "id": "client-chosen", "meta": {"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z"}})
    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Location"] == f"{fhir.base}/Patient/{body['id']}/_history/1"
    assert response.headers["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"
    assert parsedate_to_datetime(response.headers["Last-Modified"]).year >= 2024
    assert body["name"] == PATIENT["name"]


def test_read_returns_the_stored_resource(fhir: Fhir) -> None:
    rid, created = _create(fhir)
    response = fhir.get(f"Patient/{rid}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == 'W/"1"'


def test_read_unknown_is_404(fhir: Fhir) -> None:
    assert_outcome(fhir.get(f"Patient/{uuid.uuid4()}"), 404, "not-found")


def test_update_makes_versions_and_vread_reads_each(fhir: Fhir) -> None:
    rid, first = _create(fhir)
    second = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid, "active": True})
    assert second.status_code == 200
    assert second.json()["meta"]["versionId"] == "2"
    assert second.headers["ETag"] == 'W/"2"'
    old = fhir.get(f"Patient/{rid}/_history/1")
    assert old.status_code == 200 and old.json() == first
    assert fhir.get(f"Patient/{rid}/_history/2").json()["active"] is True
    assert_outcome(fhir.get(f"Patient/{rid}/_history/3"), 404, "not-found")
    assert_outcome(fhir.get(f"Patient/{rid}/_history/x"), 404, "not-found")


def test_update_as_create_with_client_id(fhir: Fhir) -> None:
    rid = f"dmp-{uuid.uuid4().hex[:12]}"
    response = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid})
    assert response.status_code == 201
    assert response.json()["id"] == rid
    assert response.headers["Location"].endswith(f"/Patient/{rid}/_history/1")


def test_if_match(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    stale = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid}, headers={"If-Match": 'W/"7"'})
    assert_outcome(stale, 412, "conflict")
    fresh = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid}, headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200 and fresh.headers["ETag"] == 'W/"2"'
    assert_outcome(fhir.delete(f"Patient/{rid}", headers={"If-Match": 'W/"1"'}), 412, "conflict")


def test_delete_is_logical_and_idempotent(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    deleted = fhir.delete(f"Patient/{rid}")
    assert deleted.status_code == 200
    assert deleted.headers["ETag"] == 'W/"2"'
    assert_outcome(fhir.get(f"Patient/{rid}"), 410, "deleted")
    assert_outcome(fhir.get(f"Patient/{rid}/_history/2"), 410, "deleted")
    assert fhir.get(f"Patient/{rid}/_history/1").status_code == 200
    assert fhir.delete(f"Patient/{rid}").status_code == 200
    assert fhir.delete(f"Patient/{uuid.uuid4()}").status_code == 200
    # a deleted resource can be brought back by an update, continuing its version line
    revived = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid})
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


def test_conditional_read(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    current = fhir.get(f"Patient/{rid}")
    same = fhir.get(f"Patient/{rid}", headers={"If-None-Match": current.headers["ETag"]})
    assert same.status_code == 304 and same.content == b""
    assert fhir.get(f"Patient/{rid}", headers={"If-None-Match": 'W/"9"'}).status_code == 200
    since = fhir.get(f"Patient/{rid}", headers={"If-Modified-Since": current.headers["Last-Modified"]})
    assert since.status_code == 304
    old = fhir.get(f"Patient/{rid}", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old.status_code == 200


def test_prefer_return(fhir: Fhir) -> None:
    minimal = fhir.post("Patient", PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"] and minimal.headers["ETag"] == 'W/"1"'
    outcome = fhir.post("Patient", PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = fhir.post("Patient", PATIENT, headers={"Prefer": "return=representation"})
    assert full.json()["resourceType"] == "Patient"


def test_summary_and_elements_on_read(fhir: Fhir) -> None:
    rid, _ = _create(fhir, {**PATIENT, "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
                            "deceasedBoolean": False, "maritalStatus": {"text": "single"}})
    summary = fhir.get(f"Patient/{rid}", params={"_summary": "true"}).json()
    assert "maritalStatus" not in summary and "text" not in summary
    assert summary["name"] and summary["deceasedBoolean"] is False
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in summary["meta"]["tag"]
    text = fhir.get(f"Patient/{rid}", params={"_summary": "text"}).json()
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = fhir.get(f"Patient/{rid}", params={"_summary": "data"}).json()
    assert "text" not in data and "maritalStatus" in data
    elements = fhir.get(f"Patient/{rid}", params={"_elements": "gender,birthDate"}).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert_outcome(fhir.get(f"Patient/{rid}", params={"_summary": "maybe"}), 400, "invalid")


def test_formats(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    for fmt in ("json", "application/json", "application/fhir+json"):
        assert fhir.get(f"Patient/{rid}", params={"_format": fmt}).status_code == 200
    plain = fhir.get(f"Patient/{rid}", headers={"Accept": "application/json"})
    assert plain.headers["Content-Type"].startswith("application/json")
    pretty = fhir.get(f"Patient/{rid}", params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "resourceType"')
    assert fhir.get(f"Patient/{rid}", headers={"Accept": "text/html,*/*;q=0.8"}).status_code == 200


def test_history_instance_type_system(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid, "active": True})
    fhir.delete(f"Patient/{rid}")
    instance = fhir.get(f"Patient/{rid}/_history").json()
    assert instance["type"] == "history" and instance["total"] == 3
    assert [e["request"]["method"] for e in instance["entry"]] == ["DELETE", "PUT", "POST"]
    assert [e["response"]["etag"] for e in instance["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert "resource" not in instance["entry"][0]
    assert instance["entry"][1]["resource"]["active"] is True
    type_level = fhir.get("Patient/_history", params={"_count": "2"}).json()
    assert len(type_level["entry"]) == 2
    assert all(e["fullUrl"].startswith(f"{fhir.base}/Patient/") for e in type_level["entry"])
    system = fhir.get("_history", params={"_count": "1"}).json()
    assert len(system["entry"]) == 1
    assert_outcome(fhir.get(f"Patient/{uuid.uuid4()}/_history"), 404, "not-found")


def test_history_paging_walks_every_version_once(fhir: Fhir) -> None:
    rid, _ = _create(fhir)
    for n in range(6):
        fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid, "birthDate": f"197{n}"})
    seen: list[str] = []
    page = fhir.get(f"Patient/{rid}/_history", params={"_count": "3"}).json()
    while True:
        seen += [e["response"]["etag"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
        if "next" not in links:
            break
        page = fhir.get(links["next"]).json()
    assert seen == [f'W/"{v}"' for v in range(7, 0, -1)]
    tampered = fhir.get(f"Patient/{rid}/_history", params={"_count": "3", "_cursor": "abc"})
    assert_outcome(tampered, 400, "invalid")


def test_history_since_and_at(fhir: Fhir) -> None:
    rid, first = _create(fhir)
    second = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid, "active": True}).json()
    third = fhir.put(f"Patient/{rid}", {**PATIENT, "id": rid, "active": False}).json()
    since = fhir.get(f"Patient/{rid}/_history", params={"_since": second["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in since["entry"]] == ["3", "2"]
    # _at: the versions current at that instant; version 2 was current at its own lastUpdated
    at = fhir.get(f"Patient/{rid}/_history", params={"_at": second["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in at["entry"]] == ["2"]
    at_now = fhir.get(f"Patient/{rid}/_history", params={"_at": third["meta"]["lastUpdated"]}).json()
    assert [e["resource"]["meta"]["versionId"] for e in at_now["entry"]] == ["3"]
    assert first["meta"]["versionId"] == "1"
    assert_outcome(fhir.get(f"Patient/{rid}/_history", params={"_since": "yesterday"}), 400, "invalid")


def test_validate_operation_stores_nothing(fhir: Fhir, db: Any) -> None:
    before = db["history"].count_documents({})
    ok = fhir.post("Patient/$validate", PATIENT)
    assert ok.status_code == 200
    assert ok.json()["issue"][0]["severity"] == "information"
    bad = fhir.post("Patient/$validate", {**PATIENT, "gender": "femme"}).json()
    assert bad["issue"][0]["severity"] == "error" and bad["issue"][0]["expression"] == ["Patient.gender"]
    wrapped = fhir.post("Patient/$validate", {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {**PATIENT, "active": "yes"}}]}).json()
    assert wrapped["issue"][0]["expression"] == ["Patient.active"]
    assert db["history"].count_documents({}) == before


def test_health_endpoints(server: Any) -> None:
    import requests
    assert requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code == 200
    assert requests.get(f"http://127.0.0.1:{server.port}/readyz", timeout=5).json() == {"status": "ready"}


def test_decimal_precision_is_preserved(fhir: Fhir) -> None:
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"creatinine"},'
            b'"valueQuantity":{"value":1.50,"unit":"mg/dL"},"referenceRange":[{"low":{"value":0.1234567890123456789}}]}')
    created = fhir.post("Observation", body)
    assert created.status_code == 201
    rid = created.json()["id"]
    for response in (created, fhir.get(f"Observation/{rid}"), fhir.get(f"Observation/{rid}", params={"_pretty": "true"}),
                     fhir.get(f"Observation/{rid}/_history"), fhir.get(f"Observation/{rid}", params={"_elements": "value,referenceRange"})):
        assert b"1.50" in response.content and b"0.1234567890123456789" in response.content, response.text


def test_a_trailing_slash_names_the_same_endpoint(fhir: Fhir) -> None:
    """fhir-kit-client and fhirpy post bundles to ``[base]/``; ``[type]/`` is a search like ``[type]``."""
    created = fhir.post("Patient", {"resourceType": "Patient", "name": [{"family": "Slash"}]}).json()
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": f"Patient/{created['id']}"}}]}
    response = fhir.http.post(fhir.base + "/", json=batch, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["resource"]["id"] == created["id"]
    found = fhir.get(f"Patient/?_id={created['id']}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
    assert fhir.get(f"Patient/{created['id']}/").json()["id"] == created["id"]
