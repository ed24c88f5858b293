"""PATCH bodies: JSON Patch (RFC 6902) and FHIRPath Patch (https://hl7.org/fhir/R4/fhirpatch.html).

The FHIRPath Patch cases follow the spec's operation table and base rules: the path must resolve to a
single element, delete is "if found", insert's index is at most the list's length, add only sets a
non-repeating element that is absent, move reorders within one list.
"""
from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from fhir_server.errors import BadRequest, Unprocessable, UnsupportedMediaType
from fhir_server.resources.patch import apply_patch

FHIR = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1",
    "meta": {"versionId": "3", "lastUpdated": "2024-05-01T10:00:00.000Z"},
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "INS-1"},
                   {"system": "urn:ipp", "value": "IPP-2"}],
    "name": [{"use": "official", "family": "Martin", "given": ["Marie", "Claire"]},
             {"use": "nickname", "given": ["Mimi"]}],
    "telecom": [{"system": "phone", "value": "0102030405"}, {"system": "email", "value": "m@example.org"}],
    "gender": "female",
    "birthDate": "1970-03-04",
    "deceasedBoolean": False,
}


def operation(kind: str, path: str, **parts: dict[str, Any]) -> dict[str, Any]:
    """One ``operation`` parameter; each keyword becomes a part (``value={"valueString": "x"}``)."""
    return {"name": "operation", "part": [{"name": "type", "valueCode": kind},
                                          {"name": "path", "valueString": path},
                                          *({"name": name, **content} for name, content in parts.items())]}


def fhirpath_patch(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"resourceType": "Parameters", "parameter": list(operations)}).encode()
    return apply_patch(resource, body, FHIR)


def json_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    return apply_patch(resource, json.dumps(operations).encode(), JSON_PATCH)


@pytest.fixture
def patient() -> dict[str, Any]:
    return copy.deepcopy(PATIENT)


# --- JSON Patch ------------------------------------------------------------------------------------

def test_json_patch_add_replace_remove(patient: dict[str, Any]) -> None:
    out = json_patch(patient, [
        {"op": "add", "path": "/active", "value": True},
        {"op": "replace", "path": "/birthDate", "value": "1971-01-01"},
        {"op": "remove", "path": "/name/1"},
        {"op": "add", "path": "/telecom/-", "value": {"system": "fax", "value": "9"}},
    ])
    assert out["active"] is True and out["birthDate"] == "1971-01-01"
    assert [n["use"] for n in out["name"]] == ["official"]
    assert out["telecom"][-1] == {"system": "fax", "value": "9"}
    assert patient == PATIENT  # the input is never changed


def test_json_patch_charset_parameter_and_exact_decimals() -> None:
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "t"}}
    body = b'[{"op": "add", "path": "/valueQuantity", "value": {"value": 1.50, "unit": "mg"}}]'
    out = apply_patch(observation, body, "application/json-patch+json; charset=utf-8")
    assert out["valueQuantity"]["value"] == Decimal("1.50") and str(out["valueQuantity"]["value"]) == "1.50"


def test_json_patch_failing_test_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="test"):
        json_patch(patient, [{"op": "test", "path": "/gender", "value": "male"},
                             {"op": "replace", "path": "/gender", "value": "other"}])
    assert json_patch(patient, [{"op": "test", "path": "/gender", "value": "female"}]) == patient


@pytest.mark.parametrize("operations", [
    [{"op": "remove", "path": "/maritalStatus"}],  # nothing there
    [{"op": "replace", "path": "/name/7/family", "value": "X"}],
    [{"op": "add", "path": "/contact/0/name", "value": {"text": "n"}}],  # no such parent
    [{"op": "move", "from": "/photo", "path": "/extra"}],
])
def test_json_patch_paths_that_do_not_exist_are_422(patient: dict[str, Any], operations: Any) -> None:
    with pytest.raises(Unprocessable):
        json_patch(patient, operations)


