"""Helpers for the SMART tests: clients and users registered in the test server's database, and the
authorization code flow driven over real HTTP through the login and consent pages."""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests
from pymongo import MongoClient

from fhir_server.auth import admin
from fhir_server.storage import AuthStore
from tests.conftest import LiveServer

REDIRECT = "http://127.0.0.1:1/callback"  # never contacted: the test reads the redirect itself


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


@dataclass
class Smart:
    server: LiveServer
    store: AuthStore

    @property
    def root(self) -> str:
        return self.server.base.rsplit("/fhir", 1)[0]

    def client(self, kind: str = "public", scope: str = "openid fhirUser launch launch/patient offline_access "
               "online_access patient/*.cruds user/*.cruds", jwks: dict[str, Any] | None = None,
               redirect: bool = True) -> tuple[str, str | None]:
        return admin.add_client(self.store, f"test {kind}", kind, [REDIRECT] if redirect else [], scope, jwks)

    def app(self, redirect_uri: str, scope: str = "openid fhirUser launch/patient patient/*.rs",
            name: str = "test app") -> str:
        """A public client (PKCE, no secret) registered with a redirect URI of the caller's own."""
        return admin.add_client(self.store, name, "public", [redirect_uri], scope)[0]

    def user(self, kind: str, fhir_user: str, **extra: Any) -> str:
        name = f"{kind}-{secrets.token_hex(4)}"
        admin.add_user(self.store, name, "s3cret-pass", kind, fhir_user, **extra)
        return name

    def authorize_url(self, client_id: str, scope: str, challenge: str | None, state: str = "st4te",
                      **extra: str) -> str:
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
                  "state": state, "aud": self.server.base, **extra}
        if challenge is not None:
            params.update(code_challenge=challenge, code_challenge_method="S256")
        return f"{self.root}/auth/authorize?{urlencode(params)}"

    def login_and_approve(self, url: str, username: str, form: dict[str, str] | None = None,
                          browser: requests.Session | None = None) -> requests.Response:
        """Sign in through the login page, approve on the consent page; the final response (a redirect)."""
        browser = browser or requests.Session()
        page = browser.get(url, timeout=30)
        assert page.status_code == 200, page.text
        consent = browser.post(url, data={"csrf": csrf_of(page.text), "action": "login", "username": username,
                                          "password": "s3cret-pass"}, timeout=30)
        assert consent.status_code == 200, consent.text
        return browser.post(url, data={"csrf": csrf_of(consent.text), "action": "approve", **(form or {})},
                            allow_redirects=False, timeout=30)

    def code_from(self, response: requests.Response, state: str = "st4te") -> str:
        assert response.status_code == 302, response.text
        query = parse_qs(urlparse(response.headers["Location"]).query)
        assert query.get("state") == [state], query
        assert "code" in query, query
        return query["code"][0]

    def exchange(self, client_id: str, code: str, verifier: str | None, auth: Any = None) -> requests.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        if verifier is not None:
            data["code_verifier"] = verifier
        if auth is None:
            data["client_id"] = client_id
        return requests.post(f"{self.root}/auth/token", data=data, auth=auth, timeout=30)

    def login_token(self, username: str, scope: str, client: str | None = None, **form: str) -> dict[str, Any]:
        client_id = client or self.client()[0]
        verifier, challenge = pkce()
        code = self.code_from(self.login_and_approve(self.authorize_url(client_id, scope, challenge), username, form))
        response = self.exchange(client_id, code, verifier)
        assert response.status_code == 200, response.text
        token: dict[str, Any] = response.json()
        return token


@pytest.fixture(scope="session")
def smart(server: LiveServer) -> Any:
    with MongoClient(server.env["FHIR_MONGODB_URI"], tz_aware=True) as client:
        yield Smart(server, AuthStore(client[server.database]))
