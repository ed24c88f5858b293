"""The DMP rules over HTTP (fhir_server/guard.py with consent/engine.py): a small DMP, every actor of
DMP.md, every read path; each answer must equal the brute-force answer (the engine's per-resource
decision applied to every resource of the data set). Run twice: with the query narrowing, and with it
switched off (per-resource checks only), which must leak nothing either."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_server.auth.scopes import parse_scopes
from fhir_server.consent.engine import Access, PatientFacts, Settings, habilitation_grid, representative
from fhir_server.consent.model import consent_rule
from fhir_server.context import Identity
from tests.conftest import Fhir, LiveServer, own_server

VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"
PRIVACY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
RECENT = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def _consent(patient: str, kind: str, actor: str | None = None, purpose: str | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": kind}
    if actor:
        provision["actor"] = [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                    "code": "IRCP"}]}, "reference": {"reference": actor}}]
    if purpose:
        provision["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]
    return {"resourceType": "Consent", "status": "active", "scope": PRIVACY,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-01-01", "provision": provision}


def _document(patient: str, author: str, doc_type: str = "11490-0", labels: tuple[str, ...] = (),
              date: str = "2026-06-01T10:00:00+02:00") -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current", "date": date,
            "type": {"coding": [{"system": "http://loinc.org", "code": doc_type}]},
            "subject": {"reference": f"Patient/{patient}"}, "author": [{"reference": author}],
            "securityLabel": [{"coding": [{"system": VISIBILITY, "code": c}]} for c in labels],
            "content": [{"attachment": {"contentType": "text/plain", "data": "Q1I="}}]}


class Dmp:
    """The data set: ids by role, every resource created, and the facts the engine decides on."""

    def __init__(self, server: LiveServer) -> None:
        admin = server.client()
        self.server = server
        self.resources: dict[str, dict[str, Any]] = {}

        def create(body: dict[str, Any], client: Fhir = admin) -> str:
            response = client.post(body["resourceType"], body)
            assert response.status_code == 201, response.text
            created = response.json()
            self.resources[f"{created['resourceType']}/{created['id']}"] = created
            return str(created["id"])

        self.dr = {name: create({"resourceType": "Practitioner", "name": [{"family": name}]})
                   for name in ("mt", "auth", "blocked", "none", "btg", "regul", "podo")}
        ref = {name: f"Practitioner/{rid}" for name, rid in self.dr.items()}
        self.p = {
            "adult": create({"resourceType": "Patient", "name": [{"family": "Adulte"}],
                             "generalPractitioner": [{"reference": ref["mt"]}]}),
            "minor": create({"resourceType": "Patient", "name": [{"family": "Mineur"}], "birthDate": "2015-03-02"}),
            "closed": create({"resourceType": "Patient", "name": [{"family": "Clos"}], "active": False,
                              "generalPractitioner": [{"reference": ref["mt"]}]}),
            "nobtg": create({"resourceType": "Patient", "name": [{"family": "Refus"}]}),
        }
        adult, minor = self.p["adult"], self.p["minor"]
        for body in (_consent(adult, "permit", ref["auth"]), _consent(adult, "permit", ref["blocked"]),
                     _consent(adult, "deny", ref["blocked"]), _consent(adult, "permit", ref["podo"]),
                     _consent(minor, "permit", ref["auth"]), _consent(self.p["nobtg"], "deny", purpose="BTG"),
                     _consent(self.p["nobtg"], "permit", ref["auth"])):
            create(body)
        for body in (_document(adult, ref["auth"]), _document(adult, ref["auth"], labels=("MASQUE_PS",)),
                     _document(adult, ref["mt"], labels=("MASQUE_PS",)),
                     _document(adult, ref["auth"], labels=("INVISIBLE_PATIENT",), date=RECENT),
                     _document(adult, ref["auth"], doc_type="15508-5"),
                     _document(minor, ref["auth"]), _document(minor, ref["auth"], labels=("INVISIBLE_REPRESENTANTS_LEGAUX",)),
                     _document(self.p["closed"], ref["mt"]), _document(self.p["nobtg"], ref["auth"])):
            create(body)
        # the minor's mother, registered as legal representative (what $register-representative writes);
        # his father, a RelatedPerson too but not registered: his token's claim alone opens nothing
        self.related = {
            "mother": create({"resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{minor}"},
                              "relationship": [{"coding": [{"system": ROLE, "code": "MTH"}]},
                                               {"coding": [{"system": ROLE, "code": "GUARD"}]}],
                              "period": {"start": "2015-03-02", "end": "2033-03-02"}}),
            "father": create({"resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{minor}"},
                              "relationship": [{"coding": [{"system": ROLE, "code": "FTH"}]}]}),
        }
        for patient in self.p.values():
            create({"resourceType": "Observation", "status": "final", "code": {"text": "glycémie"},
                    "subject": {"reference": f"Patient/{patient}"}})
        self.ehr = server.client("system/*.cruds", client_id="ehr-feeder", operator=False)
        create(_document(adult, ref["auth"]), self.ehr)

    def actors(self) -> dict[str, dict[str, Any]]:
        """Token claims of every actor."""
        dr = {name: {"fhir_user": f"Practitioner/{rid}", "profession": "10"} for name, rid in self.dr.items()}
        dr["podo"]["profession"] = "80"
        dr["btg"]["purpose"] = "BTG"
        dr["regul"]["purpose"] = "ETREAT"
        return {
            "patient": {"fhir_user": f"Patient/{self.p['adult']}"},
            "representative": {"fhir_user": f"RelatedPerson/{self.related['mother']}", "patient": self.p["minor"]},
            "unregistered": {"fhir_user": f"RelatedPerson/{self.related['father']}", "patient": self.p["minor"]},
            **{f"dr_{k}": v for k, v in dr.items()},
            "ehr": {"client_id": "ehr-feeder", "operator": False},
        }

    def identity(self, claims: dict[str, Any]) -> Identity:
        user = claims.get("fhir_user")
        kind = "system" if not user else {"Patient": "patient", "RelatedPerson": "representative"}.get(
            user.split("/")[0], "practitioner")
        patient = claims.get("patient") or (user.split("/")[1] if kind == "patient" else None)
        return Identity(kind, claims.get("client_id", "fhir-server-cli"), parse_scopes("user/*.rs"), fhir_user=user,
                        patient=patient, purpose=claims.get("purpose", "TREAT"), profession=claims.get("profession"))

    def facts(self) -> dict[str, PatientFacts]:
        found = {}
        for pid in self.p.values():
            patient = self.resources[f"Patient/{pid}"]
            rules = tuple(r for body in self.resources.values() if (r := consent_rule(body)) and r.patient == pid)
            found[pid] = PatientFacts(pid, open=patient.get("active") is not False,
                                      treating=frozenset(g["reference"] for g in patient.get("generalPractitioner", [])),
                                      consents=rules, representatives=tuple(
                                          r for body in self.resources.values()
                                          if (r := representative(body)) and r.patient == pid))
        return found

    def expected(self, claims: dict[str, Any], rtype: str, patient: str | None = None) -> set[str]:
        """Brute force: every resource of the type (of ``patient``) the engine lets this actor see."""
        who = self.identity(claims)
        facts = self.facts()
        if who.kind == "practitioner":  # records open without being named, plus the one named
            mine = {pid for pid, f in facts.items() if who.fhir_user in f.treating or any(
                who.fhir_user in r.root.actors for r in f.consents)}
            facts = {pid: f for pid, f in facts.items() if pid in mine or pid == patient}
        access = Access(who, facts, Settings(forbidden_types=habilitation_grid()), named=[patient] if patient else [])
        seen = set()
        for ref, body in self.resources.items():
            subject = ((body.get("subject") or body.get("patient") or {}).get("reference") or "")
            owner = body["id"] if body["resourceType"] == "Patient" else subject.removeprefix("Patient/")
            if body["resourceType"] != rtype or (patient and owner != patient):
                continue
            if who.kind == "system":
                if body.get("meta", {}).get("versionId") and ref == self.fed:
                    seen.add(ref)
                continue
            if owner in access.facts and access.permits(rtype, body, [f"Patient/{owner}"]):
                seen.add(ref)
        return seen

    @property
    def fed(self) -> str:
        return list(self.resources)[-1]


@pytest.fixture(scope="module")
def server(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server and database of this module's own: the rules are tested on a small DMP (on FerretDB the
    consent lookups scan whole collections, which the shared test database makes large)."""
    # searches over every patient's documents prove that nothing leaks: ITI-67's "name the patient" is off
    yield from own_server(ferretdb, tmp_path_factory, "fhir_guard", FHIR_DOCUMENTS_SEARCH_NEEDS_PATIENT="false")


