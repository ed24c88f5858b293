"""The DMP profiles over real HTTP: published (StructureDefinitions, ValueSets, the CapabilityStatement's
supportedProfile), enforced on the writes that claim them (422), and one Patient per INS (409) on every
write path: create, update, conditional update, transaction, and writers racing."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fhir_server import capability
from fhir_server.search.index import index
from fhir_server.storage import Store
from tests.conftest import Fhir, assert_outcome, snapshot

NIR = "urn:oid:1.2.250.1.213.1.4.8"
PROFILE = "https://fhir-server-dmp.org/fhir/StructureDefinition/dmp-patient"


def new_ins() -> str:
    """A 15-digit INS-NIR no other test uses (random: the session's database is shared)."""
    return f"{random.choice('12')}{random.randrange(10**14):014d}"


def patient(ins: str | None, use: str = "official", **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Insee", "given": ["Anne"]}],
                            "gender": "female", "birthDate": "1990-01-01", **more}
    if ins:
        body["identifier"] = [{"use": use, "system": NIR, "value": ins}]
    return body


def test_the_profiles_are_served_and_named_by_the_capability_statement(fhir: Fhir) -> None:
    statement = fhir.get("metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert resources["Patient"]["supportedProfile"] == [PROFILE]
    assert "supportedProfile" not in resources["Encounter"]
    definitions = {p["name"]: p.get("definition") for p in resources["Patient"]["searchParam"]}
    assert definitions["identifier"] == "http://hl7.org/fhir/SearchParameter/Patient-identifier"
    read = fhir.get("StructureDefinition/dmp-patient")
    assert read.status_code == 200 and read.json()["url"] == PROFILE
    assert read.json()["differential"]["element"][0]["constraint"][0]["key"] == "dmp-pat-1"
    found = fhir.get(f"StructureDefinition?url={PROFILE}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["dmp-patient"]
    value_set = fhir.get("ValueSet/dmp-document-type").json()
    assert "11490-0" in {c["code"] for i in value_set["compose"]["include"] for c in i["concept"]}


def test_publishing_again_changes_nothing(fhir: Fhir, db: Any) -> None:
    """Every worker publishes at start-up: what is already there is left as it is."""
    before = fhir.get("StructureDefinition/dmp-patient").json()["meta"]["versionId"]
    capability.publish(Store(db, indexer=index))
    assert fhir.get("StructureDefinition/dmp-patient").json()["meta"]["versionId"] == before


def test_a_write_claiming_a_profile_it_breaks_is_422_and_stores_nothing(fhir: Fhir, db: Any) -> None:
    body = patient(new_ins(), meta={"profile": [PROFILE]})
    body["identifier"].append({"use": "official", "system": "urn:oid:1.2.250.1.71.4.2.7", "value": "IPP"})
    before = snapshot(db)
    outcome = assert_outcome(fhir.post("Patient", body), 422, "processing")
    assert "dmp-pat-1" in outcome["issue"][0]["diagnostics"] and outcome["issue"][0]["expression"] == ["Patient"]
    del body["birthDate"]
    outcome = assert_outcome(fhir.put("Patient/profiled-1", {**body, "id": "profiled-1"}), 422, "processing")
    assert {i["expression"][0] for i in outcome["issue"]} == {"Patient", "Patient.birthDate"}
    assert snapshot(db) == before
    body["identifier"].pop()
    body["birthDate"] = "1990-01-01"
    assert fhir.post("Patient", body).status_code == 201
    # the same resource without the claim is plain FHIR: not checked against the profile
    assert fhir.post("Patient", patient(None, identifier=[{"use": "official", "value": "a"},
                                                          {"use": "official", "value": "b"}])).status_code == 201


def test_one_patient_per_ins_on_every_write(fhir: Fhir, db: Any) -> None:
    ins = new_ins()
    first = fhir.post("Patient", patient(ins))
    assert first.status_code == 201, first.text
    first_id = first.json()["id"]
    before = snapshot(db)
    outcome = assert_outcome(fhir.post("Patient", patient(ins)), 409, "conflict")
    assert first_id in outcome["issue"][0]["diagnostics"] and ins in outcome["issue"][0]["diagnostics"]
    assert_outcome(fhir.put("Patient/ins-other", {**patient(ins), "id": "ins-other"}), 409, "conflict")
    assert_outcome(fhir.put(f"Patient?identifier={NIR}|{new_ins()}", patient(ins)), 409, "conflict")
    other = fhir.post("Patient", patient(new_ins())).json()["id"]
    before = snapshot(db)
    assert_outcome(fhir.put(f"Patient/{other}", {**patient(ins), "id": other}), 409, "conflict")
    assert snapshot(db) == before
    # the holder itself may be written again, and searching by INS finds it alone
    assert fhir.put(f"Patient/{first_id}", {**patient(ins, gender="other"), "id": first_id}).status_code == 200
    found = fhir.get(f"Patient?identifier={NIR}|{ins}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [first_id]
    # a deactivated INS may stay on another record (identity merge); a deleted holder frees it
    assert fhir.post("Patient", patient(ins, use="old")).status_code == 201
    assert fhir.delete(f"Patient/{first_id}").status_code == 200
    assert fhir.post("Patient", patient(ins)).status_code == 201


def test_a_transaction_giving_one_ins_to_two_patients_is_refused_whole(fhir: Fhir, db: Any) -> None:
    ins = new_ins()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:0000000{n}-0000-4000-8000-000000000000", "resource": patient(ins),
         "request": {"method": "POST", "url": "Patient"}} for n in (1, 2)]}
    before = snapshot(db)
    assert_outcome(fhir.post("", bundle), 409, "conflict")
    assert snapshot(db) == before
    assert fhir.post("Patient", patient(ins)).status_code == 201
    bundle["entry"] = bundle["entry"][:1]
    before = snapshot(db)
    assert_outcome(fhir.post("", bundle), 409, "conflict")
    assert snapshot(db) == before


def test_racing_creates_of_one_ins_make_one_patient(fhir: Fhir) -> None:
    ins = new_ins()
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: fhir.post("Patient", patient(ins)).status_code, range(8)))
    assert statuses == [201] + [409] * 7
    assert fhir.get(f"Patient?identifier={NIR}|{ins}&_summary=count").json()["total"] == 1
