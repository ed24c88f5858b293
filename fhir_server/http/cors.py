"""CORS for browser apps (SMART apps run in another origin): the FHIR API, discovery and the token,
introspection, revocation and JWKS endpoints answer cross-origin requests. Credentials travel as
bearer tokens, never cookies, so any origin may call; the sign-in pages are not shared cross-origin."""
from __future__ import annotations

from flask import Flask, Response, request

SHARED = ("/fhir", "/auth/token", "/auth/introspect", "/auth/revoke", "/auth/jwks", "/auth/launch",
          "/auth/smart-style.json")
ALLOW_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-Modified-Since, If-None-Exist"
EXPOSE_HEADERS = "Location, ETag, Last-Modified, Content-Location, WWW-Authenticate"


def _shared(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in SHARED)


def register(app: Flask) -> None:
    @app.before_request
    def preflight() -> Response | None:
        if request.method == "OPTIONS" and request.headers.get("Origin") and _shared(request.path):
            return Response(status=204, headers={"Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
                                                 "Access-Control-Allow-Headers": ALLOW_HEADERS,
                                                 "Access-Control-Max-Age": "600"})
        return None

    @app.after_request
    def allow_origin(response: Response) -> Response:
        if request.headers.get("Origin") and _shared(request.path):
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            response.vary.add("Origin")
        return response
