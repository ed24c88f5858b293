"""The one place errors become OperationOutcomes (ARCHITECTURE.md rule 8), routing errors included.

No stack trace ever reaches a client: unexpected exceptions are logged and answered with a bare 500.
"""
from __future__ import annotations

import logging

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from ..errors import FhirError, Issue, ServiceUnavailable, operation_outcome
from ..storage import DatabaseUnavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported",
               400: "invalid", 406: "not-supported"}


def _outcome(status: int, outcome: dict[str, object], headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(outcome), status=status,
                        content_type="application/fhir+json; charset=utf-8")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask) -> None:
    @app.errorhandler(FhirError)
    def fhir_error(error: FhirError) -> Response:
        return _outcome(error.status, error.outcome(), error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        text = {404: f"no FHIR endpoint at {request.path}",
                405: f"{request.method} is not supported on {request.path}",
                413: "the request body is larger than this server accepts"}.get(status, error.description or "")
        headers = {"Allow": ", ".join(error.valid_methods)} if getattr(error, "valid_methods", None) else {}
        issue = Issue(_HTTP_CODES.get(status, "exception"), text)
        return _outcome(status, operation_outcome([issue]), headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        # The database being out of reach is a 503 the client may retry; anything else is our bug.
        if isinstance(error, DatabaseUnavailable):
            log.warning("database unreachable: %s", error)
            return fhir_error(ServiceUnavailable("the database is unreachable; try again shortly"))
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _outcome(500, operation_outcome([Issue("exception", "internal server error")]))
