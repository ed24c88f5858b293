"""One function per FHIR interaction (https://hl7.org/fhir/R4/http.html).

Each takes the server's services and the RequestContext, and returns a ``Result`` the HTTP layer
serialises. The order inside every interaction is fixed: validate -> (auth -> consent, with their
issues) -> storage -> (audit).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from .config import Config
from .context import RequestContext
from .auth import access
from .errors import BadRequest, Forbidden, Gone, Issue, NotFound, PreconditionFailed, operation_outcome
from .resources import bundle, jsonio
from .resources.parse import check_id, parse_resource
from .resources.schema import RESOURCE_TYPES
from .resources.validation import resource_issues, validate
from .resources.version import Version
from . import searching
from .search.dates import parse_instant, parse_period
from .search.index import index
from .search.registry import compartments
from .search.paging import decode_cursor, encode_cursor
from .storage import Store


@dataclass(frozen=True)
class Services:
    config: Config
    store: Store


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


def _permitted(ctx: RequestContext, version: Version, letters: str) -> bool:
    """May the caller see this version (auth/access.py)? A deletion is judged by what it deleted."""
    def compartments() -> tuple[str, ...]:
        if version.compartments is not None:
            return version.compartments
        return _compartments(jsonio.loads(version.json)) if version.json else ()
    return access.permits(ctx.who, version.type, letters, compartments,
                          lambda: jsonio.loads(version.json or b"{}"), ctx.base_url)


def _visible(ctx: RequestContext, version: Version | None, what: str) -> Version:
    """The version, if it exists and the caller may see it: what they may not see does not exist."""
    if version is None or not _permitted(ctx, version, "r"):
        raise NotFound(f"{what} is not known")
    if version.deleted:
        raise Gone(f"{what} was deleted", headers={"ETag": version.etag})
    return version


def read(svc: Services, ctx: RequestContext, rtype: str, rid: str) -> Result:
    """https://hl7.org/fhir/R4/http.html#read"""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "read", rtype)
    version = _visible(ctx, svc.store.read(rtype, rid), f"{rtype}/{rid}")
    return Result(200, version.json, version)


def vread(svc: Services, ctx: RequestContext, rtype: str, rid: str, vid: str) -> Result:
    """https://hl7.org/fhir/R4/http.html#vread"""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "vread", rtype)
    if not vid.isdigit():
        raise NotFound(f"{rtype}/{rid} has no version '{vid}'")
    version = _visible(ctx, svc.store.vread(rtype, rid, int(vid)), f"{rtype}/{rid}/_history/{vid}")
    return Result(200, version.json, version)


def _may_write(ctx: RequestContext, rtype: str, letter: str, resource: dict[str, Any]) -> None:
    if not access.permits(ctx.who, rtype, letter, lambda: _compartments(resource), lambda: resource, ctx.base_url):
        raise Forbidden(f"the access token's scopes do not allow writing this {rtype}")


def _location(ctx: RequestContext, version: Version) -> str:
    return f"{ctx.base_url}/{version.type}/{version.id}/_history/{version.version}"


def create(svc: Services, ctx: RequestContext, rtype: str, body: bytes) -> Result:
    """https://hl7.org/fhir/R4/http.html#create: the server assigns the id."""
    check_type(rtype)
    access.require(ctx.who, "create", rtype)
    resource = parse_resource(body, svc.config.max_json_depth)
    validate(resource, rtype)
    _may_write(ctx, rtype, "c", resource)
    version = svc.store.create(rtype, resource)
    return Result(201, version.json, version, _location(ctx, version))


def update(svc: Services, ctx: RequestContext, rtype: str, rid: str, body: bytes, if_match: int | None) -> Result:
    """https://hl7.org/fhir/R4/http.html#update, update as create included."""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "update", rtype)
    resource = parse_resource(body, svc.config.max_json_depth)
    validate(resource, rtype, rid)
    _may_write(ctx, rtype, "u", resource)
    current = svc.store.read(rtype, rid)
    if current is not None and not current.deleted and not _permitted(ctx, current, "u"):
        raise Forbidden(f"the access token's scopes do not allow writing this {rtype}")
    version, created = svc.store.update(rtype, rid, resource, if_match)
    return Result(201 if created else 200, version.json, version, _location(ctx, version))


