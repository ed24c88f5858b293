"""Signed JWT access tokens and the server's signing keys.

The keys live in the database (AuthStore ``keys``) so that every worker signs and verifies alike. The
newest key signs; older ones stay in the JWKS until every token they signed has expired, so a
rotation (``fhir-server keys rotate``) never invalidates a token in flight.
"""
from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from ..errors import Unauthorized
from ..storage import AuthStore

ALGORITHM = "RS256"
KEY_LIFETIME = timedelta(days=90)  # a key older than this is retired at the next signing
KEEP_RETIRED = timedelta(days=2)  # longer than any token a retired key signed (refresh gives new ones)
LEEWAY_SECONDS = 30


class KeyRing:
    def __init__(self, store: AuthStore) -> None:
        self.store = store
        self._keys: dict[str, RSAKey] = {}
        self._signing: tuple[RSAKey, float] | None = None  # and when it was chosen

    def _load(self) -> list[dict[str, Any]]:
        docs = self.store.all("keys")
        self._keys = {d["_id"]: RSAKey.import_key(d["jwk"]) for d in docs}
        return docs

    def rotate(self) -> str:
        """Add a new signing key; the previous ones keep verifying until they are dropped."""
        kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM}, private=True)
        self.store.put("keys", {"_id": kid, "jwk": key.as_dict(private=True), "created": datetime.now(UTC)})
        self._signing = None
        return kid

    def signing_key(self) -> RSAKey:
        if self._signing and time.monotonic() - self._signing[1] < 60:  # another worker may have rotated
            return self._signing[0]
        docs = sorted(self._load(), key=lambda d: d["created"])
        now = datetime.now(UTC)
        if not docs or now - docs[-1]["created"] > KEY_LIFETIME:
            self.rotate()
            docs = sorted(self._load(), key=lambda d: d["created"])
        for old in docs[:-1]:  # superseded long enough ago: nothing it signed is still valid
            if now - old.get("retired", now) > KEEP_RETIRED:
                self.store.delete("keys", old["_id"])
            elif "retired" not in old:
                self.store.update("keys", old["_id"], {"retired": now})
        key = self._keys[docs[-1]["_id"]]
        self._signing = (key, time.monotonic())
        return key

    def jwks(self) -> dict[str, Any]:
        if not self._load():
            self.signing_key()  # a fresh database: make the first key
        return {"keys": [k.as_dict(private=False) for k in self._keys.values()]}

    def _verification_keys(self, kid: str | None) -> KeySet:
        if kid not in self._keys:
            self._load()
        return KeySet([self._keys[kid]] if kid in self._keys else [])

    def sign(self, claims: dict[str, Any]) -> str:
        key = self.signing_key()
        return jwt.encode({"alg": ALGORITHM, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[ALGORITHM])

    def verify(self, token: str, issuer: str, audience: str | None = None) -> dict[str, Any]:
        """The claims of a token this server signed, unexpired, for ``audience``; else Unauthorized."""
        try:
            kid = jws.extract_compact(token.encode()).headers().get("kid")
            decoded = jwt.decode(token, self._verification_keys(kid), algorithms=[ALGORITHM])
            options: dict[str, Any] = {"iss": {"essential": True, "value": issuer},
                                       "exp": {"essential": True}, "jti": {"essential": True}}
            if audience is not None:
                options["aud"] = {"essential": True, "value": audience}
            jwt.JWTClaimsRegistry(leeway=LEEWAY_SECONDS, **options).validate(decoded.claims)
        except (JoseError, ValueError, TypeError, KeyError) as error:
            raise Unauthorized(f"invalid access token: {getattr(error, 'description', None) or error}",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        return dict(decoded.claims)


def now() -> int:
    return int(time.time())
