"""The consent clause (consent/engine.py ``Access.clause``) and the per-resource decision
(``Access.permits``) agree on every resource: random records, labels, authors, Consents, registered
legal representatives (some lapsed) and callers (hypothesis). The clause is evaluated here by a small
interpreter of the filter operators it uses, over the columns the store indexes (search/index.py), so
the property needs no database."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.auth.scopes import parse_scopes
from fhir_server.consent.engine import Access, PatientFacts, Representative, Settings
from fhir_server.consent.model import consent_rule
from fhir_server.context import Identity
from fhir_server.search.index import index

NOW = datetime(2026, 11, 27, tzinfo=UTC)
VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"
PATIENTS = ["p1", "p2", "p3"]
DOCTORS = ["Practitioner/a", "Practitioner/b", "Practitioner/c"]
RELATED = ["RelatedPerson/r", "RelatedPerson/s"]
PERIODS = [None, (NOW - timedelta(days=400), None), (NOW - timedelta(days=400), NOW - timedelta(days=1)),
           (NOW + timedelta(days=1), None)]  # open, in force, lapsed (majority reached), not yet
LABELS = ["MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"]


def _get(doc: dict[str, Any], path: str) -> list[Any]:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def holds(condition: dict[str, Any], doc: dict[str, Any]) -> bool:
    """MongoDB semantics for the operators the clause uses, on arrays of scalars."""
    for key, expected in condition.items():
        if key == "$and":
            if not all(holds(c, doc) for c in expected):
                return False
        elif key == "$or":
            if not any(holds(c, doc) for c in expected):
                return False
        else:
            values = _get(doc, key)
            if isinstance(expected, dict):
                for op, arg in expected.items():
                    if op == "$in" and not set(values) & set(arg):
                        return False
                    if op == "$nin" and set(values) & set(arg):
                        return False
                    if op == "$lt" and not any(v < arg for v in values):
                        return False
            elif expected not in values:
                return False
    return True


@st.composite
def documents(draw: Any) -> dict[str, Any]:
    days = draw(st.integers(0, 90))
    return {"resourceType": "DocumentReference", "id": f"d{draw(st.integers(0, 10**6))}", "status": "current",
            "date": (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": {"reference": f"Patient/{draw(st.sampled_from(PATIENTS))}"},
            "author": [{"reference": draw(st.sampled_from(DOCTORS))}],
            "type": {"coding": [{"system": "http://loinc.org", "code": draw(st.sampled_from(["11490-0", "15508-5"]))}]},
            "securityLabel": [{"coding": [{"system": VISIBILITY, "code": c}]}
                              for c in draw(st.sets(st.sampled_from(LABELS), max_size=2))]}


@st.composite
def facts(draw: Any) -> dict[str, PatientFacts]:
    found = {}
    for patient in PATIENTS:
        rules = []
        for i, (kind, actor) in enumerate(draw(st.lists(st.tuples(st.sampled_from(["permit", "deny"]),
                                                                   st.sampled_from(DOCTORS)), max_size=3))):
            rule = consent_rule({"resourceType": "Consent", "id": f"{patient}-{i}", "status": "active",
                                 "patient": {"reference": f"Patient/{patient}"},
                                 "scope": {"coding": [{"code": "patient-privacy"}]},
                                 "provision": {"type": kind, "actor": [{"role": {"coding": [{"code": "IRCP"}]},
                                                                        "reference": {"reference": actor}}]}})
            assert rule is not None
            rules.append(rule)
        if draw(st.booleans()):
            rules.append(consent_rule({"resourceType": "Consent", "id": f"{patient}-btg", "status": "active",
                                       "patient": {"reference": f"Patient/{patient}"},
                                       "scope": {"coding": [{"code": "patient-privacy"}]},
                                       "provision": {"type": "deny", "purpose": [{"code": "BTG"}]}}))
        registered = draw(st.lists(st.tuples(st.sampled_from(RELATED), st.sampled_from(PERIODS)), max_size=2))
        found[patient] = PatientFacts(patient, open=draw(st.booleans()) or patient == "p1",
                                      treating=frozenset(draw(st.sets(st.sampled_from(DOCTORS), max_size=1))),
                                      consents=tuple(r for r in rules if r),
                                      representatives=tuple(Representative(r, patient, when) for r, when in registered))
    return found


callers = st.one_of(
    st.builds(lambda d, purpose, profession: Identity("practitioner", "app", parse_scopes("user/*.rs"), fhir_user=d,
                                                       purpose=purpose, profession=profession),
              st.sampled_from(DOCTORS), st.sampled_from(["TREAT", "BTG", "ETREAT"]), st.sampled_from(["10", "80"])),
    st.builds(lambda p: Identity("patient", "app", (), fhir_user=f"Patient/{p}", patient=p), st.sampled_from(PATIENTS)),
    # registered or not, in force or not, for the patient the token names or another: the facts decide
    st.builds(lambda r, p: Identity("representative", "app", (), fhir_user=r, patient=p),
              st.sampled_from(RELATED), st.sampled_from(PATIENTS)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts(), callers, st.lists(documents(), min_size=1, max_size=6), st.booleans(), st.sets(st.sampled_from(PATIENTS)))
def test_clause_and_per_resource_decision_agree(record: dict[str, PatientFacts], who: Identity,
                                                docs: list[dict[str, Any]], treating_sees_masked: bool,
                                                named: set[str]) -> None:
    rules = Settings(treating_physician_sees_masked=treating_sees_masked, forbidden_types={"80": frozenset({"15508-5"})})
    access = Access(who, record, rules, NOW, named=named)
    clause = access.clause("DocumentReference")
    assert clause is not None
    for doc in docs:
        stored = {"_id": doc["id"], **index(doc)}
        assert holds(clause, stored) == access.permits("DocumentReference", doc, stored["compartments"]), (doc, clause)


def test_representatives_registered_or_not_both_occur() -> None:
    """The generator gives the property both kinds of representative caller (a sanity check of the strategy)."""
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(facts(), callers)
    def collect(record: dict[str, PatientFacts], who: Identity) -> None:
        if who.kind == "representative":
            seen.add(Access(who, record, Settings(), NOW).record(who.patient or ""))

    collect()
    assert seen == {"representative", "none"}
