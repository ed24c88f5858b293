"""The resource server's side: an ``Authorization: Bearer`` header -> the caller's Identity."""
from __future__ import annotations

from typing import Any

from ..context import PURPOSES, Identity
from ..errors import Unauthorized
from .scopes import parse_scopes
from .server import SmartServer

CHALLENGE = 'Bearer realm="fhir"'


def identity(claims: dict[str, Any]) -> Identity:
    scopes = parse_scopes(str(claims.get("scope", "")))
    fhir_user = claims.get("fhirUser")
    kind = claims.get("kind") or ("system" if scopes and all(s.level == "system" for s in scopes) else "practitioner")
    patient = claims.get("patient")
    if kind == "patient" and isinstance(fhir_user, str) and fhir_user.startswith("Patient/"):
        patient = fhir_user.split("/", 1)[1]  # a patient's own record, whatever the launch said
    purpose = claims.get("purpose_of_use") or _iua_purpose(claims) or "TREAT"
    if purpose not in PURPOSES:
        raise Unauthorized(f"unknown purpose of use '{purpose}'", headers={"WWW-Authenticate": CHALLENGE})
    return Identity(kind=str(kind), client_id=str(claims.get("client_id", "")), scopes=scopes,
                    fhir_user=fhir_user, patient=patient, purpose=purpose, jti=str(claims["jti"]),
                    rpps=claims.get("rpps"), profession=claims.get("profession"),
                    organization=claims.get("organization"), operator=bool(claims.get("operator")))


def _iua_purpose(claims: dict[str, Any]) -> str | None:
    """IHE IUA's form: ``extensions.ihe_iua.purpose_of_use``, a Coding (or a list of them)."""
    iua = (claims.get("extensions") or {}).get("ihe_iua") or {}
    coding = iua.get("purpose_of_use") if isinstance(iua, dict) else None
    if isinstance(coding, list):
        coding = coding[0] if coding else None
    return coding.get("code") if isinstance(coding, dict) else None


def authenticate(header: str | None, server: SmartServer) -> Identity:
    if not header:
        raise Unauthorized("this server needs an access token (Authorization: Bearer ...)",
                           headers={"WWW-Authenticate": CHALLENGE})
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <access token>'",
                           headers={"WWW-Authenticate": CHALLENGE})
    return identity(server.verify_access_token(token.strip()))
