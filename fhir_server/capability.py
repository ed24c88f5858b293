"""The CapabilityStatement, generated from the routing table and the resource registry
(https://hl7.org/fhir/R4/capabilitystatement.html). Built once at start-up; never hand-kept.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from . import __version__
from .resources.model import SCHEMA_ONLY
from .resources import jsonio
from .resources.profiles import conformance_resources, supported_profiles
from .resources.schema import RESOURCE_TYPES
from .search.registry import compartments, params_for

SOFTWARE = "DMP FHIR server"
PUBLISHER = ("server",)  # who writes the published profiles, as stored beside each version


APPEND_ONLY = {"AuditEvent"}  # never updated nor deleted (pipeline.py)


def build(type_interactions: Iterable[str], system_interactions: Iterable[str],
          operations: dict[str, tuple[str, Iterable[str]]], conditional: Iterable[str] = (),
          delete_multiple: bool = False) -> dict[str, Any]:
    """``operations``: name -> (OperationDefinition canonical, levels it is served at);
    ``conditional``: the interactions also served for ``[type]?criteria``."""
    conditional = set(conditional)
    type_interactions = list(type_interactions)
    referrers: dict[str, list[str]] = {}
    for source in sorted(RESOURCE_TYPES):
        for code, param in params_for(source).items():
            for target in param.targets if param.type == "reference" else ():
                referrers.setdefault(target, []).append(f"{source}:{code}")
    type_ops = [{"name": n, "definition": d} for n, (d, levels) in operations.items() if "type" in levels]
    # operations served for one type only (Patient/$everything)
    typed_ops: dict[str, list[dict[str, str]]] = {}
    for n, (d, levels) in operations.items():
        for t in levels:
            if t not in ("type", "system"):
                typed_ops.setdefault(t, []).append({"name": n, "definition": d})
    resources = []
    for rtype in sorted(RESOURCE_TYPES):
        entry: dict[str, Any] = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            **({"supportedProfile": supported} if (supported := supported_profiles(rtype)) else {}),
            "interaction": [{"code": code} for code in type_interactions
                            if not (rtype in APPEND_ONLY and code in ("update", "patch", "delete"))],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": "create" in conditional,
            "conditionalRead": "not-supported",
            "conditionalUpdate": "update" in conditional and rtype not in APPEND_ONLY,
            "conditionalDelete": "not-supported" if "delete" not in conditional or rtype in APPEND_ONLY
            else "multiple" if delete_multiple else "single",
        }
        if "search-type" in type_interactions:
            params = params_for(rtype)
            entry["searchParam"] = [{"name": code, "type": p.type, **({"definition": p.url} if p.url else {})}
                                    for code, p in params.items()]
            entry["searchInclude"] = ["*", *(f"{rtype}:{c}" for c, p in params.items() if p.type == "reference")]
            entry["searchRevInclude"] = referrers.get(rtype, [])
        if rtype in SCHEMA_ONLY:
            entry["documentation"] = "Validated against the R4 JSON schema only (its R4B model differs)."
        if type_ops or rtype in typed_ops:
            entry["operation"] = type_ops + typed_ops.get(rtype, [])
        resources.append(entry)
    system_ops = [{"name": n, "definition": d} for n, (d, levels) in operations.items() if "system" in levels]
    rest: dict[str, Any] = {
        "mode": "server",
        "compartment": [f"http://hl7.org/fhir/CompartmentDefinition/{c.lower()}" for c in sorted(compartments())],
        "documentation": "Resources are validated on every write against the official R4 JSON schema "
                         "and the fhir.resources models, and against the DMP profiles they claim in "
                         "meta.profile (the supportedProfile of each resource, served as StructureDefinitions).",
        "resource": resources,
        "interaction": [{"code": code} for code in system_interactions],
    }
    if system_ops:
        rest["operation"] = system_ops
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "publisher": SOFTWARE,
        "kind": "instance",
        "software": {"name": SOFTWARE, "version": __version__},
        "implementation": {"description": SOFTWARE},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }


def for_base(statement: dict[str, Any], base_url: str, smart: bool = True) -> dict[str, Any]:
    """The statement as served at ``base_url``, with its SMART security section (the endpoints are
    under the server's root: http://hl7.org/fhir/smart-app-launch/StructureDefinition/oauth-uris)."""
    rest = dict(statement["rest"][0])
    if smart:
        root = base_url.rsplit("/fhir", 1)[0]
        endpoints = {"authorize": "authorize", "token": "token"}  # what the oauth-uris extension defines
        rest["security"] = {
            "cors": True,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
            "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                           "extension": [{"url": name, "valueUri": f"{root}/auth/{path}"}
                                         for name, path in endpoints.items()]}],
            "description": "Every request needs a SMART on FHIR access token; discovery at "
                           f"{base_url}/.well-known/smart-configuration"}
    return {**statement, "implementation": {**statement["implementation"], "url": base_url}, "rest": [rest]}


def publish(store: Any) -> None:
    """Store the DMP profiles (StructureDefinitions, ValueSets) as resources, so that they are read,
    searched and fetched by validators like any other; only when they changed. Every worker calls it
    at start-up: they take turns."""
    with store.lock("publish-profiles"):
        for resource in conformance_resources():
            current = store.read(resource["resourceType"], resource["id"])
            stored = jsonio.loads(current.json) if current is not None and current.json else None
            if stored is None or {k: v for k, v in stored.items() if k != "meta"} != resource:
                store.update(resource["resourceType"], resource["id"], resource, by=PUBLISHER)
