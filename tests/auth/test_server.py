"""The SMART authorization server end to end over HTTP (fhir_server/auth/server.py, http/oauth.py):
discovery, the authorization code flow with PKCE through the login and consent pages, launch
contexts, refresh rotation, confidential and backend-service clients, introspection, revocation."""
from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from tests.auth.conftest import Smart, csrf_of, pkce


def test_smart_configuration_has_every_required_field(smart: Smart) -> None:
    config = requests.get(f"{smart.server.base}/.well-known/smart-configuration", timeout=30)
    assert config.status_code == 200
    body = config.json()
    for field in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "introspection_endpoint",
                  "revocation_endpoint", "grant_types_supported", "scopes_supported", "response_types_supported",
                  "capabilities", "code_challenge_methods_supported", "token_endpoint_auth_methods_supported"):
        assert body[field], field
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["issuer"] == smart.server.base
    assert {"launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
            "client-confidential-asymmetric", "context-standalone-patient", "context-ehr-patient",
            "sso-openid-connect", "permission-v1", "permission-v2", "permission-patient", "permission-user",
            "permission-offline"} <= set(body["capabilities"])
    keys = requests.get(body["jwks_uri"], timeout=30).json()["keys"]
    assert keys and all("d" not in k for k in keys)  # public halves only


def test_capability_statement_names_the_smart_endpoints(smart: Smart) -> None:
    statement = requests.get(f"{smart.server.base}/metadata", timeout=30).json()  # public, no token
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"].endswith("/auth/token") and uris["authorize"].endswith("/auth/authorize")


def test_standalone_patient_launch(smart: Smart) -> None:
    patient = smart.server.client().post("Patient", {"resourceType": "Patient", "name": [{"family": "Lefèvre"}]}).json()
    user = smart.user("patient", f"Patient/{patient['id']}", name="Hélène Lefèvre")
    token = smart.login_token(user, "openid fhirUser launch/patient patient/*.rs offline_access")
    assert token["token_type"] == "Bearer" and token["patient"] == patient["id"]
    assert token["need_patient_banner"] is True and token["smart_style_url"].startswith("http")
    assert "refresh_token" in token and set(token["scope"].split()) >= {"patient/*.rs", "openid", "fhirUser"}
    keys = KeySet.import_key_set(requests.get(f"{smart.root}/auth/jwks", timeout=30).json())
    identity = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert identity["fhirUser"] == f"Patient/{patient['id']}" and identity["iss"] == smart.server.base
    access = jwt.decode(token["access_token"], keys, algorithms=["RS256"]).claims
    assert access["aud"] == smart.server.base and access["patient"] == patient["id"]
    assert access["exp"] - access["iat"] <= 3600
    reader = requests.Session()
    reader.headers["Authorization"] = f"Bearer {token['access_token']}"
    assert reader.get(f"{smart.server.base}/Patient/{patient['id']}", timeout=30).json()["id"] == patient["id"]


def test_practitioner_picks_the_patient_and_purpose_of_use(smart: Smart) -> None:
    user = smart.user("practitioner", "Practitioner/p1", rpps="10003456789", profession="10")
    token = smart.login_token(user, "openid fhirUser launch/patient user/*.rs", patient="abc", purpose="BTG")
    keys = KeySet.import_key_set(requests.get(f"{smart.root}/auth/jwks", timeout=30).json())
    claims = jwt.decode(token["access_token"], keys, algorithms=["RS256"]).claims
    assert claims["patient"] == "abc" and claims["purpose_of_use"] == "BTG"
    assert claims["rpps"] == "10003456789" and claims["fhirUser"] == "Practitioner/p1"
    assert claims["kind"] == "practitioner"


def test_ehr_launch_binds_the_registered_context(smart: Smart) -> None:
    ehr = smart.server.client("launch user/*.rs", fhir_user="Practitioner/p2")
    launch = ehr.http.post(f"{smart.root}/auth/launch", json={"patient": "pat-ehr"}, timeout=30)
    assert launch.status_code == 200, launch.text
    user = smart.user("practitioner", "Practitioner/p2")
    client_id = smart.client()[0]
    verifier, challenge = pkce()
    url = smart.authorize_url(client_id, "launch user/*.rs openid fhirUser", challenge, launch=launch.json()["launch"])
    token = smart.exchange(client_id, smart.code_from(smart.login_and_approve(url, user)), verifier).json()
    assert token["patient"] == "pat-ehr" and token["need_patient_banner"] is False
    # an unknown launch is refused back to the app
    url = smart.authorize_url(client_id, "launch user/*.rs", challenge, launch="forged")
    refused = requests.get(url, allow_redirects=False, timeout=30)
    assert refused.status_code == 302 and "error=invalid_request" in refused.headers["Location"]
    # a patient token cannot register launches
    assert smart.server.client("launch patient/*.rs", fhir_user="Patient/x").http.post(
        f"{smart.root}/auth/launch", json={"patient": "x"}, timeout=30).status_code == 403


def _first_page(smart: Smart, url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=30)


