"""The SMART authorization server, on authlib (https://hl7.org/fhir/smart-app-launch/).

- authorization code with PKCE S256 only, for public and confidential clients, with the SMART launch
  context (EHR ``launch`` or standalone ``launch/patient``) carried into the token;
- refresh tokens for ``offline_access`` / ``online_access``, rotated at each use;
- backend services: ``client_credentials`` authenticated by ``private_key_jwt`` (RS384 / ES384,
  ``iss = sub = client_id``, ``aud`` the token endpoint, ``exp`` at most 5 minutes ahead, a ``jti``
  never accepted twice), tokens of at most 300 s;
- an OpenID Connect ``id_token`` with ``fhirUser``; introspection and revocation.

Access tokens are JWTs signed by the KeyRing; every claim the resource server needs (patient,
fhirUser, role, RPPS, profession, organisation, purpose of use) is in the token.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, InvalidRequestError, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..errors import Unauthorized
from ..storage import AuthStore
from .passwords import check_password
from .scopes import narrower
from .tokens import KeyRing, now

CODE_SECONDS = 60
ACCESS_SECONDS = 3600
SYSTEM_ACCESS_SECONDS = 300  # backend services (SMART: at most five minutes)
ASSERTION_MAX_SECONDS = 300
REFRESH_OFFLINE = timedelta(days=90)
REFRESH_ONLINE = timedelta(hours=12)
ASSERTION_ALGORITHMS = ["RS384", "ES384"]
# Claims copied from the subject (who, in which context) into the access token.
CONTEXT_CLAIMS = ("fhirUser", "patient", "kind", "purpose_of_use", "rpps", "profession", "organization", "operator")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _expires(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class Client(ClientMixin):
    """A registered application: ``public`` (no secret), ``client_secret_basic`` (a secret) or
    ``private_key_jwt`` (a JWKS; backend services)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def get_client_id(self) -> str:
        return str(self.doc["_id"])

    def get_default_redirect_uri(self) -> str | None:
        uris = self.doc.get("redirect_uris") or []
        return uris[0] if uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return narrower(scope or "", self.doc.get("scope", ""))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in (self.doc.get("redirect_uris") or [])

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.doc.get("secret_hash")
        return bool(stored) and hmac.compare_digest(stored, hash_secret(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.doc["auth_method"] == "client_secret_basic":
            return method in ("client_secret_basic", "client_secret_post")
        return method == self.doc["auth_method"]

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.doc.get("redirect_uris"))

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.doc.get("grant_types", ())

    @property
    def public_keys(self) -> KeySet:
        return KeySet.import_key_set(self.doc.get("jwks") or {"keys": []})


@dataclass
class Subject:
    """Who an authorization is for, with its SMART context (the ``user`` authlib carries around)."""

    claims: dict[str, Any]  # sub, fhirUser, kind, patient, purpose_of_use, rpps, ...
    context: dict[str, Any]  # token response extras: patient, need_patient_banner, smart_style_url

    def get_user_id(self) -> str:
        return str(self.claims["sub"])


class _Record:
    """A stored code or refresh token, as authlib's grants expect it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def get_redirect_uri(self) -> str | None:
        return self.doc.get("redirect_uri")

    def get_scope(self) -> str:
        return str(self.doc.get("scope", ""))

    def get_nonce(self) -> str | None:
        return self.doc.get("nonce")

    def get_auth_time(self) -> int | None:
        return self.doc.get("auth_time")

    def check_client(self, client: Client) -> bool:
        return self.doc["client_id"] == client.get_client_id()

    def is_expired(self) -> bool:
        return self.doc["expires"] <= datetime.now(UTC)

    def is_revoked(self) -> bool:
        return False  # revoked refresh tokens are deleted

    def subject(self) -> Subject:
        return Subject(self.doc["claims"], self.doc.get("context", {}))


class AccessClaims(dict[str, Any]):
    """A verified access token's claims, as authlib's introspection and revocation expect a token."""

    def is_expired(self) -> bool:
        return False  # verified: unexpired

    def is_revoked(self) -> bool:
        return False  # verified: not revoked


class S256Only(CodeChallenge):
    """PKCE is required of every client, with S256 (``plain`` and missing challenges are refused)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: Any) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: 'code_challenge' is missing")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: _Record) -> str | None:
        return authorization_code.doc.get("code_challenge")

    def get_authorization_code_challenge_method(self, authorization_code: _Record) -> str | None:
        return authorization_code.doc.get("code_challenge_method")


