"""Search values computed from a stored resource: the official R4 SearchParameter of an advertised search
parameter (by its ``definition`` canonical, or by name and base type), its FHIRPath expression evaluated
with fhirpathpy, and from the values found a matching and a non-matching search value
(https://hl7.org/fhir/R4/search.html#ptypes)."""
from __future__ import annotations

import json
import re
from decimal import Decimal
from functools import cache
from typing import Any

from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.models import models

from .data import EXAMPLES

NO_MATCH = "zzqx-conformance-no-match"  # a string no example contains
FAR_DATE = "1801-02-03"  # a day long before anything the examples record


@cache
def definitions() -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    """The official SearchParameters: by canonical url, and by (base type, code)."""
    by_url: dict[str, dict[str, Any]] = {}
    by_code: dict[tuple[str, str], dict[str, Any]] = {}
    for path in EXAMPLES.glob("SearchParameter-*.json"):
        sp = json.loads(path.read_text())
        if sp.get("resourceType") != "SearchParameter":
            continue
        by_url[sp.get("url", "")] = sp
        for base in sp.get("base") or ():
            by_code.setdefault((base, sp.get("code", "")), sp)
    return by_url, by_code


def definition(rtype: str, name: str, canonical: str | None) -> dict[str, Any] | None:
    by_url, by_code = definitions()
    if canonical and canonical in by_url:
        return by_url[canonical]
    for base in (rtype, "DomainResource", "Resource"):
        if (base, name) in by_code:
            return by_code[(base, name)]
    return None


@cache
def _compiled(expression: str) -> Any:
    return fhirpath_compile(expression, models["r4"])


def fhirpath(expression: str, rtype: str, resource: dict[str, Any]) -> list[Any]:
    """fhirpathpy has no ``resolve()``: ``x.where(resolve() is T)`` becomes a test of the reference's
    type prefix (the same thing for the relative references the suite stores). Expressions on the
    abstract ``Resource``/``DomainResource`` are put on the concrete type."""
    expression = re.sub(r"resolve\(\)\s+is\s+([A-Za-z]+)", r"reference.startsWith('\1/')", expression)
    # A choice element cast to one type is that type's JSON property: (ConceptMap.source as uri) is
    # sourceUri (the definitions' xpath says so; FHIRPath's `as` would also take the subtype canonical).
    expression = re.sub(r"\(([A-Za-z][\w.]*) as ([a-zA-Z]+)\)", lambda m: m.group(1) + _upper(m.group(2)), expression)
    expression = re.sub(r"(?<=\w)\.as\(([a-zA-Z]+)\)", lambda m: _upper(m.group(1)), expression)
    expression = re.sub(r"\b(?:Resource|DomainResource)\.", f"{rtype}.", expression)
    return list(_compiled(expression)(resource))


def _upper(name: str) -> str:
    return name[:1].upper() + name[1:]


def _number(value: Any) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def _string_of(value: Any) -> str | None:
    """A string a string parameter matches. For a HumanName or Address, one of its parts, ``text`` last:
    the R4 parameters on them are "a server defined search that may match any of the string fields in
    the Address, including line, city, district, state, country, postalCode, and/or text" (Patient
    ``address``; ``name`` likewise: "family, give, prefix, suffix, suffix, and/or text"). Which fields
    is the server's choice; ``text`` repeats the structured parts, so a server indexing only those is
    common (HAPI FHIR does), and a structured part is the value most servers find."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # HumanName, Address: the first part with text
        for key in ("family", "given", "line", "city", "postalCode", "district", "state", "country", "text"):
            part = value.get(key)
            if isinstance(part, list):
                part = part[0] if part else None
            if isinstance(part, str) and part.strip():
                return part
    return None


def _tokens(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a token value: code, boolean, Coding, CodeableConcept, Identifier,
    ContactPoint."""
    if isinstance(value, bool):
        return [(None, "true" if value else "false")]
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [pair for coding in value["coding"] for pair in _tokens(coding)]
    code = value.get("code") if "code" in value else value.get("value")
    system = value.get("system")
    if isinstance(system, str) and ":" not in system:
        system = None  # a ContactPoint's system is a kind (phone, email), not a code system
    return [(system, code)] if isinstance(code, str) else []