@pytest.mark.parametrize("change", [
    {"code_challenge": None},  # no PKCE
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},  # defaults to plain
])
def test_pkce_s256_is_required(smart: Smart, change: dict[str, Any]) -> None:
    client_id = smart.client()[0]
    _, challenge = pkce()
    url = smart.authorize_url(client_id, "patient/*.rs", challenge)
    query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    for key, value in change.items():
        query.pop(key) if value is None else query.__setitem__(key, value)
    response = requests.get(f"{smart.root}/auth/authorize", params=query, allow_redirects=False, timeout=30)
    assert response.status_code == 302
    location = parse_qs(urlparse(response.headers["Location"]).query)
    assert location["error"] == ["invalid_request"] and location["state"] == ["st4te"]


def test_wrong_verifier_and_code_reuse_are_refused(smart: Smart) -> None:
    user = smart.user("patient", "Patient/pkce")
    client_id = smart.client()[0]
    verifier, challenge = pkce()
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    wrong = smart.exchange(client_id, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # the code was burnt by the failed attempt
    assert smart.exchange(client_id, code, verifier).json()["error"] == "invalid_grant"
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    assert smart.exchange(client_id, code, None).status_code == 400  # verifier missing
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    assert smart.exchange(client_id, code, verifier).status_code == 200
    assert smart.exchange(client_id, code, verifier).json()["error"] == "invalid_grant"  # used once


@pytest.mark.parametrize("aud", ["", "http://evil.example/fhir", "http://127.0.0.1:1/fhir"])
def test_aud_must_be_this_fhir_base(smart: Smart, aud: str) -> None:
    client_id = smart.client()[0]
    url = smart.authorize_url(client_id, "patient/*.rs", pkce()[1]).replace("aud=", "aud_was=") + "&aud=" + aud
    response = requests.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 400 and "aud" in response.text


def test_unregistered_redirect_uri_is_never_followed(smart: Smart) -> None:
    client_id = smart.client()[0]
    url = smart.authorize_url(client_id, "patient/*.rs", pkce()[1]).replace("127.0.0.1%3A1", "evil.example")
    response = requests.get(url, allow_redirects=False, timeout=30)
    assert response.status_code == 400 and "Location" not in response.headers


def test_login_page_is_plain_html_in_french_and_english_with_csrf(smart: Smart) -> None:
    url = smart.authorize_url(smart.client()[0], "patient/*.rs", pkce()[1])
    french = requests.get(url, headers={"Accept-Language": "fr-FR,fr;q=0.9"}, timeout=30)
    english = requests.get(url, headers={"Accept-Language": "en-GB"}, timeout=30)
    assert french.headers["Content-Type"].startswith("text/html") and "Mot de passe" in french.text
    assert "Password" in english.text and "<script" not in french.text.lower()
    browser = requests.Session()
    browser.get(url, timeout=30)
    forged = browser.post(url, data={"action": "login", "username": "x", "password": "y", "csrf": "forged"}, timeout=30)
    assert forged.status_code == 400
    bad = browser.post(url, data={"action": "login", "username": "nobody", "password": "wrong",
                                  "csrf": csrf_of(browser.get(url, timeout=30).text)}, timeout=30)
    assert bad.status_code == 401 and "incorrect" in bad.text


def test_denying_returns_access_denied_to_the_app(smart: Smart) -> None:
    user = smart.user("patient", "Patient/deny")
    url = smart.authorize_url(smart.client()[0], "patient/*.rs", pkce()[1])
    browser = requests.Session()
    page = browser.get(url, timeout=30)
    consent = browser.post(url, data={"csrf": csrf_of(page.text), "action": "login", "username": user,
                                      "password": "s3cret-pass"}, timeout=30)
    denied = browser.post(url, data={"csrf": csrf_of(consent.text), "action": "deny"}, allow_redirects=False,
                          timeout=30)
    assert denied.status_code == 302 and "error=access_denied" in denied.headers["Location"]


def test_refresh_tokens_rotate(smart: Smart) -> None:
    user = smart.user("patient", "Patient/refresh")
    client_id = smart.client()[0]
    first = smart.login_token(user, "patient/*.rs offline_access", client=client_id)
    renew = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}
    second = requests.post(f"{smart.root}/auth/token", data=renew, timeout=30)
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first["refresh_token"] and second.json()["patient"] == "refresh"
    replay = requests.post(f"{smart.root}/auth/token", data=renew, timeout=30)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # without offline_access or online_access: no refresh token
    assert "refresh_token" not in smart.login_token(user, "patient/*.rs", client=client_id)


def test_confidential_client_authenticates_with_its_secret(smart: Smart) -> None:
    client_id, secret = smart.client("confidential")
    assert secret
    user = smart.user("patient", "Patient/conf")
    verifier, challenge = pkce()
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    wrong = smart.exchange(client_id, code, verifier, auth=(client_id, "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    assert smart.exchange(client_id, code, verifier, auth=(client_id, secret)).status_code == 200


def _backend(smart: Smart, key: Any, operator: bool = False) -> str:
    jwks = {"keys": [key.as_dict(private=False)]}
    from fhir_server.auth import admin
    return admin.add_client(smart.store, "backend", "asymmetric", [], "system/*.rs system/Patient.cruds", jwks,
                            operator)[0]


def _assertion(smart: Smart, client_id: str, key: Any, alg: str, **changes: Any) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": f"{smart.root}/auth/token",
              "exp": int(time.time()) + 240, "jti": secrets.token_hex(12), **changes}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, {k: v for k, v in claims.items() if v is not None},
                      key, algorithms=[alg])


