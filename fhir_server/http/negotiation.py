"""Formats, content negotiation and response headers (https://hl7.org/fhir/R4/http.html#mime-type).

JSON only for now: ``application/fhir+json`` (the default), ``application/json``, and the DSTU2-era
``application/json+fhir``; ``_format`` overrides ``Accept``; ``_pretty=true`` indents.
"""
from __future__ import annotations

import base64
from typing import Any

from flask import Request, Response
from werkzeug.http import http_date, parse_date

from ..errors import NotAcceptable, UnsupportedMediaType
from ..resources import jsonio
from ..resources.version import Version

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {FHIR_JSON, "application/json", "application/json+fhir"}
_FORMAT_ALIASES = {"json": FHIR_JSON, **{t: t for t in JSON_TYPES}}
_ACCEPT_ANY = {"*/*", "application/*"}


def response_type(request: Request) -> str:
    """The media type to answer with, or 406."""
    fmt = request.args.get("_format")
    if fmt is not None:
        chosen = _FORMAT_ALIASES.get(fmt.split(";")[0].strip().lower())
        if chosen is None:
            raise NotAcceptable(f"_format '{fmt}' is not supported: this server speaks JSON")
        return FHIR_JSON if chosen == "application/json+fhir" else chosen
    accept = request.accept_mimetypes
    if not accept.provided:
        return FHIR_JSON
    for mime, quality in accept:
        if quality <= 0:
            continue
        if mime in _ACCEPT_ANY or mime == FHIR_JSON or mime == "application/json+fhir":
            return FHIR_JSON
        if mime == "application/json":
            return "application/json"
    raise NotAcceptable(f"cannot answer in {request.headers.get('Accept')}: this server speaks JSON")


def binary_native(request: Request, stored: Any) -> str | None:
    """The content type to send a Binary's bytes in, raw (https://hl7.org/fhir/R4/binary.html#rest), or
    None for the FHIR resource: a client that asks for something other than FHIR JSON (``Accept:
    application/pdf``) gets the bytes; ``_format``, FHIR types, ``*/*`` and no Accept get the resource."""
    accept = request.accept_mimetypes
    if "_format" in request.args or not accept.provided:
        return None
    wanted = [m for m, q in accept if q > 0]
    if not wanted or any(m in _ACCEPT_ANY or m in JSON_TYPES for m in wanted):
        return None
    content_type = (jsonio.loads(stored).get("contentType") if isinstance(stored, bytes) else None) or \
        "application/octet-stream"
    return content_type


def binary_body(request: Request) -> bytes:
    """A Binary create: FHIR JSON, or the raw bytes with their own content type, made into a Binary."""
    mime = (request.mimetype or "").lower()
    if mime in JSON_TYPES or not mime:
        return require_json_body(request)
    data = request.get_data(cache=False)
    return jsonio.dumps({"resourceType": "Binary", "contentType": request.content_type,
                         "data": base64.b64encode(data).decode("ascii")})


def require_json_body(request: Request) -> bytes:
    """The body of a POST/PUT, whose Content-Type must be a JSON FHIR type (else 415)."""
    mime = (request.mimetype or "").lower()
    if mime not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type or ''}' is not supported: send {FHIR_JSON}")
    return request.get_data(cache=False)


def pretty(request: Request) -> bool:
    return request.args.get("_pretty", "").lower() == "true"


def render(body: bytes | dict[str, Any] | None, request: Request, status: int,
           version: Version | None = None, headers: dict[str, str] | None = None) -> Response:
    """Serialise ``body`` (stored bytes are sent as they are unless ``_pretty``) with FHIR headers."""
    if isinstance(body, dict):
        data = jsonio.dumps(body, pretty(request))
    elif body is not None and pretty(request):
        data = jsonio.dumps(jsonio.loads(body), pretty=True)
    else:
        data = body or b""
    response = Response(data, status=status)
    if body is not None:
        response.headers["Content-Type"] = f"{response_type(request)}; charset=utf-8"
    if version is not None:
        response.headers["ETag"] = version.etag
        response.headers["Last-Modified"] = http_date(version.last_updated)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def etag_version(value: str | None) -> int | None:
    """``W/"3"`` or ``"3"`` -> 3 (the version an If-Match / If-None-Match names)."""
    if value is None:
        return None
    raw = value.strip()
    if raw.startswith("W/"):
        raw = raw[2:]
    raw = raw.strip('"')
    return int(raw) if raw.isdigit() else -1


def not_modified(request: Request, version: Version) -> bool:
    """If-None-Match / If-Modified-Since on a read (https://hl7.org/fhir/R4/http.html#cread)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        return if_none_match.strip() == "*" or etag_version(if_none_match) == version.version
    since = parse_date(request.headers.get("If-Modified-Since"))
    return since is not None and version.last_updated.replace(microsecond=0) <= since


def prefer(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    """One preference of the Prefer header (RFC 7240): ``return=minimal``, ``handling=strict`` ..."""
    for part in request.headers.get("Prefer", "").replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            value = value.strip().strip('"')
            if value in allowed:
                return value
    return default
