"""The DMP rules and the Consents, decided in memory (fhir_server/consent/engine.py), one rule at a time."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhir_server.auth.scopes import parse_scopes
from fhir_server.consent.engine import Access, PatientFacts, Representative, Settings, representative
from fhir_server.consent.model import consent_rule
from fhir_server.context import Identity

VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / ".cache" / "spec" / "examples" / "package"


def ps(name: str = "Practitioner/dr", purpose: str = "TREAT", **kw: Any) -> Identity:
    return Identity("practitioner", "app", parse_scopes("user/*.rs"), fhir_user=name, purpose=purpose, **kw)


def consent(kind: str, actor: str | None = None, purpose: str | None = None, cid: str = "c",
            label: str | None = None, **provision: Any) -> Any:
    body: dict[str, Any] = {"type": kind, **provision}
    if actor:
        body["actor"] = [{"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": actor}}]
    if purpose:
        body["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]
    if label:
        body["securityLabel"] = [{"system": VISIBILITY, "code": label}]
    return consent_rule({"resourceType": "Consent", "id": cid, "status": "active", "patient": {"reference": "Patient/p"},
                         "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                               "code": "patient-privacy"}]}, "provision": body})


def document(*labels: str, author: str = "Practitioner/other", doc_type: str = "11490-0",
             date: str = "2026-11-01") -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "id": "d", "status": "current", "date": date,
            "subject": {"reference": "Patient/p"}, "author": [{"reference": author}],
            "type": {"coding": [{"system": "http://loinc.org", "code": doc_type}]},
            "securityLabel": [{"coding": [{"system": VISIBILITY, "code": code}]} for code in labels]}


def access(who: Identity, settings: Settings | None = None, **facts: Any) -> Access:
    return Access(who, {"p": PatientFacts("p", **facts)}, settings or Settings(), NOW)


def sees(a: Access, resource: dict[str, Any]) -> bool:
    return a.permits(resource["resourceType"], resource, ["Patient/p"])


def test_rule_1_a_professional_needs_an_authorisation() -> None:
    assert access(ps()).record("p") == "none"
    assert access(ps(), consents=(consent("permit", "Practitioner/dr"),)).record("p") == "care"
    assert access(ps(), treating=frozenset({"Practitioner/dr"})).record("p") == "care"
    assert access(ps(), care_team=frozenset({"Practitioner/dr"})).record("p") == "care"
    # an authorisation for someone else does not count; nor one named by another RPPS
    assert access(ps(), consents=(consent("permit", "Practitioner/else"),)).record("p") == "none"
    by_rpps = consent("permit", None, cid="r")
    by_rpps = consent_rule({"resourceType": "Consent", "id": "r", "status": "active", "patient": {"reference": "Patient/p"},
                            "scope": {"coding": [{"code": "patient-privacy"}]},
                            "provision": {"type": "permit", "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                          "reference": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1",
                                                                       "value": "810001"}}}]}})
    assert access(ps(rpps="810001"), consents=(by_rpps,)).record("p") == "care"
    assert access(ps(rpps="810002"), consents=(by_rpps,)).record("p") == "none"


def test_rule_2_a_block_beats_every_permission() -> None:
    both = (consent("permit", "Practitioner/dr", cid="a"), consent("deny", "Practitioner/dr", cid="b"))
    assert access(ps(), consents=both, treating=frozenset({"Practitioner/dr"})).record("p") == "none"
    assert access(ps(purpose="BTG"), consents=both).record("p") == "none"
    lenient = Settings(block_beats_emergency=False)
    assert access(ps(purpose="BTG"), lenient, consents=both).record("p") == "care"


def test_rule_4_masked_documents() -> None:
    masked = document("MASQUE_PS")
    authorised = (consent("permit", "Practitioner/dr"),)
    assert not sees(access(ps(), consents=authorised), masked)
    assert sees(access(ps(), consents=authorised), document())
    assert sees(access(ps(), consents=authorised), document("MASQUE_PS", author="Practitioner/dr"))  # its author
    assert sees(access(Identity("patient", "app", (), fhir_user="Patient/p", patient="p")), masked)
    treating = frozenset({"Practitioner/dr"})
    assert not sees(access(ps(), treating=treating), masked)
    assert sees(access(ps(), Settings(treating_physician_sees_masked=True), treating=treating), masked)
    # in an emergency, only if the patient allowed masked documents in emergency
    assert not sees(access(ps(purpose="BTG")), masked)
    allowed = (consent("permit", purpose="BTG", label="MASQUE_PS"),)
    assert sees(access(ps(purpose="BTG"), consents=allowed), masked)


MUM = Identity("representative", "app", (), fhir_user="RelatedPerson/mum", patient="p")
REGISTERED = (Representative("RelatedPerson/mum", "p"),)


def test_rules_5_and_6_documents_hidden_from_the_patient_or_representatives() -> None:
    patient = Identity("patient", "app", (), fhir_user="Patient/p", patient="p")
    fresh = document("INVISIBLE_PATIENT", date=(NOW - timedelta(days=3)).date().isoformat())
    old = document("INVISIBLE_PATIENT", date=(NOW - timedelta(days=40)).date().isoformat())
    for who in (patient, MUM):
        assert not sees(access(who, representatives=REGISTERED), fresh)
        assert sees(access(who, representatives=REGISTERED), old)  # lapses after a month
    assert sees(access(ps(), consents=(consent("permit", "Practitioner/dr"),)), fresh)
    kept = document("INVISIBLE_REPRESENTANTS_LEGAUX")
    assert sees(access(patient), kept) and not sees(access(MUM, representatives=REGISTERED), kept)
    # nobody else's record
    assert access(Identity("patient", "app", (), fhir_user="Patient/q", patient="q")).record("p") == "none"


def _related(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "RelatedPerson", "id": "mum", "active": True, "patient": {"reference": "Patient/p"},
            "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH"}]},
                             {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                          "code": "GUARD"}]}], **changes}


def test_a_representative_opens_the_record_only_while_registered() -> None:
    """The token's claim is not enough: the record must hold the registration, in force now."""
    assert access(MUM).record("p") == "none"  # a claim alone: nothing
    assert access(MUM, representatives=REGISTERED).record("p") == "representative"
    assert not sees(access(MUM), document()) and sees(access(MUM, representatives=REGISTERED), document())
    assert access(MUM, representatives=(Representative("RelatedPerson/dad", "p"),)).record("p") == "none"
    other = Identity("representative", "app", (), fhir_user="RelatedPerson/mum", patient="q")
    assert access(other, representatives=REGISTERED).record("p") == "none"  # the token acts for another patient
    # the registration read from the RelatedPerson: its coding, active, period (a minor's majority)
    assert representative(_related()) == Representative("RelatedPerson/mum", "p")
    assert representative(_related(active=False)) is None
    assert representative(_related(relationship=[{"coding": [{"code": "GUARD"}]}])) is None  # system matters
    assert representative({**_related(), "patient": {}}) is None
    for period, stand in (({"start": "2020-01-01", "end": "2033-03-02"}, "representative"),
                          ({"start": "2020-01-01", "end": "2026-11-20"}, "none"),  # majority reached
                          ({"start": "2026-12-01"}, "none")):  # not yet
        found = representative(_related(period=period))
        assert found is not None and access(MUM, representatives=(found,)).record("p") == stand, period
    assert Access(MUM, {"p": PatientFacts("p")}, Settings(), NOW).clause("Observation") == {"_id": {"$in": []}}


