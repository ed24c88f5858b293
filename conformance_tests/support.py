"""Small helpers shared by the test modules: what the CapabilityStatement advertises, and checks that
the FHIR HTTP specification (https://hl7.org/fhir/R4/http.html) makes of every answer."""
from __future__ import annotations

import re
from typing import Any

import requests

FHIR_JSON = "application/fhir+json"
# http.html#versioning: "ETag: W/"[versionId]"" (a weak ETag: the same resource may have other
# representations, e.g. JSON and XML)
WEAK_ETAG = re.compile(r'^W/"([^"]+)"$')


def server_rest(capability: dict[str, Any]) -> dict[str, Any]:
    for rest in capability.get("rest") or ():
        if rest.get("mode") == "server":
            return rest
    return {}


def resources(capability: dict[str, Any]) -> list[dict[str, Any]]:
    return list(server_rest(capability).get("resource") or ())


def resource_entry(capability: dict[str, Any], rtype: str) -> dict[str, Any]:
    for entry in resources(capability):
        if entry.get("type") == rtype:
            return entry
    return {}


def interactions(capability: dict[str, Any], rtype: str | None = None) -> set[str]:
    """The interaction codes advertised for a type, or at system level when ``rtype`` is None."""
    holder = resource_entry(capability, rtype) if rtype else server_rest(capability)
    return {i.get("code", "") for i in holder.get("interaction") or ()}


def types_with(capability: dict[str, Any], *codes: str) -> list[str]:
    """Advertised types that support every interaction in ``codes``, sorted."""
    return sorted(e["type"] for e in resources(capability) if set(codes) <= interactions(capability, e["type"]))


def json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def describe(response: requests.Response) -> str:
    """The request and the answer, short enough for an assertion message."""
    request = response.request
    return (f"{request.method} {request.url} -> {response.status_code} "
            f"{response.headers.get('Content-Type', '')}: {response.text[:600]}")


def assert_status(response: requests.Response, *expected: int) -> None:
    assert response.status_code in expected, f"expected {' or '.join(map(str, expected))}: {describe(response)}"


def assert_outcome(response: requests.Response, *expected: int) -> dict[str, Any]:
    """An error answer: one of the expected status codes, with an OperationOutcome body (http.html: "the
    server SHOULD return an OperationOutcome"; this suite holds every error to it, as clients rely on it)
    that has at least one issue of severity error or fatal."""
    assert_status(response, *expected)
    body = json_body(response)
    assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", \
        f"an error without an OperationOutcome: {describe(response)}"
    severities = {issue.get("severity") for issue in body.get("issue") or ()}
    assert severities & {"error", "fatal"}, f"an error whose OperationOutcome has no error issue: {describe(response)}"
    return body


def assert_fhir_json(response: requests.Response) -> None:
    """http.html#mime-type: JSON answers are application/fhir+json (application/json is tolerated for
    servers answering a client that asked for it), and "requests and responses SHALL explicitly set the
    character encoding to UTF-8 using the charset parameter"."""
    content_type = response.headers.get("Content-Type", "")
    media, _, params = content_type.partition(";")
    assert media.strip().lower() in (FHIR_JSON, "application/json"), f"not FHIR JSON: {describe(response)}"
    assert re.search(r"charset\s*=\s*\"?utf-8\"?", params, re.I), f"no charset=utf-8 in {content_type!r}: {describe(response)}"


def bundle_ids(bundle: dict[str, Any], rtype: str | None = None) -> list[str]:
    """The ids of the resources in a Bundle's entries (of one type when given)."""
    out = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") or {}
        if rtype is None or resource.get("resourceType") == rtype:
            out.append(str(resource.get("id")))
    return out


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link") or ():
        if item.get("relation") == relation:
            return str(item.get("url"))
    return None


# Refusals a server may give for one resource while supporting the interaction: 403 (this client may
# not, e.g. an access rule), 409 (a conflict), 422 (its business rules; http.html#update). They make
# the case untestable on that server, not failed. Any other error answer is a failure.
REFUSALS = (403, 409, 422)


def skip_if_refused(response: requests.Response, what: str) -> None:
    if response.status_code in REFUSALS:
        import pytest

        from .data import refusal
        pytest.skip(f"not testable: the server refused the {what} ({response.status_code}: {refusal(response)})")


def url_with(url: str, params: dict[str, str]) -> str:
    return str(requests.Request("GET", url, params=params).prepare().url)


def fetch_all(http: requests.Session, urls: list[str], workers: int = 4) -> dict[str, requests.Response]:
    """GET many URLs a few at a time: the per-type and per-parameter tests then check the answers one by
    one. Only to keep the suite's run short: the server sees the same requests, a few in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    unique = list(dict.fromkeys(urls))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(unique, pool.map(http.get, unique)))
