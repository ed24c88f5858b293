"""The DMP access rules (DMP.md, "Who may see what", rules 1-14) and the patient's Consents, decided
for one request: which patients' records the caller may open, and which resources of them it may see.

Inputs: the caller's Identity, the facts of the patients concerned (DMP open or closed, treating
physician, care team, active privacy Consents, registered legal representatives) and the Settings.
Outputs: ``Access.clause(type)``, a filter ANDed into every query (patients whose record is open to
the caller, masked documents left out), and ``Access.permits(type, resource, compartments)`` for
every resource before it leaves. Both come from ``Access.record(patient)``, the caller's standing to
one record. Pure.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..context import Identity
from ..search.index import column
from ..search.registry import compartments
from .model import ConsentRule, Provision, period_of

VISIBILITY_SYSTEMS = ("urn:oid:1.2.250.1.213.1.1.4.13",
                      "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument")
MASKED = "MASQUE_PS"  # hidden from professionals other than the author
HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"  # until the announcement consultation, at most a month
HIDDEN_FROM_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
EMERGENCY = ("BTG", "ETREAT")
NOTHING: dict[str, Any] = {"_id": {"$in": []}}
# A RelatedPerson is a patient's legal representative when its relationship holds this coding (HL7
# RoleCode GUARD, "guardian": the one code of the R4 RelatedPerson value set for a legal guardian),
# it is not inactive and its period covers now. Registered by Patient/{id}/$register-representative.
LEGAL_REPRESENTATIVE = ("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "GUARD")


@dataclass(frozen=True)
class Settings:
    """The DMP rules' settings (README, "Consent settings")."""

    treating_physician_sees_masked: bool = False  # rule 4
    block_beats_emergency: bool = True  # rule 2
    hidden_from_patient_days: int = 30  # rule 5: INVISIBLE_PATIENT lapses after this
    # rule 8: profession (TRE_G15 code) -> DocumentReference types (LOINC) it may never read
    forbidden_types: dict[str, frozenset[str]] = field(default_factory=dict)
    allow_hidden_and_masked: bool = False  # rule 5: INVISIBLE_PATIENT together with MASQUE_PS


def habilitation_grid() -> dict[str, frozenset[str]]:
    """Rule 8's grid, shipped as data (fhir_server/data/habilitation.json)."""
    import json
    from pathlib import Path
    table = json.loads((Path(__file__).resolve().parent.parent / "data" / "habilitation.json").read_text())
    return {k: frozenset(v) for k, v in table.items() if not k.startswith("_")}


@dataclass(frozen=True)
class Representative:
    """A RelatedPerson registered as a patient's legal representative, and when."""

    reference: str  # "RelatedPerson/7"
    patient: str  # the Patient id
    period: tuple[datetime | None, datetime | None] | None = None


def representative(resource: dict[str, Any] | None) -> Representative | None:
    """The registration a RelatedPerson carries (the LEGAL_REPRESENTATIVE coding, not inactive), or None."""
    if not resource or resource.get("resourceType") != "RelatedPerson" or resource.get("active") is False:
        return None
    system, code = LEGAL_REPRESENTATIVE
    if not any(isinstance(c, dict) and c.get("system") == system and c.get("code") == code
               for concept in resource.get("relationship") or () if isinstance(concept, dict)
               for c in concept.get("coding") or ()):
        return None
    reference = (resource.get("patient") or {}).get("reference")
    kind, _, patient = (reference if isinstance(reference, str) else "").split("/_history/")[0].rpartition("/")
    if kind.rpartition("/")[2] != "Patient" or not patient:  # relative or absolute, as its compartment is
        return None
    return Representative(f"RelatedPerson/{resource.get('id')}", patient, period_of(resource.get("period")))


FACT_TYPES = frozenset({"Patient", "Consent", "CareTeam", "RelatedPerson"})  # what PatientFacts come from


@dataclass(frozen=True)
class PatientFacts:
    id: str
    open: bool = True  # a closed DMP (Patient.active = false) is open to nobody but its patient
    treating: frozenset[str] = frozenset()  # "Practitioner/1" from Patient.generalPractitioner
    care_team: frozenset[str] = frozenset()
    consents: tuple[ConsentRule, ...] = ()
    # loaded only for a representative caller (guard.py): nobody else's decision depends on them
    representatives: tuple[Representative, ...] = ()


