"""The example DMP (examples/): it is valid for the server, it loads through the API (twice without
changing anything), and the demo plays its story over real HTTP with each step's outcome checked."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import pytest

from conformance_tests.validator import Validator
from examples import cast, demo, dmp
from examples.load import load
from fhir_server.consent.engine import representative
from fhir_server.consent.model import consent_rule
from fhir_server.resources.documents import check_provide_bundle, is_provide_bundle
from fhir_server.resources.profiles import DATA as PROFILES, conformance_resources
from fhir_server.resources.validation import resource_issues
from tests.conftest import ROOT, LiveServer, own_server
from tests.documents_fixtures import bundle_binaries

TODAY = date.today()


@pytest.fixture(scope="module")
def server(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from own_server(ferretdb, tmp_path_factory, "fhir_examples")


@pytest.fixture(scope="module")
def loaded(server: LiveServer) -> dict[str, Any]:
    """The example DMP loaded once, through ``fhir-server load`` (the command, minting its own token)."""
    result = subprocess.run([sys.executable, "-m", "fhir_server.cli", "load", "--base", server.base, "examples"],
                            env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    return {"output": result.stdout}


def _resources(bundles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["resource"] for b in bundles for e in b["entry"]]


# -- the data ---------------------------------------------------------------------------------------

def test_deterministic_and_shaped_as_the_brief_says() -> None:
    bundles = dmp.build(TODAY)
    assert json.dumps(bundles, sort_keys=True) == json.dumps(dmp.build(TODAY), sort_keys=True)
    resources = _resources(bundles)
    kinds = Counter(r["resourceType"] for r in resources)
    assert kinds["Patient"] == len(cast.PATIENTS) == 20
    for rtype in ("Condition", "Procedure", "AllergyIntolerance", "MedicationStatement", "ExplanationOfBenefit",
                  "Observation", "DiagnosticReport", "DocumentReference", "Binary", "RelatedPerson",
                  "PractitionerRole", "Organization", "Consent", "Coverage"):
        assert kinds[rtype] > 0, rtype
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert all(p["identifier"][0]["system"] == "urn:oid:1.2.250.1.213.1.4.8" for p in patients)
    assert [p["active"] for p in patients].count(False) == 1  # one closed DMP
    criteria = Counter((e["request"]["url"], e["request"]["ifNoneExist"]) for b in bundles for e in b["entry"])
    assert len(criteria) == len(resources)  # a business identifier of its own on everything: loading is idempotent
    types = Counter(c["code"] for r in resources if r["resourceType"] == "DocumentReference" for c in r["type"]["coding"])
    for code in ("60591-5", "11490-0", "34112-3", "11488-4", "11502-2", "18748-4", "EXPPAT_1", "EXPPAT_3"):
        assert types[code], code
    labels = Counter(c["code"] for r in resources if r["resourceType"] == "DocumentReference"
                     for s in r["securityLabel"] for c in s["coding"])
    assert labels["MASQUE_PS"] and labels["INVISIBLE_PATIENT"]
    for r in resources:
        if r["resourceType"] == "Binary":
            assert r["contentType"] == "application/pdf"


def test_the_minor_s_mother_is_registered_as_the_server_reads_it() -> None:
    [mother] = [r for r in _resources(dmp.build(TODAY)) if r["resourceType"] == "RelatedPerson"]
    found = representative({**mother, "id": "m", "patient": {"reference": "Patient/lucas"}})
    assert found is not None and found.period is not None
    start, end = found.period
    assert start is not None and end is not None and start <= datetime.now(UTC) <= end


def test_privacy_consents_read_as_the_server_reads_its_own() -> None:
    privacy = [r for r in _resources(dmp.build(TODAY)) if r["resourceType"] == "Consent"
               and r["scope"]["coding"][0]["code"] == "patient-privacy"]
    decisions = Counter((rule.root.type, bool(rule.root.actors), bool(rule.root.purposes))
                        for rule in map(consent_rule, [{**c, "patient": {"reference": "Patient/x"}} for c in privacy]))
    assert decisions[("permit", True, False)] and decisions[("deny", True, False)] and decisions[("deny", False, True)]


def test_pdfs_are_well_formed() -> None:
    for r in _resources(dmp.build(TODAY)):
        if r["resourceType"] == "Binary":
            import base64
            data = base64.b64decode(r["data"])
            assert data.startswith(b"%PDF-1.4") and data.endswith(b"%%EOF\n")
            xref = int(re.search(rb"startxref\n(\d+)", data).group(1))  # type: ignore[union-attr]
            offsets = [int(o) for o in re.findall(rb"(\d{10}) 00000 n", data[xref:])]
            assert all(re.match(rb"\d+ 0 obj", data[o:]) for o in offsets)


def test_every_resource_and_bundle_validates_in_process() -> None:
    """The server's own validation and PDSm checks, for the example DMP and a generated set."""
    for bundle in [*dmp.build(TODAY), *dmp.generate(10, 7, TODAY)]:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            errors = [i for i in resource_issues(resource, resource["resourceType"]) if i.severity in ("error", "fatal")]
            assert not errors, (resource["resourceType"], errors)
        if is_provide_bundle(bundle):
            assert check_provide_bundle(bundle, bundle_binaries(bundle)) == []


