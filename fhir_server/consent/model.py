"""R4 Consent resources (https://hl7.org/fhir/R4/consent.html) as rules the engine evaluates.

Only active ``patient-privacy`` Consents count. A provision is a rule (permit or deny) with conditions
on who asks (``actor``), why (``purpose``), when (``period``), what (``class``, ``code``,
``securityLabel``, ``dataPeriod``, ``data``) and how (``action``); nested provisions are exceptions to
their parent. Pure: no IO.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..search.dates import parse_period

RESOURCE_TYPES_SYSTEM = "http://hl7.org/fhir/resource-types"


def _codes(codings: Any) -> frozenset[str]:
    """Codings -> {"code", "system|code"}: a rule may name a code with or without its system."""
    found: set[str] = set()
    for coding in codings or ():
        if isinstance(coding, dict) and coding.get("code"):
            found.add(str(coding["code"]))
            if coding.get("system"):
                found.add(f"{coding['system']}|{coding['code']}")
    return frozenset(found)


def _concept_codes(concepts: Any) -> frozenset[str]:
    return frozenset().union(*(_codes(c.get("coding")) for c in concepts or () if isinstance(c, dict)))


def period_of(value: Any) -> tuple[datetime | None, datetime | None] | None:
    if not isinstance(value, dict) or not (value.get("start") or value.get("end")):
        return None
    start = parse_period(value["start"])[0] if value.get("start") else None
    end = parse_period(value["end"])[1] if value.get("end") else None
    return start, end


def _actor_keys(actor: dict[str, Any]) -> frozenset[str]:
    """An actor by reference ("Practitioner/1") or by identifier ("system|value", e.g. an RPPS)."""
    reference = actor.get("reference") if isinstance(actor.get("reference"), dict) else {}
    keys = set()
    if isinstance(reference.get("reference"), str):
        keys.add(reference["reference"].split("/_history/")[0])
    identifier = reference.get("identifier") or {}
    if identifier.get("value"):
        keys.add(f"{identifier.get('system', '')}|{identifier['value']}")
        keys.add(str(identifier["value"]))
    return frozenset(keys)


@dataclass(frozen=True)
class Provision:
    type: str  # "permit" | "deny"
    actors: frozenset[str] = frozenset()  # empty: anyone
    purposes: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()  # resource types
    codes: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    period: tuple[datetime | None, datetime | None] | None = None
    data_period: tuple[datetime | None, datetime | None] | None = None
    data: tuple[tuple[str, str], ...] = ()  # (meaning, "Type/id")
    exceptions: tuple[Provision, ...] = ()

    @property
    def about_data(self) -> bool:
        """Does the rule select data (rather than the whole record)?"""
        return bool(self.labels or self.classes or self.codes or self.data_period or self.data)


def provision(raw: dict[str, Any], parent: str | None = None) -> Provision:
    """A provision; without a ``type``, a root one withholds (the official examples' "consent directive"
    sense: notThem, notThis, Out) and a nested one is the exception to its parent."""
    kind = raw.get("type") or ("deny" if parent in (None, "permit") else "permit")
    classes = frozenset(str(c["code"]) for c in raw.get("class") or () if isinstance(c, dict) and c.get("code"))
    return Provision(
        type=kind,
        actors=frozenset().union(*(_actor_keys(a) for a in raw.get("actor") or () if isinstance(a, dict))),
        purposes=_codes(raw.get("purpose")),
        labels=_codes(raw.get("securityLabel")),
        classes=classes,
        codes=_concept_codes(raw.get("code")),
        actions=_concept_codes(raw.get("action")),
        period=period_of(raw.get("period")),
        data_period=period_of(raw.get("dataPeriod")),
        data=tuple((str(d.get("meaning")), str((d.get("reference") or {}).get("reference", "")))
                   for d in raw.get("data") or () if isinstance(d, dict)),
        exceptions=tuple(provision(p, kind) for p in raw.get("provision") or () if isinstance(p, dict)),
    )


@dataclass(frozen=True)
class ConsentRule:
    """One active patient-privacy Consent of a patient."""

    id: str
    patient: str  # the Patient id
    root: Provision


def is_privacy_consent(resource: dict[str, Any]) -> bool:
    scope = _concept_codes([resource.get("scope") or {}])
    return "patient-privacy" in scope


def consent_rule(resource: dict[str, Any]) -> ConsentRule | None:
    """The rule of an active patient-privacy Consent, or None for any other Consent."""
    if resource.get("resourceType") != "Consent" or resource.get("status") != "active":
        return None
    if not is_privacy_consent(resource):
        return None
    patient = ((resource.get("patient") or {}).get("reference") or "")
    if not patient.startswith("Patient/"):
        return None
    if not isinstance(resource.get("provision"), dict):
        return None  # a Consent without a provision decides nothing
    root = provision(resource["provision"])
    return ConsentRule(str(resource.get("id", "")), patient.split("/", 1)[1].split("/_history/")[0], root)
