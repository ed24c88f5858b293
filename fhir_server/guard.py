"""What one request may see and do: the token's scopes (auth/access.py) and, for patient data, the DMP
rules with the patients' Consents (consent/engine.py), over the facts this module loads.

Every read path asks the same two questions (ARCHITECTURE.md rules 5 and 6): ``clause(type)``, ANDed
into each query so that counts and pages stay true, and ``permits(type, ...)`` for each resource
before it leaves. The facts (which patients' records the caller may open, their Consents, and, for a
representative caller only, the registered legal representatives) are read from the store or from what
the worker learnt of them while no Patient, Consent, CareTeam or RelatedPerson was written since (one
lookup of the store's generation per request): a Consent change or a revoked representative applies to
the next request.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .auth import access
from .consent.engine import Access, PatientFacts, Settings, patients_in, representative
from .consent.model import ConsentRule, consent_rule
from .consent.writes import check_write
from .context import RequestContext
from .resources import jsonio
from .search.compile import Filter, conjunction
from .search.index import column, index
from .search.registry import compartments
from .storage import Store
from .storage.search import stored_json


def _and(*conditions: Filter | None) -> Filter | None:
    return conjunction(*conditions) or None


KNOWN_SECONDS = 30.0  # a safety net: what a worker knows is read again at least this often
KNOWN_MAX = 100_000  # entries a worker keeps


@dataclass
class _Known:
    """What a worker learnt from the records (facts, and the patients each caller may open), valid
    while the store's generation stays the same: a write of a Patient, Consent, CareTeam or
    RelatedPerson moves it before it is acknowledged, so the next request reads them again."""
    generation: int
    since: float = field(default_factory=time.monotonic)
    facts: dict[tuple[str, bool], PatientFacts | None] = field(default_factory=dict)
    candidates: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)

    def fresh(self, generation: int) -> bool:
        return self.generation == generation and time.monotonic() - self.since < KNOWN_SECONDS and \
            len(self.facts) + len(self.candidates) < KNOWN_MAX


_KNOWN: weakref.WeakKeyDictionary[Store, _Known] = weakref.WeakKeyDictionary()
_known_lock = threading.Lock()


def _learnt(store: Store) -> _Known:
    """This worker's knowledge of the store's records, after one lookup of its generation."""
    generation = store.generation()
    with _known_lock:
        known = _KNOWN.get(store)
        if known is None or not known.fresh(generation):
            known = _KNOWN[store] = _Known(generation)
        return known


class Guard:
    def __init__(self, store: Store, ctx: RequestContext, settings: Settings, targets: Iterable[str] = (),
                 narrowing: bool = True) -> None:
        self.store, self.ctx, self.settings, self.narrowing = store, ctx, settings, narrowing
        self.targets = {t for t in targets if t}  # patients the request names (emergency access is per patient)
        self._access: Access | None = None
        self._known: _Known | None = None

    @property
    def known(self) -> _Known:
        if self._known is None:
            self._known = _learnt(self.store)
        return self._known

    @property
    def who(self) -> Any:
        return self.ctx.who

    @property
    def unrestricted(self) -> bool:
        """Operators and local development: consent does not apply (their accesses are audited)."""
        return self.who.kind == "development" or (self.who.kind == "system" and self.who.operator)

    # -- facts -----------------------------------------------------------------------------------

    def consent(self, extra_patients: Iterable[str] = ()) -> Access:
        """The consent decision over the patients this request may concern (loaded once)."""
        extra = set(extra_patients) if not self.unrestricted else set()
        if self._access is None or not extra <= set(self._access.facts):
            known = dict(self._access.facts) if self._access else {}
            # a request that names its patients needs only theirs (its matches are theirs; anything
            # else it returns is decided with ``extra``); otherwise every record the caller may open
            wanted = set() if self.unrestricted else \
                ((self.targets or self._candidates()) | extra) - set(known)
            known.update(self._facts(wanted))
            self._access = Access(self.who, known, self.settings, named=self.targets)
        return self._access

    def _candidates(self) -> set[str]:
        """Patients whose record the caller may open without naming them: their own (patients,
        representatives), or where a professional is treating physician, in the care team or authorised."""
        who = self.who
        if who.kind in ("patient", "representative"):
            return {who.patient} if who.patient else set()
        if who.kind != "practitioner":
            return set()
        me = [r for r in (who.fhir_user, who.organization) if r]
        if who.rpps:
            me += [f"urn:oid:1.2.250.1.71.4.2.1|{who.rpps}", f"https://rpps.esante.gouv.fr|{who.rpps}"]
        if not me:
            return set()
        key = tuple(sorted(me))
        if (known := self.known.candidates.get(key)) is not None:
            return set(known)
        found: set[str] = set()
        for rtype, code in (("Consent", "actor"), ("Patient", "general-practitioner"), ("CareTeam", "participant")):
            for doc in self.store.find_current(rtype, {column(code, "r"): {"$in": me}}, {"compartments": 1}):
                found.update(patients_in(doc.get("compartments") or ()))
        self.known.candidates[key] = frozenset(found)
        return found

    def _facts(self, patients: set[str]) -> dict[str, PatientFacts]:
        """The facts of these patients' records (those that exist), from what this worker knows or else
        from the store. Only a representative's decision depends on the registered representatives:
        nobody else pays their lookup."""
        with_representatives = self.who.kind == "representative"
        facts, missing = {}, set()
        for patient in patients:
            if (patient, with_representatives) not in self.known.facts:
                missing.add(patient)
            elif (known := self.known.facts[(patient, with_representatives)]) is not None:
                facts[patient] = known
        loaded = self._load_facts(missing, with_representatives)
        for patient in missing:
            self.known.facts[(patient, with_representatives)] = loaded.get(patient)
        return facts | loaded

    def _load_facts(self, patients: set[str], with_representatives: bool) -> dict[str, PatientFacts]:
        if not patients:
            return {}
        refs = [f"Patient/{p}" for p in sorted(patients)]
        consents: dict[str, list[Any]] = {}
        for resource in self.store.current_resources("Consent", {"compartments": {"$in": refs}}):
            rule = _rule(resource)
            if rule is not None:
                consents.setdefault(rule.patient, []).append(rule)
        teams: dict[str, set[str]] = {}
        for team in self.store.current_resources("CareTeam", {"compartments": {"$in": refs}}):
            subject = ((team.get("subject") or {}).get("reference") or "").removeprefix("Patient/")
            if team.get("status") in (None, "active"):
                teams.setdefault(subject, set()).update(
                    (p.get("member") or {}).get("reference", "") for p in team.get("participant") or ())
        representatives: dict[str, list[Any]] = {}
        if with_representatives:
            for person in self.store.current_resources("RelatedPerson", {"compartments": {"$in": refs}}):
                if (found := representative(person)) is not None:
                    representatives.setdefault(found.patient, []).append(found)
        facts = {}
        for patient in self.store.current_by_ids("Patient", sorted(patients)):
            pid = str(patient["id"])
            facts[pid] = PatientFacts(
                pid, open=patient.get("active") is not False,
                treating=frozenset(g.get("reference", "") for g in patient.get("generalPractitioner") or ()),
                care_team=frozenset(teams.get(pid, ())), consents=tuple(consents.get(pid, ())),
                representatives=tuple(representatives.get(pid, ())))
        return facts

    def consents_used(self, patient: str) -> list[str]:
        """The patient's Consents this request's decisions weighed (the entities of BALP AuthZconsent)."""
        facts = self._access.facts.get(patient) if self._access else None
        return [f"Consent/{rule.id}" for rule in facts.consents] if facts else []

    def acts_for(self, patient: str) -> bool:
        """Rule 10: is the caller the patient, or their registered legal representative (in force now)?"""
        if self.who.kind == "patient":
            return self.who.patient == patient
        return self.who.kind == "representative" and self.who.patient == patient and \
            self.consent([patient]).record(patient) == "representative"

    # -- decisions ----------------------------------------------------------------------------------

    def clause(self, rtype: str, letters: str) -> Filter | None:
        scopes = access.narrowing(self.who, rtype, letters, self.ctx.base_url)
        if scopes == access.NOTHING:
            return scopes
        if self.who.kind == "system" and not self.who.operator and access_is_patient_data(rtype):
            return _and(scopes, {"by": f"client/{self.who.client_id}"})  # a system client reads what it fed
        return _and(scopes, self.consent().clause(rtype) if self.narrowing else None)

    def permits(self, rtype: str, letters: str, in_compartments: Callable[[], Sequence[str]],
                resource: Callable[[], dict[str, Any]], written_by: Callable[[], Sequence[str]] = tuple) -> bool:
        if not access.permits(self.who, rtype, letters, in_compartments, resource, self.ctx.base_url):
            return False
        if self.unrestricted:
            return True
        if rtype == "Binary":
            return self._context_permits(resource())
        if not access_is_patient_data(rtype):
            return True
        if self.who.kind == "system":
            return f"client/{self.who.client_id}" in written_by()
        compartments = in_compartments()
        return self.consent(patients_in(compartments)).permits(rtype, resource(), compartments)

    def _context_permits(self, binary: dict[str, Any]) -> bool:
        """A Binary with a ``securityContext`` (a document's bytes) is visible exactly when that
        resource is: access is decided again at every retrieval (ITI-68)."""
        reference = ((binary.get("securityContext") or {}).get("reference") or "").removeprefix(self.ctx.base_url + "/")
        if not reference:
            return True
        rtype, _, rid = reference.partition("/")
        context = self.store.read(rtype, rid) if rid and "/" not in rid else None
        if context is None or context.deleted or context.json is None:
            return False
        return self.permits(rtype, "r", lambda: context.compartments or (),
                            lambda: jsonio.loads(context.json or b"{}"), lambda: context.by)

    def history_clause(self, rtype: str | None, letters: str) -> Filter | None:
        """The same narrowing over ``history`` entries (``t`` type, ``c`` compartments, ``by`` writer),
        at type level (``rtype``) or system level (None). Labels are checked per entry."""
        patient_types = sorted(_patient_types())
        types = [rtype] if rtype else patient_types
        options: list[Filter] = []
        bound = access.patient_bound(self.who, rtype or "Patient", letters)
        if bound is not None:
            options.append({"c": f"Patient/{bound}" if bound else "\u0000"})
        if self.who.kind == "system" and not self.who.operator:
            options.append({"by": f"client/{self.who.client_id}"})
        elif self.narrowing and not self.consent().unrestricted:
            consent = self.consent()
            refs = [f"Patient/{p}" for p in consent.facts if consent.record(p) != "none"]
            options.append({"c": {"$in": refs}})
        if not options or not any(t in patient_types for t in types):
            return None
        narrowed = _and(*options)
        return narrowed if rtype else {"$or": [{"t": {"$nin": patient_types}}, narrowed]}

    def write_patients(self, rtype: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> list[str]:
        """The records whose DMP rules decide this write (none for operators and non-patient data)."""
        if not access_is_patient_data(rtype) or self.unrestricted:
            return []
        return sorted({p for r in (new, old) if r for p in patients_in(index(r)["compartments"])})

    def check_write(self, action: str, rtype: str, new: dict[str, Any] | None, old: dict[str, Any] | None,
                    patients: list[str]) -> None:
        """The DMP rules on writes (consent/writes.py), over the records the resource belongs to
        (``write_patients``)."""
        if not patients:
            return
        facts = self.consent(patients).facts
        check_write(self.who, action, rtype, new, old, {p: facts[p] for p in patients if p in facts}, self.settings,
                    self.settings.allow_hidden_and_masked)

    # -- the storage Policy (storage/search.py) --------------------------------------------------

    def allows(self, rtype: str, letters: str, doc: dict[str, Any]) -> bool:
        return self.permits(rtype, letters, lambda: doc.get("compartments") or (),
                            lambda: jsonio.loads(stored_json(doc)), lambda: doc.get("by") or ())

    def exact(self, rtype: str) -> bool:
        if rtype == "Binary":  # decided by each one's securityContext
            return self.unrestricted
        if not self.narrowing:
            return not access_is_patient_data(rtype) or self.consent().unrestricted
        return self.who.kind == "system" or self.consent().exact(rtype)


_RULES: dict[tuple[str, str], ConsentRule | None] = {}


def _rule(resource: dict[str, Any]) -> ConsentRule | None:
    """A Consent's rule, parsed once per version in this worker (a version never changes; which
    versions are current is still read on every request)."""
    key = (str(resource.get("id")), str((resource.get("meta") or {}).get("versionId")))
    if key not in _RULES:
        if len(_RULES) > 100_000:
            _RULES.clear()
        _RULES[key] = consent_rule(resource)
    return _RULES[key]


def _patient_types() -> set[str]:
    return {"Patient", *compartments()["Patient"]}


def access_is_patient_data(rtype: str) -> bool:
    return rtype in _patient_types()
