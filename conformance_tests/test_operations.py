"""Every operation the CapabilityStatement advertises (https://hl7.org/fhir/R4/operations.html), for those
the FHIR specification defines and that can be tried without context: $validate
(OperationDefinition/Resource-validate) and Patient $everything. An advertised operation is recognised
by its definition canonical, or by its name: CapabilityStatement.rest.resource.operation.name is "the
name of the operation ... used in the URL" ($validate, $everything), while its definition may be the
server's own OperationDefinition (HAPI FHIR advertises [base]/OperationDefinition/Multi-it-validate;
capabilitystatement.html allows any OperationDefinition canonical). Other operations are skipped."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .data import PLAIN, PLAIN_OBSERVATION, Instances, tagged
from .support import FHIR_JSON, assert_status, bundle_ids, describe, json_body, link, resource_entry, types_with

SPEC = "http://hl7.org/fhir/OperationDefinition/"


def _outcome_errors(response: requests.Response) -> list[dict[str, Any]]:
    body = json_body(response)
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", \
        f"$validate did not answer an OperationOutcome: {describe(response)}"
    return [i for i in body.get("issue") or () if i.get("severity") in ("error", "fatal")]


def test_operation(operation: tuple[str | None, str, str], instances: Instances, http: requests.Session,
                   base_url: str, capability: dict[str, Any]) -> None:
    rtype, name, definition = operation
    if _is_validate(name, definition):
        _validate(rtype, instances, http, base_url)
    elif rtype == "Patient" and _is_everything(name, definition):
        _everything(instances, http, base_url, capability)
    elif not definition.startswith(SPEC):
        pytest.skip("not testable generically: the operation is not defined by the FHIR specification")
    else:
        pytest.skip(f"no generic test for {definition} in this suite")


def _is_validate(name: str, definition: str) -> bool:
    return definition == SPEC + "Resource-validate" or name.lstrip("$") == "validate"


def _is_everything(name: str, definition: str) -> bool:
    return definition == SPEC + "Patient-everything" or name.lstrip("$") == "everything"


def _validate(rtype: str | None, instances: Instances, http: requests.Session, base_url: str) -> None:
    """Resource-validate: POST [base]/[type]/$validate answers an OperationOutcome ("the return is an
    OperationOutcome", 200 OK when validation ran) whose issues each have a severity and a code (1..1).
    A resource known to be valid (the suite's hand-written Patient, Practitioner, Organization,
    Observation) must get no error. The official examples are not all valid (the R4 validator finds
    errors in some: Media-example's base64 with spaces, StructureDefinition-example's kind, canonicals
    such as ``MessageDefinition/example`` that are not absolute), and the specification does not make a
    server that accepted a resource call it valid: their errors are the server's to report."""
    if rtype is None:
        pytest.skip("Resource-validate is defined at type and instance level (system=false): "
                    "see test_validate_reports_errors for the type level")
    known_valid = rtype in PLAIN or rtype == "Observation"
    if known_valid:
        resource = tagged(PLAIN_OBSERVATION if rtype == "Observation" else PLAIN[rtype])
    else:
        resource = instances.example(rtype)
        if resource is None:
            pytest.skip("not testable: the R4 examples package has no example of this type")
        instances.of(rtype)  # skips when the server refuses the example: it would not validate either
    response = http.post(f"{base_url}/{rtype}/$validate", json=resource, headers={"Content-Type": FHIR_JSON})
    assert_status(response, 200)
    errors = _outcome_errors(response)
    issues = json_body(response).get("issue") or []
    assert all(i.get("severity") and i.get("code") for i in issues), f"an issue without severity or code: {describe(response)}"
    if known_valid:
        assert not errors, f"$validate reports errors in a valid {rtype}: {describe(response)}"


def test_validate_reports_errors(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """Resource-validate on an invalid resource: an OperationOutcome with an error (200 when the validation
    ran; servers also answer 400, 412 or 422 with it)."""
    advertised = resource_entry(capability, "Patient").get("operation") or ()
    if not any(_is_validate(op.get("name", ""), op.get("definition", "")) for op in advertised):
        pytest.skip("the server does not advertise $validate for Patient")
    response = http.post(f"{base_url}/Patient/$validate", json={**tagged(PLAIN["Patient"]), "gender": "zzqx"},
                         headers={"Content-Type": FHIR_JSON})
    assert_status(response, 200, 400, 412, 422)
    assert _outcome_errors(response), f"$validate found no error in gender 'zzqx': {describe(response)}"


MAX_PAGES = 100  # bounds a server whose next links never end


def _everything(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """Patient-everything: GET [base]/Patient/[id]/$everything answers a searchset Bundle holding the
    patient and the resources in its compartment (here an Observation about them). The result may come
    in pages: the operation's comment says the server returns the entire result set in one bundle
    "unless the client requests otherwise" (descriptive, no SHALL), and http.html#paging lets a server
    page any searchset; so the pages are followed by their next links before looking for the two."""
    patient = instances.plain("Patient")
    if "Observation" not in types_with(capability, "create"):
        pytest.skip("needs create on Observation")
    observation = instances.plain("Observation")
    url: str | None = f"{base_url}/Patient/{patient.id}/$everything"
    ids: dict[str, list[str]] = {"Patient": [], "Observation": []}
    pages = 0
    while url and pages < MAX_PAGES and not (patient.id in ids["Patient"] and observation.id in ids["Observation"]):
        response = http.get(url)
        assert_status(response, 200)
        bundle = response.json()
        assert bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", describe(response)
        for rtype, found in ids.items():
            found += bundle_ids(bundle, rtype)
        url, pages = link(bundle, "next"), pages + 1
    read = f"(read {pages} page{'s' if pages > 1 else ''}{', more left unread' if url else ''})"
    assert patient.id in ids["Patient"], f"$everything does not hold the patient {read}"
    assert observation.id in ids["Observation"], f"$everything does not hold the patient's Observation {read}"
