"""One function per FHIR interaction (https://hl7.org/fhir/R4/http.html).

Each takes the server's services and the RequestContext, and returns a ``Result`` the HTTP layer
serialises. The order inside every interaction is fixed: validate -> (auth -> consent, with their
issues) -> storage -> (audit).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from .config import Config
from .context import RequestContext
from .audit import balp, trail
from .auth import access
from .consent.engine import Settings, patients_in
from .guard import Guard
from .consent.engine import EMERGENCY
from .errors import (BadRequest, Conflict, Forbidden, Gone, Issue, MethodNotAllowed, NotFound, PreconditionFailed,
                     operation_outcome)
from .resources import bundle, jsonio
from .resources.parse import check_id, parse_resource
from .resources.schema import RESOURCE_TYPES
from .resources.validation import ID_RE, resource_issues, validate
from .resources.version import Version
from . import conditional, mhd, searching
from .search.dates import parse_instant, parse_period
from .search.index import index
from .search.registry import compartments
from .search.paging import decode_cursor, encode_cursor
from .storage import Store


@dataclass(frozen=True)
class Services:
    config: Config
    store: Store
    consent: Settings = field(default_factory=Settings)

    def guard(self, ctx: RequestContext, targets: Iterable[str] = ()) -> Guard:
        return Guard(self.store, ctx, self.consent, targets, self.config.consent_narrowing)


@dataclass(frozen=True)
class Result:
    """What an interaction answers: a status, a body (stored JSON bytes or a dict), the version."""

    status: int
    body: bytes | dict[str, Any] | None = None
    version: Version | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def check_type(rtype: str) -> str:
    if rtype not in RESOURCE_TYPES:
        raise NotFound(f"unknown resource type '{rtype}'")
    return rtype


def _compartments(resource: dict[str, Any]) -> tuple[str, ...]:
    return tuple(index(resource)["compartments"])


def _permitted(guard: Guard, version: Version, letters: str) -> bool:
    """May the caller see this version (scopes and consent)? A deletion is judged by what it deleted."""
    def compartments() -> tuple[str, ...]:
        if version.compartments is not None:
            return version.compartments
        return _compartments(jsonio.loads(version.json)) if version.json else ()

    def resource() -> dict[str, Any]:
        return jsonio.loads(version.json) if version.json else {"resourceType": version.type, "id": version.id}
    return guard.permits(version.type, letters, compartments, resource, lambda: version.by)


def _visible(svc: Services, guard: Guard, version: Version | None, what: str) -> Version:
    """The version, if it exists and the caller may see it: what they may not see does not exist (the
    refusal is audited, the answer is the one a missing resource gets)."""
    if version is not None and not _permitted(guard, version, "r"):
        _audit_events(svc, _decisions(guard, patients_in(version.compartments or ()), False))
        version = None
    if version is None:
        raise NotFound(f"{what} is not known")
    if version.deleted:
        raise Gone(f"{what} was deleted", headers={"ETag": version.etag})
    return version


def read(svc: Services, ctx: RequestContext, rtype: str, rid: str) -> Result:
    """https://hl7.org/fhir/R4/http.html#read"""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "read", rtype)
    version, guard = _named(svc, ctx, svc.store.read(rtype, rid), f"{rtype}/{rid}")
    _audit_read(svc, ctx, "read", version, guard)
    return Result(200, version.json, version)


def vread(svc: Services, ctx: RequestContext, rtype: str, rid: str, vid: str) -> Result:
    """https://hl7.org/fhir/R4/http.html#vread"""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "vread", rtype)
    if not vid.isdigit():
        raise NotFound(f"{rtype}/{rid} has no version '{vid}'")
    version, guard = _named(svc, ctx, svc.store.vread(rtype, rid, int(vid)), f"{rtype}/{rid}/_history/{vid}")
    _audit_read(svc, ctx, "vread", version, guard)
    return Result(200, version.json, version)


