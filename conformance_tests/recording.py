"""Every FHIR resource the server under test returned during the run, kept for the validator
(test_validation.py), which runs last and checks each one."""
from __future__ import annotations

from typing import Any

RESPONSES: list[tuple[str, dict[str, Any]]] = []  # (what was asked, e.g. "GET Patient/1", the resource)


def record(request: str, resource: dict[str, Any]) -> None:
    RESPONSES.append((request, resource))
