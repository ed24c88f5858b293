"""Turning request bytes into a resource dict, refusing what must never reach validation or storage."""
from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import BadRequest, Issue
from .jsonio import loads_exact

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # https://hl7.org/fhir/R4/datatypes.html#id


def check_id(value: str) -> str:
    if not ID_RE.match(value):
        raise BadRequest(f"'{value}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})")
    return value


def _check_shape(document: Any, max_depth: int) -> bool:
    """Refuse nesting beyond ``max_depth`` and keys that could act as Mongo operators or paths;
    say whether the document holds decimals.

    Iterative, so a hostile document cannot exhaust the Python stack.
    """
    stack: list[tuple[Any, int]] = [(document, 1)]
    decimals = False
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("$") or "." in key:
                    raise BadRequest(f"element name '{key}' is not allowed")
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                elif isinstance(value, float):
                    decimals = True
        elif isinstance(node, list):
            for value in node:
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1))
                elif isinstance(value, float):
                    decimals = True
    return decimals


def parse_resource(body: bytes, max_depth: int) -> dict[str, Any]:
    """Parse a JSON resource: valid UTF-8 JSON, an object with a ``resourceType``, sane shape.
    Decimals come back as ``Decimal`` so that their precision is stored as sent."""
    if not body:
        raise BadRequest("the request has no body")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object (a FHIR resource)")
    if _check_shape(document, max_depth):
        document = loads_exact(body)  # keep 1.50 as 1.50
    if not isinstance(document.get("resourceType"), str):
        raise BadRequest("the resource has no resourceType",
                         issues=[Issue("required", "the resource has no resourceType")])
    return document
