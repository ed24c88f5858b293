"""The SMART authorization server's HTTP face: discovery, authorize (sign-in and consent pages), token,
introspection, revocation, JWKS, and the EHR launch-context registration.

https://hl7.org/fhir/smart-app-launch/app-launch.html ; the grants themselves are in auth/server.py.
"""
from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from flask import Blueprint, Response, current_app, jsonify, redirect, request, session

from ..auth import pages
from ..auth.bearer import CHALLENGE, identity
from ..auth.federation import Federation, FederationError
from ..auth.scopes import parse_scope
from ..auth.server import SmartServer, Subject, authenticate_user, user_claims
from ..context import PURPOSES
from ..errors import BadRequest, Forbidden, Unauthorized

LAUNCH_SECONDS = 300
SIGNED_IN_HOURS = 8
SCOPES_SUPPORTED = ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
                    "patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
                    "patient/*.read", "user/*.read", "system/*.read"]
CAPABILITIES = ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-standalone-patient", "context-ehr-patient",
                "context-banner", "context-style", "sso-openid-connect", "permission-v1", "permission-v2",
                "permission-patient", "permission-user", "permission-offline", "permission-online",
                "authorize-post"]


def smart_server() -> SmartServer:
    server: SmartServer = current_app.extensions["fhir-smart"]
    return server


def fhir_base() -> str:
    base = current_app.extensions["fhir"].config.base_url or (request.host_url.rstrip("/") + "/fhir")
    return str(base).rstrip("/")


def _root() -> str:
    return fhir_base().rsplit("/fhir", 1)[0]


def smart_configuration() -> Response:
    """https://hl7.org/fhir/smart-app-launch/conformance.html"""
    root = _root()
    return jsonify({
        "issuer": fhir_base(), "jwks_uri": f"{root}/auth/jwks",
        "authorization_endpoint": f"{root}/auth/authorize", "token_endpoint": f"{root}/auth/token",
        "introspection_endpoint": f"{root}/auth/introspect", "revocation_endpoint": f"{root}/auth/revoke",
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": SCOPES_SUPPORTED, "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"], "capabilities": CAPABILITIES,
    })


def openid_configuration() -> Response:
    root = _root()
    return jsonify({
        "issuer": fhir_base(), "jwks_uri": f"{root}/auth/jwks", "authorization_endpoint": f"{root}/auth/authorize",
        "token_endpoint": f"{root}/auth/token", "response_types_supported": ["code"],
        "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser"], "claims_supported": ["sub", "fhirUser", "name", "iss", "aud"],
    })


def jwks() -> Response:
    return jsonify(smart_server().keys.jwks())


def token() -> Response:
    return smart_server().create_token_response()


def introspect() -> Response:
    return smart_server().create_endpoint_response("introspection")


def revoke() -> Response:
    return smart_server().create_endpoint_response("revocation")


def smart_style() -> Response:
    return jsonify({"color_background": "#f5f7fa", "color_highlight": "#000091", "color_text": "#161616",
                    "dim_border_radius": "4px", "font_family_body": "Marianne, Arial, sans-serif"})


# -- EHR launch ---------------------------------------------------------------------------------


