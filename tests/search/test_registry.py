"""The search registry's fast path: a plain JSON walk for the search expressions that are paths of
element names must give exactly what FHIRPath gives, on every official R4 example."""
from __future__ import annotations

import json
from typing import Any

import pytest
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from fhir_server.search.index import ENTRIES, _unwrap
from fhir_server.search.registry import _lenient, _walker, params_for, split_union
from tests.conftest import EXAMPLES


def _examples() -> list[dict[str, Any]]:
    found = []
    for path in sorted(EXAMPLES.glob("*.json")):
        resource = json.loads(path.read_bytes())
        if isinstance(resource, dict) and resource.get("resourceType") and path.stat().st_size < 500_000:
            found.append(resource)
    return found


def _entries(kind: str, values: list[Any]) -> list[Any]:
    return [e for v in values for e in ENTRIES[kind](_unwrap(v))]


def test_the_walk_gives_what_fhirpath_gives_on_every_official_example() -> None:
    examples = _examples()
    assert len(examples) > 2000
    compared = walked = 0
    for resource in examples:
        for code, param in params_for(resource["resourceType"]).items():
            if code.startswith("_") or param.type == "composite":
                continue
            for member in split_union(_lenient(param.expression)):
                walk = _walker(member)
                if walk is None:
                    continue
                expected = _entries(param.type, fhirpath_compile(member, models["r4"])(resource))
                assert _entries(param.type, walk(resource)) == expected, (resource["resourceType"], resource.get("id"),
                                                                         member)
                compared += 1
                walked += bool(expected)
    assert compared > 50_000 and walked > 5_000, (compared, walked)


@pytest.mark.parametrize("expression", ["Observation.value.where(x)", "Patient.name | Patient.telecom",
                                        "Patient.nosuchelement", "(Observation.value as Quantity)"])
def test_anything_but_a_path_of_known_elements_is_left_to_fhirpath(expression: str) -> None:
    assert _walker(expression) is None