def visible_version(svc: Services, ctx: RequestContext, rtype: str, rid: str) -> Version:
    """The current version of a resource the caller may see (404 / 410 otherwise), without the audit
    of a read: for the writes that start from it (PATCH, a document's replacement)."""
    check_type(rtype)
    check_id(rid)
    return _named(svc, ctx, svc.store.read(rtype, rid), f"{rtype}/{rid}")[0]


def _named(svc: Services, ctx: RequestContext, version: Version | None, what: str) -> tuple[Version, Guard]:
    """``_visible`` for a resource the request names by id: its patients count as named (emergency)."""
    guard = svc.guard(ctx, patients_in(version.compartments or ()) if version is not None else [])
    return _visible(svc, guard, version, what), guard


def _audit_events(svc: Services, events: list[dict[str, Any]]) -> None:
    if svc.config.audit:
        trail.record(svc.store, events)


def _audit(svc: Services, ctx: RequestContext, interaction: str, patients: Iterable[str],
           references: Iterable[str] = (), query: str | None = None, guard: Guard | None = None) -> None:
    """Record the access before it is answered (BALP: one event per patient), with a security alert
    per record opened in an emergency mode and, for an access consent decided (``guard``), the permit
    with the Consents it weighed (AuthZconsent; operators bypass consent: no decision to record)."""
    if not svc.config.audit:
        return
    patients = sorted(set(patients))
    events = balp.rest(ctx, interaction, patients, references, query, client_address=ctx.client_address)
    if guard is not None and not guard.unrestricted:
        events += _decisions(guard, patients, True)
    if ctx.who.purpose in EMERGENCY:
        events += [balp.emergency_started(ctx, p, ctx.client_address) for p in patients]
    trail.record(svc.store, events)
    if ctx.who.kind == "practitioner" and ctx.who.fhir_user:
        _notify_first_access(svc, ctx, patients)


_NOTIFIED: set[str] = set()  # first-access markers this worker knows are set (they are never removed)


def _notify_first_access(svc: Services, ctx: RequestContext, patients: list[str]) -> None:
    """A professional's first access to a record: the patient gets a Communication (as the DMP
    notifies). The marker and the notice are written together, or neither is."""
    for patient in patients:
        key = f"first-access|Patient/{patient}|{ctx.who.fhir_user}"
        if key in _NOTIFIED:
            continue  # marked before: no round trip to learn it again
        if svc.store.first(key):
            try:
                svc.store.append("Communication", [balp.first_access_notice(ctx, patient)], trail.WRITER)
            except Exception:
                svc.store.forget(key)
                raise
        if len(_NOTIFIED) > 100_000:
            _NOTIFIED.clear()
        _NOTIFIED.add(key)


def _audit_read(svc: Services, ctx: RequestContext, interaction: str, version: Version, guard: Guard) -> None:
    patients = patients_in(version.compartments or ())
    if version.type == "Binary" and version.json:  # a document's bytes: the document's patients
        context = (jsonio.loads(version.json).get("securityContext") or {}).get("reference") or ""
        rtype, _, rid = context.removeprefix(ctx.base_url + "/").partition("/")
        found = svc.store.read(rtype, rid) if rtype in RESOURCE_TYPES and rid and "/" not in rid else None
        patients = patients_in(found.compartments or ()) if found else []
    if patients:  # BALP PatientRead: reads of patient data
        _audit(svc, ctx, interaction, patients, [f"{version.type}/{version.id}/_history/{version.version}"], guard=guard)


def audit_write(svc: Services, ctx: RequestContext, interaction: str, version: Version | None,
                 before: Version | None = None) -> None:
    if version is None:
        return
    patients = set(patients_in(version.compartments or ())) | set(patients_in((before.compartments or ()) if before else ()))
    _audit(svc, ctx, interaction, patients, [f"{version.type}/{version.id}/_history/{version.version}"])


def writer(ctx: RequestContext) -> tuple[str, ...]:
    """Who writes, as stored beside each version: the client application and the user."""
    return tuple(w for w in (f"client/{ctx.who.client_id}", ctx.who.fhir_user) if w)