def register_launch() -> Response:
    """An EHR registers the context of a launch (``{"patient": id}``) and gets the ``launch`` value to
    pass to the app. Needs an access token from a user or system client granted the ``launch`` scope."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("registering a launch needs an access token", headers={"WWW-Authenticate": CHALLENGE})
    claims = smart_server().verify_access_token(token.strip())
    who = identity(claims)
    if who.kind in ("patient", "representative") or "launch" not in str(claims.get("scope", "")).split():
        raise Forbidden("registering a launch needs a practitioner or system token with the 'launch' scope")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("patient"), str) or not body["patient"]:
        raise BadRequest('the body must be {"patient": "<Patient id>"}')
    launch = secrets.token_urlsafe(16)
    smart_server().auth_store.put("launches", {
        "_id": launch, "patient": body["patient"], "by": who.client_id,
        "expires": datetime.now(UTC) + timedelta(seconds=LAUNCH_SECONDS)})
    return jsonify({"launch": launch, "expires_in": LAUNCH_SECONDS})


# -- authorize: sign in, then consent -------------------------------------------------------------


def _csrf() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return str(session["csrf"])


def _html(text: str, status: int = 200) -> Response:
    return Response(text, status=status, content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                             "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"})


def federation() -> Federation | None:
    found: Federation | None = current_app.extensions.get("fhir-federation")
    return found


def _sign_in(user: dict[str, Any]) -> None:
    session.clear()
    session.update(user=user["_id"], since=datetime.now(UTC).timestamp(), csrf=secrets.token_urlsafe(24))


def callback() -> Response:
    """Back from the external provider: finish its sign-in, then resume the authorization request."""
    lang = pages.language(request.headers.get("Accept-Language"))
    external, pending = federation(), session.get("federation")
    if external is None or not isinstance(pending, dict):
        return _html(pages.error(lang, "no sign-in in progress"), 400)
    try:
        user = external.finish(f"{_root()}/auth/callback", f"{_root()}/auth/callback?{request.query_string.decode()}",
                               pending)
    except FederationError as error:
        return _html(pages.error(lang, str(error)), 403)
    _sign_in(user)
    return redirect(str(pending["return_to"]), 303)


def _login_page(lang: str, action_url: str, failed: bool = False) -> Response:
    external = federation()
    return _html(pages.login(lang, action_url, _csrf(), failed, external.provider.name if external else None),
                 401 if failed else 200)


def _signed_in_user() -> dict[str, Any] | None:
    name, since = session.get("user"), session.get("since", 0)
    if not name or datetime.now(UTC).timestamp() - since > SIGNED_IN_HOURS * 3600:
        return None
    return smart_server().auth_store.get("users", name)


def authorize() -> Response:
    lang = pages.language(request.headers.get("Accept-Language"), request.values.get("ui_locales"))
    server = smart_server()
    action_url = request.path + ("?" + request.query_string.decode() if request.query_string else "")
    if request.method == "POST":
        if not secrets.compare_digest(str(request.form.get("csrf", "")), _csrf()):
            return _html(pages.error(lang, "CSRF"), 400)
        action = request.form.get("action")
        if action == "login":
            user = authenticate_user(server.auth_store, request.form.get("username", ""),
                                     request.form.get("password", ""))
            if user is None:
                return _login_page(lang, action_url, failed=True)
            _sign_in(user)
        elif action == "external" and (external := federation()) is not None:
            try:
                url, pending = external.start(f"{_root()}/auth/callback")
            except FederationError as error:
                return _html(pages.error(lang, str(error)), 502)
            session["federation"] = {**pending, "return_to": _root() + action_url}
            return redirect(url, 303)
        elif action == "logout":
            session.clear()
    # SMART: an app asking for FHIR access names this server as the audience. A pure OpenID Connect
    # sign-in (another server federating with this one) asks for no FHIR scope and may leave it out.
    aud = request.values.get("aud", "").rstrip("/")
    fhir_access = any(parse_scope(s) or s.startswith("launch") for s in request.values.get("scope", "").split())
    if aud != fhir_base() and (aud or fhir_access):
        return _html(pages.error(lang, f"'aud' must be this FHIR server's base URL, {fhir_base()}"), 400)
    try:
        grant = server.get_consent_grant(end_user=None)
    except OAuth2Error as error:
        if getattr(error, "redirect_uri", None):
            return server.handle_error_response(server.create_oauth2_request(None), error)
        return _html(pages.error(lang, error.description or error.error), 400)
    scopes = (grant.request.scope or "").split()
    launch_doc = None
    if request.values.get("launch"):
        launch_doc = server.auth_store.get("launches", request.values["launch"])
        if launch_doc is None or "launch" not in scopes:
            return server.handle_error_response(grant.request, _invalid("unknown or expired 'launch'", grant))
    user = _signed_in_user()
    if user is None:
        return _login_page(lang, action_url)
    kind = user.get("kind", "practitioner")
    pick_patient = "launch/patient" in scopes and launch_doc is None and kind == "practitioner"
    purposes = list(PURPOSES) if kind == "practitioner" else ["TREAT"]
    if request.method == "POST" and request.form.get("action") == "deny":
        return server.create_authorization_response(grant_user=None, grant=grant)
    if request.method != "POST" or request.form.get("action") != "approve":
        client_name = grant.request.client.doc.get("name", grant.request.client.get_client_id())
        return _html(pages.consent(lang, action_url, _csrf(), client_name, user.get("name") or user["_id"], scopes,
                                   pick_patient, purposes))
    claims = user_claims(user)
    purpose = request.form.get("purpose", "TREAT")
    claims["purpose_of_use"] = purpose if purpose in purposes else "TREAT"
    patient = (launch_doc or {}).get("patient")
    if kind in ("patient", "representative"):
        patient = user.get("patient")
    elif pick_patient:
        patient = request.form.get("patient", "").strip() or None
    context: dict[str, Any] = {}
    if patient:
        claims["patient"] = patient
        context = {"patient": patient, "need_patient_banner": launch_doc is None,
                   "smart_style_url": f"{_root()}/auth/smart-style.json"}
    return server.create_authorization_response(grant_user=Subject(claims, context), grant=grant)


def _invalid(message: str, grant: Any) -> OAuth2Error:
    error = InvalidRequestError(message, redirect_uri=grant.request.payload.redirect_uri)
    error.state = grant.request.payload.state
    return error


def blueprint() -> Blueprint:
    bp = Blueprint("smart", __name__)
    bp.add_url_rule("/fhir/.well-known/smart-configuration", "smart-configuration", smart_configuration)
    bp.add_url_rule("/fhir/.well-known/openid-configuration", "openid-configuration", openid_configuration)
    bp.add_url_rule("/auth/jwks", "jwks", jwks)
    bp.add_url_rule("/auth/smart-style.json", "smart-style", smart_style)
    bp.add_url_rule("/auth/authorize", "authorize", authorize, methods=["GET", "POST"])
    bp.add_url_rule("/auth/token", "token", token, methods=["POST"])
    bp.add_url_rule("/auth/introspect", "introspect", introspect, methods=["POST"])
    bp.add_url_rule("/auth/revoke", "revoke", revoke, methods=["POST"])
    bp.add_url_rule("/auth/launch", "launch", register_launch, methods=["POST"])
    bp.add_url_rule("/auth/callback", "callback", callback)
    return bp

