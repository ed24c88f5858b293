"""Batch and transaction: ``POST [base]`` with a Bundle (https://hl7.org/fhir/R4/http.html#transaction).

A transaction is planned whole (targets, ids, references, every check) before anything is stored, then
stored at once through the commit record (storage/transaction.py): every entry or none, and no reader
sees part of it. A batch runs each entry as its own interaction, each with its own outcome.
"""
from __future__ import annotations

import binascii
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson

from . import conditional, mhd, pipeline
from .context import RequestContext
from .errors import BadRequest, FhirError, Issue, NotFound, PayloadTooLarge, PreconditionFailed, operation_outcome
from .pipeline import Result, Services
from .resources import jsonio
from .resources.parse import check_id, parse_resource
from .resources.version import Version
from .storage.transaction import Write

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# http.html#trules: deletes, then creates, then updates, then reads
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    path: str  # "Patient", "Patient/1", "Patient/1/_history/2" ...
    query: str  # the search criteria after "?", if any
    resource: dict[str, Any] | None
    full_url: str | None
    request: dict[str, Any]
    # planned: the resources written ("Type", "id") and how
    targets: list[tuple[str, str]] = field(default_factory=list)
    found: str | None = None  # a conditional create that matched: the existing id
    before: dict[tuple[str, str], Version | None] = field(default_factory=dict)


def process(svc: Services, ctx: RequestContext, body: bytes, representation: bool) -> Result:
    bundle = parse_resource(body, svc.config.max_json_depth)
    kind = bundle.get("type")
    if bundle["resourceType"] != "Bundle" or kind not in ("batch", "transaction"):
        raise BadRequest("POST [base] takes a Bundle of type 'batch' or 'transaction'")
    raw = bundle.get("entry") or []
    if not isinstance(raw, list):
        raise BadRequest("Bundle.entry must be a list")
    if len(raw) > svc.config.max_bundle_entries:
        raise PayloadTooLarge(f"the bundle has {len(raw)} entries; at most {svc.config.max_bundle_entries} are taken")
    if kind == "batch":
        return Result(200, {"resourceType": "Bundle", "type": "batch-response",
                            "entry": [_batch_entry(svc, ctx, n, e, representation) for n, e in enumerate(raw)]})
    documents = mhd.provided_documents(ctx, bundle)  # an ITI-65 Provide Document Bundle: PDSm's checks
    entries = [_entry(ctx, n, e) for n, e in enumerate(raw)]
    return Result(200, transaction(svc, ctx, entries, representation, documents))


def _entry(ctx: RequestContext, n: int, raw: Any) -> Entry:
    with _at(n, raw):
        if not isinstance(raw, dict):
            raise BadRequest("an entry must be an object")
        request = raw.get("request")
        if not isinstance(request, dict) or request.get("method") not in METHODS or \
                not isinstance(request.get("url"), str) or not request["url"].strip():
            raise BadRequest(f"entry.request needs a method ({', '.join(METHODS)}) and a url")
        url = request["url"].strip()
        if url.startswith(ctx.base_url + "/"):
            url = url[len(ctx.base_url) + 1:]
        elif "://" in url.split("?")[0]:
            raise BadRequest(f"entry.request.url '{url}' is not on this server")
        path, _, query = url.partition("?")
        resource = raw.get("resource")
        if request["method"] in ("POST", "PUT", "PATCH"):
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise BadRequest(f"a {request['method']} entry needs a resource")
            if request["method"] != "POST" and (not isinstance(raw.get("fullUrl"), str) or not raw["fullUrl"]):
                # "fullUrl can be empty on a POST" (Bundle.entry.fullUrl): nothing can refer to it then
                raise BadRequest("an entry with a resource needs a fullUrl (https://hl7.org/fhir/R4/bundle.html#bundle-unique)")
        return Entry(n, request["method"], path.strip("/"), query, resource if isinstance(resource, dict) else None,
                     raw.get("fullUrl"), request)


class _at:
    """Errors inside name the entry they come from: ``Bundle.entry[3]``."""

    def __init__(self, n: int, raw: Any) -> None:
        self.n, self.raw = n, raw

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        if isinstance(error, FhirError) and not getattr(error, "located", False):
            request = self.raw.get("request") if isinstance(self.raw, dict) else None
            what = f"{request.get('method')} {request.get('url')}" if isinstance(request, dict) else "entry"
            error.issues = [Issue(i.code, f"Bundle.entry[{self.n}] ({what}): {i.diagnostics}", i.severity,
                                  (f"Bundle.entry[{self.n}]", *i.expression)) for i in error.issues]
            error.located = True  # type: ignore[attr-defined]


