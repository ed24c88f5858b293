"""The DMP profiles the server publishes and enforces (``data/profiles.json``, built from the rules in
``capability/profiles.py``). A resource whose ``meta.profile`` claims one of them is checked against it
on every write: its required elements (``min``), its invariants (FHIRPath) and its required bindings,
read from the StructureDefinition's differential — the same document the FHIR validator reads.
Profiles the server does not know are not checked (http://hl7.org/fhir/R4/profiling.html#profile-uses:
a claim is the sender's assertion).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from ..errors import Issue
from .documents import dmp_codes

DATA = Path(__file__).resolve().parent.parent / "data" / "profiles.json"
# profiles of others whose rules ours restate: a claim of theirs is checked against ours
ALIASES = {"https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins":
           "https://fhir-server-dmp.org/fhir/StructureDefinition/dmp-patient"}


@cache
def conformance_resources() -> tuple[dict[str, Any], ...]:
    """The StructureDefinitions and ValueSets, as published."""
    bundle = json.loads(DATA.read_text(encoding="utf-8"))
    return tuple(entry["resource"] for entry in bundle["entry"])


def supported_profiles(rtype: str) -> list[str]:
    return [r["url"] for r in conformance_resources()
            if r["resourceType"] == "StructureDefinition" and r["type"] == rtype]


@dataclass(frozen=True)
class Rule:
    """One check of a profile: ``holds(resource)`` or an issue at ``expression``."""

    text: str
    expression: str
    holds: Callable[[dict[str, Any]], bool]


def _true(expression: str) -> Callable[[dict[str, Any]], bool]:
    compiled = fhirpath_compile(expression, models["r4"])
    return lambda resource: compiled(resource) == [True]


def _element(path: str) -> str:
    """``effective[x]`` -> ``effective``: FHIRPath names a choice element without its type."""
    return path.replace("[x]", "")


def _cardinality(rtype: str, path: str, minimum: int) -> Rule:
    parent, _, child = _element(path).rpartition(".")
    test = f"{child}.count() >= {minimum}"
    return Rule(f"{rtype}.{path} is required" if minimum == 1 else f"{rtype}.{path} needs {minimum}",
                f"{rtype}.{path}", _true(f"{parent}.all({test})" if parent else test))


def _binding(rtype: str, path: str, value_set: str) -> Rule:
    codes = {(include["system"], concept["code"]) for include in _value_set(value_set)["compose"]["include"]
             for concept in include["concept"]}
    values = fhirpath_compile(_element(path), models["r4"])
    alias = dmp_codes().system

    def coded(value: Any) -> bool:
        codings = value.get("coding") or [] if isinstance(value, dict) and "coding" in value else [value]
        return any(isinstance(c, dict) and (alias(c.get("system")), c.get("code")) in codes for c in codings)
    return Rule(f"{rtype}.{path} has a code from {value_set}", f"{rtype}.{path}",
                lambda resource: all(coded(v) for v in values(resource)))


def _value_set(url: str) -> dict[str, Any]:
    return next(r for r in conformance_resources() if r["resourceType"] == "ValueSet" and r["url"] == url)


@cache
def _rules() -> dict[str, tuple[str, list[Rule]]]:
    """Profile URL -> (its type, its rules), from the differentials."""
    found: dict[str, tuple[str, list[Rule]]] = {}
    for sd in conformance_resources():
        if sd["resourceType"] != "StructureDefinition":
            continue
        rtype, rules = sd["type"], []
        for element in sd["differential"]["element"]:
            path = element["path"].partition(".")[2]
            for c in element.get("constraint", []):
                if c["severity"] == "error":
                    rules.append(Rule(f"{c['key']}: {c['human']}", element["path"], _true(c["expression"])))
            if path and element.get("min", 0) > 0:
                rules.append(_cardinality(rtype, path, element["min"]))
            binding = element.get("binding") or {}
            if path and binding.get("strength") == "required":
                rules.append(_binding(rtype, path, binding["valueSet"]))
        found[sd["url"]] = (rtype, rules)
    return found


def claimed(resource: dict[str, Any]) -> list[str]:
    """The profiles of ours (or restated by ours) that ``resource`` claims, version suffixes dropped."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    urls = [ALIASES.get(p.split("|")[0], p.split("|")[0]) for p in profiles or () if isinstance(p, str)]
    return [url for url in dict.fromkeys(urls) if url in _rules()]


def profile_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every rule of a claimed profile that ``resource`` breaks (schema validation has passed)."""
    issues: list[Issue] = []
    for url in claimed(resource):
        rtype, rules = _rules()[url]
        if resource.get("resourceType") != rtype:
            issues.append(Issue("invalid", f"{url} profiles {rtype}, not {resource.get('resourceType')}",
                                expression=("meta.profile",)))
            continue
        for rule in rules:
            try:
                ok = rule.holds(resource)
            except Exception as error:  # an expression that cannot run on this resource does not hold
                ok = False
                rule = Rule(f"{rule.text} (not evaluable: {error})", rule.expression, rule.holds)
            if not ok:
                issues.append(Issue("processing", f"{rule.text} (profile {url})", expression=(rule.expression,)))
    return issues
