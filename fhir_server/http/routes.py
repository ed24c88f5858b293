"""The routing table: every FHIR interaction the server serves, with its URL rule.

The CapabilityStatement is generated from this table (ARCHITECTURE.md rule 9), so it cannot advertise
an interaction that has no route.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint

from .. import capability
from . import views


@dataclass(frozen=True)
class Route:
    interaction: str  # the CapabilityStatement code (http://hl7.org/fhir/restful-interaction)
    level: str  # "type" (per resource type) or "system"
    rule: str
    method: str
    view: Callable[..., object]


ROUTES: tuple[Route, ...] = (
    Route("read", "type", "/<rtype>/<rid>", "GET", views.read),
    Route("vread", "type", "/<rtype>/<rid>/_history/<vid>", "GET", views.vread),
    Route("update", "type", "/<rtype>/<rid>", "PUT", views.update),
    Route("delete", "type", "/<rtype>/<rid>", "DELETE", views.delete),
    Route("history-instance", "type", "/<rtype>/<rid>/_history", "GET", views.history_instance),
    Route("history-type", "type", "/<rtype>/_history", "GET", views.history_type),
    Route("create", "type", "/<rtype>", "POST", views.create),
    Route("history-system", "system", "/_history", "GET", views.history_system),
)

# Operations: name -> (canonical OperationDefinition, [(level, rule, view)])
OPERATIONS: dict[str, tuple[str, tuple[tuple[str, str, Callable[..., object]], ...]]] = {
    "validate": ("http://hl7.org/fhir/OperationDefinition/Resource-validate", (
        ("type", "/<rtype>/$validate", views.validate_type),
        ("system", "/$validate", views.validate_system),
    )),
}


def capability_statement() -> dict[str, object]:
    return capability.build(
        [r.interaction for r in ROUTES if r.level == "type"],
        [r.interaction for r in ROUTES if r.level == "system"],
        {name: (canonical, [level for level, _, _ in rules]) for name, (canonical, rules) in OPERATIONS.items()},
    )


def blueprint() -> Blueprint:
    bp = Blueprint("fhir", __name__)
    bp.add_url_rule("/metadata", "metadata", views.metadata, methods=["GET"])
    for route in ROUTES:
        bp.add_url_rule(route.rule, route.interaction, route.view, methods=[route.method])
    for name, (_, rules) in OPERATIONS.items():
        for level, rule, view in rules:
            bp.add_url_rule(rule, f"op-{name}-{level}", view, methods=["POST"])
    return bp
