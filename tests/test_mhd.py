"""Documents exchange (fhir_server/mhd.py, IHE MHD as profiled by ANS PDSm), over HTTP with real tokens:
an EHR submits a discharge letter with ITI-65, the treating physician finds it with ITI-67 and gets the
identical bytes with ITI-68, the document is replaced, masked, patched and deleted under the DMP's rules."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest

from fhir_server import mhd
from fhir_server.errors import PayloadTooLarge
from tests.conftest import Fhir, LiveServer, assert_outcome, own_server
from tests.documents_fixtures import PDF, provide_bundle

INS = "urn:oid:1.2.250.1.213.1.4.8"
MHD_LISTS = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture(scope="module")
def server(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from own_server(ferretdb, tmp_path_factory, "fhir_mhd")


@pytest.fixture()
def dmp(server: LiveServer) -> dict[str, Any]:
    admin = server.client()
    gp = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Traitant"}]}).json()["id"]
    other = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Autre"}]}).json()["id"]
    ins = os.urandom(6).hex()
    patient = admin.post("Patient", {"resourceType": "Patient", "identifier": [{"system": INS, "value": ins}],
                                     "generalPractitioner": [{"reference": f"Practitioner/{gp}"}]}).json()["id"]
    return {"admin": admin, "patient": patient, "ins": ins, "gp": gp, "server": server,
            "ehr": server.client("system/*.cruds", operator=False, client_id="ehr-hospital"),
            "doctor": server.client("user/*.cruds", fhir_user=f"Practitioner/{gp}"),
            "stranger": server.client("user/*.cruds", fhir_user=f"Practitioner/{other}"),
            "me": server.client("patient/*.cruds", fhir_user=f"Patient/{patient}")}


def _submit(client: Fhir, bundle: dict[str, Any]) -> dict[str, Any]:
    response = client.post("", bundle)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created"] * len(bundle["entry"]), statuses
    return response.json()


def _documents(client: Fhir, query: str) -> list[dict[str, Any]]:
    found = client.get(f"DocumentReference?{query}")
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def _retrieve(client: Fhir, document: dict[str, Any], accept: str = "application/pdf") -> Any:
    return client.get(document["content"][0]["attachment"]["url"], headers={"Accept": accept})


def test_submit_find_retrieve_replace(dmp: dict[str, Any]) -> None:
    ehr, doctor, patient = dmp["ehr"], dmp["doctor"], dmp["patient"]
    letter = PDF + os.urandom(3 << 20)  # a few MB: stored in chunks, streamed back
    _submit(ehr, provide_bundle(f"Patient/{patient}", payloads=(letter,)))

    # ITI-66: the submission set; ITI-67 by the patient's INS (GET, and POST _search), then ITI-68:
    # the identical bytes, their type and length
    sets = doctor.get(f"List?patient={patient}&code={MHD_LISTS}|submissionset").json()
    assert [e["resource"]["mode"] for e in sets["entry"]] == ["working"]
    [document] = _documents(doctor, f"patient.identifier={INS}|{dmp['ins']}")
    posted = doctor.post("DocumentReference/_search", f"patient={patient}",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == [document["id"]]
    assert document["content"][0]["attachment"]["url"].startswith("Binary/")
    raw = _retrieve(doctor, document)
    assert raw.status_code == 200, raw.text
    assert raw.content == letter
    assert raw.headers["Content-Type"] == "application/pdf"
    assert raw.headers["Content-Length"] == str(len(letter))
    assert "sandbox" in raw.headers["Content-Security-Policy"]
    binary = _retrieve(doctor, document, "application/fhir+json").json()  # or as a FHIR Binary
    assert binary["resourceType"] == "Binary" and len(binary["data"]) == (len(letter) + 2) // 3 * 4
    assert binary["securityContext"]["reference"] == f"DocumentReference/{document['id']}"

    # the replacement supersedes the old document in the same transaction
    _submit(ehr, provide_bundle(f"Patient/{patient}", payloads=(b"%PDF-1.4 corrected",),
                                replaces=f"DocumentReference/{document['id']}"))
    current = _documents(doctor, f"patient={patient}&status=current")
    assert [d["id"] for d in current] != [document["id"]] and len(current) == 1
    assert current[0]["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{document['id']}"
    old = doctor.get(f"DocumentReference/{document['id']}").json()
    assert old["status"] == "superseded" and old["meta"]["versionId"] == "2"
    assert _retrieve(doctor, current[0]).content == b"%PDF-1.4 corrected"


def test_access_is_decided_again_at_retrieval(dmp: dict[str, Any]) -> None:
    ehr, doctor, me, patient = dmp["ehr"], dmp["doctor"], dmp["me"], dmp["patient"]
    _submit(ehr, provide_bundle(f"Patient/{patient}"))
    [document] = _documents(doctor, f"patient={patient}")
    assert _retrieve(doctor, document).content == PDF
    assert _retrieve(dmp["stranger"], document).status_code == 404  # not in their care: no bytes either
    masked = me.post(f"Patient/{patient}/$mask", {"resourceType": "Parameters", "parameter": [
        {"name": "document", "valueReference": {"reference": f"DocumentReference/{document['id']}"}}]})
    assert masked.status_code == 200, masked.text
    # the URL the doctor obtained before the mask no longer gives the bytes, nor the Binary
    assert _retrieve(doctor, document).status_code == 404
    assert _retrieve(doctor, document, "application/fhir+json").status_code == 404
    assert _retrieve(me, document).content == PDF  # the patient still reads their own document


def test_an_invalid_provide_bundle_stores_nothing(dmp: dict[str, Any]) -> None:
    admin, patient = dmp["admin"], dmp["patient"]
    bundle = provide_bundle(f"Patient/{patient}", payloads=(PDF, PDF + b"2"))
    bundle["entry"][2]["resource"]["content"][0]["attachment"]["size"] += 1  # the second document lies
    refused = assert_outcome(dmp["ehr"].post("", bundle), 422, "value")
    assert any("Bundle.entry[2]" in e for i in refused["issue"] for e in i.get("expression", [])), refused
    for rtype in ("DocumentReference", "List"):
        assert admin.get(f"{rtype}?patient={patient}&_summary=count").json()["total"] == 0
    assert admin.get("Binary?_summary=count&_lastUpdated=gt2000-01-01").json()["total"] == \
        admin.get("Binary?_summary=count").json()["total"]


def test_a_document_search_names_the_patient(dmp: dict[str, Any]) -> None:
    assert_outcome(dmp["doctor"].get("DocumentReference?status=current"), 400, "invalid")
    assert dmp["doctor"].get(f"DocumentReference?subject=Patient/{dmp['patient']}").status_code == 200


def test_metadata_update_by_identifier(dmp: dict[str, Any]) -> None:
    ehr, patient = dmp["ehr"], dmp["patient"]
    _submit(ehr, provide_bundle(f"Patient/{patient}"))
    [document] = _documents(ehr, f"patient={patient}")
    identifier = document["masterIdentifier"]
    criteria = f"DocumentReference?identifier={identifier['system']}|{identifier['value']}"
    archive = [{"op": "add", "path": "/extension", "value": [{"url": mhd.ARCHIVED, "valueBoolean": True}]},
               {"op": "replace", "path": "/securityLabel/0/coding/0/code", "value": "R"}]
    patched = ehr.request("PATCH", criteria, json.dumps(archive), headers=JSON_PATCH)
    assert patched.status_code == 200, patched.text
    assert patched.json()["meta"]["versionId"] == "2" and patched.json()["securityLabel"][0]["coding"][0]["code"] == "R"
    content = [{"op": "add", "path": "/description", "value": "rewritten"}]
    assert_outcome(ehr.request("PATCH", criteria, json.dumps(content), headers=JSON_PATCH), 422, "processing")
    assert ehr.get(f"DocumentReference/{document['id']}").json()["meta"]["versionId"] == "2"


def test_only_the_author_deletes_a_document(dmp: dict[str, Any]) -> None:
    admin, patient, gp = dmp["admin"], dmp["patient"], dmp["gp"]
    document = admin.post("DocumentReference", {
        "resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{patient}"},
        "author": [{"reference": f"Practitioner/{gp}"}],
        "content": [{"attachment": {"contentType": "text/plain", "data": "Q1I="}}]}).json()["id"]
    assert_outcome(dmp["me"].delete(f"DocumentReference/{document}"), 403, "forbidden")
    assert dmp["doctor"].delete(f"DocumentReference/{document}").status_code == 200
    assert admin.get(f"DocumentReference/{document}").status_code == 410


def test_documents_above_the_limit_are_refused() -> None:
    small = {"resourceType": "Binary", "contentType": "application/pdf", "data": "QUJD" * 10}
    mhd.check_size(30, "Binary", small)
    with pytest.raises(PayloadTooLarge):
        mhd.check_size(29, "Binary", small)
    with pytest.raises(PayloadTooLarge):
        mhd.check_size(29, "DocumentReference", {"content": [{"attachment": small}]})
