"""Index coverage of the searches the DMP makes most: for each DMP type, searching by patient,
identifier, code, date range and _lastUpdated compiles to a filter whose top level constrains a field
the store indexes, with an operator an index serves (equality, $in, a range).

FerretDB's SQLite backend pushes nothing but a lone ``_id`` equality down to SQLite (its explain shows
``SCAN`` for every one of these), so there the proof is this static check; on MongoDB each of these
filters is answered from the named index (README, "Deploying on MongoDB")."""
from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.compile import Compiler
from fhir_server.search.parse import parse
from fhir_server.storage.store import SEARCH_INDEXES

COMMON: dict[str, list[tuple[str, str]]] = {
    "Patient": [("identifier", "urn:oid:1.2.250.1.213.1.4.8|1234"), ("family", "dupont"), ("birthdate", "ge1970")],
    "Observation": [("patient", "Patient/1"), ("code", "http://loinc.org|2345-7"), ("date", "ge2020-01-01"),
                    ("_lastUpdated", "ge2024-01-01")],
    "Condition": [("patient", "Patient/1"), ("code", "38341003"), ("_lastUpdated", "ge2024"),
                  ("onset-date", "le2020")],
    "AllergyIntolerance": [("patient", "Patient/1"), ("code", "227493005")],
    "MedicationStatement": [("patient", "Patient/1"), ("effective", "ge2024")],
    "DocumentReference": [("patient", "Patient/1"), ("type", "http://loinc.org|11490-0"), ("date", "ge2023"),
                          ("identifier", "urn:x|1")],
    "DiagnosticReport": [("patient", "Patient/1"), ("code", "x"), ("date", "ge2023")],
    "Procedure": [("patient", "Patient/1"), ("code", "x"), ("date", "ge2023")],
    "Encounter": [("patient", "Patient/1"), ("date", "ge2023")],
    "ExplanationOfBenefit": [("patient", "Patient/1"), ("created", "ge2023")],
    "Consent": [("patient", "Patient/1")],
    "Practitioner": [("identifier", "https://rpps.esante.gouv.fr|10001")],
    "Organization": [("identifier", "https://finess.esante.gouv.fr|750000001")],
}
INDEX_OPERATORS = {"$in", "$gt", "$gte", "$lt", "$lte"}


def _top_level(condition: dict[str, Any]) -> list[tuple[str, Any]]:
    if "$and" in condition:
        return [pair for part in condition["$and"] for pair in _top_level(part)]
    return [(k, v) for k, v in condition.items() if not k.startswith("$")]


def _served(field: str, value: Any, indexed: set[str]) -> bool:
    if field not in indexed:
        return False
    if isinstance(value, dict) and str(value.get("$regex", "")).startswith("^"):
        return True  # an anchored prefix is an index range
    return not isinstance(value, dict) or bool(set(value) & INDEX_OPERATORS)


@pytest.mark.parametrize("rtype,param", [(t, p) for t, ps in COMMON.items() for p in ps],
                         ids=[f"{t}-{p[0]}" for t, ps in COMMON.items() for p in ps])
def test_common_searches_use_an_index(rtype: str, param: tuple[str, str]) -> None:
    indexed = {"_id", *SEARCH_INDEXES.get(rtype, [])}
    compiler = Compiler("http://x/fhir", lambda t, c: [], lambda t, c, r, g: [])
    compiled = compiler.compile(rtype, parse((rtype,), [param], default_count=10, max_count=10))
    pairs = _top_level(compiled.filter)
    assert any(_served(f, v, indexed) for f, v in pairs), (compiled.filter, sorted(indexed))


def test_every_indexed_field_is_a_search_parameter() -> None:
    from fhir_server.search.registry import params_for
    for rtype, fields in SEARCH_INDEXES.items():
        for field in fields:
            if field.startswith("search."):
                assert field.split(".")[1].partition(":")[0] in params_for(rtype), (rtype, field)
