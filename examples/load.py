"""Loading a data set through the FHIR API, one transaction bundle at a time (``fhir-server load``).

Every entry is a conditional create on its business identifier, so loading again changes nothing: the
second time every entry answers ``200 OK`` (found) instead of ``201 Created``.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import requests

FHIR_JSON = "application/fhir+json"


class LoadError(RuntimeError):
    pass


def wait_ready(base: str, timeout: float) -> None:
    """Wait until the server behind ``base`` answers /readyz (it serves /fhir beside it)."""
    ready = base.rstrip("/").rsplit("/fhir", 1)[0] + "/readyz"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(ready, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise LoadError(f"{ready} not ready after {timeout:.0f} s")
        time.sleep(0.2)


def load(base: str, token: str, bundles: Iterable[dict[str, Any]],
         progress: Callable[[str], None] | None = None) -> Counter[str]:
    """Post each transaction to ``base``; returns how many entries were created and how many found."""
    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON, "Accept": FHIR_JSON,
                         "Prefer": "return=minimal"})
    counts: Counter[str] = Counter()
    for n, bundle in enumerate(bundles, start=1):
        response = http.post(base.rstrip("/"), json=bundle, timeout=300)
        if response.status_code != 200:
            raise LoadError(f"bundle {n} ({_first(bundle)}): HTTP {response.status_code}: {response.text[:2000]}")
        for entry in response.json().get("entry", []):
            status = entry["response"]["status"]
            counts["created" if status.startswith("201") else "found" if status.startswith("200") else status] += 1
        if progress and n % 10 == 0:
            progress(f"{n} bundles: {counts['created']} created, {counts['found']} already there")
    return counts


def _first(bundle: dict[str, Any]) -> str:
    entries = bundle.get("entry") or [{}]
    resource = entries[0].get("resource") or {}
    return f"{resource.get('resourceType')} {(resource.get('identifier') or [{}])[0].get('value', '')}".strip()