class SmartServer(AuthorizationServer):
    def __init__(self, store: AuthStore, keys: KeyRing, base: Callable[[], str]) -> None:
        super().__init__()
        self.auth_store, self.keys, self._base = store, keys, base

    @property
    def issuer(self) -> str:
        """The FHIR base URL of the current request: the tokens' issuer and audience."""
        return self._base()

    def query_client(self, client_id: str) -> Client | None:
        doc = self.auth_store.get("clients", client_id) if isinstance(client_id, str) else None
        return Client(doc) if doc else None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        refresh = token.get("refresh_token")
        if not refresh:
            return
        scope = token["scope"].split()
        lifetime = REFRESH_OFFLINE if "offline_access" in scope else REFRESH_ONLINE
        subject: Subject = request.user
        self.auth_store.put("refresh", {
            "_id": hash_secret(refresh), "client_id": request.client.get_client_id(), "scope": token["scope"],
            "claims": subject.claims, "context": subject.context, "expires": datetime.now(UTC) + lifetime})

    def generate_token(self, grant_type: str, client: Client, user: Subject | None = None, scope: str | None = None,
                       expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        scope = client.get_allowed_scope(scope)
        system = grant_type == "client_credentials"
        lifetime = SYSTEM_ACCESS_SECONDS if system else ACCESS_SECONDS
        issued = now()
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.issuer, "sub": client.get_client_id(),
                                  "client_id": client.get_client_id(), "scope": scope, "iat": issued,
                                  "exp": issued + lifetime, "jti": secrets.token_urlsafe(16)}
        if system:
            claims.update(kind="system", operator=bool(client.doc.get("operator")))
        if user is not None:
            claims.update((k, v) for k, v in user.claims.items() if k in CONTEXT_CLAIMS or k == "sub")
        token: dict[str, Any] = {"access_token": self.keys.sign(claims), "token_type": "Bearer",
                                 "expires_in": lifetime, "scope": scope}
        if include_refresh_token and not system and {"offline_access", "online_access"} & set(scope.split()):
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def id_token(self, client: Client, subject: Subject, nonce: str | None, fhir_user: bool) -> str:
        issued = now()
        claims = {"iss": self.issuer, "sub": subject.get_user_id(), "aud": client.get_client_id(),
                  "iat": issued, "exp": issued + ACCESS_SECONDS,
                  "fhirUser": subject.claims.get("fhirUser") if fhir_user else None}
        for extra in ("name", "rpps"):  # rpps: as Pro Santé Connect gives it, for servers federating with us
            if subject.claims.get(extra):
                claims[extra] = subject.claims[extra]
        if nonce:
            claims["nonce"] = nonce
        return self.keys.sign({k: v for k, v in claims.items() if v is not None})

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unrevoked access token for this server; else Unauthorized."""
        claims = self.keys.verify(token, self.issuer, self.issuer)
        if self.auth_store.get("revoked", str(claims["jti"])) is not None:
            raise Unauthorized("the access token was revoked",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return claims

    def token_endpoint(self) -> str:
        return self.issuer.rsplit("/fhir", 1)[0] + "/auth/token"


def _smart_response(grant: Any, response: Any) -> None:
    """SMART's token response: the launch context, and an id_token when ``openid`` was granted."""
    _, token, _ = response
    subject: Subject | None = getattr(grant.request, "user", None)
    if subject is None:
        return
    token.update(subject.context)
    scope = token.get("scope", "").split()
    if "openid" in scope:
        record = getattr(grant.request, "authorization_code", None)
        nonce = record.get_nonce() if record is not None else None
        token["id_token"] = grant.server.id_token(grant.request.client, subject, nonce, "fhirUser" in scope)


