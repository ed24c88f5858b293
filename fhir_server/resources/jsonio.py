"""JSON in and out, keeping FHIR decimals exact (https://hl7.org/fhir/R4/json.html#primitive:
"decimal values ... the precision SHALL be preserved": 1.50 stays 1.50).

orjson does the work; a document holding decimals is re-read with simplejson into ``Decimal``s and
written back by it, which only writes and subsetting pay for. Stored resources reach bundles as
``orjson.Fragment``s: their bytes are copied, never re-parsed.
"""
from __future__ import annotations

import base64

from typing import Any

import orjson
import simplejson


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_exact(data: bytes) -> Any:
    """Parse with decimals as ``Decimal`` (``data`` must already be known to be valid JSON)."""
    return simplejson.loads(data, use_decimal=True, parse_constant=_no_constants)


def has_decimal(document: Any) -> bool:
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def loads(data: bytes) -> Any:
    """Parse stored JSON, exact decimals included."""
    document = orjson.loads(data)
    return loads_exact(data) if has_decimal(document) else document


def dumps(document: Any, pretty: bool = False) -> bytes:
    try:
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 if pretty else 0)
    except TypeError:  # Decimal inside
        text = simplejson.dumps(document, use_decimal=True, ensure_ascii=False,
                                separators=(",", ": ") if pretty else (",", ":"), indent=2 if pretty else None)
        return text.encode()


def base64_bytes(value: str) -> bytes:
    """A FHIR ``base64Binary``'s bytes; its whitespace is allowed (the R4 pattern), other stray
    characters are not (binascii.Error)."""
    if not isinstance(value, str):
        raise TypeError(f"a base64Binary is a string, not {type(value).__name__}")
    return base64.b64decode("".join(value.split()), validate=True)