@pytest.mark.parametrize("operations", [
    {"op": "add", "path": "/active", "value": True},  # not an array
    [{"op": "frobnicate", "path": "/active"}],
    [{"path": "/active", "value": True}],
    [{"op": "add", "path": "/active"}],  # no value
    [{"op": "add", "path": "active", "value": True}],  # not a JSON pointer
    [1],
])
def test_malformed_json_patch_is_400(patient: dict[str, Any], operations: Any) -> None:
    with pytest.raises(BadRequest) as raised:
        json_patch(patient, operations)
    assert raised.value.status == 400


def test_body_that_is_not_json_is_400(patient: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        apply_patch(patient, b"[{", JSON_PATCH)


@pytest.mark.parametrize("operations,element", [
    ([{"op": "replace", "path": "/id", "value": "p2"}], "id"),
    ([{"op": "remove", "path": "/id"}], "id"),
    ([{"op": "replace", "path": "/resourceType", "value": "Person"}], "resourceType"),
    ([{"op": "add", "path": "", "value": {"resourceType": "Patient"}}], "id"),
    ([{"op": "replace", "path": "/meta/versionId", "value": "9"}], "meta.versionId"),
    ([{"op": "remove", "path": "/meta/lastUpdated"}], "meta.lastUpdated"),
])
def test_server_owned_elements_cannot_be_patched(patient: dict[str, Any], operations: Any, element: str) -> None:
    with pytest.raises(Unprocessable, match=element):
        json_patch(patient, operations)


def test_meta_tags_can_be_patched(patient: dict[str, Any]) -> None:
    out = json_patch(patient, [{"op": "add", "path": "/meta/tag", "value": [{"code": "x"}]}])
    assert out["meta"] == {**PATIENT["meta"], "tag": [{"code": "x"}]}


@pytest.mark.parametrize("content_type", ["application/xml-patch+xml", "text/plain", ""])
def test_other_media_types_are_415_and_name_the_supported_ones(patient: dict[str, Any], content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as raised:
        apply_patch(patient, b"[]", content_type)
    assert raised.value.status == 415
    assert JSON_PATCH in str(raised.value) and FHIR in str(raised.value)


# --- FHIRPath Patch: the five operations -----------------------------------------------------------

def test_add_a_primitive_to_the_resource(patient: dict[str, Any]) -> None:
    del patient["birthDate"]
    out = fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "birthDate"},
                                            value={"valueDate": "1930-01-01"}))
    assert out["birthDate"] == "1930-01-01"
    assert "birthDate" not in patient


def test_add_appends_to_a_repeating_element(patient: dict[str, Any]) -> None:
    telecom = {"system": "phone", "value": "0600000000", "use": "mobile"}
    out = fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "telecom"},
                                            value={"valueContactPoint": telecom}))
    assert out["telecom"] == [*PATIENT["telecom"], telecom]


def test_add_creates_a_missing_repeating_element_as_a_list(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "address"},
                                            value={"valueAddress": {"city": "Lyon"}}))
    assert out["address"] == [{"city": "Lyon"}]


def test_add_a_complex_value_given_as_parts(patient: dict[str, Any]) -> None:
    # the spec's example: a contact whose name is a HumanName part
    value = {"part": [{"name": "name", "valueHumanName": {"text": "a name"}},
                      {"name": "telecom", "part": [{"name": "system", "valueCode": "phone"},
                                                   {"name": "value", "valueString": "0102"}]},
                      {"name": "gender", "valueCode": "male"}]}
    out = fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "contact"}, value=value))
    assert out["contact"] == [{"name": {"text": "a name"}, "telecom": [{"system": "phone", "value": "0102"}],
                               "gender": "male"}]


def test_add_under_a_list_item(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("add", "Patient.name.where(use='nickname')",
                                            name={"valueString": "family"}, value={"valueString": "M."}))
    assert out["name"][1] == {"use": "nickname", "given": ["Mimi"], "family": "M."}


