"""The DMP profiles (capability/profiles.py -> data/profiles.json): every rule has a resource that keeps it
and one that breaks it; the published file is what the rules build; examples claim and keep them."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.resources.identity import unique_identifiers
from fhir_server.resources.profiles import DATA, conformance_resources, profile_issues, supported_profiles
from fhir_server.resources.validation import resource_issues

BASE = "https://fhir-server-dmp.org/fhir/StructureDefinition/"
NIR, NIA = "urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
LOINC = "http://loinc.org"


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


VALID: dict[str, dict[str, Any]] = {
    "dmp-patient": {
        "resourceType": "Patient", "name": [{"family": "Martin", "given": ["Hélène"]}], "gender": "female",
        "birthDate": "1984-03-02",
        "identifier": [{"use": "official", "system": NIR, "value": "284037512345678"},
                       {"use": "usual", "system": "urn:oid:1.2.250.1.71.4.2.7", "value": "IPP-1"}],
        "extension": [{"url": RELIABILITY, "extension": [{"url": "identityStatus",
                                                          "valueCoding": {"code": "VALI"}}]}]},
    "dmp-practitioner": {
        "resourceType": "Practitioner", "name": [{"family": "Durand"}],
        "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": "10101201234"},
                       {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810101201234"}]},
    "dmp-practitionerrole": {
        "resourceType": "PractitionerRole", "practitioner": _ref("Practitioner/p1"),
        "code": [_cc("https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante", "10")]},
    "dmp-organization": {
        "resourceType": "Organization", "name": "CH de Lyon",
        "identifier": [{"system": "https://finess.esante.gouv.fr", "value": "690781810"}]},
    "dmp-documentreference": {
        "resourceType": "DocumentReference", "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"},
        "status": "current", "type": _cc(LOINC, "11490-0"), "category": [_cc("urn:oid:1.2.250.1.213.1.1.4.1", "10")],
        "subject": _ref("Patient/p1"), "date": "2026-01-02T10:00:00+01:00", "author": [_ref("Practitioner/p1")],
        "custodian": _ref("Organization/o1"),
        "securityLabel": [_cc("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N")],
        "content": [{"attachment": {"contentType": "application/pdf", "title": "Lettre de liaison",
                                    "creation": "2026-01-02T10:00:00+01:00", "url": "Binary/b1"}}],
        "context": {"period": {"start": "2026-01-01"}}},
    "dmp-allergyintolerance": {
        "resourceType": "AllergyIntolerance", "patient": _ref("Patient/p1"), "code": {"text": "pénicilline"},
        "clinicalStatus": _cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
        "recordedDate": "2025-05-01"},
    "dmp-medicationstatement": {
        "resourceType": "MedicationStatement", "status": "active", "subject": _ref("Patient/p1"),
        "medicationCodeableConcept": _cc("http://www.whocc.no/atc", "C10AA05"),
        "effectivePeriod": {"start": "2025-01-01"}, "dosage": [{"text": "1 cp le soir"}]},
    "dmp-condition": {
        "resourceType": "Condition", "subject": _ref("Patient/p1"), "code": _cc("http://hl7.org/fhir/sid/icd-10", "E11"),
        "onsetDateTime": "2019-06-01", "recordedDate": "2019-06-02"},
    "dmp-procedure": {
        "resourceType": "Procedure", "status": "completed", "subject": _ref("Patient/p1"),
        "code": {"text": "appendicectomie"}, "performedDateTime": "2001-04-01"},
    "dmp-observation": {
        "resourceType": "Observation", "status": "final", "code": _cc(LOINC, "2345-7"), "subject": _ref("Patient/p1"),
        "effectiveDateTime": "2026-01-01T08:00:00Z", "valueQuantity": {"value": 1.1, "unit": "g/L"}},
    "dmp-diagnosticreport": {
        "resourceType": "DiagnosticReport", "status": "final", "code": _cc(LOINC, "11502-2"),
        "subject": _ref("Patient/p1"), "effectiveDateTime": "2026-01-01", "issued": "2026-01-02T10:00:00Z",
        "performer": [_ref("Organization/o1")]},
    "dmp-explanationofbenefit": {
        "resourceType": "ExplanationOfBenefit", "status": "active", "use": "claim", "outcome": "complete",
        "type": _cc("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "patient": _ref("Patient/p1"), "created": "2026-01-05", "insurer": _ref("Organization/cpam"),
        "provider": _ref("Practitioner/p1"), "insurance": [{"focal": True, "coverage": _ref("Coverage/c1")}],
        "item": [{"sequence": 1, "productOrService": {"text": "G"}, "servicedDate": "2026-01-02"}],
        "total": [{"category": _cc("http://terminology.hl7.org/CodeSystem/adjudication", "submitted"),
                   "amount": {"value": 30, "currency": "EUR"}}]},
    "dmp-consent": {
        "resourceType": "Consent", "status": "active", "patient": _ref("Patient/p1"), "dateTime": "2026-01-01",
        "scope": _cc("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        "category": [_cc(LOINC, "59284-0")], "policyRule": _cc("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN"),
        "provision": {"type": "deny", "actor": [{"role": _cc("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                                   "IRCP"), "reference": _ref("Practitioner/p1")}]}},
}


def claim(profile: str) -> dict[str, Any]:
    resource = copy.deepcopy(VALID[profile])
    resource["meta"] = {"profile": [BASE + profile]}
    return resource


def broken_by(resource: dict[str, Any]) -> list[str]:
    return [i.diagnostics.split(" (profile ")[0] for i in profile_issues(resource)]


@pytest.mark.parametrize("profile", sorted(VALID))
def test_valid_resources_keep_their_profile_and_are_valid_fhir(profile: str) -> None:
    resource = claim(profile)
    assert resource_issues(resource) == []
    assert profile_issues(resource) == []


def _set(path: str, value: Any) -> Any:
    def change(resource: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = resource
        for name in parents:
            node = node[int(name)] if name.isdigit() else node[name]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return change


DELETE = object()

# (profile, change, the start of the issue it must raise)
BREAKS = [
    ("dmp-patient", _set("identifier.1.use", "official"), "dmp-pat-1"),
    ("dmp-patient", _set("identifier", [{"use": "usual", "system": "urn:oid:1.2.250.1.71.4.2.7", "value": "IPP-1"}]),
     "dmp-pat-2"),
    ("dmp-patient", _set("identifier.0.use", "usual"), "dmp-pat-2"),
    ("dmp-patient", _set("identifier", [{"use": "official", "system": NIA, "value": "284037512345678"}]), "dmp-pat-2"),
    ("dmp-patient", _set("identifier.0.use", "secondary"), "dmp-pat-3"),
    ("dmp-patient", _set("identifier.0.value", "28403751234567"), "dmp-pat-4"),
    ("dmp-patient", _set("identifier.0.value", "2840375123456X8"), "dmp-pat-4"),
    ("dmp-patient", _set("name", DELETE), "Patient.name is required"),
    ("dmp-patient", _set("gender", DELETE), "Patient.gender is required"),
    ("dmp-patient", _set("birthDate", DELETE), "Patient.birthDate is required"),
    ("dmp-practitioner", _set("identifier", [{"system": "urn:oid:1.2.3", "value": "x"}]), "dmp-pra-1"),
    ("dmp-practitioner", _set("identifier.0.value", "1010120123"), "dmp-pra-2"),
    ("dmp-practitioner", _set("identifier.1.value", "X10101201234"), "dmp-pra-3"),
    ("dmp-practitioner", _set("name", DELETE), "Practitioner.name is required"),
    ("dmp-practitionerrole", _set("code", [{"text": "médecin"}]), "dmp-rol-1"),
    ("dmp-practitionerrole", _set("practitioner", DELETE), "PractitionerRole.practitioner is required"),
    ("dmp-organization", _set("identifier", [{"system": "urn:oid:1.2.3", "value": "x"}]), "dmp-org-1"),
    ("dmp-organization", _set("identifier.0.value", "69078181"), "dmp-org-2"),
    ("dmp-organization", _set("name", DELETE), "Organization.name is required"),
    ("dmp-documentreference", _set("type", _cc(LOINC, "1-8")), "DocumentReference.type has a code from"),
    ("dmp-documentreference", _set("type", {"text": "lettre"}), "DocumentReference.type has a code from"),
    ("dmp-documentreference", _set("category", [_cc("urn:oid:1.2.250.1.213.1.1.4.1", "999")]),
     "DocumentReference.category has a code from"),
    ("dmp-documentreference", _set("custodian", DELETE), "DocumentReference.custodian is required"),
    ("dmp-documentreference", _set("masterIdentifier", {"system": "urn:ietf:rfc:3986"}),
     "DocumentReference.masterIdentifier.value is required"),
    ("dmp-documentreference", _set("context.period", {"end": "2026-01-02"}),
     "DocumentReference.context.period.start is required"),
    ("dmp-documentreference", _set("content.0.attachment.title", DELETE),
     "DocumentReference.content.attachment.title is required"),
    ("dmp-documentreference", _set("content", [{"attachment": {"contentType": "text/plain", "title": "a",
                                                               "creation": "2026-01-01"}}] * 2), "dmp-doc-1"),
    ("dmp-allergyintolerance", _set("recordedDate", DELETE), "AllergyIntolerance.recordedDate is required"),
    ("dmp-medicationstatement", _set("medicationCodeableConcept", {"text": "statine"}), "dmp-med-1"),
    ("dmp-medicationstatement", _set("dosage", DELETE), "MedicationStatement.dosage is required"),
    ("dmp-medicationstatement", _set("effectivePeriod", DELETE), "MedicationStatement.effective[x] is required"),
    ("dmp-condition", _set("onsetDateTime", DELETE), "Condition.onset[x] is required"),
    ("dmp-procedure", _set("performedDateTime", DELETE), "Procedure.performed[x] is required"),
    ("dmp-observation", _set("valueQuantity", DELETE), "dmp-obs-1"),
    ("dmp-observation", _set("effectiveDateTime", DELETE), "Observation.effective[x] is required"),
    ("dmp-diagnosticreport", _set("performer", DELETE), "DiagnosticReport.performer is required"),
    ("dmp-explanationofbenefit", _set("item.0.servicedDate", DELETE), "dmp-eob-1"),
    ("dmp-explanationofbenefit", _set("total", DELETE), "ExplanationOfBenefit.total is required"),
    ("dmp-consent", _set("provision", {"actor": VALID["dmp-consent"]["provision"]["actor"]}), "dmp-con-1"),
    ("dmp-consent", _set("scope", _cc("http://terminology.hl7.org/CodeSystem/consentscope", "adr")), "dmp-con-2"),
    ("dmp-consent", _set("dateTime", DELETE), "Consent.dateTime is required"),
]


@pytest.mark.parametrize("profile, change, expected", BREAKS, ids=[f"{p}-{e[:30]}" for p, _, e in BREAKS])
def test_each_rule_refuses_what_breaks_it(profile: str, change: Any, expected: str) -> None:
    resource = claim(profile)
    change(resource)
    assert any(text.startswith(expected) for text in broken_by(resource)), broken_by(resource)
    unclaimed = copy.deepcopy(VALID[profile])  # the same change without the claim: not checked
    change(unclaimed)
    assert profile_issues(unclaimed) == []


def test_every_rule_of_every_profile_is_exercised() -> None:
    keys = {c["key"] for sd in conformance_resources() if sd["resourceType"] == "StructureDefinition"
            for e in sd["differential"]["element"] for c in e.get("constraint", [])}
    assert keys == {e for _, _, e in BREAKS if e.startswith("dmp-")}


def test_a_claim_of_fr_core_patient_ins_is_checked_as_dmp_patient() -> None:
    resource = copy.deepcopy(VALID["dmp-patient"])
    resource["meta"] = {"profile": ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins|2.1.0"]}
    assert profile_issues(resource) == []
    resource["identifier"][1]["use"] = "official"
    assert broken_by(resource) == ["dmp-pat-1: At most one identifier is 'official'"]


def test_a_profile_of_another_type_is_refused_and_unknown_profiles_are_not_checked() -> None:
    resource = copy.deepcopy(VALID["dmp-condition"])
    resource["meta"] = {"profile": [BASE + "dmp-patient", "http://example.org/StructureDefinition/other"]}
    issues = profile_issues(resource)
    assert [i.expression for i in issues] == [("meta.profile",)] and "profiles Patient" in issues[0].diagnostics


def test_the_published_profiles_are_what_capability_profiles_builds_and_valid_fhir() -> None:
    from capability import profiles as source

    assert json.loads(DATA.read_text(encoding="utf-8")) == source.build()
    for resource in conformance_resources():
        assert resource_issues(resource) == [], resource["id"]
    assert supported_profiles("Patient") == [BASE + "dmp-patient"]
    assert supported_profiles("Encounter") == []


def test_a_patients_ins_in_force_is_unique_but_not_a_billing_or_deactivated_one() -> None:
    patient = VALID["dmp-patient"]
    assert unique_identifiers("Patient", patient) == [f"{NIR}|284037512345678"]
    old = {**patient, "identifier": [{**patient["identifier"][0], "use": "old"}]}
    billing = {**patient, "identifier": [{**patient["identifier"][0], "type": _cc(
        "http://terminology.hl7.org/CodeSystem/v2-0203", "NH")}]}
    assert unique_identifiers("Patient", old) == unique_identifiers("Patient", billing) == []
    assert unique_identifiers("Practitioner", VALID["dmp-practitioner"]) == []


def test_each_differential_follows_its_base_elements_order() -> None:
    """A differential lists its elements in the base's order, or a validator cannot build the snapshot
    (HAPI reports the element as missing from it)."""
    from tests.conftest import EXAMPLES

    for sd in conformance_resources():
        if sd["resourceType"] != "StructureDefinition":
            continue
        base = json.loads((EXAMPLES / f"StructureDefinition-{sd['type']}.json").read_text(encoding="utf-8"))
        order = [e["path"] for e in base["snapshot"]["element"]]
        paths = [e["path"] for e in sd["differential"]["element"]]
        # a path inside a datatype (context.period.start) is placed by its first ancestor the base has
        positions = [next(order.index(p[:i]) for i in sorted({len(p), *[k for k, c in enumerate(p) if c == "."]},
                                                                reverse=True) if p[:i] in order)
                     for p in paths]
        assert positions == sorted(positions), (sd["id"], paths)
