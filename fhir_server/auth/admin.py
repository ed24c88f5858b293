"""Operator actions on the authorization server's state: clients, users, keys, and tokens minted
directly (for operators and tests). The ``fhir-server`` command line calls these."""
from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet

from ..context import PURPOSES
from ..storage import AuthStore
from .passwords import hash_password
from .server import SYSTEM_ACCESS_SECONDS, hash_secret
from .tokens import KeyRing, now

USER_KINDS = ("patient", "representative", "practitioner")


def add_client(store: AuthStore, name: str, kind: str, redirect_uris: list[str], scope: str,
               jwks: dict[str, Any] | None = None, operator: bool = False) -> tuple[str, str | None]:
    """Register an application; returns its client id and, for a confidential client, its secret.

    ``kind``: ``public`` (browser or mobile app: PKCE, no secret), ``confidential`` (a secret), or
    ``asymmetric`` (a JWKS: private_key_jwt; with system scopes, a backend service)."""
    if kind not in ("public", "confidential", "asymmetric"):
        raise ValueError(f"unknown client kind {kind}")
    if kind == "asymmetric":
        KeySet.import_key_set(jwks or {})  # refuse a JWKS that does not parse
        if not (jwks or {}).get("keys"):
            raise ValueError("an asymmetric client needs a JWKS with at least one public key")
    if operator and kind != "asymmetric":
        raise ValueError("operator clients are backend services: register them with a JWKS")
    client_id = secrets.token_urlsafe(12)
    secret = secrets.token_urlsafe(32) if kind == "confidential" else None
    grant_types = ["authorization_code", "refresh_token"] if redirect_uris else []
    if kind == "asymmetric":
        grant_types.append("client_credentials")
    store.put("clients", {
        "_id": client_id, "name": name, "redirect_uris": redirect_uris, "scope": scope, "grant_types": grant_types,
        "auth_method": {"public": "none", "confidential": "client_secret_basic", "asymmetric": "private_key_jwt"}[kind],
        "secret_hash": hash_secret(secret) if secret else None, "jwks": jwks, "operator": operator,
        "created": datetime.now(UTC)})
    return client_id, secret


def add_user(store: AuthStore, username: str, password: str, kind: str, fhir_user: str, name: str | None = None,
             patient: str | None = None, rpps: str | None = None, profession: str | None = None,
             organization: str | None = None) -> None:
    """A local user (development and tests; production signs in through FranceConnect / Pro Santé Connect)."""
    if kind not in USER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(USER_KINDS)}")
    if kind == "patient":
        if not fhir_user.startswith("Patient/"):
            raise ValueError("a patient user's fhirUser is their Patient")
        patient = fhir_user.split("/", 1)[1]
    if kind == "representative" and not patient:
        raise ValueError("a legal representative needs the --patient they represent")
    store.put("users", {"_id": username, "password": hash_password(password), "kind": kind, "fhirUser": fhir_user,
                        "name": name, "patient": patient, "rpps": rpps, "profession": profession,
                        "organization": organization})


def mint_token(keys: KeyRing, issuer: str, scope: str, fhir_user: str | None = None, patient: str | None = None,
               purpose: str | None = "TREAT", client_id: str = "fhir-server-cli", expires: int = SYSTEM_ACCESS_SECONDS,
               kind: str | None = None, operator: bool = False, **claims: Any) -> str:
    """An access token signed with the server's key, as the token endpoint would issue it."""
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    if kind is None:
        kind = fhir_user.split("/")[0].lower() if fhir_user else "system"
        kind = {"relatedperson": "representative", "practitionerrole": "practitioner"}.get(kind, kind)
    issued = now()
    body = {"iss": issuer, "aud": issuer, "sub": fhir_user or client_id, "client_id": client_id, "scope": scope,
            "iat": issued, "exp": issued + expires, "jti": secrets.token_urlsafe(16), "kind": kind,
            "purpose_of_use": purpose, "fhirUser": fhir_user, "patient": patient, "operator": operator or None,
            **claims}
    return keys.sign({k: v for k, v in body.items() if v is not None})


def load_jwks(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data if "keys" in data else {"keys": [data]}