def test_rule_7_emergency_modes() -> None:
    assert access(ps(purpose="BTG")).record("p") == "care"
    assert access(ps(purpose="ETREAT")).record("p") == "care"
    refused = (consent("deny", purpose="BTG"),)
    assert access(ps(purpose="BTG"), consents=refused).record("p") == "none"
    assert access(ps(purpose="ETREAT"), consents=refused).record("p") == "care"  # only the refused mode


def test_rule_8_the_habilitation_grid() -> None:
    grid = Settings(forbidden_types={"80": frozenset({"15508-5"})})
    podiatrist = ps(profession="80")
    authorised = (consent("permit", "Practitioner/dr"),)
    assert not sees(access(podiatrist, grid, consents=authorised), document(doc_type="15508-5"))
    assert sees(access(podiatrist, grid, consents=authorised), document(doc_type="11490-0"))
    assert sees(access(ps(profession="10"), grid, consents=authorised), document(doc_type="15508-5"))


def test_rules_9_and_12_closed_records_and_other_roles() -> None:
    assert access(ps(), open=False, treating=frozenset({"Practitioner/dr"})).record("p") == "none"
    assert access(ps(purpose="BTG"), open=False).record("p") == "none"
    assert access(Identity("patient", "app", (), fhir_user="Patient/p", patient="p"), open=False).record("p") == "own"
    assert access(Identity("insurer", "app", parse_scopes("user/*.rs"))).record("p") == "none"
    assert access(Identity("system", "ehr", parse_scopes("system/*.rs"), operator=True)).record("p") == "full"


