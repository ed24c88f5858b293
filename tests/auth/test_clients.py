"""SMART on FHIR with Python clients nobody here wrote, over real HTTP.

- ``fhirclient`` (SMART Health IT's Python client): a standalone launch, authorization code with PKCE
  S256 and ``aud``, the sign-in and consent pages driven as a person would (no browser: requests), the
  callback handed to the client, then reads and a search with its own FHIR models;
- ``fhirpy`` (Beda Software) with bearer tokens: create, read, search with parameters, update, count,
  and a patient-scoped token that sees only its patient's data.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound

from tests.auth.conftest import Smart

HEART_RATE = "http://loinc.org|8867-4"
# fhirclient is a server-side library: the app's redirect URI is never contacted, the test hands the
# URL the browser would have been sent to straight to the client.
FHIRCLIENT_REDIRECT = "http://127.0.0.1:1/fhirclient-app/callback"


def _patient(fhir: Any, family: str, given: str, birth: str) -> dict[str, Any]:
    response = fhir.post("Patient", {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
                                     "gender": "female", "birthDate": birth})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _heart_rate(fhir: Any, patient_id: str, bpm: int, when: str) -> dict[str, Any]:
    response = fhir.post("Observation", {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": when,
        "valueQuantity": {"value": bpm, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


# -- fhirclient ---------------------------------------------------------------------------------------


def test_fhirclient_standalone_launch_with_pkce_then_reads(smart: Smart) -> None:
    writer = smart.server.client()
    patient = _patient(writer, "Dubois", "Camille", "1984-07-02")
    mine = [_heart_rate(writer, patient["id"], bpm, f"2024-03-0{day}T08:00:00+01:00")
            for day, bpm in ((1, 72), (2, 88))]
    stranger = _patient(writer, "Garnier", "Inès", "1971-11-23")
    theirs = _heart_rate(writer, stranger["id"], 60, "2024-03-01T09:00:00+01:00")
    user = smart.user("patient", f"Patient/{patient['id']}", name="Camille Dubois")
    scope = "openid fhirUser launch/patient patient/*.rs"
    app_id = smart.app(FHIRCLIENT_REDIRECT, scope, name="fhirclient app")

    client = smart_client.FHIRClient(settings={"app_id": app_id, "api_base": smart.server.base,
                                               "redirect_uri": FHIRCLIENT_REDIRECT, "scope": scope})
    assert not client.ready
    # fhirclient finds the endpoints in the CapabilityStatement's SMART extension (GET /metadata, no token)
    url = client.authorize_url
    assert url.startswith(f"{smart.root}/auth/authorize?")
    query = {key: values[0] for key, values in parse_qs(urlparse(url).query).items()}
    assert query["aud"] == smart.server.base and query["client_id"] == app_id
    assert query["response_type"] == "code" and query["redirect_uri"] == FHIRCLIENT_REDIRECT
    assert set(query["scope"].split()) == set(scope.split())
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == _s256(client.server.auth.code_verifier)
    # ... and the server would have refused the client without them
    def without(name: str) -> requests.Response:
        rest = urlencode({key: value for key, value in query.items() if key != name})
        return requests.get(f"{smart.root}/auth/authorize?{rest}", allow_redirects=False, timeout=30)

    assert without("aud").status_code == 400  # an error page: never redirected
    assert "error=invalid_request" in without("code_challenge").headers["Location"]

    # the person signs in and approves; the browser would then be sent to the app's redirect URI
    approved = smart.login_and_approve(url, user)
    assert approved.status_code == 302, approved.text
    callback = approved.headers["Location"]
    assert callback.startswith(FHIRCLIENT_REDIRECT + "?")
    client.handle_callback(callback)  # checks the state, exchanges the code with its code_verifier
    assert client.ready and client.patient_id == patient["id"]
    assert set(client.launch_context["scope"].split()) == set(scope.split())
    assert client.launch_context["need_patient_banner"] is True

    read = Patient.read(patient["id"], client.server)
    assert read.id == patient["id"] and read.name[0].family == "Dubois" and read.name[0].given == ["Camille"]
    assert read.birthDate.isostring == "1984-07-02" and read.meta.versionId == "1"
    assert client.human_name(client.patient.name[0]) == "Camille Dubois"

    search = Observation.where(struct={"subject": f"Patient/{patient['id']}", "code": HEART_RATE,
                                       "_sort": "-date"})
    found = list(search.perform_resources_iter(client.server))
    assert [o.id for o in found] == [mine[1]["id"], mine[0]["id"]]
    assert [o.valueQuantity.value for o in found] == [88, 72]
    assert found[0].subject.reference == f"Patient/{patient['id']}" and found[0].valueQuantity.unit == "/min"
    # a patient token sees its patient's data only, whatever the query asks
    assert {o.id for o in Observation.where(struct={"code": HEART_RATE}).perform_resources_iter(client.server)} \
        == {o["id"] for o in mine}
    for kind, other in ((Patient, stranger), (Observation, theirs)):
        with pytest.raises(FHIRNotFoundException):
            kind.read(other["id"], client.server)


# -- fhirpy -------------------------------------------------------------------------------------------


def test_fhirpy_create_read_search_update_with_a_bearer_token(smart: Smart) -> None:
    fhir = SyncFHIRClient(smart.server.base, authorization=f"Bearer {smart.server.token('system/*.cruds')}")
    patient = fhir.resource("Patient", name=[{"family": "Moreau", "given": ["Léa"]}], gender="female",
                            birthDate="1990-04-12", identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.8",
                                                                 "value": f"fhirpy-{id(fhir)}"}])
    patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    read = fhir.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["given"] == ["Léa"] and read["birthDate"] == "1990-04-12"
    assert fhir.get("Patient", patient.id)["id"] == patient.id

    for bpm, day in ((61, 3), (95, 1), (78, 2)):
        fhir.resource("Observation", status="final", subject=patient.to_reference(),
                      code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                      effectiveDateTime=f"2024-05-0{day}T10:00:00Z",
                      valueQuantity={"value": bpm, "unit": "/min", "system": "http://unitsofmeasure.org",
                                     "code": "/min"}).save()
    beats = fhir.resources("Observation").search(subject=patient, code=HEART_RATE)
    assert [o["valueQuantity"]["value"] for o in beats.sort("-date").fetch_all()] == [61, 78, 95]
    assert [o["valueQuantity"]["value"] for o in beats.search(date__ge="2024-05-02").sort("date").fetch_all()] \
        == [78, 61]
    assert beats.count() == 3
    # accent- and case-insensitive name search, with a date prefix and the identifier
    found = fhir.resources("Patient").search(name="lea", birthdate__lt="1991",
                                             identifier=f"urn:oid:1.2.250.1.213.1.4.8|fhirpy-{id(fhir)}").get()
    assert found.id == patient.id

    patient["gender"] = "other"
    patient["name"][0]["given"] = ["Léa", "Marie"]
    patient.save()  # PUT
    assert patient["meta"]["versionId"] == "2"
    again = fhir.reference("Patient", patient.id).to_resource()
    assert again["gender"] == "other" and again["name"][0]["given"] == ["Léa", "Marie"]
    assert again["meta"]["versionId"] == "2"


def test_fhirpy_with_a_patient_token_sees_only_its_patient(smart: Smart) -> None:
    writer = smart.server.client()
    patient = _patient(writer, "Lambert", "Chloé", "2001-01-30")
    stranger = _patient(writer, "Roux", "Manon", "1965-09-14")
    mine = {_heart_rate(writer, patient["id"], bpm, "2024-06-01T08:00:00Z")["id"] for bpm in (70, 71)}
    theirs = _heart_rate(writer, stranger["id"], 99, "2024-06-01T08:00:00Z")
    # a token obtained through the authorization code flow, as a real app would
    user = smart.user("patient", f"Patient/{patient['id']}")
    token = smart.login_token(user, "openid fhirUser launch/patient patient/*.rs")
    assert token["patient"] == patient["id"]
    fhir = SyncFHIRClient(smart.server.base, authorization=f"Bearer {token['access_token']}")

    assert fhir.reference("Patient", patient["id"]).to_resource()["name"][0]["family"] == "Lambert"
    assert {o.id for o in fhir.resources("Observation").fetch_all()} == mine
    assert {o.id for o in fhir.resources("Observation").search(code=HEART_RATE).fetch_all()} == mine
    assert fhir.resources("Observation").search(subject=f"Patient/{stranger['id']}").fetch_all() == []
    assert [p.id for p in fhir.resources("Patient").fetch_all()] == [patient["id"]]
    for resource_type, other in (("Patient", stranger), ("Observation", theirs)):
        with pytest.raises(ResourceNotFound):
            fhir.reference(resource_type, other["id"]).to_resource()
    # patient/*.rs reads and searches, never writes
    with pytest.raises(ForbiddenError):
        fhir.resource("Observation", status="final", code={"text": "x"},
                      subject={"reference": f"Patient/{patient['id']}"}).save()