def _escape(text: str) -> str:
    """search.html#escaping: ``\\``, ``,``, ``$`` and ``|`` in a value are escaped with ``\\``."""
    return re.sub(r"([\\,$|])", r"\\\1", text)


def _date_of(value: Any) -> tuple[str, str] | None:
    """(prefix, date) that overlaps the value: the value itself for a date, dateTime or instant; a
    Period's start with ``ge`` (or its end with ``le``); a Timing's first event."""
    if isinstance(value, str):
        return ("", value)
    if hasattr(value, "isoformat") or type(value).__name__.startswith("FP_"):
        return ("", str(value))
    if isinstance(value, dict):
        if value.get("start"):
            return ("ge", str(value["start"]))
        if value.get("end"):
            return ("le", str(value["end"]))
        if value.get("event"):
            return ("", str(value["event"][0]))
    return None


def search_values(sptype: str, values: list[Any], rtype: str) -> tuple[str, str] | str:
    """(matching value, non-matching value) for the parameter type, or why there is none."""
    if sptype in ("composite", "special"):
        return f"{sptype} parameters are not covered by this suite (their values need per-parameter rules)"
    if not values:
        return "the example has no value for this parameter"
    first = values[0]
    if sptype == "string":
        texts = [t for t in (_string_of(v) for v in values) if t]
        if not texts:
            return f"no string in the value {first!r}"
        return _escape(texts[0][:40].strip()), NO_MATCH  # a prefix matches (search.html#string)
    if sptype == "token":
        pairs = [p for v in values for p in _tokens(v)]
        if not pairs:
            return f"no code in the value {first!r}"
        system, code = pairs[0]
        if code in ("true", "false") and all(c in ("true", "false") for _, c in pairs):
            other = "false" if code == "true" else "true"
            return (code, other) if other not in {c for _, c in pairs} else "the values are both true and false"
        if system:
            return f"{_escape(system)}|{_escape(code)}", f"{_escape(system)}|{NO_MATCH}"
        return _escape(code), NO_MATCH
    if sptype == "reference":
        for value in values:
            ref = value.get("reference") if isinstance(value, dict) else value if isinstance(value, str) else None
            if ref and not ref.startswith("#"):
                if "/" in ref and not ref.startswith(("http:", "https:", "urn:")):
                    target = ref.split("/")[0]
                    return _escape(ref), f"{target}/{NO_MATCH}"
                return _escape(ref), f"http://example.org/{NO_MATCH}"
        return "no resolvable reference in the value (the suite removed references it could not re-point)"
    if sptype == "date":
        for value in values:
            found = _date_of(value)
            if found:
                return found[0] + found[1], FAR_DATE
        return f"no date in the value {first!r}"
    if sptype == "number":
        for value in values:
            if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
                return _number(value), _number(Decimal(str(value)) + 1000)
        return f"no number in the value {first!r}"
    if sptype == "quantity":
        for value in values:
            if isinstance(value, dict) and isinstance(value.get("value"), (int, float, Decimal)):
                number = _number(value["value"])
                far = _number(Decimal(str(value["value"])) + 1000)
                if value.get("system") and value.get("code"):
                    units = f"|{_escape(value['system'])}|{_escape(value['code'])}"
                    return number + units, far + units
                return number, far
        return f"no quantity in the value {first!r}"
    if sptype == "uri":
        for value in values:
            if isinstance(value, str):
                return _escape(value), f"http://example.org/{NO_MATCH}"
        return f"no uri in the value {first!r}"
    return f"unknown search parameter type {sptype!r}"