@pytest.fixture(scope="module")
def dmp(server: LiveServer) -> Dmp:
    return Dmp(server)


@pytest.fixture(scope="module", params=["narrowed", "checks only"])
def live(request: pytest.FixtureRequest, server: LiveServer, ferretdb: Any, tmp_path_factory: Any) -> Any:
    if request.param == "narrowed":
        yield server
        return
    other = LiveServer(ferretdb.uri, server.database, tmp_path_factory.mktemp("checks"),
                       FHIR_CONSENT_NARROWING="off", FHIR_DOCUMENTS_SEARCH_NEEDS_PATIENT="false").start()
    yield other
    other.kill()


def _ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    assert bundle.get("resourceType") == "Bundle", bundle
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode", "match") == mode}


ACTORS = ["patient", "representative", "unregistered", "dr_mt", "dr_auth", "dr_blocked", "dr_none", "dr_btg", "dr_regul",
          "dr_podo", "ehr"]


@pytest.mark.parametrize("actor", ACTORS)
def test_every_read_path_answers_exactly_what_the_rules_allow(dmp: Dmp, live: LiveServer, actor: str) -> None:
    claims = dmp.actors()[actor]
    client = live.client("user/*.rs" if claims.get("fhir_user") else "system/*.cruds", **claims)
    documents = dmp.expected(claims, "DocumentReference")
    everything = _ids(client.get("DocumentReference?_count=3&_total=accurate").json())
    # full pages: follow next links, every page full but the last
    seen, url, pages = set(), "DocumentReference?_count=2", 0
    while url:
        page = client.get(url).json()
        entries = _ids(page)
        pages += 1
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
        assert len(entries) == 2 or not url, page
        seen |= entries
    assert seen == documents, (actor, seen ^ documents)
    assert everything <= documents
    assert client.get("DocumentReference?_summary=count").json()["total"] == len(documents)
    for patient in dmp.p.values():
        named = dmp.expected(claims, "DocumentReference", patient)
        assert _ids(client.get(f"DocumentReference?patient={patient}").json()) == named, (actor, patient)
        observations = dmp.expected(claims, "Observation", patient)
        assert _ids(client.get(f"Observation?subject=Patient/{patient}").json()) == observations
        assert _ids(client.get(f"Patient/{patient}/DocumentReference").json()) == named
        shown = f"Patient/{patient}" in dmp.expected(claims, "Patient", patient)
        with_docs = client.get(f"Patient?_id={patient}&_revinclude=DocumentReference:subject").json()
        assert _ids(with_docs) == ({f"Patient/{patient}"} if shown else set())
        assert _ids(with_docs, "include") == (named if shown else set())
        included = client.get(f"DocumentReference?patient={patient}&_include=DocumentReference:subject").json()
        assert _ids(included, "include") == ({f"Patient/{patient}"} if shown and named else set())
    for ref in dmp.resources:  # a read names the resource, hence its patient
        if ref.startswith("DocumentReference/"):
            status = client.get(ref).status_code
            readable = any(ref in dmp.expected(claims, "DocumentReference", p) for p in dmp.p.values())
            assert status == (200 if readable else 404), (actor, ref)
    # the reads of a batch are reads: the same answers, entry by entry
    documents = [ref for ref in dmp.resources if ref.startswith("DocumentReference/")]
    batch = client.post("", {"resourceType": "Bundle", "type": "batch",
                             "entry": [{"request": {"method": "GET", "url": ref}} for ref in documents]})
    assert batch.status_code == 200, batch.text
    for ref, entry in zip(documents, batch.json()["entry"]):
        readable = any(ref in dmp.expected(claims, "DocumentReference", p) for p in dmp.p.values())
        assert entry["response"]["status"].split()[0] == ("200" if readable else "404"), (actor, ref, entry)