def _may_change(guard: Guard, current: Version, letter: str) -> bool:
    """Updating or deleting needs the scopes, and either having written the resource or seeing it."""
    mine = bool(set(writer(guard.ctx)) & set(current.by)) and guard.who.kind != "development"
    if mine:
        return access.permits(guard.who, current.type, letter, lambda: current.compartments or (),
                              lambda: jsonio.loads(current.json or b"{}"), guard.ctx.base_url)
    return _permitted(guard, current, letter)


def _may_write(ctx: RequestContext, rtype: str, letter: str, resource: dict[str, Any]) -> None:
    if not access.permits(ctx.who, rtype, letter, lambda: _compartments(resource), lambda: resource, ctx.base_url):
        raise Forbidden(f"the access token's scopes do not allow writing this {rtype}")


def _append_only(rtype: str) -> None:
    if rtype == "AuditEvent":
        raise MethodNotAllowed("AuditEvents are append-only: they are never updated nor deleted",
                               headers={"Allow": "GET, POST"})


def _location(ctx: RequestContext, version: Version) -> str:
    return f"{ctx.base_url}/{version.type}/{version.id}/_history/{version.version}"


def check_create(svc: Services, ctx: RequestContext, rtype: str, resource: dict[str, Any]) -> None:
    """Everything a create must pass before it is stored: validation, scopes, the DMP's write rules."""
    check_type(rtype)
    access.require(ctx.who, "create", rtype)
    mhd.check_size(svc.config.max_document_bytes, rtype, resource)
    validate(resource, rtype)
    _may_write(ctx, rtype, "c", resource)
    _check_write(svc, svc.guard(ctx), "create", rtype, resource, None)


def check_update(svc: Services, ctx: RequestContext, rtype: str, rid: str, resource: dict[str, Any]
                 ) -> Version | None:
    """The checks of an update (or update as create); the version it replaces, if any."""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "update", rtype)
    mhd.check_size(svc.config.max_document_bytes, rtype, resource)
    validate(resource, rtype, rid)
    _may_write(ctx, rtype, "u", resource)
    current = svc.store.read(rtype, rid)
    existing = current if current is not None and not current.deleted and current.json else None
    if current is not None:
        _append_only(rtype)  # an AuditEvent may be created with its id, never changed
    guard = svc.guard(ctx)
    if existing is not None and not _may_change(guard, existing, "u"):
        raise Forbidden(f"the access token's scopes do not allow writing this {rtype}")
    _check_write(svc, guard, "update", rtype, resource, jsonio.loads(existing.json) if existing and existing.json else None)
    return existing


def check_delete(svc: Services, ctx: RequestContext, rtype: str, rid: str, if_match: int | None
                 ) -> Version | None:
    """The checks of a delete; the version it deletes, or None when there is nothing (the caller may
    see) to delete."""
    check_type(rtype)
    check_id(rid)
    _append_only(rtype)
    access.require(ctx.who, "delete", rtype)
    current = svc.store.read(rtype, rid)
    if current is None or current.deleted or not _may_change(svc.guard(ctx), current, "d"):
        if if_match is not None:  # what the caller may not see does not exist: nothing to delete
            raise PreconditionFailed(f"{rtype}/{rid} has no current version {if_match}")
        return None
    old = jsonio.loads(current.json) if current.json else None
    _check_write(svc, svc.guard(ctx), "delete", rtype, None, old)
    if rtype == "DocumentReference" and old is not None:
        mhd.check_document_delete(ctx, old, current.by)
    return current


def _check_write(svc: Services, guard: Guard, action: str, rtype: str, new: dict[str, Any] | None,
                 old: dict[str, Any] | None) -> None:
    """The DMP's rules on a write; the decision on each record, permit or deny, is audited first."""
    patients = guard.write_patients(rtype, new, old)
    try:
        guard.check_write(action, rtype, new, old, patients)
    except (Forbidden, Conflict):
        _audit_events(svc, _decisions(guard, patients, False))
        raise
    _audit_events(svc, _decisions(guard, patients, True))


