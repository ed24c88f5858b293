"""A patient token never sees another patient's resources, on any read path, and cannot write into
another patient's record (fhir_server/auth/access.py applied by pipeline.py and searching.py)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Fhir, LiveServer

LOINC = "http://loinc.org|2339-0"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _observation(patient: str, practitioner: str, category: str, encounter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"reference": f"Practitioner/{practitioner}"}],
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "effectiveDateTime": "2024-05-01", "valueQuantity": {"value": 5.1, "unit": "mmol/L"}}
    if encounter:
        body["encounter"] = {"reference": f"Encounter/{encounter}"}
    return body


@pytest.fixture(scope="module")
def record(server: LiveServer) -> dict[str, Any]:
    admin = server.client()
    practitioner = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Garnier"}]}).json()
    ids: dict[str, set[str]] = {"A": set(), "B": set()}
    patients = {}
    for who, family in (("A", "Aubert"), ("B", "Zeblock")):
        patient = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": family}]}).json()
        patients[who] = patient["id"]
        ids[who].add(f"Patient/{patient['id']}")
        encounter = admin.post("Encounter", {"resourceType": "Encounter", "status": "finished",
                                             "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{patient['id']}"}}).json()
        ids[who].add(f"Encounter/{encounter['id']}")
        for category in ("laboratory", "vital-signs"):
            obs = admin.post("Observation", _observation(patient["id"], practitioner["id"], category, encounter["id"])).json()
            ids[who].add(f"Observation/{obs['id']}")
        updated = admin.put(f"Observation/{obs['id']}", {**obs, "status": "amended"})
        assert updated.status_code == 200
        condition = admin.post("Condition", {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient['id']}"},
                                             "code": {"text": "asthme"}}).json()
        ids[who].add(f"Condition/{condition['id']}")
    gone = admin.post("Condition", {"resourceType": "Condition", "subject": {"reference": f"Patient/{patients['B']}"},
                                    "code": {"text": "supprimé"}}).json()
    assert admin.delete(f"Condition/{gone['id']}").status_code == 200
    return {"patients": patients, "ids": ids, "practitioner": practitioner["id"], "deleted": f"Condition/{gone['id']}"}


@pytest.fixture(scope="module")
def alice(server: LiveServer, record: dict[str, Any]) -> Fhir:
    return server.client("patient/*.cruds", fhir_user=f"Patient/{record['patients']['A']}")


def _seen(bundle: dict[str, Any]) -> set[str]:
    assert bundle["resourceType"] == "Bundle", bundle
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", []) if "resource" in e}


def _clean(bundle: dict[str, Any], record: dict[str, Any]) -> set[str]:
    seen = _seen(bundle)
    leaked = seen & (record["ids"]["B"] | {record["deleted"]})
    assert not leaked, leaked
    return seen


def test_reads_of_the_other_patient_answer_404(alice: Fhir, record: dict[str, Any]) -> None:
    for ref in sorted(record["ids"]["B"]):
        for path in (ref, f"{ref}/_history/1", f"{ref}/_history"):
            assert alice.get(path).status_code == 404, path
    assert alice.get(record["deleted"]).status_code == 404  # not 410: its existence is not the caller's
    for ref in record["ids"]["A"]:
        assert alice.get(ref).status_code == 200


@pytest.mark.parametrize("path", [
    "Observation", "Observation?code=" + LOINC, "Condition", "Encounter", "Patient", "Observation?_sort=-date",
    "?_type=Observation,Condition,Patient", "", "Observation/_history", "Condition/_history", "_history",
    "Observation?_include=Observation:subject&_include=Observation:encounter",
    "Observation?_include=*", "Patient?_revinclude=Observation:subject&_revinclude=Condition:subject",
    "Practitioner?_revinclude=Observation:performer",
    "Encounter?_revinclude=Observation:encounter&_include=Encounter:subject",
    "Observation?subject:Patient.family=Zeblock", "Observation?subject:Patient.family=Aubert",
    "Patient?_has:Observation:subject:code=" + LOINC, "Observation?_summary=data", "Observation?_elements=status",
])
def test_searches_and_histories_show_only_the_own_record(alice: Fhir, record: dict[str, Any], path: str) -> None:
    response = alice.get(path)
    assert response.status_code == 200, response.text
    seen = _clean(response.json(), record)
    assert seen & record["ids"]["A"] or "Zeblock" in path


def test_counts_and_pages_count_only_what_is_visible(alice: Fhir, record: dict[str, Any]) -> None:
    own = {r for r in record["ids"]["A"] if r.startswith("Observation/")}
    assert alice.get("Observation?_summary=count").json()["total"] == len(own)
    assert alice.get("Observation?_total=accurate").json()["total"] == len(own)
    pages, url = [], "Observation?_count=1"
    while url:
        bundle = alice.get(url).json()
        pages.append(_clean(bundle, record))
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), "")
    assert set().union(*pages) == own and len(pages) == len(own)


def test_the_other_patients_compartment_and_everything(alice: Fhir, record: dict[str, Any]) -> None:
    other, own = record["patients"]["B"], record["patients"]["A"]
    assert alice.get(f"Patient/{other}/$everything").status_code == 404
    bundle = alice.get(f"Patient/{other}/Observation").json()
    assert _clean(bundle, record) == set() and bundle.get("total", 0) == 0
    everything = alice.get(f"Patient/{own}/$everything").json()
    assert _clean(everything, record) >= record["ids"]["A"] - {f"Practitioner/{record['practitioner']}"}


def test_chains_and_has_cannot_probe_the_other_record(alice: Fhir, record: dict[str, Any]) -> None:
    other = record["patients"]["B"]
    probe = alice.get(f"Practitioner?_has:Observation:performer:patient={other}").json()
    assert _seen(probe) == set()  # the Practitioner exists, but nothing visible links it to B
    assert _seen(alice.get(f"Practitioner?_has:Observation:performer:patient={record['patients']['A']}").json()) \
        == {f"Practitioner/{record['practitioner']}"}
    assert _seen(alice.get("Encounter?subject:Patient.family=Zeblock").json()) == set()


def test_no_writes_into_the_other_record(alice: Fhir, record: dict[str, Any], server: LiveServer) -> None:
    other = record["patients"]["B"]
    created = alice.post("Observation", _observation(other, record["practitioner"], "laboratory"))
    assert created.status_code == 403
    target = next(r for r in sorted(record["ids"]["B"]) if r.startswith("Observation/"))
    body = server.client().get(target).json()
    assert alice.put(target, {**body, "status": "cancelled"}).status_code == 403
    assert alice.delete(target).status_code == 200  # answered like a missing resource ...
    assert server.client().get(target).json()["status"] != "cancelled"  # ... and nothing changed
    own = alice.post("Observation", _observation(record["patients"]["A"], record["practitioner"], "laboratory"))
    assert own.status_code == 201


def test_v2_restrictions_narrow_every_path(server: LiveServer, record: dict[str, Any]) -> None:
    labs = server.client(f"patient/Observation.rs?category={CATEGORY}|laboratory",
                         fhir_user=f"Patient/{record['patients']['A']}")
    seen = _clean(labs.get("Observation").json(), record)
    assert seen and all(labs.get(ref).json()["category"][0]["coding"][0]["code"] == "laboratory" for ref in seen)
    vitals = [r for r in record["ids"]["A"] if r.startswith("Observation/") and r not in seen]
    assert vitals and all(labs.get(ref).status_code == 404 for ref in vitals)
    assert labs.get("Condition").status_code == 403
    assert labs.post("Observation", _observation(record["patients"]["A"], record["practitioner"], "laboratory")
                     ).status_code == 403


def test_a_token_without_patient_context_sees_no_patient_data(server: LiveServer, record: dict[str, Any]) -> None:
    lost = server.client("patient/*.rs", fhir_user="Practitioner/x", kind="practitioner")
    assert _seen(lost.get("Observation").json()) == set()
    assert lost.get(next(iter(sorted(record["ids"]["A"])))).status_code == 404