def represents(who: Identity, facts: PatientFacts | None, now: datetime) -> bool:
    """Is the caller a legal representative of this patient, registered and in force now? The token's
    claim (``kind=representative``, ``patient``) says whom it acts for; the record must agree."""
    return who.kind == "representative" and facts is not None and who.patient == facts.id and any(
        r.reference == who.fhir_user and _in(r.period, now) for r in facts.representatives)


def labels(resource: dict[str, Any]) -> frozenset[str]:
    """The DMP visibility codes on a resource (meta.security, and a DocumentReference's securityLabel)."""
    codings = list((resource.get("meta") or {}).get("security") or ())
    for concept in resource.get("securityLabel") or () if resource.get("resourceType") == "DocumentReference" else ():
        codings += concept.get("coding") or () if isinstance(concept, dict) else ()
    return frozenset(str(c.get("code")) for c in codings
                     if isinstance(c, dict) and c.get("system") in VISIBILITY_SYSTEMS and c.get("code"))


def _label_keys(code: str) -> list[str]:
    return [f"{system}|{code}" for system in VISIBILITY_SYSTEMS]


def _authors(resource: dict[str, Any]) -> set[str]:
    refs = set()
    for key in ("author", "recorder", "asserter", "performer", "requester"):
        value = resource.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                ref = item.get("reference") or (item.get("actor") or {}).get("reference")
                if isinstance(ref, str):
                    refs.add(ref)
    return refs