def _decisions(guard: Guard, patients: Iterable[str], permitted: bool) -> list[dict[str, Any]]:
    """BALP AuthZconsent events: the decision on each patient's record, with the Consents it weighed."""
    return [balp.consent_decision(guard.ctx, p, permitted, guard.consents_used(p), guard.ctx.client_address)
            for p in patients]


def create(svc: Services, ctx: RequestContext, rtype: str, body: bytes, if_none_exist: str | None = None) -> Result:
    """https://hl7.org/fhir/R4/http.html#create: the server assigns the id. With ``If-None-Exist``
    (conditional create) nothing is created when the criteria match one resource already."""
    check_type(rtype)
    access.require(ctx.who, "create", rtype)  # a caller without the scope learns nothing about its body
    resource = parse_resource(body, svc.config.max_json_depth)
    check_create(svc, ctx, rtype, resource)
    if if_none_exist is None:
        version = svc.store.create(rtype, resource, writer(ctx))
    else:
        with conditional.locked(svc.store, rtype, if_none_exist):
            found = conditional.matches(svc, ctx, rtype, if_none_exist)
            if found:
                return _read_result(svc, ctx, rtype, conditional.one(found, "If-None-Exist"), 200)
            version = svc.store.create(rtype, resource, writer(ctx))
    audit_write(svc, ctx, "create", version)
    return Result(201, version.json, version, _location(ctx, version))


def _read_result(svc: Services, ctx: RequestContext, rtype: str, rid: str, status: int) -> Result:
    result = read(svc, ctx, rtype, rid)
    return Result(status, result.body, result.version, _location(ctx, result.version) if result.version else None)


def update(svc: Services, ctx: RequestContext, rtype: str, rid: str, body: bytes, if_match: int | None) -> Result:
    """https://hl7.org/fhir/R4/http.html#update, update as create included."""
    check_type(rtype)
    access.require(ctx.who, "update", rtype)
    resource = parse_resource(body, svc.config.max_json_depth)
    return _store_update(svc, ctx, rtype, rid, resource, if_match)


def _store_update(svc: Services, ctx: RequestContext, rtype: str, rid: str, resource: dict[str, Any],
                  if_match: int | None) -> Result:
    existing = check_update(svc, ctx, rtype, rid, resource)
    version, created = svc.store.update(rtype, rid, resource, if_match, writer(ctx))
    audit_write(svc, ctx, "create" if created else "update", version, existing)
    return Result(201 if created else 200, version.json, version, _location(ctx, version))


def conditional_update(svc: Services, ctx: RequestContext, rtype: str, criteria: str, body: bytes,
                       if_match: int | None) -> Result:
    """``PUT [type]?criteria`` (http.html#cond-update): no match creates (with the body's id, if it has
    one), one match updates it, several are a 412."""
    check_type(rtype)
    access.require(ctx.who, "update", rtype)
    resource = parse_resource(body, svc.config.max_json_depth)
    with conditional.locked(svc.store, rtype, criteria):
        found = conditional.matches(svc, ctx, rtype, criteria)
        rid = conditional.target(found, resource)
        if rid is None:
            return create(svc, ctx, rtype, body)
        return _store_update(svc, ctx, rtype, rid, {**resource, "id": rid}, if_match)


def patch(svc: Services, ctx: RequestContext, rtype: str, rid: str, body: bytes, content_type: str,
          if_match: int | None) -> Result:
    """https://hl7.org/fhir/R4/http.html#patch: JSON Patch or FHIRPath Patch, validated like any write.
    Without ``If-Match`` the patch applies to the version it was computed from, or is computed again."""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "patch", rtype)
    for _ in range(10):
        current = visible_version(svc, ctx, rtype, rid)
        if if_match is not None and current.version != if_match:
            raise PreconditionFailed(f"{rtype}/{rid} is not at version {if_match}")
        patched = mhd.patched(rtype, jsonio.loads(current.json or b"{}"), body, content_type)
        try:
            return _store_update(svc, ctx, rtype, rid, patched, current.version)
        except PreconditionFailed:
            if if_match is not None:
                raise
    raise PreconditionFailed(f"{rtype}/{rid} keeps changing: patch it again")


