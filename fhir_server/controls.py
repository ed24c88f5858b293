"""The patient's controls over their DMP, as operations on ``Patient/{id}`` (DMP.md rules 2, 4, 7, 9, 10):
mask / unmask a document, block / unblock a professional, authorise / revoke one, allow / refuse an
emergency mode, close / reopen the record, register / revoke a legal representative. Each is a plain
FHIR write the server makes on the patient's behalf (a Consent, a DocumentReference label,
Patient.active, a RelatedPerson): versioned and audited like any.

A legal representative is registered on the patient's RelatedPerson itself, so the record says who
represents whom: the coding ``engine.LEGAL_REPRESENTATIVE`` (RoleCode GUARD) in ``relationship``,
``active: true``, ``period.start`` now and, optionally, an ``end`` (a minor's majority). Revoking sets
``active: false`` and ends the period. A representative's token opens the record only while that
registration is in force (consent/engine.py), from the next request on.

Who may act (rule 10): the patient, their registered legal representative, an operator; a professional
only to record an authorisation after informing the patient.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .consent.engine import LEGAL_REPRESENTATIVE, MASKED, VISIBILITY_SYSTEMS, representative
from .consent.model import consent_rule
from .context import RequestContext
from .errors import BadRequest, Forbidden, NotFound
from .pipeline import Result, Services, audit_write, writer
from .resources import jsonio
from .resources.parse import check_id, parse_resource
from .resources.version import instant
from .search.dates import parse_period

PRIVACY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACTIONS = ("mask", "unmask", "block", "unblock", "authorize", "revoke", "emergency", "close", "reopen",
           "register-representative", "revoke-representative")


def _parameters(body: bytes, svc: Services) -> dict[str, Any]:
    resource = parse_resource(body, svc.config.max_json_depth) if body.strip() else {"resourceType": "Parameters"}
    if resource.get("resourceType") != "Parameters":
        raise BadRequest("the operation takes a Parameters resource")
    found: dict[str, Any] = {}
    for p in resource.get("parameter") or ():
        value = next((v for k, v in p.items() if k.startswith("value")), None)
        found[str(p.get("name"))] = value
    return found


def _reference(params: dict[str, Any], name: str, rtype: str) -> str:
    ref = (params.get(name) or {}).get("reference") if isinstance(params.get(name), dict) else None
    if not isinstance(ref, str) or not ref.startswith(f"{rtype}/"):
        raise BadRequest(f"parameter '{name}' must be a Reference to a {rtype}")
    check_id(ref.split("/", 1)[1])
    return ref


def _consent(ctx: RequestContext, patient: str, kind: str, actor: str | None = None, purposes: tuple[str, ...] = (),
             label: str | None = None) -> dict[str, Any]:
    provision: dict[str, Any] = {"type": kind}
    if actor:
        provision["actor"] = [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                    "code": "IRCP"}]}, "reference": {"reference": actor}}]
    if purposes:
        provision["purpose"] = [{"system": ACT_REASON, "code": p} for p in purposes]
    if label:
        provision["securityLabel"] = [{"system": VISIBILITY_SYSTEMS[0], "code": label}]
    performer = ctx.who.fhir_user or f"Patient/{patient}"
    return {"resourceType": "Consent", "status": "active", "scope": PRIVACY,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": instant(datetime.now(UTC)),
            "performer": [{"reference": performer}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": provision}


def act(svc: Services, ctx: RequestContext, rid: str, action: str, body: bytes) -> Result:
    check_id(rid)
    guard = svc.guard(ctx, [rid])
    informed = action == "authorize" and ctx.who.kind == "practitioner"
    if not (guard.unrestricted or informed or guard.acts_for(rid)):
        raise Forbidden(f"only the patient or their registered legal representative may {action} (rule 10)")
    patient = svc.store.read("Patient", rid)
    if patient is None or patient.deleted or patient.json is None:
        raise NotFound(f"Patient/{rid} is not known")
    params = _parameters(body, svc)
    changed = {
        "mask": lambda: _label(svc, ctx, rid, _reference(params, "document", "DocumentReference"), add=True),
        "unmask": lambda: _label(svc, ctx, rid, _reference(params, "document", "DocumentReference"), add=False),
        "block": lambda: _create(svc, ctx, _consent(ctx, rid, "deny", _reference(params, "practitioner", "Practitioner"))),
        # rule 2: after unblocking, a new authorisation is needed: the earlier ones lapse too
        "unblock": lambda: _lapse(svc, ctx, rid, actor=_reference(params, "practitioner", "Practitioner")),
        "authorize": lambda: _create(svc, ctx, _consent(ctx, rid, "permit",
                                                         _reference(params, "practitioner", "Practitioner"))),
        "revoke": lambda: _lapse(svc, ctx, rid, actor=_reference(params, "practitioner", "Practitioner"), kind="permit"),
        "emergency": lambda: _emergency(svc, ctx, rid, params),
        "close": lambda: _active(svc, ctx, rid, False),
        "reopen": lambda: _active(svc, ctx, rid, True),
        "register-representative": lambda: _represent(svc, ctx, rid, _related(params), _end(params)),
        "revoke-representative": lambda: _represent(svc, ctx, rid, _related(params), None, revoke=True),
    }[action]()
    return Result(200, {"resourceType": "Parameters", "parameter": [
        {"name": "changed", "valueReference": {"reference": ref}} for ref in changed]})


def _create(svc: Services, ctx: RequestContext, resource: dict[str, Any]) -> list[str]:
    version = svc.store.create(resource["resourceType"], resource, writer(ctx))
    audit_write(svc, ctx, "create", version)
    return [f"{version.type}/{version.id}"]


def _update(svc: Services, ctx: RequestContext, resource: dict[str, Any], current: Any) -> str:
    version, _ = svc.store.update(resource["resourceType"], resource["id"], resource, current.version, writer(ctx))
    audit_write(svc, ctx, "update", version, current)
    return f"{version.type}/{version.id}"


def _lapse(svc: Services, ctx: RequestContext, patient: str, actor: str | None = None, kind: str | None = None,
           purpose: str | None = None) -> list[str]:
    """Make inactive the patient's active privacy Consents naming ``actor`` (and of ``kind``) or ``purpose``."""
    changed = []
    for resource in svc.store.current_resources("Consent", {"compartments": f"Patient/{patient}"}):
        rule = consent_rule(resource)
        if rule is None or (kind and rule.root.type != kind):
            continue
        if actor and actor not in rule.root.actors:
            continue
        if purpose and purpose not in {p.rsplit("|", 1)[-1] for p in rule.root.purposes}:
            continue
        current = svc.store.read("Consent", resource["id"])
        changed.append(_update(svc, ctx, {**resource, "status": "inactive"}, current))
    return changed


