"""Bundles the server builds (https://hl7.org/fhir/R4/bundle.html)."""
from __future__ import annotations

from typing import Any

import orjson

from .version import Version

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def history_entry(base: str, version: Version) -> dict[str, Any]:
    """One history entry: the version, and the request that made it (http.html#history)."""
    url = f"{version.type}/{version.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if version.json is not None:
        entry["resource"] = orjson.Fragment(version.json)  # the stored bytes, not re-parsed
    entry["request"] = {"method": version.method, "url": url if version.method != "POST" else version.type}
    entry["response"] = {"status": _STATUS[version.method], "etag": version.etag,
                         "lastModified": version.last_updated_instant}
    return entry


def history_bundle(base: str, entries: list[dict[str, Any]], total: int | None,
                   links: dict[str, str]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    bundle["entry"] = entries
    return bundle


def search_entry(base: str, rtype: str, rid: str, resource: Any, mode: str) -> dict[str, Any]:
    """A searchset entry; ``resource`` is stored bytes (embedded as they are) or a subsetted dict."""
    body = orjson.Fragment(resource) if isinstance(resource, bytes) else resource
    return {"fullUrl": f"{base}/{rtype}/{rid}", "resource": body, "search": {"mode": mode}}


def searchset(entries: list[dict[str, Any]], total: int | None, links: dict[str, str]) -> dict[str, Any]:
    """https://hl7.org/fhir/R4/search.html#bundle"""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    if entries:
        bundle["entry"] = entries
    return bundle
