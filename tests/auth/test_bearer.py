"""The resource server: every /fhir request needs a valid access token (fhir_server/auth/bearer.py,
auth/tokens.py), and the operator command line that mints tokens and registers clients."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.auth.conftest import Smart
from tests.conftest import assert_outcome


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _get(smart: Smart, token: str | None, path: str = "Patient?_count=1") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{smart.server.base}/{path}", headers=headers, timeout=30)


def test_public_endpoints_need_no_token(smart: Smart) -> None:
    for path in ("metadata", ".well-known/smart-configuration"):
        assert requests.get(f"{smart.server.base}/{path}", timeout=30).status_code == 200
    for path in ("healthz", "readyz"):
        assert requests.get(f"{smart.root}/{path}", timeout=30).status_code == 200


def test_no_token_is_401_with_a_challenge(smart: Smart) -> None:
    for path in ("Patient", "Patient/x", "_history", "Patient/x/$everything", "Patient/x/Observation"):
        response = _get(smart, None, path)
        assert_outcome(response, 401, "login")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    basic = requests.get(f"{smart.server.base}/Patient", headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=30)
    assert_outcome(basic, 401, "login")


def test_invalid_tokens_are_401(smart: Smart) -> None:
    good = smart.server.token("system/*.rs")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    forger = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    bad = {
        "garbage": "not-a-jwt",
        "expired": smart.server.token("system/*.rs", expires=-120),
        "wrong audience": smart.server.token("system/*.rs", aud="http://127.0.0.1:1/fhir"),
        "wrong issuer": smart.server.token("system/*.rs", iss="http://evil.example/fhir"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "tampered claims": f"{header}.{_b64({**claims, 'scope': 'system/*.cruds'})}.{signature}",
        "signed by another key": jwt.encode({"alg": "RS256", "kid": kid}, claims, forger, algorithms=["RS256"]),
        "no jti": smart.server.token("system/*.rs", jti=None),
    }
    assert _get(smart, good).status_code == 200
    for why, token in bad.items():
        response = _get(smart, token)
        assert response.status_code == 401, why
        assert "invalid_token" in response.headers["WWW-Authenticate"] or why == "garbage", why


def test_unknown_purpose_of_use_is_refused(smart: Smart) -> None:
    assert _get(smart, smart.server.token("system/*.rs", purpose_of_use="MARKETING")).status_code == 401
    iua = {"ihe_iua": {"purpose_of_use": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                          "code": "MARKETING"}}}
    assert _get(smart, smart.server.token("system/*.rs", purpose=None, extensions=iua)).status_code == 401


def test_identity_reads_the_token_claims() -> None:
    from fhir_server.auth.bearer import identity
    who = identity({"jti": "j", "client_id": "app", "scope": "user/*.rs launch", "fhirUser": "Practitioner/9",
                    "kind": "practitioner", "rpps": "10001", "organization": "Organization/chu",
                    "extensions": {"ihe_iua": {"purpose_of_use": [{"code": "ETREAT"}]}}})
    assert (who.kind, who.fhir_user, who.rpps, who.purpose, who.organization) == \
        ("practitioner", "Practitioner/9", "10001", "ETREAT", "Organization/chu")
    assert [str(s) for s in who.scopes] == ["user/*.rs"]
    # a patient's own record is their context, whatever else the token says
    assert identity({"jti": "j", "scope": "patient/*.rs", "kind": "patient", "fhirUser": "Patient/7",
                     "patient": "8"}).patient == "7"


def _cli(smart: Smart, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fhir_server.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "FHIR_MONGODB_URI": smart.server.env["FHIR_MONGODB_URI"],
                                            "FHIR_MONGODB_DATABASE": smart.server.database, **env})


def test_operator_command_line(smart: Smart, tmp_path: Any) -> None:
    added = _cli(smart, "clients", "add", "--name", "Mon appli", "--public", "--redirect-uri", "http://127.0.0.1:9/cb")
    assert added.returncode == 0, added.stderr
    client_id = added.stdout.strip().splitlines()[-1]
    assert smart.store.get("clients", client_id)["name"] == "Mon appli"
    key = RSAKey.generate_key(2048, parameters={"kid": "ops"}, private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    operator = _cli(smart, "clients", "add", "--name", "Migration", "--jwks-file", str(jwks), "--scope", "system/*.cruds",
                    "--operator")
    assert operator.returncode == 0, operator.stderr
    assert smart.store.get("clients", operator.stdout.split()[-1])["operator"] is True
    minted = _cli(smart, "token", "--fhir-user", "Practitioner/123", "--scope", "user/*.rs", "--patient", "456",
                  "--purpose", "BTG", FHIR_BASE_URL=smart.server.base)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip().splitlines()[-1]
    assert _get(smart, token).status_code == 200
    assert requests.post(f"{smart.server.base}/Patient", json={"resourceType": "Patient"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_auth_off_refuses_to_listen_beyond_loopback(host: str) -> None:
    result = subprocess.run([sys.executable, "-m", "fhir_server.cli", "serve", "--host", host], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "FHIR_AUTH": "off",
                                                        "FHIR_MONGODB_URI": "mongodb://127.0.0.1:1/"})
    assert result.returncode != 0 and "loopback" in result.stderr