# -- transaction ------------------------------------------------------------------------------------


def transaction(svc: Services, ctx: RequestContext, entries: list[Entry], representation: bool,
                replaced: list[str] | None = None) -> dict[str, Any]:
    """``replaced``: the DocumentReferences the bundle's documents replace (ITI-65), superseded with it."""
    refs = _Refs()  # fullUrl -> "Type/id" of what the entry became
    _unique_full_urls(entries)
    requested = len(entries)
    writes: list[tuple[Entry, Write]] = []
    ordered = sorted(entries, key=lambda e: ORDER[e.method])
    with ExitStack() as turns:
        # conditional creates and updates with the same criteria take turns with any other writer
        for key in sorted({(e.path, e.query or e.request.get("ifNoneExist", "")) for e in entries
                           if e.method in ("POST", "PUT") and (e.query or e.request.get("ifNoneExist"))}):
            turns.enter_context(conditional.locked(svc.store, *key))
        for entry in ordered:
            if entry.method not in ("GET", "HEAD"):
                with _at(entry.index, {"request": entry.request}):
                    _target(svc, ctx, entry, refs)
        for reference in replaced or ():
            entries.append(mhd.supersede(svc, ctx, reference, len(entries)))
        _no_duplicates(entries)
        for entry in sorted(entries, key=lambda e: ORDER[e.method]):
            if entry.method not in ("GET", "HEAD"):
                with _at(entry.index, {"request": entry.request}):
                    writes += [(entry, w) for w in _plan(svc, ctx, entry, refs)]
        versions = svc.store.commit([w for _, w in writes], pipeline.writer(ctx)) if writes else []
    written: dict[tuple[str, str], Version] = {}
    for (entry, w), version in zip(writes, versions):
        written[(w.type, w.id)] = version
        interaction = "delete" if w.resource is None else "create" if entry.before.get((w.type, w.id)) is None \
            else "update"
        pipeline.audit_write(svc, ctx, interaction, version, entry.before.get((w.type, w.id)))
    return {"resourceType": "Bundle", "type": "transaction-response",
            "entry": [_response(svc, ctx, e, written, representation) for e in entries[:requested]]}


class _Refs(dict[str, str]):
    """The fullUrls' targets, and the resources the transaction's deletes remove: deletes come first
    (http.html#trules), so the conditional creates, updates and references after them must not find them."""

    deleted: set[tuple[str, str]]

    def __init__(self) -> None:
        super().__init__()
        self.deleted = set()


def _matches(svc: Services, ctx: RequestContext, rtype: str, raw: str, refs: _Refs, limit: int = 1) -> list[str]:
    gone = {rid for t, rid in refs.deleted if t == rtype}
    return [rid for rid in conditional.matches(svc, ctx, rtype, raw, limit + len(gone)) if rid not in gone]


def _target(svc: Services, ctx: RequestContext, entry: Entry, refs: _Refs) -> None:
    """Which resources the entry writes, resolving conditional URLs; new ids for creates."""
    parts = entry.path.split("/")
    rtype = pipeline.check_type(parts[0])
    if entry.method == "POST":
        if len(parts) != 1 or entry.query:
            raise BadRequest("a POST entry's url is the resource type")
        criteria = entry.request.get("ifNoneExist")
        found = _matches(svc, ctx, rtype, criteria, refs) if criteria else []
        if found:
            entry.found = conditional.one(found, "ifNoneExist")
            targets = [(rtype, entry.found)]
        else:
            targets = [(rtype, str(uuid.uuid4()))]
            entry.targets = targets
    elif entry.query:
        if len(parts) != 1:
            raise BadRequest("a conditional url is [type]?criteria")
        limit = svc.config.max_count if entry.method == "DELETE" and svc.config.conditional_delete_multiple else 1
        found = _matches(svc, ctx, rtype, entry.query, refs, limit)
        if entry.method == "DELETE":
            if len(found) > limit:
                raise PreconditionFailed(f"{len(found)} {rtype} resources match: conditional delete takes one at a time")
            targets = entry.targets = [(rtype, rid) for rid in found]
            refs.deleted.update(targets)
        elif entry.method == "PUT":
            rid = conditional.target(found, entry.resource or {}) or str(uuid.uuid4())
            targets = entry.targets = [(rtype, rid)]
        else:
            targets = entry.targets = [(rtype, conditional.one(found, "conditional patch"))] if found else []
            if not found:
                raise NotFound(f"no {rtype} matches {entry.query}")
    else:
        if len(parts) != 2:
            raise BadRequest(f"a {entry.method} entry's url is [type]/[id] or [type]?criteria")
        targets = entry.targets = [(rtype, check_id(parts[1]))]
        if entry.method == "DELETE":
            refs.deleted.update(targets)
    if entry.full_url and targets:
        refs[entry.full_url] = "/".join(targets[0])