def test_a_representative_acts_only_while_registered(dmp: Dmp, server: LiveServer) -> None:
    """The token's claim (kind representative, patient) is not enough: the record must hold the registration,
    for reads and writes alike; and the registration itself is not a professional's to write."""
    minor, actors = dmp.p["minor"], dmp.actors()
    assert dmp.expected(actors["representative"], "DocumentReference", minor)  # the matrix is not vacuous
    assert dmp.expected(actors["unregistered"], "DocumentReference", minor) == set()
    mother = server.client("patient/*.cruds", **actors["representative"])
    father = server.client("patient/*.cruds", **actors["unregistered"])
    assert mother.get(f"Patient/{minor}").status_code == 200
    assert father.get(f"Patient/{minor}").status_code == 404
    assert father.get(f"Patient/{minor}/$access-history").status_code == 403
    assert father.post("Consent", _consent(minor, "deny", f"Practitioner/{dmp.dr['auth']}")).status_code == 403
    # a professional may not register a representative by writing the RelatedPerson (rule 10)
    doctor = server.client("user/*.cruds", **actors["dr_auth"])
    father_ref = f"RelatedPerson/{dmp.related['father']}"
    body = {**dmp.resources[father_ref], "relationship": [{"coding": [{"system": ROLE, "code": "GUARD"}]}]}
    refused = doctor.put(father_ref, body)
    assert refused.status_code == 403, refused.text
    assert server.client().get(father_ref).json()["meta"]["versionId"] == dmp.resources[father_ref]["meta"]["versionId"]
    assert father.get(f"Patient/{minor}").status_code == 404


