"""SMART scope grammar, v1 and v2 (fhir_server/auth/scopes.py)."""
from __future__ import annotations

import pytest

from fhir_server.auth.scopes import Scope, narrower, parse_scope, parse_scopes


@pytest.mark.parametrize("text, expected", [
    ("patient/Observation.rs", Scope("patient", "Observation", "rs")),
    ("user/*.cruds", Scope("user", "*", "cruds")),
    ("system/*.rs", Scope("system", "*", "rs")),
    ("patient/*.read", Scope("patient", "*", "rs")),
    ("user/Patient.write", Scope("user", "Patient", "cud")),
    ("system/*.*", Scope("system", "*", "cruds")),
    ("patient/Observation.c", Scope("patient", "Observation", "c")),
    ("patient/Observation.rs?category=laboratory",
     Scope("patient", "Observation", "rs", (("category", "laboratory"),))),
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs&code=1",
     Scope("patient", "Observation", "rs",
           (("category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"), ("code", "1")))),
])
def test_resource_scopes_parse(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize("text", [
    "openid", "fhirUser", "launch", "launch/patient", "offline_access",
    "patient/Observation.sr",  # v2 letters out of order
    "patient/Observation.rr", "patient/Observation.x", "patient/Observation.", "admin/*.rs",
    "patient/observation.rs", "patient/*.read?category=x",  # restrictions are v2 only
    "patient/Observation.rs?",
])
def test_other_or_malformed_scopes_grant_nothing(text: str) -> None:
    assert parse_scope(text) is None


def test_parse_scopes_keeps_resource_scopes_only() -> None:
    assert [str(s) for s in parse_scopes("openid fhirUser patient/*.rs launch/patient user/Observation.cruds")] \
        == ["patient/*.rs", "user/Observation.cruds"]


@pytest.mark.parametrize("requested, registered, kept", [
    ("patient/Observation.rs openid", "patient/*.rs openid fhirUser", "patient/Observation.rs openid"),
    ("patient/*.cruds", "patient/*.rs", ""),  # no escalation of letters
    ("user/*.rs", "patient/*.cruds", ""),  # nor of level
    ("patient/Observation.rs?category=laboratory", "patient/Observation.rs", "patient/Observation.rs?category=laboratory"),
    ("patient/Observation.rs", "patient/Observation.rs?category=laboratory", ""),  # restrictions only narrow
    ("offline_access launch", "launch", "launch"),
    ("patient/*.read", "patient/*.rs", "patient/*.read"),
])
def test_a_client_never_gets_more_than_it_is_registered_for(requested: str, registered: str, kept: str) -> None:
    assert narrower(requested, registered) == kept