def conditional_patch(svc: Services, ctx: RequestContext, rtype: str, criteria: str, body: bytes, content_type: str,
                      if_match: int | None) -> Result:
    """``PATCH [type]?criteria``: the one match is patched (PDSm updates documents by identifier)."""
    check_type(rtype)
    found = conditional.matches(svc, ctx, rtype, criteria)
    if not found:
        raise NotFound(f"no {rtype} matches {criteria}")
    return patch(svc, ctx, rtype, conditional.one(found, "conditional patch"), body, content_type, if_match)


def delete(svc: Services, ctx: RequestContext, rtype: str, rid: str, if_match: int | None) -> Result:
    """https://hl7.org/fhir/R4/http.html#delete: logical, idempotent."""
    current = check_delete(svc, ctx, rtype, rid, if_match)
    version = None
    if current is not None:
        version = svc.store.delete(rtype, rid, if_match, writer(ctx))
        audit_write(svc, ctx, "delete", version, current)
    return Result(200, _deleted_outcome([f"{rtype}/{rid}"] if version else []), version)


def conditional_delete(svc: Services, ctx: RequestContext, rtype: str, criteria: str) -> Result:
    """``DELETE [type]?criteria`` (http.html#cond-delete): every match, or a 412 when several match
    and the server is configured to delete one at a time."""
    check_type(rtype)
    found = conditional.matches(svc, ctx, rtype, criteria, svc.config.max_count)
    if len(found) > 1 and not svc.config.conditional_delete_multiple:
        raise PreconditionFailed(f"{len(found)} {rtype} resources match: conditional delete takes one at a time")
    deleted = []
    for rid in found:
        result = delete(svc, ctx, rtype, rid, None)
        if result.version is not None:
            deleted.append(f"{rtype}/{rid}")
    return Result(200, _deleted_outcome(deleted))


def _deleted_outcome(deleted: list[str]) -> dict[str, Any]:
    text = f"deleted: {', '.join(deleted)}" if deleted else "nothing to delete: no such resource, or already deleted"
    return operation_outcome([Issue("informational", text, severity="information")])


def history(svc: Services, ctx: RequestContext, params: dict[str, str], rtype: str | None = None,
            rid: str | None = None) -> Result:
    """https://hl7.org/fhir/R4/http.html#history at system, type or instance level."""
    if rtype is not None:
        check_type(rtype)
    if rid is not None:
        check_id(rid)
    interaction = "history-instance" if rid else "history-type" if rtype else "history-system"
    access.require(ctx.who, interaction, rtype)
    letters = "r" if rid else "s"
    count = _count(svc.config, params.get("_count"))
    since = parse_instant(params["_since"]) if params.get("_since") else None
    at = parse_period(params["_at"]) if params.get("_at") else None
    guard = svc.guard(ctx)
    query = svc.store.history_query(rtype, rid, since, at, guard.history_clause(rtype, letters) if rid is None else None)
    cursor = params.get("_cursor")
    after = tuple(decode_cursor(svc.config.secret, cursor)) if cursor else None
    versions, next_keyset = svc.store.consistent(lambda: svc.store.history_page(query, count, after))
    versions = [v for v in versions if _permitted(guard, v, letters)]
    appended = False
    if rid is not None and not versions and after is None:
        current = _visible(svc, guard, svc.store.read(rtype or "", rid), f"{rtype}/{rid}")
        # an appended record (an AuditEvent the server wrote) has no history entry: its one version
        appended = not svc.store.history_total(svc.store.history_query(rtype, rid))
        versions = [current] if appended and since is None and at is None else []
    patients = {p for v in versions for p in patients_in(v.compartments or ())}
    if rid is not None:
        if patients:
            _audit(svc, ctx, "read", patients, [f"{rtype}/{rid}/_history"], guard=guard)
    else:
        _audit(svc, ctx, "search", patients, query=urlencode(params), guard=guard)
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    kept = {k: params[k] for k in ("_count", "_since", "_at") if params.get(k)}
    links = {"self": _url(ctx, path, {**kept, **({"_cursor": cursor} if cursor else {})})}
    if next_keyset is not None:
        links["next"] = _url(ctx, path, {**kept, "_cursor": encode_cursor(svc.config.secret, next_keyset)})
    entries = [bundle.history_entry(ctx.base_url, v) for v in versions]
    # the total would count versions hidden by labels: only given when nothing is hidden per entry
    total = (len(versions) if appended else svc.store.history_total(query)) if guard.consent().unrestricted else None
    return Result(200, bundle.history_bundle(ctx.base_url, entries, total, links))


