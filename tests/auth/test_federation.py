"""Sign-in delegated to an external OpenID Connect provider, the shape of Pro Santé Connect
(fhir_server/auth/federation.py). The provider here is a second instance of this server, which is an
OpenID Connect provider itself: a real provider over real HTTP, nothing mocked."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from pymongo import MongoClient

from fhir_server.auth import admin
from fhir_server.storage import AuthStore
from tests.auth.conftest import Smart, csrf_of, pkce
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def provider(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The provider, reached as ``localhost`` so that the browser keeps its cookies apart from the
    relying server's on ``127.0.0.1`` (cookies ignore ports), as two real hosts would."""
    live = LiveServer(ferretdb.uri, "fhir_oidc_provider", tmp_path_factory.mktemp("provider")).start()
    live.base = live.base.replace("127.0.0.1", "localhost")
    yield live
    live.kill()


def _relying(provider: LiveServer, outside: AuthStore, ferretdb: Any, tmp_path: Any, database: str,
             **env: str) -> tuple[LiveServer, str]:
    """A server delegating sign-in to ``provider``, registered there as a confidential client."""
    relying = LiveServer(ferretdb.uri, database, tmp_path, FHIR_OIDC_ISSUER=provider.base, FHIR_OIDC_RPPS_CLAIM="rpps",
                         AUTHLIB_INSECURE_TRANSPORT="1", **env)
    root = relying.base.rsplit("/fhir", 1)[0]
    client_id, secret = admin.add_client(outside, f"relying {database}", "confidential", [f"{root}/auth/callback"],
                                         "openid fhirUser")
    relying.env.update(FHIR_OIDC_CLIENT_ID=client_id, FHIR_OIDC_CLIENT_SECRET=secret or "")
    return relying.start(), root


def test_a_practitioner_signs_in_through_the_external_provider(provider: LiveServer, ferretdb: Any,
                                                               tmp_path: Any) -> None:
    with MongoClient(ferretdb.uri, tz_aware=True) as mongo:
        outside = AuthStore(mongo[provider.database])
        admin.add_user(outside, "dr-martin", "psc-pass", "practitioner", "Practitioner/psc-1", rpps="10001234567")
        relying, root = _relying(provider, outside, ferretdb, tmp_path, "fhir_oidc_relying",
                                 FHIR_OIDC_NAME="Pro Santé Connect (test)")
        try:
            local = AuthStore(mongo[relying.database])
            # the DMP knows this professional by RPPS; there is no password here
            local.put("users", {"_id": "martin", "kind": "practitioner", "fhirUser": "Practitioner/local-7",
                                "rpps": "10001234567", "name": "Dr Martin"})
            smart = Smart(relying, local)
            app = smart.client()[0]
            verifier, challenge = pkce()
            url = smart.authorize_url(app, "openid fhirUser user/*.rs", challenge)
            browser = requests.Session()
            login = browser.get(url, timeout=30)
            assert "Pro Santé Connect (test)" in login.text
            to_provider = browser.post(url, data={"csrf": csrf_of(login.text), "action": "external"},
                                       allow_redirects=False, timeout=30)
            assert to_provider.status_code == 303 and to_provider.headers["Location"].startswith(provider.base.rsplit("/fhir", 1)[0])
            # at the provider: its own login and consent pages
            outside_url = to_provider.headers["Location"]
            page = browser.get(outside_url, timeout=30)
            consent = browser.post(outside_url, data={"csrf": csrf_of(page.text), "action": "login",
                                                      "username": "dr-martin", "password": "psc-pass"}, timeout=30)
            back = browser.post(outside_url, data={"csrf": csrf_of(consent.text), "action": "approve"},
                                allow_redirects=False, timeout=30)
            assert back.status_code == 302 and back.headers["Location"].startswith(f"{root}/auth/callback")
            resumed = browser.get(back.headers["Location"], allow_redirects=False, timeout=30)
            assert resumed.status_code == 303, resumed.text
            consent_here = browser.get(resumed.headers["Location"], timeout=30)
            assert "Dr Martin" in consent_here.text
            done = browser.post(url, data={"csrf": csrf_of(consent_here.text), "action": "approve"},
                                allow_redirects=False, timeout=30)
            code = parse_qs(urlparse(done.headers["Location"]).query)["code"][0]
            token = smart.exchange(app, code, verifier).json()
            from joserfc import jwt
            from joserfc.jwk import KeySet
            keys = KeySet.import_key_set(requests.get(f"{root}/auth/jwks", timeout=30).json())
            claims = jwt.decode(token["access_token"], keys, algorithms=["RS256"]).claims
            assert claims["fhirUser"] == "Practitioner/local-7" and claims["rpps"] == "10001234567"
            assert local.get("users", "martin")["external"].endswith("|dr-martin")  # linked for next time
        finally:
            relying.kill()


def test_an_unknown_external_account_is_refused(provider: LiveServer, ferretdb: Any, tmp_path: Any) -> None:
    with MongoClient(ferretdb.uri, tz_aware=True) as mongo:
        outside = AuthStore(mongo[provider.database])
        admin.add_user(outside, "stranger", "psc-pass", "practitioner", "Practitioner/x", rpps="19999999999")
        relying, root = _relying(provider, outside, ferretdb, tmp_path, "fhir_oidc_relying2")
        try:
            smart = Smart(relying, AuthStore(mongo[relying.database]))
            url = smart.authorize_url(smart.client()[0], "openid fhirUser user/*.rs", pkce()[1])
            browser = requests.Session()
            login = browser.get(url, timeout=30)
            outside_url = browser.post(url, data={"csrf": csrf_of(login.text), "action": "external"},
                                       allow_redirects=False, timeout=30).headers["Location"]
            page = browser.get(outside_url, timeout=30)
            consent = browser.post(outside_url, data={"csrf": csrf_of(page.text), "action": "login",
                                                      "username": "stranger", "password": "psc-pass"}, timeout=30)
            back = browser.post(outside_url, data={"csrf": csrf_of(consent.text), "action": "approve"},
                                allow_redirects=False, timeout=30)
            refused = browser.get(back.headers["Location"], allow_redirects=False, timeout=30)
            assert refused.status_code == 403 and "not known" in refused.text
            # a callback without a sign-in in progress, or with a forged state, gets nowhere
            assert requests.get(f"{root}/auth/callback?code=x&state=y", timeout=30).status_code == 400
        finally:
            relying.kill()