def test_add_a_choice_element_takes_its_type_from_the_value(patient: dict[str, Any]) -> None:
    del patient["deceasedBoolean"]
    out = fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "deceased"},
                                            value={"valueDateTime": "2020-01-01"}))
    assert out["deceasedDateTime"] == "2020-01-01" and "deceased" not in out


def test_add_an_existing_non_repeating_element_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="replace"):
        fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "birthDate"},
                                          value={"valueDate": "1930-01-01"}))
    with pytest.raises(Unprocessable):  # deceasedBoolean already there
        fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "deceased"},
                                          value={"valueDateTime": "2020"}))


def test_add_an_unknown_element_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="colour"):
        fhirpath_patch(patient, operation("add", "Patient", name={"valueString": "colour"},
                                          value={"valueString": "blue"}))


def test_insert_at_the_start_of_a_list(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("insert", "Patient.name[0].given", index={"valueInteger": 0},
                                            value={"valueString": "Anne"}))
    assert out["name"][0]["given"] == ["Anne", "Marie", "Claire"]


def test_insert_at_the_end_and_into_an_absent_list(patient: dict[str, Any]) -> None:
    identifier = {"system": "urn:x", "value": "1"}
    out = fhirpath_patch(patient,
                         operation("insert", "Patient.identifier", index={"valueInteger": 2},
                                   value={"valueIdentifier": identifier}),
                         operation("insert", "Patient.name.where(use='nickname').prefix",
                                   index={"valueInteger": 0}, value={"valueString": "Mlle"}))
    assert out["identifier"] == [*PATIENT["identifier"], identifier]
    assert out["name"][1]["prefix"] == ["Mlle"]


def test_insert_keeps_primitive_extensions_aligned(patient: dict[str, Any]) -> None:
    patient["name"][0]["_given"] = [None, {"extension": [{"url": "u", "valueString": "x"}]}]
    out = fhirpath_patch(patient, operation("insert", "Patient.name[0].given", index={"valueInteger": 1},
                                            value={"valueString": "Anne"}))
    assert out["name"][0]["given"] == ["Marie", "Anne", "Claire"]
    assert out["name"][0]["_given"] == [None, None, {"extension": [{"url": "u", "valueString": "x"}]}]


@pytest.mark.parametrize("index", [3, -1])
def test_insert_outside_the_list_is_422(patient: dict[str, Any], index: int) -> None:
    with pytest.raises(Unprocessable, match="index"):
        fhirpath_patch(patient, operation("insert", "Patient.name[0].given", index={"valueInteger": index},
                                          value={"valueString": "Anne"}))


def test_insert_into_a_non_repeating_element_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="not a repeating"):
        fhirpath_patch(patient, operation("insert", "Patient.birthDate", index={"valueInteger": 0},
                                          value={"valueDate": "1930-01-01"}))


def test_insert_without_index_is_400(patient: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="index"):
        fhirpath_patch(patient, operation("insert", "Patient.name[0].given", value={"valueString": "Anne"}))


def test_delete_an_element(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("delete", "Patient.birthDate"))
    assert "birthDate" not in out and out["gender"] == "female"


def test_delete_takes_the_primitive_extensions_along(patient: dict[str, Any]) -> None:
    patient["_birthDate"] = {"extension": [{"url": "u", "valueTime": "10:00:00"}]}
    patient["name"][0]["_given"] = [{"id": "g0"}, {"id": "g1"}]
    out = fhirpath_patch(patient, operation("delete", "Patient.birthDate"),
                         operation("delete", "Patient.name[0].given[0]"))
    assert "birthDate" not in out and "_birthDate" not in out
    assert out["name"][0]["given"] == ["Claire"] and out["name"][0]["_given"] == [{"id": "g1"}]


def test_delete_a_list_item_chosen_by_where(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("delete", "Patient.name.where(use='nickname')"))
    assert out["name"] == PATIENT["name"][:1]