def _count(config: Config, raw: str | None) -> int:
    if raw is None:
        return config.default_count
    if not raw.isdigit():
        raise BadRequest(f"_count must be a non-negative integer, not '{raw}'")
    return min(int(raw), config.max_count)


def _url(ctx: RequestContext, path: str, params: dict[str, str]) -> str:
    return f"{ctx.base_url}/{path}" + (f"?{urlencode(params)}" if params else "")


def search(svc: Services, ctx: RequestContext, types: list[str], params: list[tuple[str, str]], path: str,
           compartment: tuple[str, str] | None = None) -> Result:
    """https://hl7.org/fhir/R4/http.html#search (type, system with ``_type``, compartment). A system
    search without ``_type`` (empty ``types``) covers every type the caller may search."""
    if not types:
        types = [t for t in sorted(RESOURCE_TYPES) if access.allows(ctx.who, "s", t)]
    for rtype in types:
        check_type(rtype)
        access.require(ctx.who, "search-type", rtype)
    if compartment is not None:
        if compartment[0] not in compartments():
            raise NotFound(f"{compartment[0]} is not a compartment")
        check_id(compartment[1])
        allowed = compartments()[compartment[0]]
        if types[0] != compartment[0] and types[0] not in allowed:
            raise NotFound(f"{types[0]} resources are not in the {compartment[0]} compartment")
    if types == ["DocumentReference"] and compartment is None and svc.config.documents_search_needs_patient:
        mhd.check_document_search(ctx.who.kind, params)
    targets = [compartment[1]] if compartment and compartment[0] == "Patient" else _named_patients(types, params)
    guard = svc.guard(ctx, targets)
    body, patients = svc.store.consistent(lambda: searching.run(
        svc.store, svc.config, ctx.base_url, path, tuple(types), params, strict=ctx.handling == "strict",
        compartment=compartment, policy=guard))
    _audit(svc, ctx, "search", patients, query=f"{path}?{urlencode(params)}", guard=guard)
    return Result(200, body)


def _named_patients(types: list[str], params: list[tuple[str, str]]) -> list[str]:
    """The patients a search names by id (``patient``, ``subject``, a Patient ``_id``): emergency
    access opens only those, and every match belongs to one of them, so the guard needs no others."""
    named = []
    for name, value in params:
        code, _, modifier = name.partition(":")
        if (code in ("patient", "subject") and modifier in ("", "Patient")) or (name == "_id" and types == ["Patient"]):
            for item in (v.strip() for v in value.split(",") if v.strip()):
                kind, _, rid = item.rpartition("/")
                if kind.rsplit("/", 1)[-1] in ("", "Patient") and ID_RE.fullmatch(rid):
                    named.append(rid)
    return named


