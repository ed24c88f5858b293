"""Thin views, one per FHIR interaction: build the RequestContext, call the pipeline, serialise.

No business logic, no database and no policy here (ARCHITECTURE.md rule 2).
"""
from __future__ import annotations

from collections.abc import Callable
import base64
from typing import Any

from flask import Response, current_app, g, request
from werkzeug.http import http_date

from .. import bundles, controls, pipeline
from .. import capability
from ..context import DEVELOPMENT, RequestContext
from ..errors import BadRequest, Issue, UnsupportedMediaType, operation_outcome
from ..resources import jsonio
from ..resources.version import Version
from ..resources.elements import select_elements, summarize
from . import negotiation


def _services() -> pipeline.Services:
    services: pipeline.Services = current_app.extensions["fhir"]
    return services


def _context() -> RequestContext:
    base = _services().config.base_url or (request.host_url.rstrip("/") + "/fhir")
    return RequestContext(
        base_url=base.rstrip("/"),
        prefer_return=negotiation.prefer(request, "return", ("minimal", "representation", "OperationOutcome"),
                                         "representation"),
        handling=negotiation.prefer(request, "handling", ("strict", "lenient"), "lenient"),
        who=g.get("who", DEVELOPMENT),
        client_address=request.remote_addr,
    )


def _subset(body: bytes | dict[str, Any] | None) -> bytes | dict[str, Any] | None:
    """Apply ``_summary`` / ``_elements`` to a resource read."""
    summary, elements = request.args.get("_summary"), request.args.get("_elements")
    if body is None or (summary in (None, "false") and not elements):
        return body
    resource = jsonio.loads(body) if isinstance(body, bytes) else body
    if summary == "count":
        raise BadRequest("_summary=count applies to searches, not to reads")
    if summary is not None:
        resource = summarize(resource, summary)
    if elements:
        resource = select_elements(resource, [e.strip() for e in elements.split(",") if e.strip()])
    return resource


def _read_response(result: pipeline.Result) -> Response:
    assert result.version is not None
    if negotiation.not_modified(request, result.version):
        return negotiation.render(None, request, 304, result.version)
    if result.version.type == "Binary":
        content_type = negotiation.binary_native(request, result.body)
        if content_type is not None:  # ITI-68: the document's bytes as they are
            return _raw_binary(result.version, content_type)
        return negotiation.render(_subset(_services().store.binary_json(result.version)), request, 200, result.version)
    return negotiation.render(_subset(result.body), request, 200, result.version)


