"""What scopes allow, as a query clause and per resource (fhir_server/auth/access.py)."""
from __future__ import annotations

from typing import Any

import pytest

from fhir_server.auth.access import NOTHING, allows, narrowing, permits, require
from fhir_server.auth.scopes import parse_scopes
from fhir_server.context import Identity
from fhir_server.errors import Forbidden

BASE = "http://example.org/fhir"


def who(scope: str, patient: str | None = None, kind: str = "patient") -> Identity:
    return Identity(kind, "app", parse_scopes(scope), patient=patient)


def lab(patient: str, category: str = "laboratory") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o", "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}], "code": {"text": "x"}}


def test_interactions_need_their_letter() -> None:
    reader = who("patient/Observation.rs", "1")
    require(reader, "read", "Observation")
    require(reader, "search-type", "Observation")
    for interaction in ("create", "update", "delete"):
        with pytest.raises(Forbidden):
            require(reader, interaction, "Observation")
    with pytest.raises(Forbidden):
        require(reader, "read", "Condition")
    assert allows(who("user/*.cruds"), "d", "Condition")


def test_patient_scopes_narrow_compartment_types_to_the_patient() -> None:
    assert narrowing(who("patient/*.rs", "1"), "Observation", "s", BASE) == {"compartments": "Patient/1"}
    assert narrowing(who("patient/*.rs", "1"), "Patient", "s", BASE) == {"compartments": "Patient/1"}
    # outside the Patient compartment: no narrowing (a Practitioner is not patient data)
    assert narrowing(who("patient/*.rs", "1"), "Practitioner", "s", BASE) is None
    # a patient scope without a patient in context sees nothing of the compartment
    assert narrowing(who("patient/*.rs", None), "Observation", "s", BASE) == NOTHING
    # no scope at all for the type
    assert narrowing(who("patient/Observation.rs", "1"), "Condition", "s", BASE) == NOTHING
    # user and system scopes are not narrowed by scopes (consent narrows them)
    assert narrowing(who("user/*.rs", kind="practitioner"), "Observation", "s", BASE) is None


def test_v2_restrictions_become_clauses_and_per_resource_checks() -> None:
    caller = who("patient/Observation.rs?category=laboratory", "1")
    clause = narrowing(caller, "Observation", "s", BASE)
    assert clause is not None and clause["$and"][0] == {"compartments": "Patient/1"}
    assert "search.category" in str(clause)
    yes, no = lab("1"), lab("1", "vital-signs")
    assert permits(caller, "Observation", "s", lambda: ["Patient/1"], lambda: yes, BASE)
    assert not permits(caller, "Observation", "s", lambda: ["Patient/1"], lambda: no, BASE)
    assert not permits(caller, "Observation", "s", lambda: ["Patient/2"], lambda: lab("2"), BASE)
    # an unrestricted scope for the same type lifts the restriction
    both = who("patient/Observation.rs?category=laboratory patient/Observation.rs", "1")
    assert narrowing(both, "Observation", "s", BASE) == {"compartments": "Patient/1"}
    assert permits(both, "Observation", "s", lambda: ["Patient/1"], lambda: no, BASE)


def test_a_restriction_the_server_cannot_apply_grants_nothing() -> None:
    caller = who("patient/Observation.rs?unknown-parameter=1", "1")
    assert narrowing(caller, "Observation", "s", BASE) == NOTHING
    assert not permits(caller, "Observation", "s", lambda: ["Patient/1"], lambda: lab("1"), BASE)
