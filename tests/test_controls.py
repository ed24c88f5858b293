"""The patient's controls over their DMP (fhir_server/controls.py), over HTTP with real tokens: each act
changes what professionals (or representatives) see on the very next request, and only the patient (or
a registered representative) may act, a professional only to record an authorisation."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir, LiveServer, own_server

VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def _params(**values: Any) -> dict[str, Any]:
    parameter = []
    for name, value in values.items():
        if isinstance(value, bool):
            parameter.append({"name": name, "valueBoolean": value})
        elif "/" in str(value):
            parameter.append({"name": name, "valueReference": {"reference": value}})
        elif name == "end":
            parameter.append({"name": name, "valueDate": value})
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
    related = {name: admin.post("RelatedPerson", {
        "resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{patient}"},
        "relationship": [{"coding": [{"system": ROLE, "code": code}]}], "name": [{"given": [name]}]}).json()["id"]
        for name, code in (("mum", "MTH"), ("dad", "FTH"))}
    return {"gp": gp, "other": other, "patient": patient, "document": document, "server": server, "related": related,
            "mum": server.client("patient/*.cruds", fhir_user=f"RelatedPerson/{related['mum']}", patient=patient),
            "dad": server.client("patient/*.cruds", fhir_user=f"RelatedPerson/{related['dad']}", patient=patient),
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


def _versions(admin: Fhir, ref: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in admin.get(f"{ref}/_history").json()["entry"]]


def _audited(admin: Fhir, patient: str, ref: str) -> list[str]:
    """The versions of ``ref`` the patient's audit trail records as written."""
    events = [e["resource"] for e in admin.get(f"AuditEvent?patient={patient}&_count=500").json().get("entry", [])]
    return sorted(x["what"]["reference"] for e in events if {s["code"] for s in e.get("subtype", [])} & {"create", "update"}
                  for x in e.get("entity", []) if x.get("what", {}).get("reference", "").startswith(f"{ref}/_history/"))


def test_register_and_revoke_a_representative(dmp: dict[str, Any]) -> None:
    me, mum, dad, patient = dmp["me"], dmp["mum"], dmp["dad"], dmp["patient"]
    mum_ref, dad_ref = (f"RelatedPerson/{dmp['related'][k]}" for k in ("mum", "dad"))
    admin = dmp["server"].client()
    # a token that says "representative" is not enough: nothing is registered yet
    assert _docs(mum, patient) == set() and mum.get(f"Patient/{patient}").status_code == 404
    assert mum.post(f"Patient/{patient}/$register-representative", _params(relatedPerson=mum_ref)).status_code == 403
    # the patient registers the mother, until the child's majority: she sees the record on the next request
    registered = me.post(f"Patient/{patient}/$register-representative", _params(relatedPerson=mum_ref, end="2033-03-02"))
    assert registered.status_code == 200, registered.text
    assert registered.json()["parameter"] == [{"name": "changed", "valueReference": {"reference": mum_ref}}]
    assert _docs(mum, patient) == {dmp["document"]} and mum.get(f"Patient/{patient}").status_code == 200
    stored = admin.get(mum_ref).json()
    assert {(c["system"], c["code"]) for r in stored["relationship"] for c in r["coding"]} == {(ROLE, "MTH"), (ROLE, "GUARD")}
    assert stored["active"] is True and stored["period"]["start"] and stored["period"]["end"] == "2033-03-02"
    # a registered representative acts for the patient: she registers the father, then revokes him
    assert mum.post(f"Patient/{patient}/$register-representative", _params(relatedPerson=dad_ref)).status_code == 200
    assert _docs(dad, patient) == {dmp["document"]}
    assert mum.post(f"Patient/{patient}/$revoke-representative", _params(relatedPerson=dad_ref)).status_code == 200
    assert _docs(dad, patient) == set() and dad.get(f"Patient/{patient}").status_code == 404
    assert dad.post(f"Patient/{patient}/$close", _params()).status_code == 403  # nor may he act any more
    revoked = admin.get(dad_ref).json()
    assert revoked["active"] is False and revoked["period"]["end"] >= revoked["period"]["start"]
    again = mum.post(f"Patient/{patient}/$revoke-representative", _params(relatedPerson=dad_ref))
    assert again.status_code == 200 and again.json()["parameter"] == []  # nothing in force: nothing changed
    # the patient revokes the mother: from the next request she sees nothing and may do nothing
    assert me.post(f"Patient/{patient}/$revoke-representative", _params(relatedPerson=mum_ref)).status_code == 200
    assert _docs(mum, patient) == set()
    assert mum.post(f"Patient/{patient}/$register-representative", _params(relatedPerson=mum_ref)).status_code == 403
    assert mum.get(f"Patient/{patient}/$access-history").status_code == 403
    # every act a version of the RelatedPerson, each one audited
    assert [v["meta"]["versionId"] for v in _versions(admin, dad_ref)] == ["3", "2", "1"]
    assert [v.get("active") for v in _versions(admin, mum_ref)] == [False, True, True]
    assert _audited(admin, patient, dad_ref) == [f"{dad_ref}/_history/{n}" for n in (1, 2, 3)]
    assert _audited(admin, patient, mum_ref) == [f"{mum_ref}/_history/{n}" for n in (1, 2, 3)]