def _raw_binary(version: Version, content_type: str) -> Response:
    """The bytes streamed (a large document never sits whole in memory), with headers that stop a
    browser from running them as this site's content."""
    store = _services().store
    if version.blob is not None:
        size = store.blobs.size(version.blob) or 0
        body: Any = store.blobs.stream(version.blob)
    else:
        data = base64.b64decode(jsonio.loads(version.json or b"{}").get("data") or "")
        size, body = len(data), [data]
    response = Response(body, status=200, content_type=content_type)
    response.headers.update({"Content-Length": str(size), "ETag": version.etag,
                             "Last-Modified": http_date(version.last_updated), "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "sandbox; default-src 'none'"})
    return response


def _write_response(result: pipeline.Result, ctx: RequestContext) -> Response:
    headers = {"Location": result.location} if result.location else {}
    body: bytes | dict[str, Any] | None = result.body
    if ctx.prefer_return == "minimal":
        body = None
    elif ctx.prefer_return == "OperationOutcome":
        text = f"{result.version.type}/{result.version.id} version {result.version.version} stored" \
            if result.version else "done"
        body = operation_outcome([Issue("informational", text, severity="information")])
    return negotiation.render(body, request, result.status, result.version, headers)


def _if_match() -> int | None:
    return negotiation.etag_version(request.headers.get("If-Match"))


def metadata() -> Response:
    statement = current_app.extensions["fhir-capability"]
    smart = _services().config.auth != "off"
    return negotiation.render(capability.for_base(statement, _context().base_url, smart), request, 200)


def read(rtype: str, rid: str) -> Response:
    return _read_response(pipeline.read(_services(), _context(), rtype, rid))


def vread(rtype: str, rid: str, vid: str) -> Response:
    return _read_response(pipeline.vread(_services(), _context(), rtype, rid, vid))


def create(rtype: str) -> Response:
    ctx = _context()
    body = negotiation.binary_body(request) if rtype == "Binary" else negotiation.require_json_body(request)
    if_none_exist = request.headers.get("If-None-Exist")
    return _write_response(pipeline.create(_services(), ctx, rtype, body, if_none_exist), ctx)


def _criteria() -> str:
    criteria = request.query_string.decode("utf-8", "replace")
    if not criteria:
        raise BadRequest(f"{request.method} [type] needs search criteria: {request.method} [type]?criteria")
    return criteria


def conditional_update(rtype: str) -> Response:
    ctx = _context()
    body = negotiation.require_json_body(request)
    return _write_response(pipeline.conditional_update(_services(), ctx, rtype, _criteria(), body, _if_match()), ctx)


def conditional_delete(rtype: str) -> Response:
    result = pipeline.conditional_delete(_services(), _context(), rtype, _criteria())
    return negotiation.render(result.body, request, result.status)


def patch(rtype: str, rid: str) -> Response:
    ctx = _context()
    result = pipeline.patch(_services(), ctx, rtype, rid, request.get_data(cache=False), request.mimetype or "",
                            _if_match())
    return _write_response(result, ctx)


def conditional_patch(rtype: str) -> Response:
    ctx = _context()
    result = pipeline.conditional_patch(_services(), ctx, rtype, _criteria(), request.get_data(cache=False),
                                        request.mimetype or "", _if_match())
    return _write_response(result, ctx)


def bundle() -> Response:
    """``POST [base]``: a batch or a transaction."""
    ctx = _context()
    representation = negotiation.prefer(request, "return", ("minimal", "representation"), "") == "representation"
    result = bundles.process(_services(), ctx, negotiation.require_json_body(request), representation)
    return negotiation.render(result.body, request, result.status)


def update(rtype: str, rid: str) -> Response:
    ctx = _context()
    body = negotiation.require_json_body(request)
    return _write_response(pipeline.update(_services(), ctx, rtype, rid, body, _if_match()), ctx)


def delete(rtype: str, rid: str) -> Response:
    result = pipeline.delete(_services(), _context(), rtype, rid, _if_match())
    return negotiation.render(result.body, request, result.status, result.version)


def history_system() -> Response:
    return _bundle(pipeline.history(_services(), _context(), request.args.to_dict()))


def history_type(rtype: str) -> Response:
    return _bundle(pipeline.history(_services(), _context(), request.args.to_dict(), rtype))


def history_instance(rtype: str, rid: str) -> Response:
    return _bundle(pipeline.history(_services(), _context(), request.args.to_dict(), rtype, rid))


def _bundle(result: pipeline.Result) -> Response:
    return negotiation.render(result.body, request, result.status)


def validate_type(rtype: str) -> Response:
    body = negotiation.require_json_body(request)
    result = pipeline.validate_resource(_services(), _context(), body, rtype)
    return negotiation.render(result.body, request, result.status)


def _search_params() -> list[tuple[str, str]]:
    """The query's parameters, plus a form body's on ``POST _search`` (search.html#search)."""
    params = list(request.args.items(multi=True))
    if request.method == "POST":
        if request.mimetype != "application/x-www-form-urlencoded":
            raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
        params += list(request.form.items(multi=True))
    return params


def _searchset(types: list[str], path: str, compartment: tuple[str, str] | None = None) -> Response:
    result = pipeline.search(_services(), _context(), types, _search_params(), path, compartment)
    return negotiation.render(result.body, request, result.status)


def search_type(rtype: str) -> Response:
    return _searchset([rtype], rtype)


def search_system() -> Response:
    given = [t.strip() for p, v in _search_params() if p == "_type" for t in v.split(",") if t.strip()]
    return _searchset(given, "")  # no _type: every type the caller may search


def search_compartment(ctype: str, cid: str, rtype: str) -> Response:
    return _searchset([rtype], f"{ctype}/{cid}/{rtype}", (ctype, cid))


def everything(rid: str) -> Response:
    result = pipeline.everything(_services(), _context(), rid, list(request.args.items(multi=True)))
    return negotiation.render(result.body, request, result.status)


def access_history(rid: str) -> Response:
    result = pipeline.access_history(_services(), _context(), rid, list(request.args.items(multi=True)))
    return negotiation.render(result.body, request, result.status)


def patient_control(action: str) -> Callable[[str], Response]:
    """The view of one of the patient's controls (``Patient/{id}/$block`` ...)."""
    def view(rid: str) -> Response:
        result = controls.act(_services(), _context(), rid, action, request.get_data())
        return negotiation.render(result.body, request, result.status)
    view.__name__ = f"patient_{action}"
    return view