def everything(svc: Services, ctx: RequestContext, rid: str, params: list[tuple[str, str]]) -> Result:
    """``Patient/{id}/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html): the
    patient and every resource in their compartment, with ``_since``, ``_type`` and ``_count``."""
    check_id(rid)
    access.require(ctx.who, "everything", "Patient")
    guard = svc.guard(ctx, [rid])
    _visible(svc, guard, svc.store.read("Patient", rid), f"Patient/{rid}")
    members = list(dict.fromkeys(["Patient", *sorted(compartments()["Patient"])]))
    wanted = [t.strip() for name, value in params if name == "_type" for t in value.split(",") if t.strip()]
    # the audit trail is in the compartment but not part of the record: only when asked for by _type
    types = [t for t in members if (t in wanted if wanted else t != "AuditEvent") and access.allows(ctx.who, "s", t)]
    search_params: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_since":
            parse_instant(value)
            search_params.append(("_lastUpdated", f"ge{value}"))
        elif name in ("_count", "_cursor", "_type"):
            search_params.append((name, value))
    body, patients = svc.store.consistent(lambda: searching.run(
        svc.store, svc.config, ctx.base_url, f"Patient/{rid}/$everything", tuple(types), search_params,
        compartment=("Patient", rid), policy=guard))
    _audit(svc, ctx, "search", patients | {rid}, query=f"Patient/{rid}/$everything?{urlencode(params)}", guard=guard)
    return Result(200, body)


def access_history(svc: Services, ctx: RequestContext, rid: str, params: list[tuple[str, str]]) -> Result:
    """``Patient/{id}/$access-history``: who accessed the record, newest first, paged; for the patient,
    their registered legal representative, or an operator. Built from the audit trail (requestors only)."""
    check_id(rid)
    guard = svc.guard(ctx, [rid])
    if not (guard.unrestricted or guard.acts_for(rid)):
        raise Forbidden("a record's access history is for its patient or their registered legal representative")
    kept = [(k, v) for k, v in params if k in ("_count", "_cursor")]
    body, _ = searching.run(svc.store, svc.config, ctx.base_url, f"Patient/{rid}/$access-history", ("AuditEvent",),
                            [("_sort", "-date"), *kept], compartment=("Patient", rid), policy=guard,
                            excluding=balp.PERMITS)  # each access says it all; its permit would repeat it
    events = [jsonio.loads(orjson.dumps(e["resource"])) for e in body.get("entry", [])]  # stored bytes, parsed
    actors = sorted({a["who"]["reference"] for e in events for a in e.get("agent", [])
                     if a.get("requestor") and (a.get("who") or {}).get("reference", "").startswith("Practitioner/")})
    names = {f"Practitioner/{r['id']}": _display_name(r) for r in
             svc.store.current_resources("Practitioner", {"_id": {"$in": [a.split("/", 1)[1] for a in actors]}})}
    links = [{"name": "link", "part": [{"name": "relation", "valueString": link["relation"]},
                                       {"name": "url", "valueUri": link["url"]}]} for link in body.get("link", [])]
    result = {"resourceType": "Parameters", "parameter": [balp.access_row(e, names) for e in events] + links}
    _audit(svc, ctx, "search", [rid], query=f"Patient/{rid}/$access-history?{urlencode(params)}", guard=guard)
    return Result(200, result)


def _display_name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or ():
        text = name.get("text") or " ".join([*name.get("prefix", []), *name.get("given", []), name.get("family", "")])
        if text.strip():
            return text.strip()
    return f"{resource['resourceType']}/{resource['id']}"


def validate_resource(svc: Services, ctx: RequestContext, body: bytes, rtype: str | None = None) -> Result:
    """``$validate`` (https://hl7.org/fhir/R4/resource-operation-validate.html): the OperationOutcome a
    write would give, nothing stored. The resource comes as the body or in a Parameters ``resource``."""
    if rtype is not None:
        check_type(rtype)
    resource = parse_resource(body, svc.config.max_json_depth)
    if resource["resourceType"] == "Parameters" and rtype != "Parameters":
        given = [p.get("resource") for p in resource.get("parameter", []) if p.get("name") == "resource"]
        if len(given) != 1 or not isinstance(given[0], dict):
            raise BadRequest("$validate needs exactly one 'resource' parameter")
        resource = given[0]
    issues = resource_issues(resource, rtype)
    if not issues:
        issues = [Issue("informational", "the resource is valid", severity="information")]
    return Result(200, operation_outcome(issues))
