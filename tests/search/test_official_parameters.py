"""Every official R4 SearchParameter of the DMP resource types finds an official example that has a
value for it, and everything it returns satisfies the same query in memory (search/match.py)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from fhir_server.search.index import Entry, entries_of
from fhir_server.search.match import matches
from fhir_server.search.parse import parse
from fhir_server.search.registry import params_for
from tests.conftest import EXAMPLES, Fhir

DMP_TYPES = ("Patient", "Practitioner", "PractitionerRole", "Organization", "AllergyIntolerance",
             "MedicationStatement", "Medication", "Condition", "Procedure", "Observation", "DiagnosticReport",
             "DocumentReference", "List", "Composition", "Consent", "AuditEvent", "ExplanationOfBenefit", "Encounter")


# Values no official example carries, so that every parameter is exercised.
_GENETICS = "http://hl7.org/fhir/StructureDefinition/observation-genetics"
SUPPLEMENTS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "sup-patient", "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName",
         "valueString": "Lefèvre"}]},
    {"resourceType": "Medication", "id": "sup-medication", "identifier": [{"system": "urn:oid:1.2.250.1.213.2.3.1", "value": "3400930000000"}],
     "manufacturer": {"reference": "Organization/sup-lab"}, "ingredient": [{"itemReference": {"reference": "Substance/sup-substance"}}]},
    {"resourceType": "MedicationStatement", "id": "sup-medication-statement", "status": "active",
     "medicationReference": {"reference": "Medication/sup-medication"}, "subject": {"reference": "Patient/sup-patient"}},
    {"resourceType": "Observation", "id": "sup-genetics", "status": "final", "code": {"text": "variant"},
     "extension": [{"url": f"{_GENETICS}AminoAcidChangeName", "valueString": "p.Val600Glu"},
                   {"url": f"{_GENETICS}DnaVariant", "valueString": "c.1799T>A"},
                   {"url": f"{_GENETICS}Gene", "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": "1097"}]}}],
     "component": [{"code": {"text": "part"}, "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]}}]},
    {"resourceType": "Observation", "id": "sup-date", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "11778-8"}]},
     "valueDateTime": "2021-05-04"},
    {"resourceType": "Observation", "id": "sup-string", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8251-1"}]},
     "valueString": "Selles normales"},
    {"resourceType": "DiagnosticReport", "id": "sup-report", "status": "final", "code": {"text": "CR"},
     "encounter": {"reference": "Encounter/sup-encounter"}, "resultsInterpreter": [{"reference": "Practitioner/sup-doctor"}],
     "specimen": [{"reference": "Specimen/sup-specimen"}],
     "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/DiagnosticReport-geneticsAssessedCondition",
                    "valueReference": {"reference": "Condition/sup-condition"}}]},
    {"resourceType": "DocumentReference", "id": "sup-document", "status": "current",
     "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/sup-old"}}],
     "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/sup-binary"}}]},
    {"resourceType": "Composition", "id": "sup-composition", "status": "final", "type": {"text": "VSM"},
     "date": "2021-01-01", "author": [{"reference": "Practitioner/sup-doctor"}], "title": "VSM",
     "relatesTo": [{"code": "replaces", "targetIdentifier": {"system": "urn:test", "value": "old-vsm"}},
                   {"code": "appends", "targetReference": {"reference": "Composition/sup-old"}}]},
    {"resourceType": "Consent", "id": "sup-consent", "status": "active", "scope": {"text": "patient-privacy"},
     "category": [{"text": "DMP"}], "sourceReference": {"reference": "DocumentReference/sup-document"}},
    {"resourceType": "Encounter", "id": "sup-encounter", "status": "finished", "class": {"code": "IMP"},
     "location": [{"location": {"reference": "Location/sup-ward"}}], "reasonReference": [{"reference": "Condition/sup-condition"}]},
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def _token(entry: Entry) -> tuple[str | None, str]:
    if entry.get("c") is None:
        return "text", _escape(entry["t"])
    code = _escape(entry["c"])
    return None, f"{_escape(entry['s'])}|{code}" if entry.get("s") else code


def _date(value: datetime) -> str:
    return "ge" + value.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def query_for(kind: str, entry: Entry) -> tuple[str | None, str] | None:
    """A (modifier, value) that the entry satisfies."""
    if kind == "string":
        return None, _escape(entry["x"])
    if kind == "token":
        return _token(entry)
    if kind == "reference":
        if "r" in entry:
            return None, _escape(entry["r"])
        if "u" in entry:
            return None, _escape(entry["u"])
        return "identifier", _token(entry)[1]
    if kind == "date":
        return None, _date(entry["lo"])
    if kind in ("number", "quantity"):
        return None, repr(entry["v"]).removesuffix(".0")
    if kind == "uri":
        return None, _escape(entry["u"])
    return None


def _cases() -> list[tuple[str, str]]:
    return [(t, code) for t in DMP_TYPES for code, p in params_for(t).items() if not code.startswith("_")]


@pytest.fixture(scope="module")
def fhir(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server of its own, without the audit trail: the AuditEvent examples must not drown among the
    AuditEvents the other tests' requests write."""
    from tests.conftest import own_server
    for live in own_server(ferretdb, tmp_path_factory, "fhir_official_parameters", FHIR_AUDIT="off"):
        yield live.client()


@pytest.fixture(scope="module")
def examples(fhir: Fhir) -> dict[str, list[dict[str, Any]]]:
    loaded: dict[str, list[dict[str, Any]]] = {t: [] for t in DMP_TYPES}
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name.split("-")[0] not in DMP_TYPES:
            continue
        resource = json.loads(path.read_bytes())
        if resource.get("resourceType") not in DMP_TYPES or "id" not in resource:
            continue
        response = fhir.put(f"{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code in (200, 201), response.text
        loaded[resource["resourceType"]].append(response.json())
    for resource in SUPPLEMENTS:
        response = fhir.put(f"{resource['resourceType']}/{resource['id']}", resource)
        assert response.status_code in (200, 201), response.text
        loaded[resource["resourceType"]].append(response.json())
    return loaded


@pytest.mark.parametrize("rtype,code", _cases(), ids=[f"{t}-{c}" for t, c in _cases()])
def test_parameter_finds_an_example(fhir: Fhir, examples: dict[str, list[dict[str, Any]]], rtype: str,
                                    code: str) -> None:
    param = params_for(rtype)[code]
    holder = next((r for r in examples[rtype] if entries_of(r).get(code)), None)
    assert holder is not None, f"no {rtype} example or supplement has a value for '{code}'"
    entry = entries_of(holder)[code][0]
    if param.type == "composite":
        parts = [query_for(c.type, entry[str(i)]) for i, c in enumerate(param.components)]
        assert all(p is not None and p[0] is None for p in parts), parts
        modifier, value = None, "$".join(p[1] for p in parts if p)
    else:
        found = query_for(param.type, entry)
        assert found is not None
        modifier, value = found
    name = f"{code}:{modifier}" if modifier else code
    bundle = fhir.get(rtype, params={name: value, "_count": "500"}).json()
    assert bundle.get("resourceType") == "Bundle", bundle
    returned = {e["resource"]["id"]: e["resource"] for e in bundle.get("entry", [])}
    assert holder["id"] in returned, f"{rtype}?{name}={value} did not find {holder['id']}"
    query = parse((rtype,), [(name, value)], default_count=500, max_count=500)
    for resource in returned.values():
        assert matches(query, resource, base_url=fhir.base), f"{resource['id']} does not satisfy {name}={value}"