def test_emergency_access_opens_only_the_record_it_names(dmp: Dmp, server: LiveServer) -> None:
    btg = server.client("user/*.rs", **dmp.actors()["dr_btg"])
    assert _ids(btg.get("DocumentReference").json()) == set()  # no patient named: nothing
    assert _ids(btg.get(f"DocumentReference?patient={dmp.p['adult']}").json())  # named: open
    assert _ids(btg.get(f"DocumentReference?patient={dmp.p['nobtg']}").json()) == set()  # refused BTG
    assert _ids(btg.get(f"DocumentReference?patient={dmp.p['closed']}").json()) == set()  # closed record


def test_a_consent_change_applies_to_the_next_request(dmp: Dmp, server: LiveServer) -> None:
    stranger = server.client("user/*.rs", **dmp.actors()["dr_none"])
    adult = dmp.p["adult"]
    assert _ids(stranger.get(f"DocumentReference?patient={adult}").json()) == set()
    admin = server.client()
    permit = admin.post("Consent", _consent(adult, "permit", f"Practitioner/{dmp.dr['none']}")).json()
    try:
        assert _ids(stranger.get(f"DocumentReference?patient={adult}").json())
        block = admin.post("Consent", _consent(adult, "deny", f"Practitioner/{dmp.dr['none']}")).json()
        assert _ids(stranger.get(f"DocumentReference?patient={adult}").json()) == set()
        admin.delete(f"Consent/{block['id']}")
        assert _ids(stranger.get(f"DocumentReference?patient={adult}").json())
    finally:
        admin.delete(f"Consent/{permit['id']}")
    assert _ids(stranger.get(f"DocumentReference?patient={adult}").json()) == set()


def test_the_records_a_caller_may_open_follow_every_write(dmp: Dmp, server: LiveServer) -> None:
    """The patients a professional may open without naming them (treating physician, care team) come
    from what each worker knows of the records: every write of a Patient or CareTeam applies to the
    next request, whichever worker answers it."""
    stranger = server.client("user/*.rs", **dmp.actors()["dr_none"])
    admin = server.client()
    me = {"reference": f"Practitioner/{dmp.dr['none']}"}
    nobtg, minor = dmp.p["nobtg"], dmp.p["minor"]

    def subjects() -> set[str]:
        found = set()
        for _ in range(4):  # several requests: the server's workers may each answer one
            bundle = stranger.get("Observation").json()
            found |= {e["resource"]["subject"]["reference"] for e in bundle.get("entry", [])}
        return found

    assert subjects() == set()
    patient = admin.get(f"Patient/{nobtg}").json()
    assert admin.put(f"Patient/{nobtg}", {**patient, "generalPractitioner": [me]}).status_code == 200
    try:
        assert subjects() == {f"Patient/{nobtg}"}
        team = admin.post("CareTeam", {"resourceType": "CareTeam", "status": "active",
                                       "subject": {"reference": f"Patient/{minor}"}, "participant": [{"member": me}]})
        assert subjects() == {f"Patient/{nobtg}", f"Patient/{minor}"}
        admin.delete(f"CareTeam/{team.json()['id']}")
        assert subjects() == {f"Patient/{nobtg}"}
    finally:
        admin.put(f"Patient/{nobtg}", {k: v for k, v in patient.items() if k != "meta"})
    assert subjects() == set()


