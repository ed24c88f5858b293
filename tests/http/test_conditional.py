"""Conditional create, update, delete and patch, and PATCH, over real HTTP, from the spec text
(https://hl7.org/fhir/R4/http.html#ccreate, #cond-update, #cdelete, #patch)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Fhir, LiveServer, assert_outcome, own_server, snapshot

SYSTEM = "urn:test:conditional"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"


def ident() -> str:
    return uuid.uuid4().hex


def criteria(value: str) -> str:
    return f"identifier={SYSTEM}|{value}"


def patient(value: str | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Condi", "given": ["Léa"]}], **more}
    if value:
        body["identifier"] = [{"system": SYSTEM, "value": value}]
    return body


def create(fhir: Fhir, resource: dict[str, Any]) -> str:
    response = fhir.post(resource["resourceType"], resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def found(fhir: Fhir, value: str, rtype: str = "Patient") -> list[str]:
    response = fhir.get(rtype, params={"identifier": f"{SYSTEM}|{value}"})
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match")


def version(fhir: Fhir, path: str) -> str:
    response = fhir.get(path)
    assert response.status_code == 200, response.text
    vid: str = response.json()["meta"]["versionId"]
    return vid


# -- conditional create: POST with If-None-Exist -------------------------------------------------------


def test_conditional_create_none_one_many(fhir: Fhir, db: Any) -> None:
    value = ident()
    first = fhir.post("Patient", patient(value), headers={"If-None-Exist": criteria(value)})
    assert first.status_code == 201, first.text
    rid = first.json()["id"]
    assert first.headers["Location"].endswith(f"/Patient/{rid}/_history/1")
    # one match: nothing created, 200 with the existing resource, left as it was
    again = fhir.post("Patient", patient(value, gender="male"), headers={"If-None-Exist": criteria(value)})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == rid and "gender" not in again.json()
    assert found(fhir, value) == [rid]
    assert version(fhir, f"Patient/{rid}") == "1"
    # several matches: 412, nothing created
    create(fhir, patient(value))
    before = snapshot(db)
    assert_outcome(fhir.post("Patient", patient(value), headers={"If-None-Exist": criteria(value)}), 412)
    assert snapshot(db) == before
    assert len(found(fhir, value)) == 2


def test_conditional_create_with_a_full_url_criteria_and_several_parameters(fhir: Fhir) -> None:
    value = ident()
    rid = create(fhir, patient(value, gender="female"))
    same = fhir.post("Patient", patient(value), headers={"If-None-Exist": f"{criteria(value)}&gender=female"})
    assert same.status_code == 200 and same.json()["id"] == rid
    other = fhir.post("Patient", patient(value, gender="male"), headers={"If-None-Exist": f"{criteria(value)}&gender=male"})
    assert other.status_code == 201 and other.json()["id"] != rid


@pytest.mark.parametrize("method,path,headers", [
    ("POST", "Patient", {"If-None-Exist": "colour=blue"}),
    ("PUT", "Patient?colour=blue", {}),
    ("DELETE", "Patient?colour=blue", {}),
    ("PATCH", "Patient?colour=blue", JSON_PATCH),
    ("DELETE", "Patient?identifier=x&colour=blue", {}),
])
def test_unknown_criteria_parameter_is_400_not_a_match_of_everything(fhir: Fhir, db: Any, method: str, path: str,
                                                                     headers: dict[str, str]) -> None:
    """Strict matching: an unknown parameter ignored would widen the criteria to every resource."""
    create(fhir, patient(ident()))
    body: Any = None
    if method in ("POST", "PUT"):
        body = patient(ident())
    elif method == "PATCH":
        body = json.dumps([{"op": "add", "path": "/active", "value": True}])
    before = snapshot(db)
    assert_outcome(fhir.request(method, path, body, headers=headers), 400)
    assert snapshot(db) == before


def test_conditional_operations_need_criteria(fhir: Fhir, db: Any) -> None:
    """DELETE [type] and PUT [type] without criteria would be a delete of, or an update of, everything."""
    create(fhir, patient(ident()))
    before = snapshot(db)
    for response in (fhir.delete("Patient"), fhir.put("Patient", patient(ident()))):
        assert response.status_code in (400, 405), response.text
        assert_outcome(response, response.status_code)
    assert snapshot(db) == before


# -- conditional update: PUT [type]?criteria -----------------------------------------------------------


def test_conditional_update_no_match_creates(fhir: Fhir) -> None:
    value = ident()
    response = fhir.put(f"Patient?{criteria(value)}", patient(value, active=True))
    assert response.status_code == 201, response.text
    rid = response.json()["id"]
    assert response.json()["meta"]["versionId"] == "1"
    assert found(fhir, value) == [rid]


def test_conditional_update_no_match_with_an_id_is_update_as_create(fhir: Fhir) -> None:
    value, rid = ident(), f"cond-{ident()[:16]}"
    response = fhir.put(f"Patient?{criteria(value)}", patient(value, id=rid))
    assert response.status_code == 201, response.text
    assert response.json()["id"] == rid
    assert response.headers["Location"].endswith(f"/Patient/{rid}/_history/1")
    assert found(fhir, value) == [rid]


def test_conditional_update_one_match_updates_it(fhir: Fhir) -> None:
    value = ident()
    rid = create(fhir, patient(value))
    response = fhir.put(f"Patient?{criteria(value)}", patient(value, active=False))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == rid and response.json()["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    assert fhir.get(f"Patient/{rid}").json()["active"] is False
    # the body may name the match's id
    named = fhir.put(f"Patient?{criteria(value)}", patient(value, id=rid, active=True))
    assert named.status_code == 200 and named.json()["meta"]["versionId"] == "3"
    assert found(fhir, value) == [rid]


def test_conditional_update_one_match_with_another_id_is_400(fhir: Fhir, db: Any) -> None:
    value = ident()
    rid = create(fhir, patient(value))
    before = snapshot(db)
    assert_outcome(fhir.put(f"Patient?{criteria(value)}", patient(value, id="someone-else", active=True)), 400)
    assert snapshot(db) == before
    assert version(fhir, f"Patient/{rid}") == "1"
    assert fhir.get("Patient/someone-else").status_code == 404


def test_conditional_update_several_matches_is_412(fhir: Fhir, db: Any) -> None:
    value = ident()
    ids = sorted([create(fhir, patient(value)), create(fhir, patient(value))])
    before = snapshot(db)
    assert_outcome(fhir.put(f"Patient?{criteria(value)}", patient(value, active=True)), 412)
    assert snapshot(db) == before
    assert [version(fhir, f"Patient/{i}") for i in ids] == ["1", "1"]


def test_conditional_update_with_if_match(fhir: Fhir) -> None:
    value = ident()
    rid = create(fhir, patient(value))
    assert_outcome(fhir.put(f"Patient?{criteria(value)}", patient(value, active=True), headers={"If-Match": 'W/"4"'}), 412)
    ok = fhir.put(f"Patient?{criteria(value)}", patient(value, active=True), headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.json()["id"] == rid and ok.json()["meta"]["versionId"] == "2"


# -- conditional delete: DELETE [type]?criteria --------------------------------------------------------


def test_conditional_delete_none(fhir: Fhir, db: Any) -> None:
    before = snapshot(db)
    response = fhir.delete(f"Patient?{criteria(ident())}")
    assert response.status_code in (200, 204, 404), response.text
    assert snapshot(db) == before


def test_conditional_delete_one(fhir: Fhir) -> None:
    value, bystander = ident(), ident()
    rid = create(fhir, patient(value))
    other = create(fhir, patient(bystander))
    response = fhir.delete(f"Patient?{criteria(value)}")
    assert response.status_code in (200, 204), response.text
    assert_outcome(fhir.get(f"Patient/{rid}"), 410)
    assert found(fhir, value) == []
    assert version(fhir, f"Patient/{other}") == "1"


def test_conditional_delete_several_is_412_by_default(fhir: Fhir, db: Any) -> None:
    value = ident()
    ids = sorted([create(fhir, patient(value)), create(fhir, patient(value))])
    before = snapshot(db)
    assert_outcome(fhir.delete(f"Patient?{criteria(value)}"), 412)
    assert snapshot(db) == before
    assert found(fhir, value) == ids


@pytest.fixture(scope="module")
def multiple(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from own_server(ferretdb, tmp_path_factory, "fhir_delete_multiple", FHIR_CONDITIONAL_DELETE_MULTIPLE="true")


def test_conditional_delete_several_deletes_all_when_configured(multiple: LiveServer) -> None:
    client = multiple.client()
    value, bystander = ident(), ident()
    ids = [create(client, patient(value)) for _ in range(3)]
    other = create(client, patient(bystander))
    response = client.delete(f"Patient?{criteria(value)}")
    assert response.status_code in (200, 204), response.text
    assert [client.get(f"Patient/{i}").status_code for i in ids] == [410, 410, 410]
    assert found(client, value) == []
    assert version(client, f"Patient/{other}") == "1"
    statement = client.get("metadata").json()
    patient_rest = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert patient_rest["conditionalDelete"] == "multiple"
    # inside a transaction too
    more = [create(client, patient(value)) for _ in range(2)]
    result = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Patient?{criteria(value)}"}}]})
    assert result.status_code == 200, result.text
    assert [client.get(f"Patient/{i}").status_code for i in more] == [410, 410]


# -- PATCH ---------------------------------------------------------------------------------------------


def fhirpath_patch(*operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts} for parts in operations]}


def op(kind: str, path: str, **value: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    if "name" in value:
        parts.append({"name": "name", "valueString": value.pop("name")})
    if value:
        parts.append({"name": "value", **value})
    return parts


def patch(fhir: Fhir, path: str, body: Any, **headers: str) -> Any:
    if isinstance(body, list):
        return fhir.request("PATCH", path, json.dumps(body), headers={**JSON_PATCH, **headers})
    return fhir.request("PATCH", path, body, headers=headers)


def test_json_patch_with_if_match(fhir: Fhir, db: Any) -> None:
    rid = create(fhir, patient(ident(), active=True))
    before = snapshot(db)
    stale = patch(fhir, f"Patient/{rid}", [{"op": "replace", "path": "/active", "value": False}], **{"If-Match": 'W/"3"'})
    assert_outcome(stale, 412)
    assert snapshot(db) == before
    ok = patch(fhir, f"Patient/{rid}", [{"op": "replace", "path": "/active", "value": False},
                                        {"op": "add", "path": "/gender", "value": "female"}], **{"If-Match": 'W/"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.headers["ETag"] == 'W/"2"'
    stored = fhir.get(f"Patient/{rid}").json()
    assert stored["active"] is False and stored["gender"] == "female" and stored["meta"]["versionId"] == "2"
    assert stored["name"] == patient()["name"]  # the rest is untouched


def test_fhirpath_patch_with_if_match(fhir: Fhir, db: Any) -> None:
    rid = create(fhir, patient(ident(), birthDate="1970-01-01"))
    body = fhirpath_patch(op("replace", "Patient.birthDate", valueDate="1971-02-03"),
                          op("add", "Patient", name="gender", valueCode="male"))
    before = snapshot(db)
    assert_outcome(patch(fhir, f"Patient/{rid}", body, **{"If-Match": 'W/"2"'}), 412)
    assert snapshot(db) == before
    ok = patch(fhir, f"Patient/{rid}", body, **{"If-Match": 'W/"1"'})
    assert ok.status_code == 200, ok.text
    stored = fhir.get(f"Patient/{rid}").json()
    assert (stored["birthDate"], stored["gender"], stored["meta"]["versionId"]) == ("1971-02-03", "male", "2")


@pytest.mark.parametrize("body", [
    [{"op": "replace", "path": "/gender", "value": "femme"}],
    [{"op": "add", "path": "/colour", "value": "blue"}],
    [{"op": "remove", "path": "/name/0/family"}, {"op": "add", "path": "/name/0/family", "value": 7}],
    fhirpath_patch(op("replace", "Patient.birthDate", valueString="yesterday")),
    fhirpath_patch(op("add", "Patient", name="active", valueString="yes")),
], ids=["json bad code", "json unknown element", "json wrong type", "fhirpath bad date", "fhirpath wrong type"])
def test_patch_producing_an_invalid_resource_stores_nothing(fhir: Fhir, db: Any, body: Any) -> None:
    rid = create(fhir, patient(ident(), birthDate="1970-01-01"))
    before = snapshot(db)
    response = patch(fhir, f"Patient/{rid}", body)
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.text
    assert_outcome(response, response.status_code)
    assert snapshot(db) == before
    assert fhir.get(f"Patient/{rid}").json() == fhir.get(f"Patient/{rid}/_history/1").json()


def test_patch_errors(fhir: Fhir, db: Any) -> None:
    rid = create(fhir, patient(ident(), active=True))
    before = snapshot(db)
    assert_outcome(patch(fhir, f"Patient/{rid}", [{"op": "test", "path": "/active", "value": False}]), 422)
    assert 400 <= patch(fhir, f"Patient/{rid}", [{"op": "replace", "path": "/id", "value": "other"}]).status_code < 500
    assert_outcome(patch(fhir, f"Patient/{rid}", '{"op": "nope"}', **JSON_PATCH), 400)
    assert_outcome(fhir.request("PATCH", f"Patient/{rid}", "[]", headers={"Content-Type": "text/plain"}), 415)
    assert_outcome(patch(fhir, f"Patient/missing-{ident()[:8]}", [{"op": "add", "path": "/active", "value": True}]), 404)
    assert snapshot(db) == before


def test_patch_of_a_deleted_resource_is_410(fhir: Fhir) -> None:
    rid = create(fhir, patient(ident()))
    assert fhir.delete(f"Patient/{rid}").status_code in (200, 204)
    assert_outcome(patch(fhir, f"Patient/{rid}", [{"op": "add", "path": "/active", "value": True}]), 410)


def test_conditional_patch_by_identifier(fhir: Fhir, db: Any) -> None:
    value = ident()
    rid = create(fhir, patient(value))
    ok = patch(fhir, f"Patient?{criteria(value)}", [{"op": "add", "path": "/active", "value": True}])
    assert ok.status_code == 200, ok.text
    assert ok.json()["id"] == rid and ok.json()["meta"]["versionId"] == "2"
    assert fhir.get(f"Patient/{rid}").json()["active"] is True
    by_fhirpath = patch(fhir, f"Patient?{criteria(value)}", fhirpath_patch(op("replace", "Patient.active", valueBoolean=False)))
    assert by_fhirpath.status_code == 200 and by_fhirpath.json()["active"] is False
    before = snapshot(db)
    assert_outcome(patch(fhir, f"Patient?{criteria(ident())}", [{"op": "add", "path": "/active", "value": True}]), 404)
    create(fhir, patient(value))
    middle = snapshot(db)
    assert_outcome(patch(fhir, f"Patient?{criteria(value)}", [{"op": "add", "path": "/active", "value": True}]), 412)
    assert snapshot(db) == middle
    assert middle["Patient"] == before["Patient"] + 1
    assert version(fhir, f"Patient/{rid}") == "3"


# -- a DocumentReference's PATCH changes only its metadata (PDSm) --------------------------------------


def document(value: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
            "identifier": [{"system": SYSTEM, "value": value}],
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
            "description": "Compte rendu",
            "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                           "code": "N"}]}],
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}


@pytest.mark.parametrize("body", [
    [{"op": "replace", "path": "/description", "value": "autre chose"}],
    [{"op": "replace", "path": "/content/0/attachment/data", "value": "Ynll"}],
    [{"op": "replace", "path": "/status", "value": "superseded"}, {"op": "remove", "path": "/type"}],
    fhirpath_patch(op("replace", "DocumentReference.description", valueString="autre chose")),
    [{"op": "add", "path": "/extension", "value": [{"url": "urn:other", "valueBoolean": True}]}],
], ids=["description", "content", "status and type", "fhirpath description", "another extension"])
def test_document_patch_of_content_is_422(fhir: Fhir, db: Any, body: Any) -> None:
    value = ident()
    rid = create(fhir, document(value))
    before = snapshot(db)
    assert_outcome(patch(fhir, f"DocumentReference/{rid}", body), 422, "processing")
    assert snapshot(db) == before
    assert version(fhir, f"DocumentReference/{rid}") == "1"
    assert_outcome(patch(fhir, f"DocumentReference?{criteria(value)}", body), 422, "processing")


def test_document_patch_of_metadata_is_200(fhir: Fhir) -> None:
    value = ident()
    rid = create(fhir, document(value))
    restricted = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}]
    labels = patch(fhir, f"DocumentReference/{rid}", [{"op": "replace", "path": "/securityLabel", "value": restricted}],
                   **{"If-Match": 'W/"1"'})
    assert labels.status_code == 200, labels.text
    assert labels.json()["meta"]["versionId"] == "2" and labels.json()["securityLabel"] == restricted
    status = patch(fhir, f"DocumentReference?{criteria(value)}",
                   fhirpath_patch(op("replace", "DocumentReference.status", valueCode="superseded")))
    assert status.status_code == 200, status.text
    assert status.json()["meta"]["versionId"] == "3" and status.json()["status"] == "superseded"
    archived = patch(fhir, f"DocumentReference/{rid}",
                     [{"op": "add", "path": "/extension", "value": [{"url": ARCHIVED, "valueBoolean": True}]}])
    assert archived.status_code == 200, archived.text
    stored = fhir.get(f"DocumentReference/{rid}").json()
    assert stored["meta"]["versionId"] == "4"
    assert stored["extension"] == [{"url": ARCHIVED, "valueBoolean": True}]
    assert stored["description"] == "Compte rendu" and stored["content"] == document(value)["content"]
