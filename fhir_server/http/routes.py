"""The routing table: every FHIR interaction the server serves, with its URL rule.

The CapabilityStatement is generated from this table (ARCHITECTURE.md rule 9), so it cannot advertise
an interaction that has no route.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint

from .. import capability, controls
from . import views


@dataclass(frozen=True)
class Route:
    interaction: str  # the CapabilityStatement code (http://hl7.org/fhir/restful-interaction)
    level: str  # "type" (per resource type) or "system"
    rule: str
    method: str
    view: Callable[..., object]
    conditional: bool = False  # served for [type]?criteria too (http.html#cond-update)


ROUTES: tuple[Route, ...] = (
    Route("read", "type", "/<rtype>/<rid>", "GET", views.read),
    Route("vread", "type", "/<rtype>/<rid>/_history/<vid>", "GET", views.vread),
    Route("update", "type", "/<rtype>/<rid>", "PUT", views.update),
    Route("update", "type", "/<rtype>", "PUT", views.conditional_update, conditional=True),
    Route("patch", "type", "/<rtype>/<rid>", "PATCH", views.patch),
    Route("patch", "type", "/<rtype>", "PATCH", views.conditional_patch, conditional=True),
    Route("delete", "type", "/<rtype>/<rid>", "DELETE", views.delete),
    Route("delete", "type", "/<rtype>", "DELETE", views.conditional_delete, conditional=True),
    Route("history-instance", "type", "/<rtype>/<rid>/_history", "GET", views.history_instance),
    Route("history-type", "type", "/<rtype>/_history", "GET", views.history_type),
    Route("create", "type", "/<rtype>", "POST", views.create, conditional=True),  # If-None-Exist
    Route("search-type", "type", "/<rtype>", "GET", views.search_type),
    Route("search-type", "type", "/<rtype>/_search", "POST", views.search_type),
    Route("transaction", "system", "", "POST", views.bundle),
    Route("batch", "system", "", "POST", views.bundle),
    Route("history-system", "system", "/_history", "GET", views.history_system),
    Route("search-system", "system", "", "GET", views.search_system),
    Route("search-system", "system", "/_search", "POST", views.search_system),
)
# Compartment search: GET [base]/Patient/123/Observation (https://hl7.org/fhir/R4/compartmentdefinition.html)
COMPARTMENT_RULE = "/<ctype>/<cid>/<rtype>"

# Operations: name -> (canonical OperationDefinition, [(level, rule, view)])
OPERATIONS: dict[str, tuple[str, tuple[tuple[str, str, Callable[..., object]], ...]]] = {
    "validate": ("http://hl7.org/fhir/OperationDefinition/Resource-validate", (
        ("type", "/<rtype>/$validate", views.validate_type),
    )),
    "everything": ("http://hl7.org/fhir/OperationDefinition/Patient-everything", (
        ("Patient", "/Patient/<rid>/$everything", views.everything),
    )),
    # the DMP's readable access history (the patient's "historique des accès"), from the audit trail
    "access-history": ("urn:fhir-server:OperationDefinition/Patient-access-history", (
        ("Patient", "/Patient/<rid>/$access-history", views.access_history),
    )),
}


# The patient's controls over their DMP (fhir_server/controls.py): POST Patient/{id}/$mask, $block, ...
OPERATIONS.update({
    action: (f"urn:fhir-server:OperationDefinition/Patient-{action}",
             (("Patient", f"/Patient/<rid>/${action}", views.patient_control(action)),))
    for action in controls.ACTIONS})


def capability_statement(delete_multiple: bool = False) -> dict[str, object]:
    return capability.build(
        list(dict.fromkeys(r.interaction for r in ROUTES if r.level == "type")),
        list(dict.fromkeys(r.interaction for r in ROUTES if r.level == "system")),
        {name: (canonical, [level for level, _, _ in rules]) for name, (canonical, rules) in OPERATIONS.items()},
        {r.interaction for r in ROUTES if r.conditional}, delete_multiple,
    )


def blueprint() -> Blueprint:
    bp = Blueprint("fhir", __name__)
    bp.add_url_rule("/metadata", "metadata", views.metadata, methods=["GET"])
    served = set()
    for route in ROUTES:
        if (route.rule, route.method) not in served:  # batch and transaction share POST [base]
            served.add((route.rule, route.method))
            bp.add_url_rule(route.rule, f"{route.interaction}-{route.method}-{len(served)}", route.view,
                            methods=[route.method])
    bp.add_url_rule(COMPARTMENT_RULE, "search-compartment", views.search_compartment, methods=["GET"])
    for name, (_, rules) in OPERATIONS.items():
        for level, rule, view in rules:
            methods = ["GET", "POST"] if name in ("everything", "access-history") else ["POST"]
            bp.add_url_rule(rule, f"op-{name}-{level}", view, methods=methods)
    return bp
