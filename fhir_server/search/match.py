"""Step three of three: the same ``SearchQuery`` applied to one resource in memory, entry by entry.

The store uses it to confirm the candidates whose multi-entry ranges a flat Mongo filter cannot decide
exactly; tests use it as the oracle; consent policies and conditional operations reuse it.
``lookup(type, clause)`` answers chains and ``_has`` (the ids of that type matching the clause).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .compile import local_reference, quantity_key, token_key
from .dates import parse_period
from .index import Entry, entries_of, fold, number_range, token_keys
from .parse import Clause, SearchQuery, Value

Lookup = Callable[[str, Clause], set[str]]


def _date(entry: Entry, value: Value) -> bool:
    start, end = parse_period(value.parts[0])
    lo, hi = entry["lo"], entry["hi"]
    within = lo >= start and hi <= end
    if value.prefix == "ap":
        slack = max(abs(datetime.now(UTC) - start) * 0.1, timedelta(days=1))
        return lo < end + slack and hi > start - slack
    return {"eq": within, "ne": not within, "gt": hi > end, "lt": lo < start, "ge": hi > end or within,
            "le": lo < start or within, "sa": lo >= end, "eb": hi <= start}[value.prefix]


def _number(entry: Entry, value: Value) -> bool:
    found = number_range(value.parts[0])
    assert found is not None
    number, low, high = found
    v = entry["v"]
    slack = abs(number) * 0.1
    return {"eq": low <= v < high, "ne": not low <= v < high, "gt": v > number, "sa": v > number,
            "lt": v < number, "eb": v < number, "ge": v >= number, "le": v <= number,
            "ap": number - slack <= v <= number + slack}[value.prefix]


def _quantity(entry: Entry, value: Value) -> bool:
    if not _number(entry, value):
        return False
    key = quantity_key(value)
    return key is None or key in token_keys(entry) or key == entry.get("u")


def _reference(entry: Entry, modifier: str | None, value: Value, targets: tuple[str, ...], base_url: str) -> bool:
    if modifier == "identifier":
        return "c" in entry and token_key(value.parts) in token_keys(entry)
    ref = local_reference(value, base_url)
    held = {entry.get("r"), entry.get("u")}
    if entry.get("v"):
        held.add(f"{entry.get('u')}|{entry['v']}")
    if modifier:
        return f"{modifier}/{ref.rsplit('/', 1)[-1]}" in held
    if "/" in ref or ref.startswith(("urn:", "http:", "https:")):
        return ref in held
    return any(f"{t}/{ref}" in held for t in targets)


def entry_matches(kind: str, entry: Entry, modifier: str | None, value: Value, targets: tuple[str, ...] = (),
                  base_url: str = "", components: tuple[Any, ...] = ()) -> bool:
    if kind == "string":
        text = "|".join(value.parts)
        if modifier == "exact":
            return bool(entry["x"] == text)
        if modifier == "contains":
            return fold(text) in entry["f"]
        return bool(entry["f"].startswith(fold(text)))
    if kind == "token":
        if modifier == "text":
            return re.search("(^| )" + re.escape(fold("|".join(value.parts))), entry.get("t") or "") is not None
        if modifier == "of-type":
            return "tc" in entry and f"{entry.get('ts') or ''}|{entry['tc']}|{entry.get('c')}" == "|".join(value.parts)
        return token_key(value.parts) in token_keys(entry)
    if kind == "reference":
        return _reference(entry, modifier, value, targets, base_url)
    if kind == "date":
        return _date(entry, value)
    if kind == "number":
        return _number(entry, value)
    if kind == "quantity":
        return _quantity(entry, value)
    if kind == "uri":
        uri = "|".join(value.parts)
        if modifier == "below":
            return bool(entry["u"].startswith(uri))
        if modifier == "above":
            return bool(uri.startswith(entry["u"]))
        return bool(entry["u"] == uri)
    if kind == "composite":
        return all(entry_matches(c.type, entry[str(i)], None, v)
                   for i, (c, v) in enumerate(zip(components, value.components)))
    return False


def clause_matches(rid: str, last_updated: datetime | None, entries: dict[str, list[Entry]], clause: Clause,
                   lookup: Lookup | None = None, base_url: str = "") -> bool:
    code, param, modifier = clause.code, clause.param, clause.modifier
    if clause.has is not None:
        assert lookup is not None, "_has needs a lookup"
        return rid in lookup("_has", clause)
    if clause.chain is not None:
        assert lookup is not None, "chains need a lookup"
        target, inner = clause.chain
        ids = lookup(target, inner)
        return any(e.get("r", "").startswith(target + "/") and e["r"].split("/", 1)[1] in ids
                   for e in entries.get(code, ()))
    if modifier == "missing":
        present = code in ("_id", "_lastUpdated") or bool(entries.get(code))
        return present != (clause.values[0].raw == "true")
    if code == "_id":
        found = any(v.raw == rid for v in clause.values)
        return not found if modifier == "not" else found
    if code == "_lastUpdated":
        assert last_updated is not None
        point = {"lo": last_updated, "hi": last_updated + timedelta(milliseconds=1)}
        return any(_date(point, v) for v in clause.values)
    found = entries.get(code, [])
    if param.type == "token" and modifier == "not":
        return not any(entry_matches("token", e, None, v) for e in found for v in clause.values)
    return any(entry_matches(param.type, e, modifier, v, param.targets, base_url, param.components)
               for e in found for v in clause.values)


def matches(query: SearchQuery, resource: dict[str, Any], last_updated: datetime | None = None,
            lookup: Lookup | None = None, base_url: str = "", codes: frozenset[str] | None = None,
            entries: dict[str, list[Entry]] | None = None) -> bool:
    """Does ``resource`` satisfy every clause (or only the clauses named in ``codes``)?
    ``entries``: the resource's index entries, when the caller already has them."""
    rtype, rid = resource["resourceType"], resource.get("id", "")
    entries = entries if entries is not None else entries_of(resource)
    return all(clause_matches(rid, last_updated, entries, c, lookup, base_url)
               for c in query.clauses(rtype) if codes is None or c.code in codes)
