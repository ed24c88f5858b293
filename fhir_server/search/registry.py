"""The search parameters the server knows: the official R4 SearchParameters, as data
(``data/search-parameters.json``, built by capability/build.py), plus the resource-level ones.

Adding a custom SearchParameter is adding an entry to that table: parsing, indexing, the
CapabilityStatement and matching all read it from here.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_data
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

# Parameters every resource type has, computed from id, meta and the store (not from FHIRPath).
RESOURCE_PARAMS: dict[str, str] = {
    "_id": "token", "_lastUpdated": "date", "_tag": "token", "_profile": "uri", "_security": "token",
    "_source": "uri",
}
# Modifiers each parameter type accepts (https://hl7.org/fhir/R4/search.html#modifiers).
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"text", "not", "missing", "of-type"}),
    "reference": frozenset({"identifier", "missing"}),  # plus :[type], checked against the targets
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"below", "above", "missing"}),
    "composite": frozenset({"missing"}),
}
PREFIXED = frozenset({"date", "number", "quantity"})

_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")
_AS_OPERATOR = re.compile(r"\(([\w.]+) as (\w+)\)")


def _lenient(expression: str) -> str:
    """``(x as T)`` and ``x.as(T)`` must see one value in FHIRPath, but search expressions apply them to
    repeating elements (``Composition.relatesTo.target``): read them as ``x.ofType(T)``, as servers do."""
    return _AS_OPERATOR.sub(r"\1.ofType(\2)", expression).replace(".as(", ".ofType(")


@dataclass(frozen=True)
class Component:
    code: str
    type: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    expression: str = ""
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    url: str = ""  # the SearchParameter's canonical (the official R4 definition)

    @property
    def sort_field(self) -> str:
        return f"_sort.{self.code}"


@cache
def _table() -> dict[str, dict[str, Any]]:
    raw = package_data.files("fhir_server").joinpath("data/search-parameters.json").read_text(encoding="utf-8")
    table: dict[str, dict[str, Any]] = json.loads(raw)
    return table


@cache
def params_for(rtype: str) -> dict[str, SearchParam]:
    """Every search parameter of ``rtype`` by code, resource-level ones included."""
    params = {code: SearchParam(code, kind) for code, kind in RESOURCE_PARAMS.items()}
    for code, entry in _table().get(rtype, {}).items():
        params[code] = SearchParam(
            code, entry["type"], entry["expression"], tuple(entry.get("target", ())),
            tuple(Component(c["code"], c["type"], c["expression"]) for c in entry.get("component", ())),
            entry.get("url", ""),
        )
    return params


def search_types() -> list[str]:
    return sorted(_table())


Evaluator = Callable[[Any], list[Any]]


@cache
def evaluator(expression: str) -> Evaluator:
    """A compiled FHIRPath expression (R4 model, so choice types resolve), evaluated on a resource.

    ``x.where(resolve() is T)`` cannot resolve without IO: it is rewritten to keep the references whose
    type is ``T``, which is what it means for a reference to a resource of type ``T``.
    """
    members = []
    for member in split_union(_lenient(expression)):
        match = _RESOLVE_IS.search(member)
        path = _RESOLVE_IS.sub("", member) if match else member
        members.append((_walker(path) or fhirpath_compile(path, models["r4"]), match.group(1) if match else None))

    def evaluate(resource: Any) -> list[Any]:
        values: list[Any] = []
        for compiled, rtype in members:
            found = compiled(resource)
            if rtype is not None:
                found = [v for v in found if isinstance(v, dict) and _reference_type(v) == rtype]
            values.extend(found)
        return values

    return evaluate


_SIMPLE = re.compile(r"^([A-Z]\w*)((?:\.\w+)+)$")


def _walker(expression: str) -> Evaluator | None:
    """A plain walk of the JSON for a path of element names (``Observation.component.value``), which
    most search expressions are: the same values as FHIRPath (tests/search/test_registry.py proves it
    on every official example) at a fraction of the cost, choice types (``value`` -> ``valueQuantity``)
    resolved from the R4 model. None for anything else."""
    match = _SIMPLE.match(expression)
    if match is None:
        return None
    rtype, rest = match.group(1), match.group(2).split(".")[1:]
    model = models["r4"]
    steps: list[tuple[str, ...]] = []  # per element, the JSON names it may have
    path = rtype
    for name in rest:
        element = f"{path}.{name}"
        element = model["pathsDefinedElsewhere"].get(element, element)
        choices = model["choiceTypePaths"].get(element)
        if choices:
            steps.append(tuple(name + c[0].upper() + c[1:] for c in choices))
        elif element in model["path2Type"] or element in _model_prefixes():
            steps.append((name,))
        else:
            return None  # not an element the model knows: leave it to FHIRPath
        kind = model["path2Type"].get(element)
        path = kind if kind and kind[0].isupper() and kind not in ("BackboneElement", "Element") else element

    def walk(resource: Any) -> list[Any]:
        if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
            return []
        nodes: list[Any] = [resource]
        for names in steps:
            found: list[Any] = []
            for node in nodes:
                for key in names:
                    value = node.get(key) if isinstance(node, dict) else None
                    if isinstance(value, list):
                        found.extend(v for v in value if v is not None)
                    elif value is not None:
                        found.append(value)
            nodes = found
        return nodes

    return walk


@cache
def _model_prefixes() -> frozenset[str]:
    """Every element path of the R4 model that has children (backbone elements among them)."""
    return frozenset(p.rsplit(".", 1)[0] for p in models["r4"]["path2Type"] if "." in p)


def _reference_type(reference: dict[str, Any]) -> str | None:
    ref = reference.get("reference")
    if isinstance(ref, str) and "/" in ref:
        parts = ref.split("/")
        return parts[-4] if len(parts) >= 4 and parts[-2] == "_history" else parts[-2]
    kind = reference.get("type")
    return kind if isinstance(kind, str) else None


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath union ``a | b | (c as X)`` at its top level."""
    members, depth, current = [], 0, ""
    for char in expression:
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            members.append(current.strip())
            current = ""
        else:
            current += char
    members.append(current.strip())
    return [m for m in members if m]


@cache
def compartments() -> dict[str, dict[str, list[str]]]:
    raw = package_data.files("fhir_server").joinpath("data/compartments.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, list[str]]] = json.loads(raw)
    return data