def _unique_full_urls(entries: list[Entry]) -> None:
    """bdl-7: a fullUrl names one entry (or versions that differ); two would make its references ambiguous."""
    seen: dict[tuple[str, Any], int] = {}
    for entry in entries:
        if entry.full_url and entry.resource is not None:
            key = (entry.full_url, (entry.resource.get("meta") or {}).get("versionId"))
            if key in seen:
                with _at(entry.index, {"request": entry.request}):
                    raise BadRequest(f"Bundle.entry[{seen[key]}] has the same fullUrl '{entry.full_url}' (bdl-7)")
            seen[key] = entry.index


def _no_duplicates(entries: list[Entry]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for entry in entries:
        for target in entry.targets:
            if target in seen:
                raise BadRequest(f"Bundle.entry[{seen[target]}] and Bundle.entry[{entry.index}] both change "
                                 f"{'/'.join(target)}: a transaction changes a resource once")
            seen[target] = entry.index


def _plan(svc: Services, ctx: RequestContext, entry: Entry, refs: _Refs) -> list[Write]:
    """The entry's writes, each through every check a single interaction makes."""
    if_match = _version(entry.request.get("ifMatch"))
    writes = []
    for rtype, rid in entry.targets:
        if entry.method == "DELETE":
            current = pipeline.check_delete(svc, ctx, rtype, rid, if_match)
            if if_match is not None and current is not None and current.version != if_match:
                raise PreconditionFailed(f"{rtype}/{rid} is not at version {if_match}")
            entry.before[(rtype, rid)] = current
            if current is not None:
                writes.append(Write(rtype, rid, None, "DELETE", if_match))
            continue
        resource = _rewrite(svc, ctx, entry.resource or {}, refs)
        if entry.method == "PATCH":
            # as PATCH [type]/[id] does: the caller must see it, and planning is no audited read
            current = pipeline.visible_version(svc, ctx, rtype, rid)
            assert current.json is not None
            if if_match is not None and current.version != if_match:
                raise PreconditionFailed(f"{rtype}/{rid} is not at version {if_match}")
            body, content_type = _patch_document(resource)
            resource = mhd.patched(rtype, jsonio.loads(current.json), body, content_type)
            if_match = if_match or current.version
        if resource.get("resourceType") != rtype:
            raise BadRequest(f"the resource is a {resource.get('resourceType')}, the url names {rtype}")
        if entry.method == "POST":
            pipeline.check_create(svc, ctx, rtype, resource)
            entry.before[(rtype, rid)] = None
            writes.append(Write(rtype, rid, resource, "POST"))
        else:
            if entry.method == "PUT" and resource.get("id") not in (None, rid):  # as PUT [type]/[id]: 400
                raise BadRequest(f"the resource's id '{resource['id']}' is not the id in the url ({rid})")
            entry.before[(rtype, rid)] = existing = pipeline.check_update(svc, ctx, rtype, rid, {**resource, "id": rid})
            if if_match is not None and (existing is None or existing.version != if_match):
                raise PreconditionFailed(f"{rtype}/{rid} is not at version {if_match}")
            writes.append(Write(rtype, rid, {**resource, "id": rid}, "PUT", if_match))
    return writes


def _version(etag: Any) -> int | None:
    if etag is None:
        return None
    digits = str(etag).removeprefix("W/").strip('"')
    if not digits.isdigit():
        raise BadRequest(f"'{etag}' is not a version ETag such as W/\"3\"")
    return int(digits)


def _patch_document(resource: dict[str, Any]) -> tuple[bytes, str]:
    """A PATCH entry carries a Binary (a JSON Patch) or a Parameters (a FHIRPath Patch)."""
    if resource["resourceType"] == "Parameters":
        return jsonio.dumps(resource), "application/fhir+json"
    if resource["resourceType"] == "Binary":
        try:
            return jsonio.base64_bytes(resource.get("data") or ""), resource.get("contentType") or ""
        except (binascii.Error, TypeError):
            raise BadRequest("the PATCH entry's Binary.data is not base64") from None
    raise BadRequest("a PATCH entry's resource is a Binary (JSON Patch) or a Parameters (FHIRPath Patch)")


def _rewrite(svc: Services, ctx: RequestContext, value: Any, refs: _Refs, key: str = "") -> Any:
    """References to entries' fullUrls become the ids they were given, wherever they are (references,
    uri and url elements, the narrative's links); conditional references are resolved."""
    if isinstance(value, dict):
        # an Identifier's (or ContactPoint's) value is a string, not a link, even when it spells a fullUrl:
        # a document's masterIdentifier "urn:uuid:..." must stay its unique id
        return {k: v if k == "value" and "system" in value else _rewrite(svc, ctx, v, refs, k)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(svc, ctx, v, refs, key) for v in value]
    if not isinstance(value, str):
        return value
    if value in refs:
        return refs[value]
    if key == "div" and ("urn:uuid:" in value or "urn:oid:" in value):
        for full_url, target in refs.items():
            value = value.replace(f'"{full_url}"', f'"{target}"')
        return value
    if key == "reference":
        if value.startswith(("urn:uuid:", "urn:oid:")):
            raise BadRequest(f"the reference '{value}' names no entry of the bundle")
        if "?" in value and not value.startswith("#"):
            rtype, _, criteria = value.partition("?")
            found = _matches(svc, ctx, pipeline.check_type(rtype), criteria, refs)
            if not found:
                raise PreconditionFailed(f"the conditional reference '{value}' matches nothing")
            return f"{rtype}/{conditional.one(found, f'the conditional reference {value}')}"
    return value


def _response(svc: Services, ctx: RequestContext, entry: Entry, written: dict[tuple[str, str], Version],
              representation: bool) -> dict[str, Any]:
    if entry.method in ("GET", "HEAD"):
        return _run(svc, ctx, entry.method, entry.path, entry.query, None, entry.request, representation)
    if entry.found is not None:  # a conditional create that matched: nothing written
        return _read_entry(svc, ctx, entry.path, entry.found, representation)
    versions = [written[t] for t in entry.targets if t in written]
    if entry.method == "DELETE" or not versions:
        return {"response": {"status": _status(204 if versions or entry.method == "DELETE" else 200)}}
    version = versions[0]
    created = entry.before.get((version.type, version.id)) is None
    return _version_entry(ctx, version, 201 if created else 200, representation)


def _version_entry(ctx: RequestContext, version: Version, status: int, representation: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"{ctx.base_url}/{version.type}/{version.id}"}
    if representation and version.json is not None:
        entry["resource"] = orjson.Fragment(version.json)
    entry["response"] = {"status": _status(status), "location": f"{version.type}/{version.id}/_history/{version.version}",
                         "etag": version.etag, "lastModified": version.last_updated_instant}
    return entry


def _read_entry(svc: Services, ctx: RequestContext, rtype: str, rid: str, representation: bool) -> dict[str, Any]:
    result = pipeline.read(svc, ctx, rtype, rid)
    assert result.version is not None
    return _version_entry(ctx, result.version, 200, representation)


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


# -- batch, and the reads of a transaction ----------------------------------------------------------


def _batch_entry(svc: Services, ctx: RequestContext, n: int, raw: Any, representation: bool) -> dict[str, Any]:
    try:
        entry = _entry(ctx, n, raw)
        with _at(n, raw):
            body = jsonio.dumps(entry.resource) if entry.resource is not None else None
            return _run(svc, ctx, entry.method, entry.path, entry.query, body, entry.request, representation)
    except FhirError as error:
        return {"response": {"status": _status(error.status), "outcome": error.outcome()}}


def _run(svc: Services, ctx: RequestContext, method: str, path: str, query: str, body: bytes | None,
         request: dict[str, Any], representation: bool) -> dict[str, Any]:
    """One entry as the interaction its method and url name (read errors answered in the entry)."""
    try:
        result = _call(svc, ctx, method, path, query, body, request)
    except FhirError as error:
        if method not in ("GET", "HEAD"):
            raise
        return {"response": {"status": _status(error.status), "outcome": error.outcome()}}
    if result.version is not None and method != "DELETE":
        if method in ("GET", "HEAD") and _not_modified(request, result.version):
            return {"response": {"status": _status(304), "etag": result.version.etag}}
        entry = _version_entry(ctx, result.version, result.status, representation or method == "GET")
        if method == "HEAD":
            entry.pop("resource", None)
        return entry
    out: dict[str, Any] = {"response": {"status": _status(result.status)}}
    if isinstance(result.body, dict) and method in ("GET", "HEAD"):
        out = {"resource": result.body, **out}
    elif isinstance(result.body, dict) and result.body.get("resourceType") == "OperationOutcome":
        out["response"]["outcome"] = result.body
    return out


def _not_modified(request: dict[str, Any], version: Version) -> bool:
    if request.get("ifNoneMatch") and request["ifNoneMatch"] in (version.etag, "*"):
        return True
    since = request.get("ifModifiedSince")
    if since:
        try:
            return version.last_updated.replace(microsecond=0) <= datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"ifModifiedSince '{since}' is not an instant") from None
    return False