def _with_smart_response(grant: Any) -> None:
    grant.register_hook("after_create_token_response", _smart_response)


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        subject: Subject = request.user
        data = request.payload.data
        self.server.auth_store.put("codes", {
            "_id": code, "client_id": request.client.get_client_id(), "redirect_uri": request.payload.redirect_uri,
            "scope": request.scope, "nonce": data.get("nonce"), "auth_time": now(),
            "code_challenge": data.get("code_challenge"), "code_challenge_method": data.get("code_challenge_method"),
            "claims": subject.claims, "context": subject.context, "expires": _expires(CODE_SECONDS)})

    def query_authorization_code(self, code: str, client: Client) -> _Record | None:
        doc = self.server.auth_store.take("codes", code)  # single use, even when the exchange then fails
        if doc is None or doc["client_id"] != client.get_client_id():
            return None
        return _Record(doc)

    def delete_authorization_code(self, authorization_code: _Record) -> None:
        pass  # taken at query time

    def authenticate_user(self, authorization_code: _Record) -> Subject:
        return authorization_code.subject()


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> _Record | None:
        doc = self.server.auth_store.take("refresh", hash_secret(refresh_token))  # rotation: used once
        return _Record(doc) if doc else None

    def authenticate_user(self, refresh_token: _Record) -> Subject:
        return refresh_token.subject()

    def revoke_old_credential(self, refresh_token: _Record) -> None:
        pass  # taken at authentication


class BackendGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]


class PrivateKeyJWT(JWTBearerClientAssertion):
    """``private_key_jwt`` client authentication as SMART Backend Services profiles it."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: SmartServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.token_endpoint()]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        return client.public_keys

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as error:
            raise InvalidClientError(description=f"invalid client assertion: {error}") from error
        exp = token.claims.get("exp")
        if not isinstance(exp, int) or exp > now() + ASSERTION_MAX_SECONDS + self.leeway:
            raise InvalidClientError(description="the client assertion's exp must be at most 5 minutes ahead")
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        if not isinstance(jti, str) or not jti:
            return False
        return self.server.auth_store.claim("jti", {"_id": f"{claims['iss']}|{jti}",
                                                   "expires": _expires(ASSERTION_MAX_SECONDS * 2)})


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_token(self, token: str, token_type_hint: str | None) -> dict[str, Any] | None:
        server: SmartServer = self.server
        try:
            return AccessClaims(server.verify_access_token(token))
        except Unauthorized:
            return None

    def check_permission(self, token: dict[str, Any], client: Client, request: Any) -> bool:
        return True  # any registered, authenticated client may ask

    def introspect_token(self, token: dict[str, Any]) -> dict[str, Any]:
        return {"active": True, **{k: v for k, v in token.items() if k != "aud" or v}}


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]

    def query_token(self, token: str, token_type_hint: str | None) -> Any:
        server: SmartServer = self.server
        if token_type_hint != "access_token":
            doc = server.auth_store.get("refresh", hash_secret(token))
            if doc is not None:
                return _Record(doc)
        try:
            return AccessClaims(server.verify_access_token(token))
        except Unauthorized:
            return None

    def revoke_token(self, token: Any, request: Any) -> None:
        server: SmartServer = self.server
        if isinstance(token, _Record):
            server.auth_store.delete("refresh", token.doc["_id"])
        else:
            server.auth_store.put("revoked", {"_id": token["jti"],
                                              "expires": datetime.fromtimestamp(token["exp"], UTC)})

    def authenticate_token(self, request: Any, client: Client) -> Any:
        token = self.query_token(request.form.get("token", ""), request.form.get("token_type_hint"))
        if isinstance(token, _Record):
            return token if token.check_client(client) else None
        return token if token and token.get("client_id") == client.get_client_id() else None


def build(store: AuthStore, keys: KeyRing, base: Callable[[], str]) -> SmartServer:
    server = SmartServer(store, keys, base)
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT(server))
    server.register_grant(CodeGrant, [S256Only(required=True), _with_smart_response])
    server.register_grant(RefreshGrant, [_with_smart_response])
    server.register_grant(BackendGrant)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    return server


def authenticate_user(store: AuthStore, username: str, password: str) -> dict[str, Any] | None:
    user = store.get("users", username)
    if user is None or not check_password(password, user.get("password", "")):
        return None
    return user


def user_claims(user: dict[str, Any]) -> dict[str, Any]:
    """The subject claims of a local (or federated) user record."""
    claims = {"sub": user["_id"], "fhirUser": user.get("fhirUser"), "kind": user.get("kind"),
              "name": user.get("name"), "rpps": user.get("rpps"), "profession": user.get("profession"),
              "organization": user.get("organization")}
    return {k: v for k, v in claims.items() if v}
