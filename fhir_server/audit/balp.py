"""AuditEvents after IHE Basic Audit Log Patterns (https://profiles.ihe.net/ITI/BALP/): one builder per
pattern, from the RequestContext and what the request touched. Pure: no IO.

- PatientRead / PatientQuery / PatientCreate / PatientUpdate / PatientDelete when the data belongs to a
  patient (one event per patient), their non-patient forms otherwise;
- AuthZconsent: a consent decision (permit or deny) and the Consents it used;
- security alerts: emergency override (break the glass) started, authentication refused.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..context import RequestContext
from ..resources.version import instant

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACTION = {"read": "R", "vread": "R", "search": "E", "create": "C", "update": "U", "delete": "D"}
OUTCOME = {"success": "0", "minor": "4", "serious": "8"}
AUTHZ = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
PERMITS = [("subtype", f"{AUTHZ}|AuthZ-Consent,{AUTHZ}|AuthZ-Role"), ("outcome", "0")]  # the permits decided
PROFILE = {"read": "Read", "vread": "Read", "search": "Query", "create": "Create", "update": "Update",
           "delete": "Delete"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _agents(ctx: RequestContext, server: str, client_address: str | None) -> list[dict[str, Any]]:
    who = ctx.who
    user: dict[str, Any] = {"requestor": True, "type": {"coding": [_coding(
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient")]}}
    if who.fhir_user:
        user["who"] = {"reference": who.fhir_user}
        if who.rpps:
            user["who"]["identifier"] = {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": who.rpps}
    else:
        name = who.client_id or "anonymous"
        user["who"] = {"identifier": {"system": "urn:ietf:params:oauth:client-id", "value": name},
                       "display": f"client {name}"}
    if who.profession:
        user["role"] = [{"coding": [_coding("https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                                            "TRE-G15-ProfessionSante", who.profession)]}]
    if who.jti:
        user["policy"] = [f"urn:jti:{who.jti}"]
    user["purposeOfUse"] = [{"coding": [_coding(ACT_REASON, who.purpose)]}]
    client: dict[str, Any] = {"requestor": False, "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                              "who": {"identifier": {"system": "urn:ietf:params:oauth:client-id",
                                                     "value": who.client_id or "unknown"}}}
    if client_address:
        client["network"] = {"address": client_address, "type": "2"}
    destination = {"requestor": False, "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
                   "who": {"display": server}, "network": {"address": server, "type": "5"}}
    agents = [user, client, destination]
    if who.organization:  # the professional's organisation, on whose behalf they act
        agents.append({"requestor": False, "who": {"reference": who.organization}, "type": {"coding": [
            _coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PRF", "performer")]}})
    return agents


def _base(ctx: RequestContext, profile: str | None, event_type: dict[str, str], subtypes: list[dict[str, str]],
          action: str, outcome: str, client_address: str | None, description: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        **({"meta": {"profile": [BALP + profile]}} if profile else {}),
        "type": event_type, **({"subtype": subtypes} if subtypes else {}), "action": action,
        "recorded": instant(datetime.now(UTC)), "outcome": OUTCOME[outcome],
        "purposeOfEvent": [{"coding": [_coding(ACT_REASON, ctx.who.purpose)]}],
        "agent": _agents(ctx, ctx.base_url, client_address),
        "source": {"site": ctx.base_url, "observer": {"display": ctx.base_url},
                   "type": [_coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4",
                                    "Application Server")]},
        "entity": [],
    }
    if description:
        event["outcomeDesc"] = description
    return event


def _patient_entity(patient: str) -> dict[str, Any]:
    return {"what": {"reference": f"Patient/{patient}"}, "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient")}


def _data_entity(reference: str) -> dict[str, Any]:
    return {"what": {"reference": reference}, "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource")}


def rest(ctx: RequestContext, interaction: str, patients: Iterable[str], references: Iterable[str] = (),
         query: str | None = None, outcome: str = "success", client_address: str | None = None,
         description: str | None = None) -> list[dict[str, Any]]:
    """The events of one RESTful interaction: one per patient concerned (BALP's rule), or one
    non-patient event. ``references``: the resources touched; ``query``: a search's query string."""
    subtype = "search-type" if interaction == "search" else interaction
    kind = PROFILE[interaction]
    events = []
    for patient in sorted(set(patients)) or [None]:
        event = _base(ctx, f"Patient{kind}" if patient else kind, _coding(EVENT_TYPE, "rest", "Restful Operation"),
                      [_coding(INTERACTION, subtype)], ACTION[interaction], outcome, client_address, description)
        if patient:
            event["entity"].append(_patient_entity(patient))
        event["entity"] += [_data_entity(r) for r in references]
        if query is not None:
            event["entity"].append({"type": _coding(ENTITY_TYPE, "2", "System Object"),
                                    "role": _coding(OBJECT_ROLE, "24", "Query"),
                                    "query": base64.b64encode(query.encode()).decode()})
        if not event["entity"]:
            del event["entity"]  # FHIR has no empty arrays
        events.append(event)
    return events


def consent_decision(ctx: RequestContext, patient: str, permitted: bool, consents: Iterable[str],
                     client_address: str | None = None) -> dict[str, Any]:
    """A decision on a patient's record, the server as the authorizer: IHE.BasicAudit.AuthZconsent when
    the patient has Consents (they are its entities), else the same pattern decided by the DMP rules
    on roles alone (subtype AuthZ-Role: the profile's Consent entity would be missing)."""
    consents = list(consents)
    subtype = _coding(AUTHZ, "AuthZ-Consent", "Authorization Decision using Roles and Consent") if consents else \
        _coding(AUTHZ, "AuthZ-Role", "Authorization Decision using only Roles")
    event = _base(ctx, "AuthZconsent" if consents else None, _coding(DCM, "110113", "Security Alert"), [subtype],
                  "E", "success" if permitted else "minor", client_address,
                  None if permitted else "access denied by the patient's consent or the DMP rules")
    event["agent"].append({"requestor": False, "who": {"display": ctx.base_url}, "type": {"coding": [_coding(
        "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "authserver", "authorization server")]}})
    event["entity"] = [_patient_entity(patient)] + [
        {"what": {"reference": c}, "type": _coding("http://hl7.org/fhir/resource-types", "Consent", "Consent")}
        for c in consents]
    return event


def emergency_started(ctx: RequestContext, patient: str, client_address: str | None = None) -> dict[str, Any]:
    """Break the glass (BTG) or centre 15 (ETREAT): a security alert "Emergency Override Started"."""
    event = _base(ctx, "SecurityAlert", _coding(DCM, "110113", "Security Alert"),
                  [_coding(DCM, "110127", "Emergency Override Started")], "E", "success", client_address,
                  f"emergency access ({ctx.who.purpose}) to the record of Patient/{patient}")
    event["entity"] = [_patient_entity(patient)]
    return event


def authentication_refused(ctx: RequestContext, reason: str, client_address: str | None = None) -> dict[str, Any]:
    """A request refused for want of a valid access token: a security alert (user authentication failed)."""
    event = _base(ctx, "SecurityAlert", _coding(DCM, "110114", "User Authentication"),
                  [_coding(DCM, "110122", "Login")], "E", "minor", client_address, reason)
    del event["entity"]  # no record was reached
    return event


def first_access_notice(ctx: RequestContext, patient: str) -> dict[str, Any]:
    """The DMP tells the patient when a professional opens their record for the first time."""
    when = datetime.now(UTC)
    return {"resourceType": "Communication", "status": "completed",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                      "code": "notification"}]}],
            "subject": {"reference": f"Patient/{patient}"}, "recipient": [{"reference": f"Patient/{patient}"}],
            "sender": {"reference": ctx.who.fhir_user} if ctx.who.fhir_user else {"display": ctx.who.client_id},
            "sent": instant(when),
            "payload": [{"contentString": f"{ctx.who.fhir_user} a consulté votre dossier médical partagé pour la "
                                          f"première fois le {when:%d/%m/%Y à %H:%M} (UTC)."}]}


def access_row(event: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """One line of a patient's access history: who (name, profession, organisation), when, what, how."""
    user = next((a for a in event.get("agent", []) if a.get("requestor")), {})
    who = user.get("who") or {}
    reference = who.get("reference")
    parts: list[dict[str, Any]] = [
        {"name": "when", "valueInstant": event["recorded"]},
        {"name": "who", "valueString": names.get(reference or "", who.get("display") or reference or "?")},
        {"name": "action", "valueCode": (event.get("subtype") or [event["type"]])[0]["code"]},
        {"name": "mode", "valueCode": ((event.get("purposeOfEvent") or [{}])[0].get("coding") or [{}])[0].get("code", "TREAT")},
        {"name": "outcome", "valueCode": event.get("outcome", "0")},
    ]
    if reference:
        parts.append({"name": "actor", "valueReference": {"reference": reference}})
    for role in user.get("role") or ():
        parts.append({"name": "profession", "valueCode": role["coding"][0]["code"]})
    for agent in event.get("agent", []):
        if (agent.get("type") or {}).get("coding", [{}])[0].get("code") == "PRF":
            parts.append({"name": "organization", "valueReference": agent["who"]})
    for entity in event.get("entity", []):
        role = entity.get("role", {}).get("code")
        if role == "4":
            parts.append({"name": "what", "valueReference": entity["what"]})
    return {"name": "access", "part": parts}