def test_delete_the_last_item_removes_the_element(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("delete", "Patient.name[1].given[0]"))
    assert out["name"][1] == {"use": "nickname"}  # FHIR JSON has no empty arrays


def test_delete_the_only_child_removes_the_empty_parent(patient: dict[str, Any]) -> None:
    patient["maritalStatus"] = {"text": "married"}
    out = fhirpath_patch(patient, operation("delete", "Patient.maritalStatus.text"))
    assert "maritalStatus" not in out  # FHIR JSON has no empty objects


def test_delete_of_nothing_is_not_an_error(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("delete", "Patient.name.where(use='maiden')"),
                         operation("delete", "Patient.maritalStatus"))
    assert out == PATIENT


def test_delete_of_several_elements_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="2 elements"):
        fhirpath_patch(patient, operation("delete", "Patient.telecom"))


def test_replace_a_primitive(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}))
    assert out["birthDate"] == "1930-01-01"
    assert patient["birthDate"] == "1970-03-04"


def test_replace_inside_a_where(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("replace", "Patient.telecom.where(system='email').value",
                                            value={"valueString": "marie@example.org"}))
    assert out["telecom"] == [PATIENT["telecom"][0], {"system": "email", "value": "marie@example.org"}]


def test_replace_a_list_item_and_a_complex_element(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient,
                         operation("replace", "Patient.name.first().given.last()", value={"valueString": "C."}),
                         operation("replace", "Patient.name[1]", value={"valueHumanName": {"text": "Mimi"}}))
    assert out["name"] == [{"use": "official", "family": "Martin", "given": ["Marie", "C."]}, {"text": "Mimi"}]


def test_replace_a_choice_element_with_another_type(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("replace", "Patient.deceased", value={"valueDateTime": "2021-02-03"}))
    assert out["deceasedDateTime"] == "2021-02-03" and "deceasedBoolean" not in out
    out = fhirpath_patch(patient, operation("replace", "Patient.deceased", value={"valueBoolean": True}))
    assert out["deceasedBoolean"] is True


def test_replace_with_a_value_of_the_wrong_data_type_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="HumanName"):
        fhirpath_patch(patient, operation("replace", "Patient.name[0]", value={"valueCoding": {"code": "x"}}))


@pytest.mark.parametrize("path,what", [
    ("Patient.maritalStatus", "no element"),
    ("Patient.name.given", "3 elements"),
    ("Observation.status", "no element"),
])
def test_replace_needs_exactly_one_element(patient: dict[str, Any], path: str, what: str) -> None:
    with pytest.raises(Unprocessable, match=what):
        fhirpath_patch(patient, operation("replace", path, value={"valueString": "x"}))


def test_move_within_a_list(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient, operation("move", "Patient.identifier", source={"valueInteger": 1},
                                            destination={"valueInteger": 0}))
    assert out["identifier"] == PATIENT["identifier"][::-1]
    patient["name"][0]["given"] = ["a", "b", "c", "d"]
    out = fhirpath_patch(patient, operation("move", "Patient.name[0].given", source={"valueInteger": 0},
                                            destination={"valueInteger": 3}))
    assert out["name"][0]["given"] == ["b", "c", "d", "a"]


def test_move_outside_the_list_is_422(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="destination 2"):
        fhirpath_patch(patient, operation("move", "Patient.identifier", source={"valueInteger": 0},
                                          destination={"valueInteger": 2}))


def test_operations_apply_in_order(patient: dict[str, Any]) -> None:
    out = fhirpath_patch(patient,
                         operation("delete", "Patient.telecom.where(system='phone')"),
                         operation("replace", "Patient.telecom.value", value={"valueString": "x@y"}))
    assert out["telecom"] == [{"system": "email", "value": "x@y"}]


# --- FHIRPath Patch: paths and malformed bodies ----------------------------------------------------

