"""The audit trail over HTTP (fhir_server/audit/balp.py, audit/trail.py): the exact AuditEvents each
access writes, append-only AuditEvents, the patient reading their own access history, and failing
closed when the trail cannot be written."""
from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from pymongo import ASCENDING

from fhir_server.audit import trail
from fhir_server.errors import ServiceUnavailable
from fhir_server.resources.validation import resource_issues
from fhir_server.storage import Store
from fhir_server.storage.search import stored_json
from tests.conftest import Fhir, LiveServer, assert_outcome

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
PRIVACY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}


def _consent(patient: str, kind: str, actor: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active", "scope": PRIVACY,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-01",
            "provision": {"type": kind, "actor": [{"role": {"coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                "reference": {"reference": actor}}]}}


def events_of(db: Any, client: Fhir) -> list[dict[str, Any]]:
    """The AuditEvents written for requests made with this client's token (its jti is unique)."""
    from joserfc import jws
    jti = orjson.loads(jws.extract_compact(client.token.encode()).payload)["jti"]  # type: ignore[union-attr]
    found = []
    for doc in db["AuditEvent"].find({}, {"json": 1, "z": 1}, sort=[("ts", ASCENDING)]):
        event = orjson.loads(stored_json(doc))
        if any(f"urn:jti:{jti}" in (a.get("policy") or []) for a in event["agent"]):
            found.append(event)
    return found


def profiles(events: list[dict[str, Any]]) -> list[str]:
    """The BALP profile of each event; a decision by roles alone claims none: its subtype, AuthZ-Role."""
    return [e["meta"]["profile"][0].removeprefix(BALP) if e["meta"].get("profile") else e["subtype"][0]["code"]
            for e in events]


def patients(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event["entity"] if e.get("role", {}).get("code") == "1"]


@pytest.fixture(scope="module")
def record(server: LiveServer) -> dict[str, str]:
    admin = server.client()
    gp = admin.post("Practitioner", {"resourceType": "Practitioner", "name": [{"family": "Audit"}]}).json()["id"]
    ids = {"gp": gp}
    for name in ("a", "b"):
        ids[name] = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": name}],
                                           "generalPractitioner": [{"reference": f"Practitioner/{gp}"}]}).json()["id"]
        ids[f"obs_{name}"] = admin.post("Observation", {"resourceType": "Observation", "status": "final",
                                                        "code": {"text": "audit"},
                                                        "subject": {"reference": f"Patient/{ids[name]}"}}).json()["id"]
    ids["stranger"] = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": "s"}]}).json()["id"]
    ids["obs_s"] = admin.post("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                              "subject": {"reference": f"Patient/{ids['stranger']}"}}).json()["id"]
    return ids


def test_each_access_writes_its_events(server: LiveServer, db: Any, record: dict[str, str]) -> None:
    gp = server.client("user/*.cruds", fhir_user=f"Practitioner/{record['gp']}", rpps="10009", profession="10")
    assert gp.get(f"Observation/{record['obs_a']}").status_code == 200
    events = events_of(db, gp)
    assert profiles(events) == ["PatientRead", "AuthZ-Role"]
    read, permit = events
    assert read["action"] == "R" and read["outcome"] == "0" and read["subtype"][0]["code"] == "read"
    assert patients(read) == [f"Patient/{record['a']}"]
    assert f"Observation/{record['obs_a']}/_history/1" in [e["what"]["reference"] for e in read["entity"]]
    user = next(a for a in read["agent"] if a["requestor"])
    assert user["who"]["reference"] == f"Practitioner/{record['gp']}" and user["who"]["identifier"]["value"] == "10009"
    assert {a["type"]["coding"][0]["code"] for a in read["agent"]} >= {"110153", "110152", "IRCP"}
    # the consent decision the read rested on: a permit, for that record
    assert permit["outcome"] == "0" and patients(permit) == [f"Patient/{record['a']}"]
    # a search over two patients: one PatientQuery and one permit per patient, with the query
    assert len(gp.get("Observation?code:text=audit").json()["entry"]) == 2
    events = events_of(db, gp)[2:]
    assert profiles(events) == ["PatientQuery", "PatientQuery", "AuthZ-Role", "AuthZ-Role"]
    assert sorted(p for e in events[:2] for p in patients(e)) == sorted([f"Patient/{record['a']}", f"Patient/{record['b']}"])
    assert sorted(p for e in events[2:] for p in patients(e)) == sorted([f"Patient/{record['a']}", f"Patient/{record['b']}"])
    query = next(e for e in events[0]["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode().startswith("Observation?code%3Atext=audit")
    # a search that finds nobody's data: the non-patient Query pattern, no consent decision
    gp.get("Practitioner?name=nobody")
    assert profiles(events_of(db, gp)[6:]) == ["Query"]
    # a refused read: the consent decision, and the answer a missing resource gets
    assert gp.get(f"Observation/{record['obs_s']}").status_code == 404
    denied = events_of(db, gp)[7:]
    assert profiles(denied) == ["AuthZ-Role"] and denied[0]["outcome"] == "4"
    assert patients(denied[0]) == [f"Patient/{record['stranger']}"]
    # writes: the DMP's write rules decide first (permit), then the write is recorded
    created = gp.post("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "new"},
                                      "subject": {"reference": f"Patient/{record['a']}"}})
    assert created.status_code == 201
    assert profiles(events_of(db, gp)[8:]) == ["AuthZ-Role", "PatientCreate"]
    # a refused write is a consent decision too (rule 10: a patient's Consents are the patient's)
    refused = gp.post("Consent", _consent(record["a"], "deny", "Practitioner/autre"))
    assert refused.status_code == 403
    denied = events_of(db, gp)[10:]
    assert profiles(denied) == ["AuthZ-Role"] and denied[0]["outcome"] == "4"
    # every event validates
    for event in events_of(db, gp):
        assert resource_issues(event) == [], event


def test_a_consent_decision_names_the_consents_it_weighed(server: LiveServer, db: Any, record: dict[str, str]) -> None:
    """BALP AuthZconsent: the patient's Consents are the decision's entities, whichever way it went."""
    patient = server.client("patient/*.cruds", fhir_user=f"Patient/{record['b']}")
    consent = patient.post("Consent", _consent(record["b"], "deny", "Practitioner/bloque"))
    assert consent.status_code == 201, consent.text
    gp = server.client("user/*.rs", fhir_user=f"Practitioner/{record['gp']}")
    blocked = server.client("user/*.rs", fhir_user="Practitioner/bloque")
    assert gp.get(f"Observation/{record['obs_b']}").status_code == 200
    assert blocked.get(f"Observation/{record['obs_b']}").status_code == 404
    for client, outcome in ((gp, "0"), (blocked, "4")):
        decision = [e for e in events_of(db, client) if profiles([e]) == ["AuthZconsent"]]
        assert len(decision) == 1 and decision[0]["outcome"] == outcome
        weighed = [e["what"]["reference"] for e in decision[0]["entity"] if e["type"]["code"] == "Consent"]
        assert weighed == [f"Consent/{consent.json()['id']}"]


def test_emergency_access_raises_a_security_alert(server: LiveServer, db: Any, record: dict[str, str]) -> None:
    doctor = server.client("user/*.rs", fhir_user="Practitioner/urgentiste", purpose="BTG")
    assert doctor.get(f"Observation/{record['obs_s']}").status_code == 200
    events = events_of(db, doctor)
    assert profiles(events) == ["PatientRead", "AuthZ-Role", "SecurityAlert"]
    alert = events[2]
    assert alert["subtype"][0]["code"] == "110127" and alert["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"


def test_the_trail_is_searched_by_patient_date_agent_entity_type_subtype_outcome_and_purpose(
        server: LiveServer, record: dict[str, str]) -> None:
    doctor = server.client("user/*.rs", fhir_user="Practitioner/trail-search", purpose="BTG")
    assert doctor.get(f"Observation/{record['obs_s']}").status_code == 200
    admin = server.client()

    def found(query: str) -> list[str]:
        bundle = admin.get(f"AuditEvent?agent=Practitioner/trail-search&{query}").json()
        assert bundle["resourceType"] == "Bundle", bundle
        return sorted(profiles([e["resource"] for e in bundle.get("entry", [])]))

    every = ["AuthZ-Role", "PatientRead", "SecurityAlert"]
    assert found("purpose=http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG") == every
    assert found("purpose=TREAT") == []
    assert found(f"patient=Patient/{record['stranger']}") == every
    assert found(f"patient=Patient/{record['a']}") == []
    assert found(f"date=ge{datetime.now(UTC).date().isoformat()}") == every and found("date=lt2026-01-01") == []
    assert found(f"entity=Observation/{record['obs_s']}/_history/1") == ["PatientRead"]
    assert found("type=http://dicom.nema.org/resources/ontology/DCM|110113") == ["AuthZ-Role", "SecurityAlert"]
    assert found("subtype=http://hl7.org/fhir/restful-interaction|read") == ["PatientRead"]
    assert found("subtype=110127") == ["SecurityAlert"]
    assert found("outcome=0") == every and found("outcome=4,8") == []
    assert found("action=R") == ["PatientRead"]
    definition = admin.get("SearchParameter/AuditEvent-purpose").json()  # the server's own, published
    assert definition["code"] == "purpose" and definition["base"] == ["AuditEvent"]
    audit = next(r for r in admin.get("metadata").json()["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {"name": "purpose", "type": "token", "definition": definition["url"]} in audit["searchParam"]


def test_refused_tokens_and_emergency_notices(server: LiveServer, db: Any, record: dict[str, str]) -> None:
    before = db["AuditEvent"].count_documents({})
    import requests
    refused = requests.get(f"{server.base}/Patient", headers={"Authorization": "Bearer forged"}, timeout=30)
    assert refused.status_code == 401
    alerts = [e for e in (orjson.loads(stored_json(d)) for d in db["AuditEvent"].find({}, skip=before))
              if e["type"]["code"] == "110114"]
    assert len(alerts) == 1 and alerts[0]["outcome"] == "4" and resource_issues(alerts[0]) == []
    doctor = server.client("user/*.rs", fhir_user="Practitioner/samu", purpose="ETREAT")
    assert doctor.get(f"Observation/{record['obs_s']}").headers["X-Emergency-Access"] == "ETREAT"
    assert "X-Emergency-Access" not in server.client().get(f"Observation/{record['obs_s']}").headers


def test_audit_events_are_append_only_and_the_patient_reads_their_own(server: LiveServer, db: Any,
                                                                      record: dict[str, str]) -> None:
    admin = server.client()
    some = admin.get(f"AuditEvent?patient=Patient/{record['a']}&_count=1").json()["entry"][0]["resource"]
    assert_outcome(admin.put(f"AuditEvent/{some['id']}", some), 405)
    assert_outcome(admin.delete(f"AuditEvent/{some['id']}"), 405)
    patient = server.client("patient/*.rs", fhir_user=f"Patient/{record['a']}")
    own = patient.get(f"AuditEvent?patient=Patient/{record['a']}&_count=100").json()
    seen = {p for e in own["entry"] for p in patients(e["resource"])}
    assert seen == {f"Patient/{record['a']}"}
    assert patient.get(f"AuditEvent?patient=Patient/{record['b']}").json().get("entry", []) == []
    # reading the trail is itself audited (one PatientQuery, with its consent decision), and does not recurse
    assert profiles(events_of(db, patient)) == ["PatientQuery", "AuthZ-Role", "Query"]


def test_the_request_fails_closed_when_the_trail_cannot_be_written(ferretdb: Any, mongo: Any, tmp_path: Any) -> None:
    live = LiveServer(ferretdb.uri, "fhir_audit_down", tmp_path).start()
    try:
        admin = live.client()
        patient = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": "Panne"}]}).json()
        db = mongo["fhir_audit_down"]
        # make the audit store refuse every new event: a unique index that every event collides with
        db["AuditEvent"].delete_many({})
        db["AuditEvent"].create_index([("v", ASCENDING)], unique=True, name="jam")
        db["AuditEvent"].insert_one({"_id": "jam", "v": 1, "d": True})
        committed = db["history"].count_documents({"t": "AuditEvent"})
        answered = admin.get(f"Patient/{patient['id']}")
        assert_outcome(answered, 503, "transient")
        assert patient["id"] not in answered.text  # nothing returned without its audit
        assert db["history"].count_documents({"t": "AuditEvent"}) == committed  # the half-write rolled back
        db["AuditEvent"].drop_index("jam")
        db["AuditEvent"].delete_one({"_id": "jam"})
        statuses = [admin.get(f"Patient/{patient['id']}").status_code for _ in range(5)]
        assert statuses == [200] * 5
        reads = [e for e in (orjson.loads(stored_json(d)) for d in db["AuditEvent"].find({}))
                 if e.get("subtype", [{}])[0].get("code") == "read"]
        assert len(reads) == 5  # exactly one per answered read, none for the refused one
    finally:
        live.kill()


def test_access_history_and_first_access_notice(server: LiveServer, db: Any, record: dict[str, str]) -> None:
    admin = server.client()
    patient_id = admin.post("Patient", {"resourceType": "Patient", "name": [{"family": "Historique"}],
                                        "generalPractitioner": [{"reference": f"Practitioner/{record['gp']}"}]}).json()["id"]
    gp = server.client("user/*.rs", fhir_user=f"Practitioner/{record['gp']}", profession="10",
                       organization="Organization/cabinet")
    for _ in range(2):
        assert gp.get(f"Patient/{patient_id}").status_code == 200
    patient = server.client("patient/*.rs", fhir_user=f"Patient/{patient_id}")
    notices = patient.get(f"Communication?subject=Patient/{patient_id}").json().get("entry", [])
    assert len(notices) == 1  # the first access only
    assert notices[0]["resource"]["sender"]["reference"] == f"Practitioner/{record['gp']}"
    response = patient.get(f"Patient/{patient_id}/$access-history?_count=3")
    assert response.status_code == 200, response.text
    history = response.json()
    rows = [{part["name"]: part for part in p["part"]} for p in history["parameter"] if p["name"] == "access"]
    assert len(rows) == 3
    assert [r["when"]["valueInstant"] for r in rows] == sorted((r["when"]["valueInstant"] for r in rows), reverse=True)
    assert rows[0]["actor"]["valueReference"]["reference"] == f"Patient/{patient_id}"  # the Communication search
    doctor = rows[1]
    assert doctor["who"]["valueString"] == "Audit" and doctor["profession"]["valueCode"] == "10"
    assert doctor["organization"]["valueReference"]["reference"] == "Organization/cabinet"
    assert doctor["action"]["valueCode"] == "read" and doctor["mode"]["valueCode"] == "TREAT"
    assert any(p["name"] == "link" for p in history["parameter"])  # paged
    # each access is one row: the permit decided for it is not repeated (a refusal would be a row)
    everything = patient.get(f"Patient/{patient_id}/$access-history?_count=100").json()["parameter"]
    actions = [{part["name"]: part for part in p["part"]}["action"]["valueCode"] for p in everything if p["name"] == "access"]
    assert "read" in actions and "AuthZ-Consent" not in actions
    assert resource_issues(history) == []
    assert gp.get(f"Patient/{patient_id}/$access-history").status_code == 403


def test_every_kind_of_audit_event_written_passes_the_hl7_validator(server: LiveServer, db: Any,
                                                                    record: dict[str, str]) -> None:
    """Issue 6's proof: what the server writes (AuditEvents of every BALP pattern met in this module's
    tests, and the first-access notices) passes the HAPI FHIR validator with no error. One event of
    each shape (profile, subtype, outcome, entity roles) is enough: the rest differ only in ids."""
    from conformance_tests.validator import Validator

    shapes: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rtype in ("AuditEvent", "Communication"):
        for doc in db[rtype].find({}, {"json": 1, "z": 1}):
            resource = orjson.loads(stored_json(doc))
            shape = (rtype, tuple((resource.get("meta") or {}).get("profile") or ()),
                     tuple(c.get("code") for c in resource.get("subtype") or ()), resource.get("outcome"),
                     tuple(sorted(str((e.get("role") or {}).get("code")) for e in resource.get("entity") or ())))
            shapes.setdefault(shape, resource)
    assert {s[1][0].removeprefix(BALP) if s[1] else s[2][0] for s in shapes if s[0] == "AuditEvent"} >= {
        "PatientRead", "PatientQuery", "PatientCreate", "AuthZconsent", "AuthZ-Role"}
    with Validator() as validator:
        errors = {f"{r['resourceType']} {shape[1:]}: {i.location}: {i.message}"
                  for shape, r in shapes.items() for i in validator.validate(r).of("error", "fatal")}
    assert not errors, sorted(errors)


class _Counting(Store):
    """A real store that counts its AuditEvent inserts, takes its time (so that writes overlap), and
    refuses the inserts whose events are marked "refuse"."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self.inserts = 0

    def append(self, rtype: str, resources: list[dict[str, Any]], by: Any = ()) -> Any:
        self.inserts += 1
        time.sleep(0.01)
        if any(r.get("outcomeDesc") == "refuse" for r in resources):
            raise RuntimeError("refused")
        return super().append(rtype, resources, by)


def _event(n: int, refuse: bool = False) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-11-27T00:00:00Z",
            "agent": [{"requestor": True, "who": {"display": str(n)}}], "source": {"observer": {"display": "t"}},
            **({"outcomeDesc": "refuse"} if refuse else {})}


def test_concurrent_requests_share_inserts_and_each_is_answered_for_its_own(mongo: Any) -> None:
    store = _Counting(mongo[f"trail_{uuid.uuid4().hex[:8]}"])
    outcomes: dict[int, str] = {}

    def request(n: int) -> None:
        try:
            trail.record(store, [_event(n, refuse=n % 7 == 0), _event(n)])
            outcomes[n] = "stored"
        except ServiceUnavailable:
            outcomes[n] = "refused"

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(request, range(160)))
    stored = [orjson.loads(stored_json(d))["agent"][0]["who"]["display"] for d in store.db["AuditEvent"].find()]
    assert len(outcomes) == 160
    assert store.inserts < 160  # requests that came during a write shared the next one
    # a request is answered only when its events are stored; a refused batch stores none of its events
    assert sorted(stored) == sorted([str(n) for n, o in outcomes.items() if o == "stored"] * 2)
    assert all(outcomes[n] == "refused" for n in range(0, 160, 7))
    trail.record(store, [_event(1000)])  # the trail goes on after refusals
    assert store.db["AuditEvent"].count_documents({}) == len(stored) + 1