def _client_credentials(smart: Smart, assertion: str, scope: str = "system/*.rs") -> requests.Response:
    return requests.post(f"{smart.root}/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion}, timeout=30)


@pytest.mark.parametrize("alg, key", [
    ("RS384", RSAKey.generate_key(2048, parameters={"kid": "rsa"}, private=True)),
    ("ES384", ECKey.generate_key("P-384", parameters={"kid": "ec"}, private=True)),
])
def test_backend_services_with_private_key_jwt(smart: Smart, alg: str, key: Any) -> None:
    client_id = _backend(smart, key)
    assertion = _assertion(smart, client_id, key, alg)
    response = _client_credentials(smart, assertion)
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["expires_in"] <= 300 and "refresh_token" not in token and token["scope"] == "system/*.rs"
    reader = requests.Session()
    reader.headers["Authorization"] = f"Bearer {token['access_token']}"
    assert reader.get(f"{smart.server.base}/Patient?_count=1", timeout=30).status_code == 200
    assert reader.post(f"{smart.server.base}/Observation", json={}, timeout=30).status_code == 403
    replay = _client_credentials(smart, assertion)
    assert replay.status_code in (400, 401) and replay.json()["error"] == "invalid_client"


def test_backend_assertions_are_checked(smart: Smart) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    client_id = _backend(smart, key)
    other = RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True)
    bad = {
        "expiring too late": _assertion(smart, client_id, key, "RS384", exp=int(time.time()) + 900),
        "expired": _assertion(smart, client_id, key, "RS384", exp=int(time.time()) - 120),
        "wrong audience": _assertion(smart, client_id, key, "RS384", aud="http://elsewhere/token"),
        "iss differs from sub": _assertion(smart, client_id, key, "RS384", iss="someone-else"),
        "no jti": _assertion(smart, client_id, key, "RS384", jti=None),
        "signed by another key": _assertion(smart, client_id, other, "RS384"),
        "RS256 is not offered": _assertion(smart, client_id, key, "RS256"),
        "HS256 with the public key": jwt.encode(
            {"alg": "HS256"}, {"iss": client_id, "sub": client_id, "aud": f"{smart.root}/auth/token",
                               "exp": int(time.time()) + 60, "jti": "x"},
            OctKey.import_key(key.as_dict(private=False)["n"]), algorithms=["HS256"]),
    }
    for why, assertion in bad.items():
        response = _client_credentials(smart, assertion)
        assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client", why
    # scopes beyond the registration are dropped, never granted
    granted = _client_credentials(smart, _assertion(smart, client_id, key, "RS384"), "system/*.cruds system/Patient.c")
    assert granted.json()["scope"] == "system/Patient.c"


def test_introspection_and_revocation(smart: Smart) -> None:
    client_id, secret = smart.client("confidential")
    user = smart.user("patient", "Patient/intro")
    verifier, challenge = pkce()
    code = smart.code_from(smart.login_and_approve(smart.authorize_url(client_id, "patient/*.rs", challenge), user))
    token = smart.exchange(client_id, code, verifier, auth=(client_id, secret)).json()["access_token"]
    introspect = requests.post(f"{smart.root}/auth/introspect", data={"token": token}, auth=(client_id, secret),
                               timeout=30).json()
    assert introspect["active"] is True and introspect["patient"] == "intro" and introspect["scope"] == "patient/*.rs"
    reader = requests.Session()
    reader.headers["Authorization"] = f"Bearer {token}"
    assert reader.get(f"{smart.server.base}/Patient/intro", timeout=30).status_code in (200, 404)
    revoked = requests.post(f"{smart.root}/auth/revoke", data={"token": token}, auth=(client_id, secret), timeout=30)
    assert revoked.status_code == 200
    after = reader.get(f"{smart.server.base}/Patient/intro", timeout=30)
    assert after.status_code == 401 and "revoked" in after.text
    assert requests.post(f"{smart.root}/auth/introspect", data={"token": token}, auth=(client_id, secret),
                         timeout=30).json() == {"active": False}


def test_key_rotation_keeps_tokens_in_flight_valid(smart: Smart) -> None:
    from fhir_server.auth.tokens import KeyRing
    before = smart.server.client("system/*.rs")
    ring = KeyRing(smart.store)
    kid = ring.rotate()
    after = smart.server.client("system/*.rs")
    assert jws.extract_compact(after.token.encode()).headers()["kid"] == kid  # type: ignore[union-attr]
    jwks = requests.get(f"{smart.root}/auth/jwks", timeout=30).json()["keys"]
    assert len({k["kid"] for k in jwks}) >= 2
    for client in (before, after):
        assert client.get("Patient?_count=1").status_code == 200
