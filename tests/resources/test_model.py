from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_server.resources.model import SCHEMA_ONLY, model_issues
from fhir_server.resources.schema import RESOURCE_TYPES


@pytest.mark.parametrize("rtype", sorted(RESOURCE_TYPES - SCHEMA_ONLY))
def test_every_other_type_has_an_r4b_model(rtype: str) -> None:
    assert get_fhir_model_class(rtype).__name__ == rtype


@pytest.mark.parametrize("rtype", sorted(SCHEMA_ONLY))
def test_schema_only_types_are_not_checked_by_a_model(rtype: str) -> None:
    assert model_issues({"resourceType": rtype, "foo": "bar"}) == []


@pytest.mark.parametrize("resource,location", [
    ({"resourceType": "Patient", "birthDate": "2021-02-30"}, "Patient.birthDate"),
    ({"resourceType": "Observation", "status": "final"}, "Observation.code"),
    ({"resourceType": "Encounter", "status": "planned", "class": {"code": "x"}, "period": {"start": "2020-02-30"}},
     "Encounter.period.start"),
])
def test_model_catches_what_the_schema_cannot(resource: dict, location: str) -> None:
    assert location in [e for i in model_issues(resource) for e in i.expression]


def test_model_defers_element_names_and_patterns_to_the_schema() -> None:
    ext = {"url": "http://example.org", "valueString": "x", "_valueString": {"id": "a"}}
    assert model_issues({"resourceType": "Patient", "extension": [ext]}) == []
    assert model_issues({"resourceType": "CodeSystem", "status": "active", "content": "complete",
                         "concept": [{"code": "KIDN\u00a0"}]}) == []


@pytest.mark.parametrize("odd", [{"resourceType": []}, {"resourceType": {}}, {"resourceType": 5}])
def test_odd_nested_resource_types_do_not_crash(odd: dict) -> None:
    model_issues({"resourceType": "Patient", "id": odd})
    model_issues({"resourceType": "Patient", "contained": [odd]})
