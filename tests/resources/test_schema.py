from __future__ import annotations

import pytest

from fhir_server.resources.schema import RESOURCE_TYPES, fhirpath, schema_issues


def test_all_r4_resource_types_are_known() -> None:
    assert len(RESOURCE_TYPES) == 146
    assert {"Patient", "DocumentReference", "Consent", "AuditEvent", "Bundle", "Parameters"} <= RESOURCE_TYPES


@pytest.mark.parametrize("resource,code,location", [
    ({"resourceType": "Patient", "active": "yes"}, "structure", "Patient.active"),
    ({"resourceType": "Patient", "gender": "femme"}, "code-invalid", "Patient.gender"),
    ({"resourceType": "Patient", "birthDate": "04/03/2020"}, "value", "Patient.birthDate"),
    ({"resourceType": "Patient", "name": [{"given": "Marie"}]}, "structure", "Patient.name[0].given"),
    ({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "active": 1}]}, "structure",
     "Patient.contained[0].active"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
     "structure", "Bundle.entry[0].resource"),
    ({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "x": 1}}]},
     "structure", "Bundle.entry[0].resource.x"),
    ({"resourceType": "Parameters", "parameter": [{"name": "p", "resource": {"resourceType": "Patient", "gender": "f"}}]},
     "code-invalid", "Parameters.parameter[0].resource.gender"),
])
def test_schema_violations_are_located(resource: dict, code: str, location: str) -> None:
    issues = schema_issues(resource)
    assert (code, location) in [(i.code, i.expression[0]) for i in issues], issues


@pytest.mark.parametrize("resource", [
    {"resourceType": "Patient", "name": [{"text": "Sean Stover, BS,\u00a0DVM"}]},  # XSD \\s excludes U+00A0
    {"resourceType": "CapabilityStatement", "status": "active", "date": "2020", "kind": "instance",
     "fhirVersion": "4.0.1", "format": ["json"]},
    {"resourceType": "StructureDefinition", "url": "http://x", "name": "X", "status": "draft", "kind": "resource",
     "abstract": False, "type": "Patient", "baseDefinition": "http://y", "_baseDefinition": {"id": "b"}},
])
def test_errata_make_valid_resources_pass(resource: dict) -> None:
    assert schema_issues(resource) == []


def test_a_mistyped_value_reports_its_type_not_its_pattern() -> None:
    issues = schema_issues({"resourceType": "Patient", "active": "yes"})
    assert [i.diagnostics for i in issues] == ["'yes' is not of type 'boolean'"]


def test_fhirpath() -> None:
    assert fhirpath("Patient", ["name", 0, "given", 1]) == "Patient.name[0].given[1]"