def test_of_type_selects_a_choice_element() -> None:
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "t"},
                   "valueQuantity": {"value": 1, "unit": "mg"}}
    out = fhirpath_patch(observation, operation("replace", "Observation.value.ofType(Quantity).value",
                                                value={"valueDecimal": 2}))
    assert out["valueQuantity"] == {"value": 2, "unit": "mg"}
    with pytest.raises(Unprocessable, match="no element"):
        fhirpath_patch(observation, operation("replace", "Observation.value.ofType(string)",
                                              value={"valueString": "x"}))


@pytest.mark.parametrize("path", [
    "Patient.name.exists()",
    "Patient.name.select(given)",
    "Patient.name[first]",
    "Patient.name.where(use='official'",
    "Patient..name",
    "Patient.name | Patient.telecom",
    "(Patient.name)",
])
def test_unsupported_path_syntax_is_400_naming_the_expression(patient: dict[str, Any], path: str) -> None:
    with pytest.raises(BadRequest, match="unsupported FHIRPath") as raised:
        fhirpath_patch(patient, operation("delete", path))
    assert raised.value.status == 400 and path in str(raised.value)


def test_criteria_fhirpathpy_cannot_evaluate_is_400(patient: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="noSuchFunction"):
        fhirpath_patch(patient, operation("delete", "Patient.name.where(noSuchFunction())"))


@pytest.mark.parametrize("body,message", [
    ({"resourceType": "Patient"}, "Parameters"),
    ({"resourceType": "Parameters", "parameter": [{"name": "op", "part": []}]}, "operation"),
    ({"resourceType": "Parameters", "parameter": [operation("upsert", "Patient.gender")]}, "upsert"),
    ({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"}]}]}, "path"),
    ({"resourceType": "Parameters", "parameter": [operation("replace", "Patient.gender")]}, "value"),
    ({"resourceType": "Parameters", "parameter": [operation("add", "Patient", value={"valueCode": "x"})]}, "name"),
    ({"resourceType": "Parameters", "parameter": [
        operation("move", "Patient.identifier", source={"valueString": "0"}, destination={"valueInteger": 1})]},
     "source"),
    ({"resourceType": "Parameters", "parameter": [
        operation("replace", "Patient.gender", value={"name": "value"})]}, "value"),
])
def test_malformed_fhirpath_patch_is_400(patient: dict[str, Any], body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message) as raised:
        apply_patch(patient, json.dumps(body).encode(), "application/json")
    assert raised.value.status == 400


def test_errors_name_the_failing_operation(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="operation 2"):
        fhirpath_patch(patient, operation("delete", "Patient.gender"),
                       operation("replace", "Patient.maritalStatus", value={"valueString": "x"}))


@pytest.mark.parametrize("op,element", [
    (operation("replace", "Patient.id", value={"valueId": "p2"}), "id"),
    (operation("delete", "Patient.id"), "id"),
    (operation("replace", "Patient.meta.versionId", value={"valueId": "9"}), "versionId"),
    (operation("delete", "Patient.meta"), "versionId"),
])
def test_fhirpath_patch_cannot_change_server_owned_elements(patient: dict[str, Any], op: dict[str, Any],
                                                          element: str) -> None:
    with pytest.raises(Unprocessable, match=element):
        fhirpath_patch(patient, op)


def test_deleting_the_resource_itself_is_refused(patient: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable, match="resource itself"):
        fhirpath_patch(patient, operation("delete", "Patient"))


def test_patching_a_contained_resource(patient: dict[str, Any]) -> None:
    patient["contained"] = [{"resourceType": "Organization", "id": "o1", "name": "Old"}]
    out = fhirpath_patch(patient, operation("add", "Patient.contained.where(id='o1')",
                                            name={"valueString": "alias"}, value={"valueString": "HC"}))
    assert out["contained"][0] == {"resourceType": "Organization", "id": "o1", "name": "Old", "alias": ["HC"]}