def delete(svc: Services, ctx: RequestContext, rtype: str, rid: str, if_match: int | None) -> Result:
    """https://hl7.org/fhir/R4/http.html#delete: logical, idempotent."""
    check_type(rtype)
    check_id(rid)
    access.require(ctx.who, "delete", rtype)
    current = svc.store.read(rtype, rid)
    if current is None or current.deleted or not _permitted(ctx, current, "d"):
        version = None  # what the caller may not see does not exist: nothing to delete
        if if_match is not None:
            raise PreconditionFailed(f"{rtype}/{rid} has no current version {if_match}")
    else:
        version = svc.store.delete(rtype, rid, if_match)
    if version is None:
        text = f"{rtype}/{rid} does not exist or was already deleted: nothing to do"
    else:
        text = f"{rtype}/{rid} deleted (version {version.version})"
    return Result(200, operation_outcome([Issue("informational", text, severity="information")]), version)


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
    # a patient-bound caller sees the history of their compartment only (of every type, at system level)
    patient = access.patient_bound(ctx.who, rtype or "Patient", letters)
    if patient is not None and rid is None:
        patient = patient or "\u0000"  # no patient in context: nothing
    query = svc.store.history_query(rtype, rid, since, at, f"Patient/{patient}" if patient is not None else None)
    cursor = params.get("_cursor")
    after = tuple(decode_cursor(svc.config.secret, cursor)) if cursor else None
    versions, next_keyset = svc.store.history_page(query, count, after)
    versions = [v for v in versions if _permitted(ctx, v, letters)]
    if rid is not None and not versions and after is None:
        _visible(ctx, svc.store.read(rtype or "", rid), f"{rtype}/{rid}")
    path = "/".join(p for p in (rtype, rid, "_history") if p)
    kept = {k: params[k] for k in ("_count", "_since", "_at") if params.get(k)}
    links = {"self": _url(ctx, path, {**kept, **({"_cursor": cursor} if cursor else {})})}
    if next_keyset is not None:
        links["next"] = _url(ctx, path, {**kept, "_cursor": encode_cursor(svc.config.secret, next_keyset)})
    entries = [bundle.history_entry(ctx.base_url, v) for v in versions]
    return Result(200, bundle.history_bundle(ctx.base_url, entries, svc.store.history_total(query), links))


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
    body = searching.run(svc.store, svc.config, ctx.base_url, path, tuple(types), params,
                         strict=ctx.handling == "strict", compartment=compartment, who=ctx.who)
    return Result(200, body)


def everything(svc: Services, ctx: RequestContext, rid: str, params: list[tuple[str, str]]) -> Result:
    """``Patient/{id}/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html): the
    patient and every resource in their compartment, with ``_since``, ``_type`` and ``_count``."""
    check_id(rid)
    access.require(ctx.who, "everything", "Patient")
    _visible(ctx, svc.store.read("Patient", rid), f"Patient/{rid}")
    members = list(dict.fromkeys(["Patient", *sorted(compartments()["Patient"])]))
    wanted = [t.strip() for name, value in params if name == "_type" for t in value.split(",") if t.strip()]
    types = [t for t in members if (not wanted or t in wanted) and access.allows(ctx.who, "s", t)]
    search_params: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_since":
            parse_instant(value)
            search_params.append(("_lastUpdated", f"ge{value}"))
        elif name in ("_count", "_cursor", "_type"):
            search_params.append((name, value))
    body = searching.run(svc.store, svc.config, ctx.base_url, f"Patient/{rid}/$everything", tuple(types),
                         search_params, compartment=("Patient", rid), who=ctx.who)
    return Result(200, body)


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