def test_write_rules(dmp: Dmp, server: LiveServer) -> None:
    adult, closed = dmp.p["adult"], dmp.p["closed"]
    actors = dmp.actors()
    admin = server.client()
    blocked = server.client("user/*.cruds", **actors["dr_blocked"])
    stranger = server.client("user/*.cruds", **actors["dr_none"])
    patient = server.client("patient/*.cruds", **actors["patient"])
    created: list[str] = []

    def kept(response: Any) -> Any:
        if response.status_code == 201:
            created.append(f"{response.json()['resourceType']}/{response.json()['id']}")
        return response
    try:
        # rule 3: feeding needs no authorisation, even for a blocked professional
        fed = kept(blocked.post("DocumentReference", _document(adult, f"Practitioner/{dmp.dr['blocked']}")))
        assert fed.status_code == 201, fed.text
        # a conditional create's criteria see what the caller sees: a hidden document does not match
        hidden = next(r for r in dmp.resources if r.startswith("DocumentReference/")
                      and r not in dmp.expected(actors["dr_none"], "DocumentReference", adult)
                      and dmp.resources[r]["subject"]["reference"] == f"Patient/{adult}")
        made = kept(stranger.post("DocumentReference", _document(adult, f"Practitioner/{dmp.dr['none']}"),
                                  headers={"If-None-Exist": f"_id={hidden.split('/')[1]}"}))
        assert made.status_code == 201 and made.json()["id"] != hidden.split("/")[1], made.text
        assert kept(stranger.post("DocumentReference", _document(adult, f"Practitioner/{dmp.dr['none']}"))
                    ).status_code == 201
        # rule 9: a closed record takes no new data
        refused = kept(stranger.post("DocumentReference", _document(closed, f"Practitioner/{dmp.dr['none']}")))
        assert refused.status_code == 409 and "closed" in refused.text
        # rule 5: not both hidden from the patient and masked
        both = _document(adult, f"Practitioner/{dmp.dr['none']}", labels=("INVISIBLE_PATIENT", "MASQUE_PS"))
        assert kept(stranger.post("DocumentReference", both)).status_code == 422
        # rule 11: only the author deletes a document; the patient cannot delete a professional's
        mine = fed.json()["id"]
        assert patient.delete(f"DocumentReference/{mine}").status_code == 403
        assert admin.get(f"DocumentReference/{mine}").status_code == 200
        assert blocked.delete(f"DocumentReference/{mine}").status_code == 200
        assert admin.get(f"DocumentReference/{mine}").status_code == 410
        # rule 10: the patient changes their Consents; a professional records only plain authorisations
        none, auth, btg = (f"Practitioner/{dmp.dr[k]}" for k in ("none", "auth", "btg"))
        assert kept(patient.post("Consent", _consent(adult, "deny", none))).status_code == 201
        assert kept(stranger.post("Consent", _consent(adult, "deny", auth))).status_code == 403
        assert kept(stranger.post("Consent", _consent(adult, "permit", purpose="BTG"))).status_code == 403
        assert kept(stranger.post("Consent", _consent(adult, "permit", btg))).status_code == 201
        other = server.client("patient/*.cruds", fhir_user=f"Patient/{dmp.p['minor']}")
        assert kept(other.post("Consent", _consent(adult, "permit", none))).status_code == 403
    finally:
        for ref in created:  # leave the shared data set as the other tests know it
            assert admin.delete(ref).status_code == 200


def test_a_worker_reads_the_records_again_only_after_a_write(ferretdb: Any) -> None:
    """The facts and candidates a guard loads are kept per worker until the store's generation moves:
    a second request reads one generation document, a request after a Consent write reads again."""
    import uuid

    from pymongo import MongoClient, monitoring

    from fhir_server.context import RequestContext
    from fhir_server.guard import Guard
    from fhir_server.storage import connect

    class Commands(monitoring.CommandListener):
        seen: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "find":
                self.seen.append(str(event.command["find"]))

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None: ...

        def failed(self, event: monitoring.CommandFailedEvent) -> None: ...

    database = f"known_{uuid.uuid4().hex[:8]}"
    store = connect(ferretdb.uri, database, 1 << 20)
    store.db = MongoClient(ferretdb.uri, tz_aware=True, event_listeners=[Commands()])[database]
    dr = "Practitioner/dr1"
    patient = store.create("Patient", {"resourceType": "Patient", "generalPractitioner": [{"reference": dr}]}).id
    ctx = RequestContext("http://x/fhir", who=Identity("practitioner", "app", parse_scopes("user/*.rs"), fhir_user=dr))

    def request() -> tuple[PatientFacts, list[str]]:
        Commands.seen.clear()
        facts = Guard(store, ctx, Settings()).consent().facts[patient]
        return facts, list(Commands.seen)

    first, reads = request()
    assert first.treating == {dr} and {"Consent", "Patient", "CareTeam"} <= set(reads)
    again, reads = request()
    assert again == first and reads == ["generations"]
    store.create("Consent", _consent(patient, "deny", dr))
    after, reads = request()
    assert len(after.consents) == 1 and "Consent" in reads