def test_consents_about_some_data_decide_per_resource() -> None:
    withhold = consent("permit", "Practitioner/dr", provision=[
        {"type": "deny", "data": [{"meaning": "instance", "reference": {"reference": "DocumentReference/d"}}]}])
    a = access(ps(), consents=(withhold,))
    assert a.record("p") == "care" and not sees(a, document()) and not a.exact("DocumentReference")
    other = {**document(), "id": "e"}
    assert sees(a, other)
    by_class = consent("permit", "Practitioner/dr", provision=[
        {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}])
    b = access(ps(), consents=(by_class,))
    assert sees(b, document())
    assert not sees(b, {"resourceType": "Observation", "id": "o", "subject": {"reference": "Patient/p"}})


def test_clause_names_exactly_the_records_open_to_the_caller() -> None:
    facts = {"a": PatientFacts("a", consents=(consent("permit", "Practitioner/dr"),)),
             "b": PatientFacts("b", treating=frozenset({"Practitioner/dr"})),
             "c": PatientFacts("c", consents=(consent("permit", "Practitioner/dr", cid="x"),
                                              consent("deny", "Practitioner/dr", cid="y"))),
             "d": PatientFacts("d", open=False, treating=frozenset({"Practitioner/dr"}))}
    clause = Access(ps(), facts, Settings(), NOW).clause("Observation")
    assert clause is not None
    assert clause["$and"][0] == {"compartments": {"$in": ["Patient/a", "Patient/b"]}}
    assert Access(ps(), {"d": facts["d"]}, Settings(), NOW).clause("Observation") == {"_id": {"$in": []}}
    assert Access(ps(), facts, Settings(), NOW).clause("Practitioner") is None  # not patient data


def _official(name: str) -> Any:
    path = EXAMPLES / f"Consent-consent-example-{name}.json"
    if not path.exists():
        pytest.fail(f"{path} missing: scripts/test fetches the official examples")
    rule = consent_rule(json.loads(path.read_text()))
    assert rule is not None
    return rule


def test_official_examples_as_their_narratives_say() -> None:
    """Patient f001's record, seen by a treating physician (otherwise authorised) who works at Good Health
    Clinic (Organization/f001), or by Practitioner/f204, or by someone else."""
    at_f001 = ps("Practitioner/x", organization="Organization/f001")
    nurse = ps("Practitioner/f204")
    elsewhere = ps("Practitioner/y", organization="Organization/other")

    def stand(who: Identity, name: str) -> str:
        treating = frozenset({who.fhir_user or ""})
        return Access(who, {"f001": PatientFacts("f001", treating=treating, consents=(_official(name),))},
                      Settings(), NOW).record("f001")

    # Out and notOrg: nothing for Good Health Clinic, the others unaffected
    for name in ("Out", "notOrg"):
        assert stand(at_f001, name) == "none" and stand(elsewhere, name) == "care", name
    # notThem: nothing for the ex-spouse, Practitioner/f204
    assert stand(nurse, "notThem") == "none" and stand(elsewhere, "notThem") == "care"
    # basic: permitted for treatment until 2016; today it changes nothing
    assert stand(elsewhere, "basic") == "care"
    # notThis: the order Task/example3 and everything related to it withheld, the rest shown
    rule = _official("notThis")
    a = Access(elsewhere, {"f001": PatientFacts("f001", treating=frozenset({"Practitioner/y"}), consents=(rule,))},
               Settings(), NOW)
    result = {"resourceType": "Observation", "id": "r", "subject": {"reference": "Patient/f001"},
              "basedOn": [{"reference": "Task/example3"}]}
    unrelated = {**result, "id": "s", "basedOn": [{"reference": "ServiceRequest/1"}]}
    assert not a.permits("Observation", result, ["Patient/f001"])
    assert a.permits("Observation", unrelated, ["Patient/f001"])
