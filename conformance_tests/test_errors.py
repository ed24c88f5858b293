"""Errors (https://hl7.org/fhir/R4/http.html#Status-Codes and the status codes of each interaction): the
right 4xx, and an OperationOutcome saying what went wrong, for every kind of bad request."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .data import PLAIN, Instances, tagged
from .support import FHIR_JSON, assert_outcome, interactions


def _needs(capability: dict[str, Any], code: str) -> None:
    if code not in interactions(capability, "Patient"):
        pytest.skip(f"the CapabilityStatement does not advertise {code} for Patient")


def test_malformed_json_is_400(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#create: "400 Bad Request - resource could not be parsed"."""
    _needs(capability, "create")
    response = http.post(f"{base_url}/Patient", data=b'{"resourceType": "Patient", "gender": ',
                         headers={"Content-Type": FHIR_JSON})
    assert_outcome(response, 400)


def test_invalid_resource_is_refused(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#create: 400 when the resource "failed basic FHIR validation rules" (a birthDate that is
    not a date cannot be parsed as one), or 422 for a server that reports it as a profile violation."""
    _needs(capability, "create")
    response = http.post(f"{base_url}/Patient", json={**tagged(PLAIN["Patient"]), "birthDate": "not-a-date"},
                         headers={"Content-Type": FHIR_JSON})
    assert_outcome(response, 400, 422)


def test_wrong_resource_type_for_url(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """An Organization posted to [base]/Patient is not a Patient: 400 (or 422, or 404 as an unsupported
    type at that endpoint); never a created resource."""
    _needs(capability, "create")
    response = http.post(f"{base_url}/Patient", json=tagged(PLAIN["Organization"]), headers={"Content-Type": FHIR_JSON})
    assert_outcome(response, 400, 404, 422)


def test_update_with_mismatched_id_is_400(instances: Instances, http: requests.Session, base_url: str,
                                          capability: dict[str, Any]) -> None:
    """http.html#update: "If no id element is provided, or the id disagrees with the id in the URL, the
    server SHALL respond with an HTTP 400 Bad Request error code"."""
    _needs(capability, "update")
    created = instances.plain("Patient")
    url = f"{base_url}/Patient/{created.id}"
    wrong = {**created.stored, "id": "zzqx-another-id"}
    assert_outcome(http.put(url, json=wrong, headers={"Content-Type": FHIR_JSON}), 400)
    missing = {k: v for k, v in created.stored.items() if k != "id"}
    assert_outcome(http.put(url, json=missing, headers={"Content-Type": FHIR_JSON}), 400)


@pytest.mark.parametrize("path", ["ZzqxNotAType", "ZzqxNotAType/1"])
def test_unknown_resource_type(path: str, http: requests.Session, base_url: str) -> None:
    """http.html#create and #search: "404 Not Found - resource type not supported"; servers also answer
    400 (a request they cannot parse) or 405: all three are errors with an OperationOutcome."""
    assert_outcome(http.get(f"{base_url}/{path}"), 400, 404, 405)


def test_method_not_supported(http: requests.Session, base_url: str) -> None:
    """DELETE [base]/metadata is no FHIR interaction: 405 Method Not Allowed (RFC 9110), or 400 / 404."""
    assert_outcome(http.delete(f"{base_url}/metadata"), 400, 404, 405)


def test_patch_with_invalid_operation(instances: Instances, http: requests.Session, base_url: str,
                                      capability: dict[str, Any]) -> None:
    """http.html#patch: a patch that cannot be applied (a JSON Patch test that fails) is refused: 422
    Unprocessable Entity (or 400 / 409 / 412), and the resource is unchanged."""
    _needs(capability, "patch")
    created = instances.plain("Patient")
    response = http.patch(f"{base_url}/Patient/{created.id}",
                          json=[{"op": "test", "path": "/gender", "value": "zzqx"}, {"op": "remove", "path": "/gender"}],
                          headers={"Content-Type": "application/json-patch+json"})
    assert_outcome(response, 400, 409, 412, 422)
    assert instances.current(created).get("gender") == created.stored.get("gender")