def test_who_may_register_a_representative(dmp: dict[str, Any]) -> None:
    patient, server = dmp["patient"], dmp["server"]
    mum_ref = f"RelatedPerson/{dmp['related']['mum']}"
    register = _params(relatedPerson=mum_ref)
    # not a professional, not even one the patient authorised; not another patient
    assert dmp["me"].post(f"Patient/{patient}/$authorize", _params(practitioner=f"Practitioner/{dmp['gp']}")
                          ).status_code == 200
    assert dmp["doctor"].post(f"Patient/{patient}/$register-representative", register).status_code == 403
    assert dmp["doctor"].post(f"Patient/{patient}/$revoke-representative", register).status_code == 403
    stranger = server.client("patient/*.rs", fhir_user="Patient/someone-else")
    assert stranger.post(f"Patient/{patient}/$register-representative", register).status_code == 403
    # an operator may (the DMP host registers a representative on proof of parental authority)
    assert server.client().post(f"Patient/{patient}/$register-representative", register).status_code == 200
    assert _docs(dmp["mum"], patient) == {dmp["document"]}


def test_representative_bad_input(dmp: dict[str, Any], server: LiveServer) -> None:
    me, patient = dmp["me"], dmp["patient"]
    admin = server.client()
    elsewhere = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": "Ailleurs"}]}).json()["id"]
    theirs = admin.post("RelatedPerson", {"resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{elsewhere}"},
                                          "relationship": [{"coding": [{"system": ROLE, "code": "MTH"}]}]}).json()["id"]
    mum_ref = f"RelatedPerson/{dmp['related']['mum']}"
    for action in ("register-representative", "revoke-representative"):
        url = f"Patient/{patient}/${action}"
        for body, status in ((_params(), 400), (_params(relatedPerson=f"Practitioner/{dmp['gp']}"), 400),
                             (_params(relatedPerson=f"RelatedPerson/{theirs}"), 404),  # another patient's
                             (_params(relatedPerson="RelatedPerson/unknown"), 404)):
            response = me.post(url, body)
            assert response.status_code == status, (action, body, response.text)
            assert response.json()["resourceType"] == "OperationOutcome"
    for end in ("2020-01-01", "someday"):  # a registration ends in the future
        response = me.post(f"Patient/{patient}/$register-representative", _params(relatedPerson=mum_ref, end=end))
        assert response.status_code == 400 and "end" in response.text, response.text
    assert me.post("Patient/unknown/$register-representative", _params(relatedPerson=mum_ref)).status_code in (403, 404)
    assert admin.get(mum_ref).json()["meta"]["versionId"] == "1"  # nothing written
