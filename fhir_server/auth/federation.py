"""Sign-in delegated to an external OpenID Connect provider: FranceConnect for patients, Pro Santé
Connect for professionals (both OpenID Connect, authorization code flow).

The authorize page offers "Sign in with <provider>"; the provider sends the user back to
``/auth/callback``, where the code is exchanged (client_secret_basic, PKCE S256), the id_token is
verified (signature against the provider's JWKS, ``iss``, ``aud``, ``nonce``, expiry) and its claims
are mapped onto a local user: the user linked to that provider subject, or the practitioner with that
RPPS number (``SubjectNameID`` at Pro Santé Connect). Nobody unknown to the DMP gets in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..storage import AuthStore

DISCOVERY_TTL = 3600


class FederationError(Exception):
    """The external sign-in failed; the message is safe to show."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    name: str = "Pro Santé Connect"
    scope: str = "openid"
    rpps_claim: str = "SubjectNameID"


class Federation:
    def __init__(self, provider: Provider, store: AuthStore) -> None:
        self.provider, self.store = provider, store
        self._metadata: tuple[dict[str, Any], float] | None = None

    def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata[1] > DISCOVERY_TTL:
            self._metadata = (self._get(f"{self.provider.issuer}/.well-known/openid-configuration"), time.monotonic())
        return self._metadata[0]

    def _get(self, url: str) -> dict[str, Any]:
        try:
            found = requests.get(url, timeout=10)
            found.raise_for_status()
            data: dict[str, Any] = found.json()
            return data
        except (requests.RequestException, ValueError) as error:
            raise FederationError(f"{self.provider.name} cannot be reached: {error}") from None

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(self.provider.client_id, self.provider.client_secret, scope=self.provider.scope,
                             redirect_uri=redirect_uri, code_challenge_method="S256",
                             token_endpoint_auth_method="client_secret_basic")

    def start(self, redirect_uri: str) -> tuple[str, dict[str, str]]:
        """The provider's authorization URL, and what to keep in the session until the callback."""
        pending = {"state": generate_token(24), "nonce": generate_token(24), "verifier": generate_token(48)}
        url, _ = self._session(redirect_uri).create_authorization_url(
            self.metadata()["authorization_endpoint"], state=pending["state"], code_verifier=pending["verifier"],
            nonce=pending["nonce"])
        return url, pending

    def finish(self, redirect_uri: str, callback_url: str, pending: dict[str, str]) -> dict[str, Any]:
        """Exchange the code, verify the id_token, and return the local user it maps onto."""
        try:
            token = self._session(redirect_uri).fetch_token(
                self.metadata()["token_endpoint"], authorization_response=callback_url, state=pending["state"],
                code_verifier=pending["verifier"])
        except Exception as error:  # noqa: BLE001 - any provider failure ends the sign-in the same way
            raise FederationError(f"{self.provider.name} refused the sign-in: {error}") from None
        claims = self._verify(str(token.get("id_token", "")), pending["nonce"])
        return self._user(claims)

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            keys = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))
            decoded = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "RS384", "ES384"])
            jwt.JWTClaimsRegistry(leeway=30, iss={"essential": True, "value": self.provider.issuer},
                                  aud={"essential": True, "value": self.provider.client_id},
                                  exp={"essential": True}, nonce={"essential": True, "value": nonce},
                                  sub={"essential": True}).validate(decoded.claims)
        except (JoseError, ValueError, KeyError) as error:
            raise FederationError(f"the identity token from {self.provider.name} is not valid: {error}") from None
        return dict(decoded.claims)

    def _user(self, claims: dict[str, Any]) -> dict[str, Any]:
        subject = f"{self.provider.issuer}|{claims['sub']}"
        user = self.store.find_one("users", "external", subject)
        if user is not None:
            return user
        rpps = claims.get(self.provider.rpps_claim)
        user = self.store.find_one("users", "rpps", str(rpps)) if rpps else None
        if user is not None and user.get("kind") == "practitioner":
            self.store.update("users", user["_id"], {"external": subject})  # linked from now on
            return user
        raise FederationError(f"this {self.provider.name} account is not known to this server")
