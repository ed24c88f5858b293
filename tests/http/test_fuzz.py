"""Property: whatever JSON a client sends, the server answers 201 or a 4xx OperationOutcome, never a 5xx,
and it stores only what it accepted."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Fhir

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
ELEMENTS = ["id", "meta", "active", "gender", "birthDate", "name", "telecom", "address", "identifier",
            "contained", "extension", "_birthDate", "deceasedBoolean", "link", "$where", "a.b", ""]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(ELEMENTS), json_values, max_size=5))
def test_random_patients_never_cause_a_5xx(fhir: Fhir, fields: dict[str, Any]) -> None:
    response = fhir.post("Patient", {"resourceType": "Patient", **fields})
    assert response.status_code in (201, 400), response.text
    body = response.json()
    if response.status_code == 201:
        assert fhir.get(f"Patient/{body['id']}").json() == body
    else:
        assert body["resourceType"] == "OperationOutcome"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_random_bytes_never_cause_a_5xx(fhir: Fhir, body: bytes) -> None:
    response = fhir.post("Patient", body)
    assert response.status_code in (201, 400), response.text