def test_the_hl7_validator_finds_no_error_in_the_example_dmp() -> None:
    """The HAPI FHIR validator (conformance_tests/validator/), offline, with the R4 core and the DMP
    profiles the resources claim: every transaction Bundle, its resources included, without an error.
    A Patient breaking its profile is an error there too: the validator does read our profiles."""
    bundles = dmp.build(TODAY)
    with Validator(PROFILES) as validator:
        assert validator.loaded == len([r for r in conformance_resources() if r["resourceType"] != "SearchParameter"])
        errors = {f"{b['entry'][0]['fullUrl']}: {i.location}: {i.message}"
                  for b in bundles for i in validator.validate(b).of("error", "fatal")}
        assert not errors, sorted(errors)[:20]
        patient = next(r for r in _resources(bundles) if r["resourceType"] == "Patient")
        twice = {**patient, "identifier": [*patient["identifier"], {"use": "official", "system": "urn:oid:1.2.3",
                                                                    "value": "x"}]}
        assert any("dmp-pat-1" in i.message for i in validator.validate(twice).of("error"))


def test_generate_is_deterministic_and_distinct() -> None:
    first = list(dmp.generate(5, 11, TODAY))
    assert json.dumps(first, sort_keys=True) == json.dumps(list(dmp.generate(5, 11, TODAY)), sort_keys=True)
    other = {p["identifier"][0]["value"] for p in _resources(list(dmp.generate(5, 12, TODAY)))
             if p["resourceType"] == "Patient"}
    mine = {p["identifier"][0]["value"] for p in _resources(first) if p["resourceType"] == "Patient"}
    assert len(mine) == 5 and not mine & other


# -- over HTTP ----------------------------------------------------------------------------------------

def test_every_resource_validates_server_side(server: LiveServer) -> None:
    """$validate on a sample of each type (the load below stores them all: validated on write too)."""
    admin = server.client()
    seen: Counter[str] = Counter()
    for resource in _resources(dmp.build(TODAY)):
        rtype = resource["resourceType"]
        if seen[rtype] >= 3:
            continue
        seen[rtype] += 1
        response = admin.post(f"{rtype}/$validate", resource)
        assert response.status_code == 200, response.text
        assert {i["severity"] for i in response.json()["issue"]} <= {"information", "warning"}, response.text


def test_load_is_idempotent(server: LiveServer, loaded: dict[str, Any]) -> None:
    assert "resources created" in loaded["output"]
    admin = server.client()
    bundles = dmp.build(TODAY)
    expected = Counter(r["resourceType"] for r in _resources(bundles))

    def state() -> dict[str, Any]:
        found = {}
        for rtype in expected:
            page = admin.get(f"{rtype}?_count=1000&_elements=id")
            assert page.status_code == 200, page.text
            found[rtype] = sorted((e["resource"]["id"], e["resource"]["meta"]["versionId"])
                                  for e in page.json().get("entry", []))
        return found

    before = state()
    assert {t: len(v) for t, v in before.items()} == dict(expected)
    again = load(server.base, server.token(), bundles)
    assert again == Counter(found=sum(expected.values())), again
    assert state() == before  # same resources, same versions


def test_the_demo_plays_its_story(server: LiveServer, loaded: dict[str, Any]) -> None:
    lines: list[str] = []
    outcome = demo.play(server.base, demo.DatabaseTokens(server.env["FHIR_MONGODB_URI"], server.database, server.base),
                        out=lines.append)
    assert lines and all(len(line) <= 110 for line in lines)
    # 1. the GP reads her patient's record: problems, allergies, treatments, documents
    assert outcome["gp_sees"]["Condition"] >= 3 and outcome["gp_sees"]["AllergyIntolerance"] == 1
    assert outcome["gp_sees"]["MedicationStatement"] == 3 and outcome["gp_sees"]["DocumentReference"] >= 3
    # 2. the hospital's discharge letter is stored (ITI-65) and the GP finds it
    assert outcome["letter_created"] and outcome["gp_sees_letter"]
    # 3. masked: the GP no longer sees it, the patient does; the blocked specialist sees nothing at all
    assert not outcome["gp_sees_letter_after_mask"] and outcome["patient_sees_letter"]
    assert outcome["specialist_before_block"] > 0 and outcome["specialist_after_block"] == 0
    assert outcome["specialist_reads_patient"] == 404
    # 4. break the glass: open for a patient who did not refuse it, closed for one who did
    assert outcome["btg_sees"] > 0 and outcome["btg_header"]
    assert outcome["btg_refused_sees"] == 0
    # 5. the access history names the GP and the blocked specialist's refused attempt
    who = " ".join(outcome["history_who"])
    assert "MOREL" in who and "ROUX" in who
    assert "4" in outcome["history_outcomes"]  # a refusal (outcome 4) is in the history too
    # 7. the registered mother reads her son's record; a token's claim alone opens nothing
    assert outcome["representative_sees"] > 0 and outcome["claim_alone_reads_patient"] == 404


def test_demo_runs_as_a_script(server: LiveServer, loaded: dict[str, Any]) -> None:
    result = subprocess.run([sys.executable, "examples/demo.py", "--base", server.base, "--database", server.database],
                            env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    print(result.stdout)
    assert "break-the-glass" in result.stdout.lower()