def _codes_of(resource: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for key in ("code", "type", "category", "class"):
        value = resource.get(key)
        for concept in value if isinstance(value, list) else [value]:
            for coding in (concept or {}).get("coding") or () if isinstance(concept, dict) else ():
                if coding.get("code"):
                    found |= {str(coding["code"]), f"{coding.get('system', '')}|{coding['code']}"}
    return found


def _when(resource: dict[str, Any]) -> datetime | None:
    """When the data was recorded, for ``dataPeriod`` and the INVISIBLE_PATIENT delay."""
    from ..search.dates import parse_period
    for key in ("date", "effectiveDateTime", "recordedDate", "authoredOn", "issued", "created", "onsetDateTime"):
        value = resource.get(key)
        if isinstance(value, str):
            try:
                return parse_period(value)[0]
            except Exception:  # noqa: BLE001 - an unparseable date gives no date
                return None
    return None


def _in(period: tuple[datetime | None, datetime | None] | None, moment: datetime | None) -> bool:
    if period is None:
        return True
    if moment is None:
        return False
    start, end = period
    return (start is None or start <= moment) and (end is None or moment <= end)


class Access:
    """What one caller may see of the records of some patients."""

    def __init__(self, who: Identity, facts: dict[str, PatientFacts], settings: Settings,
                 now: datetime | None = None, named: Iterable[str] | None = None) -> None:
        """``named``: the patients the request names; emergency access opens only those (None: any)."""
        self.who, self.facts, self.settings = who, facts, settings
        self.named = None if named is None else frozenset(named)
        self.now = now or datetime.now(UTC)
        self.me = self._me()

    def _me(self) -> frozenset[str]:
        """The keys a Consent actor may name the caller by: reference, RPPS, organisation."""
        keys = {k for k in (self.who.fhir_user, self.who.rpps, self.who.organization) if k}
        if self.who.rpps:
            keys |= {f"urn:oid:1.2.250.1.71.4.2.1|{self.who.rpps}", f"https://rpps.esante.gouv.fr|{self.who.rpps}"}
        return frozenset(keys)

    # -- who is the caller to a patient ---------------------------------------------------------------

    @property
    def unrestricted(self) -> bool:
        """Operators (administration, migration) and local development bypass consent; audited."""
        return self.who.kind == "development" or (self.who.kind == "system" and self.who.operator)

    def _matches(self, p: Provision, resource: dict[str, Any] | None, rtype: str | None) -> bool:
        if p.actors and not (p.actors & self.me):
            return False
        if p.purposes and self.who.purpose not in p.purposes and \
                f"http://terminology.hl7.org/CodeSystem/v3-ActReason|{self.who.purpose}" not in p.purposes:
            return False
        if not _in(p.period, self.now):
            return False
        if p.actions and not ({"access", "http://terminology.hl7.org/CodeSystem/consentaction|access"} & p.actions):
            return False
        if not p.about_data:
            return True
        if resource is None:
            return False  # a rule about some data never decides a whole record
        return self._about(p, resource, rtype or resource.get("resourceType", ""))

    def _about(self, p: Provision, resource: dict[str, Any], rtype: str) -> bool:
        ref = f"{rtype}/{resource.get('id')}"
        if p.classes and rtype not in p.classes:
            return False
        if p.codes and not (p.codes & _codes_of(resource)):
            return False
        if p.labels and not (p.labels & (labels(resource) | {c.get("code") for c in (resource.get("meta") or {}).get("security") or ()})):
            return False
        if p.data_period and not _in(p.data_period, _when(resource)):
            return False
        if p.data:
            related = {ref} | {r for r in _references(resource)}
            if not any((target == ref) if meaning == "instance" else
                       (target in related) if meaning in ("related", "dependents") else
                       (target in _authors(resource)) for meaning, target in p.data):
                return False
        return True

    def _decide(self, p: Provision, resource: dict[str, Any] | None, rtype: str | None) -> str | None:
        """A provision's decision for this request (None: it does not apply); exceptions win."""
        if not self._matches(p, resource, rtype):
            return None
        decision = p.type
        for exception in p.exceptions:
            inner = self._decide(exception, resource, rtype)
            if inner is not None:
                decision = inner
        return decision

    def _consents(self, facts: PatientFacts, resource: dict[str, Any] | None, rtype: str | None) -> set[str]:
        return {d for rule in facts.consents if (d := self._decide(rule.root, resource, rtype)) is not None}

    def _refused_emergency(self, facts: PatientFacts) -> bool:
        """Did the patient refuse this emergency mode (a deny naming the purpose, for everyone)?"""
        return any(rule.root.type == "deny" and not rule.root.actors and not rule.root.about_data
                   and self.who.purpose in {c.rsplit("|", 1)[-1] for c in rule.root.purposes}
                   for rule in facts.consents)

    def _masked_allowed_in_emergency(self, facts: PatientFacts) -> bool:
        return any(rule.root.type == "permit" and MASKED in {c.rsplit("|", 1)[-1] for c in rule.root.labels}
                   and self.who.purpose in {c.rsplit("|", 1)[-1] for c in rule.root.purposes}
                   for rule in facts.consents)

    def record(self, patient: str) -> str:
        """How the caller stands to a patient's record: ``none``, ``own`` (the patient),
        ``representative``, ``full`` (sees masked documents too), ``care`` (masked documents hidden)."""
        facts = self.facts.get(patient)
        if self.unrestricted:
            return "full"
        if self.who.kind == "patient":
            return "own" if self.who.patient == patient else "none"
        if self.who.kind == "representative":  # registered in the record, not on the token's word alone
            return "representative" if represents(self.who, facts, self.now) else "none"
        if self.who.kind != "practitioner" or facts is None or not facts.open:
            return "none"  # rules 9 and 12; system clients read only what they wrote (the store's clause)
        decisions = self._consents(facts, None, None)
        emergency = self.who.purpose in EMERGENCY and (self.named is None or patient in self.named) \
            and not self._refused_emergency(facts)
        if "deny" in decisions and (self.settings.block_beats_emergency or not emergency):
            return "none"  # rule 2: a block beats every permission
        me = self.who.fhir_user or ""
        treating = me in facts.treating
        if emergency:
            return "full" if self._masked_allowed_in_emergency(facts) else "care"
        if treating:
            return "full" if self.settings.treating_physician_sees_masked else "care"
        if "permit" in decisions or me in facts.care_team:
            return "care"
        return "none"

    # -- one resource ----------------------------------------------------------------------------------

    def permits(self, rtype: str, resource: dict[str, Any], in_compartments: Iterable[str]) -> bool:
        if self.unrestricted or not _patient_data(rtype):
            return True
        patients = [c.split("/", 1)[1] for c in in_compartments if c.startswith("Patient/")]
        if not patients:
            return self.who.kind == "practitioner"  # patient data of nobody: nothing to protect
        return any(self._permits_for(p, rtype, resource) for p in patients)

    def _permits_for(self, patient: str, rtype: str, resource: dict[str, Any]) -> bool:
        stand = self.record(patient)
        if stand == "none":
            return False
        found = labels(resource)
        if stand in ("own", "representative"):
            if HIDDEN_FROM_PATIENT in found and not self._lapsed(rtype, resource):
                return False
            return not (stand == "representative" and HIDDEN_FROM_REPRESENTATIVES in found)
        if self.unrestricted:
            return True
        if rtype == "DocumentReference":
            authored = bool(_refs(resource.get("author")) & self.me)
            if MASKED in found and stand != "full" and not authored:
                return False
            if self._forbidden() & _codes_of({"type": resource.get("type")}):
                return False
        elif MASKED in found and stand != "full":
            return False
        return "deny" not in self._consents(self.facts[patient], resource, rtype)

    def _forbidden(self) -> frozenset[str]:
        """Rule 8: the document types the caller's profession may never read."""
        return self.settings.forbidden_types.get(self.who.profession or "", frozenset())

    def _cutoff(self) -> datetime:
        return self.now - timedelta(days=self.settings.hidden_from_patient_days)

    def _lapsed(self, rtype: str, resource: dict[str, Any]) -> bool:
        """INVISIBLE_PATIENT lapses a month after the document's date (DocumentReference.date)."""
        if rtype != "DocumentReference" or not isinstance(resource.get("date"), str):
            return False
        from ..search.dates import parse_period
        return parse_period(resource["date"])[1] < self._cutoff()

    def exact(self, rtype: str) -> bool:
        """Is ``clause`` the whole decision for this type? Not when a Consent selects some data."""
        if self.unrestricted or not _patient_data(rtype):
            return True
        return not any(_about_data(rule.root) for facts in self.facts.values() for rule in facts.consents)

    # -- the query clause ------------------------------------------------------------------------------

    def clause(self, rtype: str) -> dict[str, Any] | None:
        """Narrow a query over ``rtype`` to the records the caller may open, and, within them, to what
        its standing shows (the same rules as ``permits``, bar Consents about some data). None: no
        narrowing."""
        if self.unrestricted or not _patient_data(rtype):
            return None
        groups: dict[str, list[str]] = {}
        for patient in self.facts:
            groups.setdefault(self.record(patient), []).append(f"Patient/{patient}")
        options = [_and({"compartments": {"$in": refs}}, *self._shown(rtype, stand))
                   for stand, refs in sorted(groups.items()) if stand != "none"]
        if not options:
            return NOTHING
        return options[0] if len(options) == 1 else {"$or": options}

    def _shown(self, rtype: str, stand: str) -> list[dict[str, Any]]:
        document = rtype == "DocumentReference"

        def without(code: str) -> dict[str, Any]:
            keys = _label_keys(code)
            free = {column("_security", "k"): {"$nin": keys}}
            return _and(free, {column("security-label", "k"): {"$nin": keys}}) if document else free

        if stand in ("own", "representative"):
            hidden = without(HIDDEN_FROM_PATIENT)
            conditions = [{"$or": [hidden, {column("date", "hi"): {"$lt": self._cutoff()}}]} if document else hidden]
            if stand == "representative":
                conditions.append(without(HIDDEN_FROM_REPRESENTATIVES))
            return conditions
        conditions = []
        if stand == "care":
            mine = sorted(r for r in self.me if "/" in r)
            conditions.append({"$or": [without(MASKED), {column("author", "r"): {"$in": mine}}]}
                              if document and mine else without(MASKED))
        if document and self._forbidden():
            conditions.append({column("type", "k"): {"$nin": sorted(self._forbidden())}})
        return conditions


def _and(*conditions: dict[str, Any]) -> dict[str, Any]:
    present = [c for c in conditions if c]
    return present[0] if len(present) == 1 else {"$and": present}


def _about_data(p: Provision) -> bool:
    return p.about_data or any(_about_data(e) for e in p.exceptions)


def _refs(value: Any) -> set[str]:
    items = value if isinstance(value, list) else [value]
    return {i["reference"] for i in items if isinstance(i, dict) and isinstance(i.get("reference"), str)}


def _patient_data(rtype: str) -> bool:
    return rtype == "Patient" or rtype in compartments()["Patient"]


def _references(resource: Any) -> Iterable[str]:
    if isinstance(resource, dict):
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(resource, list):
        for item in resource:
            yield from _references(item)


def patients_in(in_compartments: Sequence[str]) -> list[str]:
    return [c.split("/", 1)[1] for c in in_compartments if c.startswith("Patient/")]
