"""Every operation the CapabilityStatement advertises (https://hl7.org/fhir/R4/operations.html), for those
the FHIR specification defines and that can be tried without context: $validate
(OperationDefinition/Resource-validate) and Patient $everything. An operation defined elsewhere (not by
http://hl7.org/fhir/OperationDefinition/...) is reported as skipped."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .data import PLAIN, Instances, tagged
from .support import FHIR_JSON, assert_status, bundle_ids, describe, json_body, resource_entry, types_with

SPEC = "http://hl7.org/fhir/OperationDefinition/"


def _outcome_errors(response: requests.Response) -> list[dict[str, Any]]:
    body = json_body(response)
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", \
        f"$validate did not answer an OperationOutcome: {describe(response)}"
    return [i for i in body.get("issue") or () if i.get("severity") in ("error", "fatal")]


def test_operation(operation: tuple[str | None, str, str], instances: Instances, http: requests.Session,
                   base_url: str, capability: dict[str, Any]) -> None:
    rtype, name, definition = operation
    if not definition.startswith(SPEC):
        pytest.skip("not testable generically: the operation is not defined by the FHIR specification")
    if definition == SPEC + "Resource-validate":
        _validate(rtype, instances, http, base_url)
    elif definition == SPEC + "Patient-everything":
        _everything(instances, http, base_url, capability)
    else:
        pytest.skip(f"no generic test for {definition} in this suite")


def _validate(rtype: str | None, instances: Instances, http: requests.Session, base_url: str) -> None:
    """Resource-validate: POST [base]/[type]/$validate with a valid resource answers an OperationOutcome
    without errors ("the return is an OperationOutcome", 200 OK when validation ran)."""
    if rtype is None:
        pytest.skip("Resource-validate is defined at type and instance level (system=false): "
                    "see test_validate_reports_errors for the type level")
    resource = instances.example(rtype)
    if resource is None:
        pytest.skip("not testable: the R4 examples package has no example of this type")
    instances.of(rtype)  # skips when the server refuses the example: it would not validate either
    response = http.post(f"{base_url}/{rtype}/$validate", json=resource, headers={"Content-Type": FHIR_JSON})
    assert_status(response, 200)
    assert not _outcome_errors(response), f"$validate reports errors in a resource it accepted: {describe(response)}"


def test_validate_reports_errors(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """Resource-validate on an invalid resource: an OperationOutcome with an error (200 when the validation
    ran; servers also answer 400, 412 or 422 with it)."""
    advertised = resource_entry(capability, "Patient").get("operation") or ()
    if not any(op.get("definition") == SPEC + "Resource-validate" for op in advertised):
        pytest.skip("the server does not advertise $validate for Patient")
    response = http.post(f"{base_url}/Patient/$validate", json={**tagged(PLAIN["Patient"]), "gender": "zzqx"},
                         headers={"Content-Type": FHIR_JSON})
    assert_status(response, 200, 400, 412, 422)
    assert _outcome_errors(response), f"$validate found no error in gender 'zzqx': {describe(response)}"


def _everything(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """Patient-everything: GET [base]/Patient/[id]/$everything answers a searchset Bundle holding the
    patient and the resources in its compartment (here an Observation about them)."""
    patient = instances.plain("Patient")
    if "Observation" not in types_with(capability, "create"):
        pytest.skip("needs create on Observation")
    observation = instances.plain("Observation")
    response = http.get(f"{base_url}/Patient/{patient.id}/$everything")
    assert_status(response, 200)
    bundle = response.json()
    assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", describe(response)
    assert patient.id in bundle_ids(bundle, "Patient"), "$everything does not hold the patient"
    assert observation.id in bundle_ids(bundle, "Observation"), "$everything does not hold the patient's Observation"
