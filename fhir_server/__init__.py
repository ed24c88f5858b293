"""A FHIR R4 (4.0.1) REST server for the French shared medical record (DMP), on MongoDB."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def create_app(config: Any = None, **overrides: Any) -> Any:
    """The Flask application (no module-level app). ``config`` is a Config; ``overrides`` its fields."""
    from flask import Flask, Response, g, request

    from .auth.bearer import authenticate
    from .auth.federation import Federation, Provider
    from .auth.server import build as smart_server
    from .auth.tokens import KeyRing
    from . import capability
    from .config import Config
    from .consent.engine import Settings, habilitation_grid
    from .audit import balp, trail
    from .consent.engine import EMERGENCY
    from .context import ANONYMOUS, DEVELOPMENT, RequestContext
    from .errors import Unauthorized
    from .http import cors, errors, oauth, routes
    from .http.negotiation import response_type
    from .pipeline import Services
    from .storage import AuthStore, connect, sweep

    config = config or Config.load(**overrides)
    if not config.mongodb_uri:
        raise ValueError("create_app needs FHIR_MONGODB_URI (the `fhir-server serve` command starts a local FerretDB)")
    app = Flask(__name__)
    app.url_map.strict_slashes = False  # clients post bundles to "[base]/" (fhir-kit-client, fhirpy)
    app.config.update(MAX_CONTENT_LENGTH=config.max_body_bytes, SECRET_KEY=config.secret,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="fhir_auth_session")
    store = connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes)
    store.ensure_indexes()
    store.transaction_timeout = float(config.transaction_timeout_seconds)
    store.recover()  # transactions a crash left half-way: rolled back, or finished if they committed
    store.upgrade()  # search columns stored by an earlier version, re-indexed once
    sweep(store, config.transaction_sweep_seconds)
    capability.publish(store)
    consent = Settings(config.consent_treating_physician_sees_masked, config.consent_block_beats_emergency,
                       config.consent_hidden_from_patient_days, habilitation_grid(),
                       config.consent_allow_hidden_and_masked)
    app.extensions["fhir"] = Services(config, store, consent)
    app.extensions["fhir-capability"] = routes.capability_statement(config.conditional_delete_multiple)
    auth_store = AuthStore(store.db)
    auth_store.ensure_indexes()
    smart = app.extensions["fhir-smart"] = smart_server(auth_store, KeyRing(auth_store), oauth.fhir_base)
    if config.oidc_issuer:
        provider = Provider(config.oidc_issuer.rstrip("/"), config.oidc_client_id, config.oidc_client_secret,
                            config.oidc_name, config.oidc_scope, config.oidc_rpps_claim)
        app.extensions["fhir-federation"] = Federation(provider, auth_store)
    cors.register(app)
    app.register_blueprint(oauth.blueprint())

    fhir = routes.blueprint()

    @fhir.before_request
    def negotiate() -> None:
        if not (request.method == "GET" and (request.view_args or {}).get("rtype") == "Binary"):
            response_type(request)  # 406 before any work (a Binary may be read in its own type)
        if config.auth == "off":
            g.who = DEVELOPMENT
        elif request.endpoint != "fhir.metadata":  # the CapabilityStatement is public
            try:
                g.who = authenticate(request.headers.get("Authorization"), smart)
            except Unauthorized as refused:
                if config.audit and request.headers.get("Authorization"):  # a token was offered and refused
                    ctx = RequestContext(oauth.fhir_base(), who=ANONYMOUS, client_address=request.remote_addr)
                    trail.record(store, [balp.authentication_refused(ctx, str(refused), request.remote_addr)])
                raise

    @fhir.after_request
    def emergency_notice(response: Response) -> Response:
        who = g.get("who")
        if who is not None and who.purpose in EMERGENCY:  # the whole response is emergency access
            response.headers["X-Emergency-Access"] = who.purpose
        return response

    app.register_blueprint(fhir, url_prefix="/fhir")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', content_type="application/json")

    @app.get("/readyz")
    def readyz() -> Response:
        try:
            store.db.command("ping")
            ready = store.indexes_ready()
        except Exception:  # noqa: BLE001 - any database failure means not ready
            ready = False
        body = '{"status":"ready"}' if ready else '{"status":"unavailable"}'
        return Response(body, status=200 if ready else 503, content_type="application/json")

    errors.register(app)
    return app
