"""SMART App Launch 2.x discovery (https://hl7.org/fhir/smart-app-launch/conformance.html), for a server
whose CapabilityStatement advertises SMART security (rest.security.service SMART-on-FHIR): the document
at [base]/.well-known/smart-configuration with the fields the specification marks REQUIRED, and the
conditional ones when their capabilities are claimed. And bearer-token refusal (RFC 6750)."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .support import assert_status, server_rest

SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"


@pytest.fixture(scope="module")
def smart(capability: dict[str, Any], base_url: str) -> requests.Response:
    services = (server_rest(capability).get("security") or {}).get("service") or ()
    if not any(c.get("code") == "SMART-on-FHIR" and c.get("system", SERVICE_SYSTEM) == SERVICE_SYSTEM
               for service in services for c in service.get("coding") or ()):
        pytest.skip("the CapabilityStatement does not advertise SMART-on-FHIR security")
    # fetched without a token: a client reads it before it has one
    return requests.get(f"{base_url}/.well-known/smart-configuration", headers={"Accept": "application/json"}, timeout=60)


def test_configuration_is_json(smart: requests.Response) -> None:
    """"servers SHALL ... respond to a GET with Accept: application/json" at .well-known/smart-configuration."""
    assert_status(smart, 200)
    assert smart.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", smart.headers.get("Content-Type")
    assert isinstance(smart.json(), dict)


def test_required_fields(smart: requests.Response) -> None:
    """REQUIRED: token_endpoint, grant_types_supported, capabilities, code_challenge_methods_supported
    (which SHALL include S256 and SHALL NOT include plain)."""
    config = smart.json()
    assert isinstance(config.get("token_endpoint"), str) and config["token_endpoint"].startswith("http"), config.get("token_endpoint")
    for name in ("grant_types_supported", "capabilities", "code_challenge_methods_supported"):
        assert isinstance(config.get(name), list), f"{name} is required (an array): {config.get(name)!r}"
    assert "S256" in config["code_challenge_methods_supported"], config["code_challenge_methods_supported"]
    assert "plain" not in config["code_challenge_methods_supported"], config["code_challenge_methods_supported"]


def test_conditional_fields(smart: requests.Response) -> None:
    """authorization_endpoint is required when launch-ehr or launch-standalone is claimed; issuer and
    jwks_uri when sso-openid-connect is."""
    config = smart.json()
    capabilities = set(config.get("capabilities") or ())
    if capabilities & {"launch-ehr", "launch-standalone"}:
        assert isinstance(config.get("authorization_endpoint"), str), "authorization_endpoint is required for launches"
    if "sso-openid-connect" in capabilities:
        assert config.get("issuer") and config.get("jwks_uri"), "issuer and jwks_uri are required with sso-openid-connect"


def test_capability_oauth_uris_agree(smart: requests.Response, capability: dict[str, Any]) -> None:
    """The (deprecated) oauth-uris extension of the CapabilityStatement, when present, names the same
    token endpoint as the discovery document."""
    security = server_rest(capability).get("security") or {}
    uris = {e.get("url"): e.get("valueUri") for ext in security.get("extension") or ()
            if ext.get("url", "").endswith("/oauth-uris") for e in ext.get("extension") or ()}
    if "token" not in uris:
        pytest.skip("no oauth-uris extension in the CapabilityStatement")
    assert uris["token"] == smart.json().get("token_endpoint"), f"{uris['token']} vs {smart.json().get('token_endpoint')}"


@pytest.mark.should
def test_invalid_token_is_401(smart: requests.Response, base_url: str) -> None:
    """RFC 6750 section 3.1: an invalid access token: "The resource SHOULD respond with the HTTP 401
    (Unauthorized) status code", with a WWW-Authenticate: Bearer header."""
    response = requests.get(f"{base_url}/Patient", headers={"Authorization": "Bearer zzqx-not-a-token",
                                                            "Accept": "application/fhir+json"}, timeout=60)
    assert_status(response, 401)
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), response.headers.get("WWW-Authenticate")
