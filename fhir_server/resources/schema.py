"""The official R4 JSON schema layer (https://hl7.org/fhir/R4/json.html#schema).

One Draft 6 validator per resource type, built once and kept. Nested resources (``contained``,
``Bundle.entry.resource``, ``Parameters.parameter.resource`` ...) are validated against their own
type: the schema's ``ResourceList`` is a ``oneOf`` over every type, which costs ~70 ms for a 1 KB
Bundle and yields unreadable errors, so it is replaced by a ``fhirResource`` keyword that dispatches
on ``resourceType``.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import cache
from importlib import resources as package_data
from typing import Any

from jsonschema import Draft6Validator, ValidationError, validators

from ..errors import Issue


@cache
def _schema() -> dict[str, Any]:
    raw = package_data.files("fhir_server").joinpath("data/fhir.schema.json.gz").read_bytes()
    schema: dict[str, Any] = json.loads(gzip.decompress(raw))
    schema["definitions"]["ResourceList"] = {"fhirResource": True}
    return schema


RESOURCE_TYPES: frozenset[str] = frozenset(_schema()["discriminator"]["mapping"])


def _fhir_resource(validator: Any, _value: Any, instance: Any, _schema: Any) -> Iterator[ValidationError]:
    if not isinstance(instance, dict):
        yield ValidationError(f"{instance!r} is not a resource (a JSON object)", validator="type")
        return
    rtype = instance.get("resourceType")
    if not isinstance(rtype, str) or rtype not in RESOURCE_TYPES:
        yield ValidationError(f"unknown resourceType {rtype!r}", validator="const")
        return
    yield from validator.descend(instance, {"$ref": f"#/definitions/{rtype}"})


_Validator = validators.extend(Draft6Validator, {"fhirResource": _fhir_resource})

_CODES = {"type": "structure", "additionalProperties": "structure", "const": "structure",
          "enum": "code-invalid", "pattern": "value", "required": "required"}


@cache
def _validator(rtype: str) -> Any:
    return _Validator({"$ref": f"#/definitions/{rtype}", "definitions": _schema()["definitions"]})


def fhirpath(root: str, path: Any) -> str:
    """``('name', 0, 'given')`` -> ``Patient.name[0].given``."""
    out = root
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@cache
def _primitive_names() -> dict[str, str]:
    """Pattern -> primitive type name, to say "not a valid date" rather than print the regex."""
    return {d["pattern"]: name for name, d in _schema()["definitions"].items() if "pattern" in d}


def _issues(error: ValidationError, root: str) -> Iterator[Issue]:
    code = _CODES.get(str(error.validator), "invalid")
    if error.validator == "pattern":
        primitive = _primitive_names().get(str(error.validator_value), "value")
        where = fhirpath(root, error.absolute_path)
        yield Issue(code, f"{error.instance!r} is not a valid {primitive}", expression=(where,))
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        for key in sorted(k for k in error.instance if k not in known):
            where = fhirpath(root, [*error.absolute_path, key])
            yield Issue(code, f"unknown element '{key}'", expression=(where,))
        return
    yield Issue(code, error.message, expression=(fhirpath(root, error.absolute_path),))


def schema_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every schema violation of ``resource`` (whose resourceType is known), in document order."""
    rtype = resource["resourceType"]
    errors = sorted(_validator(rtype).iter_errors(resource), key=lambda e: [str(p) for p in e.absolute_path])
    # A value of the wrong JSON type also fails its primitive's pattern: report the type alone.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if not (e.validator == "pattern" and tuple(e.absolute_path) in mistyped)]
    return [issue for error in errors for issue in _issues(error, rtype)]
