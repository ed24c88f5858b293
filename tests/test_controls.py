"""The patient's controls over their DMP (fhir_server/controls.py), over HTTP with real tokens: each act
changes what professionals see on the very next request, and only the patient (or representative)
may act, a professional only to record an authorisation."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir, LiveServer, own_server

VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"


def _params(**values: Any) -> dict[str, Any]:
    parameter = []
    for name, value in values.items():
        if isinstance(value, bool):
            parameter.append({"name": name, "valueBoolean": value})
        elif "/" in str(value):
            parameter.append({"name": name, "valueReference": {"reference": value}})
        else:
            parameter.append({"name": name, "valueCode": value})
    return {"resourceType": "Parameters", "parameter": parameter}


def _docs(client: Fhir, patient: str) -> set[str]:
    return {e["resource"]["id"] for e in client.get(f"DocumentReference?patient={patient}").json().get("entry", [])}


@pytest.fixture(scope="module")
def server(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server and database of this module's own: the rules are tested on a small DMP (on FerretDB the
    consent lookups scan whole collections, which the shared test database makes large)."""
    yield from own_server(ferretdb, tmp_path_factory, "fhir_controls")


@pytest.fixture()
def dmp(server: LiveServer) -> dict[str, Any]:
    admin = server.client()
    gp = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Généraliste"}]}).json()["id"]
    other = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Autre"}]}).json()["id"]
    patient = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": "Contrôle"}]}).json()["id"]
    document = admin.post("DocumentReference", {
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{patient}"},
        "author": [{"reference": f"Practitioner/{other}"}], "date": "2026-06-01T10:00:00Z",
        "content": [{"attachment": {"contentType": "text/plain", "data": "Q1I="}}]}).json()["id"]
    return {"gp": gp, "other": other, "patient": patient, "document": document, "server": server,
            "me": server.client("patient/*.rs", fhir_user=f"Patient/{patient}"),
            "doctor": server.client("user/*.rs", fhir_user=f"Practitioner/{gp}"),
            "btg": server.client("user/*.rs", fhir_user=f"Practitioner/{gp}", purpose="BTG")}


def test_authorise_block_unblock_revoke(dmp: dict[str, Any]) -> None:
    me, doctor, patient = dmp["me"], dmp["doctor"], dmp["patient"]
    gp = f"Practitioner/{dmp['gp']}"
    assert _docs(doctor, patient) == set()
    assert me.post(f"Patient/{patient}/$authorize", _params(practitioner=gp)).status_code == 200
    assert _docs(doctor, patient) == {dmp["document"]}
    assert me.post(f"Patient/{patient}/$block", _params(practitioner=gp)).status_code == 200
    assert _docs(doctor, patient) == set()
    assert _docs(dmp["btg"], patient) == set()  # a block beats emergency access (rule 2)
    assert me.post(f"Patient/{patient}/$unblock", _params(practitioner=gp)).status_code == 200
    assert _docs(doctor, patient) == set()  # after unblocking, a new authorisation is needed
    assert me.post(f"Patient/{patient}/$authorize", _params(practitioner=gp)).status_code == 200
    assert _docs(doctor, patient) == {dmp["document"]}
    assert me.post(f"Patient/{patient}/$revoke", _params(practitioner=gp)).status_code == 200
    assert _docs(doctor, patient) == set()
    history = dmp["server"].client().get(f"Consent?patient={patient}&status=inactive").json()
    assert len(history["entry"]) >= 3  # every act kept, versioned


def test_mask_and_emergency_settings(dmp: dict[str, Any]) -> None:
    me, doctor, patient, document = dmp["me"], dmp["doctor"], dmp["patient"], dmp["document"]
    gp = f"Practitioner/{dmp['gp']}"
    me.post(f"Patient/{patient}/$authorize", _params(practitioner=gp))
    masked = me.post(f"Patient/{patient}/$mask", _params(document=f"DocumentReference/{document}"))
    assert masked.status_code == 200, masked.text
    assert _docs(doctor, patient) == set() and _docs(me, patient) == {document}
    stored = dmp["server"].client().get(f"DocumentReference/{document}").json()
    assert {c["code"] for c in stored["meta"]["security"]} == {"MASQUE_PS"}
    assert _docs(dmp["btg"], patient) == set()  # masked in emergency: not unless allowed
    assert me.post(f"Patient/{patient}/$emergency", _params(mode="MASKED", allow=True)).status_code == 200
    assert _docs(dmp["btg"], patient) == {document}
    assert me.post(f"Patient/{patient}/$emergency", _params(mode="BTG", allow=False)).status_code == 200
    assert _docs(dmp["btg"], patient) == set()
    assert me.post(f"Patient/{patient}/$emergency", _params(mode="BTG", allow=True)).status_code == 200
    assert _docs(dmp["btg"], patient) == {document}
    assert me.post(f"Patient/{patient}/$unmask", _params(document=f"DocumentReference/{document}")).status_code == 200
    assert _docs(doctor, patient) == {document}


def test_close_and_reopen(dmp: dict[str, Any]) -> None:
    me, doctor, patient = dmp["me"], dmp["doctor"], dmp["patient"]
    me.post(f"Patient/{patient}/$authorize", _params(practitioner=f"Practitioner/{dmp['gp']}"))
    assert me.post(f"Patient/{patient}/$close", _params()).status_code == 200
    assert _docs(doctor, patient) == set() and _docs(me, patient) == {dmp["document"]}
    feeder = dmp["server"].client("user/*.cruds", fhir_user=f"Practitioner/{dmp['gp']}")
    refused = feeder.post("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                          "subject": {"reference": f"Patient/{patient}"}})
    assert refused.status_code == 409
    assert me.post(f"Patient/{patient}/$reopen", _params()).status_code == 200
    assert _docs(doctor, patient) == {dmp["document"]}


def test_who_may_act(dmp: dict[str, Any]) -> None:
    patient, gp = dmp["patient"], f"Practitioner/{dmp['gp']}"
    doctor = dmp["doctor"]
    assert doctor.post(f"Patient/{patient}/$block", _params(practitioner=gp)).status_code == 403
    assert doctor.post(f"Patient/{patient}/$emergency", _params(mode="BTG", allow=False)).status_code == 403
    assert doctor.post(f"Patient/{patient}/$authorize", _params(practitioner=gp)).status_code == 200  # informed
    stranger = dmp["server"].client("patient/*.rs", fhir_user="Patient/someone-else")
    assert stranger.post(f"Patient/{patient}/$close", _params()).status_code == 403
    assert dmp["me"].post(f"Patient/{patient}/$block", _params(practitioner="Organization/x")).status_code == 400
    assert dmp["me"].post(f"Patient/{patient}/$emergency", _params(mode="SOMETIMES", allow=True)).status_code == 400
