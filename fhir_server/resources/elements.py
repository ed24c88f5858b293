"""``_summary`` and ``_elements`` (https://hl7.org/fhir/R4/search.html#summary, #elements).

Works on top-level elements, from the base StructureDefinitions' ``isSummary`` and ``min`` flags
(``data/elements.json``, built by capability/build.py). A subsetted resource is tagged SUBSETTED.
"""
from __future__ import annotations

import json
from functools import cache
from importlib import resources as package_data
from typing import Any

from ..errors import BadRequest

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
SUMMARY_MODES = ("true", "false", "text", "data", "count")
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _elements() -> dict[str, dict[str, list[str]]]:
    raw = package_data.files("fhir_server").joinpath("data/elements.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, list[str]]] = json.loads(raw)
    return data


def _selected(key: str, names: frozenset[str]) -> bool:
    """Is JSON key ``key`` (``deceasedBoolean``, ``_birthDate`` ...) one of the element ``names``?"""
    name = key[1:] if key.startswith("_") else key
    if name in names:
        return True
    return any(n.endswith("[x]") and name.startswith(n[:-3]) and name[len(n) - 3:][:1].isupper() for n in names)


def _keep(resource: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    kept = {k: v for k, v in resource.items() if k in _ALWAYS or _selected(k, names)}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def mandatory(rtype: str) -> frozenset[str]:
    return frozenset(_elements().get(rtype, {}).get("mandatory", ()))


def summarize(resource: dict[str, Any], mode: str) -> dict[str, Any]:
    rtype = resource.get("resourceType", "")
    if mode == "false":
        return resource
    if mode == "true":
        return _keep(resource, frozenset(_elements().get(rtype, {}).get("summary", ())))
    if mode == "text":
        return _keep(resource, mandatory(rtype) | {"text"})
    if mode == "data":
        return _keep(resource, frozenset(k for k in resource if k not in ("text", "_text")))
    raise BadRequest(f"_summary must be one of {', '.join(SUMMARY_MODES)}")


def select_elements(resource: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    """Keep the named elements; a choice element may be named ``value``, ``value[x]`` or ``valueQuantity``."""
    rtype = resource.get("resourceType", "")
    names = frozenset(elements) | {f"{e}[x]" for e in elements if not e.endswith("[x]")}
    return _keep(resource, names | mandatory(rtype))