def _emergency(svc: Services, ctx: RequestContext, patient: str, params: dict[str, Any]) -> list[str]:
    mode, allow = params.get("mode"), params.get("allow")
    if mode not in ("BTG", "ETREAT", "MASKED") or not isinstance(allow, bool):
        raise BadRequest("parameters: mode (BTG, ETREAT or MASKED) and allow (boolean)")
    if mode == "MASKED":  # masked documents in an emergency: off unless the patient allows it
        lapsed = [r for p in ("BTG", "ETREAT") for r in _lapse(svc, ctx, patient, kind="permit", purpose=p)]
        return lapsed + (_create(svc, ctx, _consent(ctx, patient, "permit", purposes=("BTG", "ETREAT"),
                                                    label=MASKED)) if allow else [])
    lapsed = _lapse(svc, ctx, patient, kind="deny", purpose=mode)
    return lapsed if allow else lapsed + _create(svc, ctx, _consent(ctx, patient, "deny", purposes=(mode,)))


def _label(svc: Services, ctx: RequestContext, patient: str, reference: str, add: bool) -> list[str]:
    current = svc.store.read("DocumentReference", reference.split("/", 1)[1])
    if current is None or current.deleted or current.json is None or f"Patient/{patient}" not in (current.compartments or ()):
        raise NotFound(f"{reference} is not a document of this record")
    document = jsonio.loads(current.json)
    labels = [c for c in document.get("securityLabel") or []
              if not any(x.get("code") == MASKED for x in c.get("coding") or [])]
    security = [c for c in (document.get("meta") or {}).get("security") or [] if c.get("code") != MASKED]
    if add:
        labels.append({"coding": [{"system": VISIBILITY_SYSTEMS[0], "code": MASKED}]})
        security.append({"system": VISIBILITY_SYSTEMS[0], "code": MASKED})
    document["securityLabel"] = labels
    document["meta"] = {**(document.get("meta") or {}), "security": security}
    if not labels:
        document.pop("securityLabel")
    if not security:
        document["meta"].pop("security")
    return [_update(svc, ctx, document, current)]


def _active(svc: Services, ctx: RequestContext, patient: str, active: bool) -> list[str]:
    current = svc.store.read("Patient", patient)
    resource = jsonio.loads(current.json)
    return [_update(svc, ctx, {**resource, "active": active}, current)]


def _related(params: dict[str, Any]) -> str:
    return _reference(params, "relatedPerson", "RelatedPerson")


def _end(params: dict[str, Any]) -> str | None:
    """The optional ``end`` of a registration (a date or dateTime in the future: a minor's majority)."""
    end = params.get("end")
    if end is None:
        return None
    try:
        if not isinstance(end, str) or parse_period(end)[1] <= datetime.now(UTC):
            raise ValueError(end)
    except (ValueError, BadRequest):
        raise BadRequest("parameter 'end' must be a date or dateTime in the future") from None
    return end


def _represent(svc: Services, ctx: RequestContext, patient: str, reference: str, end: str | None,
               revoke: bool = False) -> list[str]:
    """Register (or revoke) a RelatedPerson of this patient as their legal representative."""
    current = svc.store.read("RelatedPerson", reference.split("/", 1)[1])
    if current is None or current.deleted or current.json is None or f"Patient/{patient}" not in (current.compartments or ()):
        raise NotFound(f"{reference} is not a RelatedPerson of Patient/{patient}")
    person = jsonio.loads(current.json)
    registered = representative(person)
    moment = datetime.now(UTC)
    now = instant(moment)
    if revoke:
        if registered is None:
            return []  # nothing registered: like $revoke of an absent authorisation
        start = (registered.period or (None, None))[0]
        period = {**(person.get("period") or {}), "end": now, **({"start": now} if start and start > moment else {})}
        return [_update(svc, ctx, {**person, "active": False, "period": period}, current)]
    system, code = LEGAL_REPRESENTATIVE
    relationship = list(person.get("relationship") or [])
    if not any(x.get("system") == system and x.get("code") == code
               for concept in relationship for x in concept.get("coding") or []):
        relationship.append({"coding": [{"system": system, "code": code, "display": "guardian"}],
                             "text": "Représentant légal"})
    period = {"start": now, **({"end": end} if end else {})}
    return [_update(svc, ctx, {**person, "relationship": relationship, "active": True, "period": period}, current)]