def _call(svc: Services, ctx: RequestContext, method: str, path: str, query: str, body: bytes | None,
          request: dict[str, Any]) -> Result:
    parts = [p for p in path.split("/") if p]
    params = parse_qsl(query, keep_blank_values=True)
    if_match = _version(request.get("ifMatch"))
    if method in ("GET", "HEAD"):
        return _read_call(svc, ctx, parts, params, query)
    assert body is not None or method == "DELETE"
    if method == "POST" and len(parts) == 1:
        return pipeline.create(svc, ctx, parts[0], body or b"", request.get("ifNoneExist"))
    if method == "PUT" and len(parts) == 1 and query:
        return pipeline.conditional_update(svc, ctx, parts[0], query, body or b"", if_match)
    if method == "PUT" and len(parts) == 2:
        return pipeline.update(svc, ctx, parts[0], parts[1], body or b"", if_match)
    if method == "DELETE" and len(parts) == 1 and query:
        return pipeline.conditional_delete(svc, ctx, parts[0], query)
    if method == "DELETE" and len(parts) == 2:
        return pipeline.delete(svc, ctx, parts[0], parts[1], if_match)
    if method == "PATCH" and len(parts) in (1, 2):
        patch_body, content_type = _patch_document(jsonio.loads(body or b"{}"))
        if len(parts) == 1:
            return pipeline.conditional_patch(svc, ctx, parts[0], query, patch_body, content_type, if_match)
        return pipeline.patch(svc, ctx, parts[0], parts[1], patch_body, content_type, if_match)
    raise BadRequest(f"{method} {path} is not an interaction this server knows")


def _read_call(svc: Services, ctx: RequestContext, parts: list[str], params: list[tuple[str, str]],
               query: str) -> Result:
    if not parts:
        types = [t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()]
        return pipeline.search(svc, ctx, types, params, "")
    if parts[-1] == "_history" or (len(parts) == 4 and parts[2] == "_history"):
        if len(parts) == 4:
            return pipeline.vread(svc, ctx, parts[0], parts[1], parts[3])
        return pipeline.history(svc, ctx, dict(params), *parts[:-1])
    if len(parts) == 1:
        return pipeline.search(svc, ctx, [parts[0]], params, parts[0])
    if len(parts) == 2:
        return pipeline.read(svc, ctx, parts[0], parts[1])
    if len(parts) == 3 and parts[0] == "Patient" and parts[2] == "$everything":
        return pipeline.everything(svc, ctx, parts[1], params)
    if len(parts) == 3:
        return pipeline.search(svc, ctx, [parts[2]], params, "/".join(parts), (parts[0], parts[1]))
    raise BadRequest(f"GET {'/'.join(parts)}{'?' + query if query else ''} is not a read this server knows")


__all__ = ["process", "operation_outcome"]
