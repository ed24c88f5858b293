"""Index at write time (ARCHITECTURE.md rule 4): a resource -> the normalised values of every search
parameter of its type, its sort keys and the compartments it belongs to.

Entry shapes, per parameter type (a parameter holds a list of entries):
- string:    {f: folded text (case and accents removed), x: exact text}
- token:     {s: system, c: code, t: folded display/text, ts/tc: Identifier.type system/code}
- reference: {r: "Type/id", u: absolute or canonical URL, s/c: Reference.identifier}
- date:      {lo, hi}: the UTC range [lo, hi) the value covers (Period: start to end)
- number:    {v, lo, hi}: the value and the range its precision implies
- quantity:  {v, lo, hi, s: system, c: code, u: unit}
- uri:       {u}
- composite: {"0": entry of the first component, "1": ...} for each combination
Queries only ever touch these values, never the resource JSON (no regex over raw JSON).

FerretDB's ``$elemMatch`` cannot match several fields of one array element, so what is stored for
queries is ``columns()``: per parameter, flat arrays of scalars (token keys such as ``system|code``,
folded strings, range bounds). Equality, ``$in``, ``$nin`` and ``$regex`` on such arrays are exact;
range conditions on a parameter with several entries may pair bounds of different entries, so such a
parameter also stores ``n`` (its entry count) and those candidates are checked by ``match`` on entries.
"""
from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import product
from typing import Any

from ..errors import BadRequest
from .dates import parse_period
from .registry import SearchParam, compartments, evaluator, params_for

MIN_DATE = datetime(1, 1, 1, tzinfo=UTC)
MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
MAX_STRING = 256  # longer strings are indexed by their start

Entry = dict[str, Any]


def fold(text: str) -> str:
    """Case- and accent-insensitive form: "Hélène" -> "helene"."""
    if text.isascii():  # nothing to decompose (most codes, references and URLs)
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        keys = ("text", "family", "given", "prefix", "suffix", "line", "city", "district", "state",
                "postalCode", "country", "value", "display")
        found: list[str] = []
        for key in keys:
            item = value.get(key)
            if isinstance(item, str):
                found.append(item)
            elif isinstance(item, list):
                found.extend(i for i in item if isinstance(i, str))
        return found
    return []


def string_entries(value: Any) -> list[Entry]:
    return [{"f": fold(s)[:MAX_STRING], "x": s[:MAX_STRING]} for s in _strings(value)]


def _coding(coding: dict[str, Any], text: str | None = None) -> Entry:
    entry: Entry = {"s": coding.get("system"), "c": coding.get("code")}
    label = text or coding.get("display")
    if isinstance(label, str):
        entry["t"] = fold(label)
    return entry


def token_entries(value: Any) -> list[Entry]:
    if isinstance(value, bool):
        return [{"s": None, "c": "true" if value else "false"}]
    if isinstance(value, (str, int)):
        return [{"s": None, "c": str(value)}]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "value" not in value and "system" not in value):
        text = value.get("text")
        codings = [c for c in value.get("coding", []) if isinstance(c, dict)]
        if not codings:
            return [{"s": None, "c": None, "t": fold(text)}] if isinstance(text, str) else []
        return [_coding(c, text) for c in codings]
    if "value" in value and ("use" in value or "system" in value or "type" in value or "period" in value
                             or "assigner" in value or len(value) == 1):
        # Identifier or ContactPoint: system|value
        entry: Entry = {"s": value.get("system"), "c": str(value.get("value"))}
        kind = value.get("type")
        if isinstance(kind, dict):
            if isinstance(kind.get("text"), str):
                entry["t"] = fold(kind["text"])
            codings = [c for c in kind.get("coding", []) if isinstance(c, dict)]
            if codings:
                return [{**entry, "ts": c.get("system"), "tc": c.get("code")} for c in codings]
        return [entry]
    if "code" in value or "system" in value:
        return [_coding(value)]
    return []


def _split_reference(ref: str) -> Entry:
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if ref.startswith(("http://", "https://")):
        entry: Entry = {"u": ref}
        if len(parts) >= 2:
            entry["r"] = f"{parts[-2]}/{parts[-1]}"
        return entry
    if len(parts) == 2:
        return {"r": f"{parts[0]}/{parts[1]}"}
    return {"u": ref}


def reference_entries(value: Any) -> list[Entry]:
    if isinstance(value, str):  # canonical or uri
        url, _, version = value.partition("|")
        return [{"u": url, **({"v": version} if version else {})}]
    if not isinstance(value, dict):
        return []
    entry: Entry = {}
    ref = value.get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        entry.update(_split_reference(ref))
    identifier = value.get("identifier")
    if isinstance(identifier, dict) and "value" in identifier:
        entry["s"], entry["c"] = identifier.get("system"), str(identifier["value"])
    return [entry] if entry else []


def _period(text: Any) -> tuple[datetime, datetime] | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_period(text)
    except BadRequest:
        return None


def date_entries(value: Any) -> list[Entry]:
    if isinstance(value, str):
        period = _period(value)
        return [{"lo": period[0], "hi": period[1]}] if period else []
    if isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            start, end = _period(value.get("start")), _period(value.get("end"))
            return [{"lo": start[0] if start else MIN_DATE, "hi": end[1] if end else MAX_DATE}]
        if "event" in value or "repeat" in value:  # Timing
            entries = [e for event in value.get("event", []) for e in date_entries(event)]
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            return entries + (date_entries(bounds) if bounds else [])
    return []


def number_range(raw: Any) -> tuple[float, float, float] | None:
    """A number and the range its precision implies: 100 -> [99.5, 100.5), 1.50 -> [1.495, 1.505)."""
    try:
        number = Decimal(str(raw))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    exponent = number.as_tuple().exponent
    half = Decimal(5) * Decimal(10) ** (int(exponent) - 1)
    return float(number), float(number - half), float(number + half)


def number_entries(value: Any) -> list[Entry]:
    if isinstance(value, bool):
        return []
    found = number_range(value) if isinstance(value, (int, float, Decimal)) else None
    return [{"v": found[0], "lo": found[1], "hi": found[2]}] if found else []


def quantity_entries(value: Any) -> list[Entry]:
    if not isinstance(value, dict) or "value" not in value:
        return []
    found = number_range(value["value"])
    if found is None:
        return []
    entry: Entry = {"v": found[0], "lo": found[1], "hi": found[2], "s": value.get("system"),
                    "c": value.get("code", value.get("currency")), "u": value.get("unit")}
    return [entry]


def uri_entries(value: Any) -> list[Entry]:
    return [{"u": value}] if isinstance(value, str) else []


ENTRIES = {"string": string_entries, "token": token_entries, "reference": reference_entries,
           "date": date_entries, "number": number_entries, "quantity": quantity_entries, "uri": uri_entries}


def _unwrap(value: Any) -> Any:
    """An Extension found by ``extension('url')`` stands for its value[x]."""
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        for key, item in value.items():
            if key.startswith("value") and key[5:6].isupper():
                return item
    return value


def _component_values(root: Any, expression: str) -> list[Any]:
    """Component expressions are relative to a backbone element the R4 model cannot type: the
    shapes the official ones use (``code``, ``value.as(Quantity)``, unions of those) are read directly."""
    if " | " in expression:
        return [v for part in expression.split(" | ") for v in _component_values(root, part.strip())]
    if ".as(" in expression:
        name, _, kind = expression.partition(".as(")
        kind = kind.rstrip(")")
        value = root.get(name + kind[:1].upper() + kind[1:]) if isinstance(root, dict) else None
    else:
        value = root
        for part in expression.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def composite_entries(param: SearchParam, resource: dict[str, Any]) -> list[Entry]:
    entries: list[Entry] = []
    for root in evaluator(param.expression)(resource):
        per_component = []
        for component in param.components:
            found = [e for v in _component_values(root, component.expression) for e in ENTRIES[component.type](v)]
            per_component.append(found)
        for combination in product(*per_component):
            entries.append({str(i): e for i, e in enumerate(combination)})
    return entries


def _sort_key(kind: str, entries: list[Entry]) -> tuple[Any, Any] | None:
    """(ascending key, descending key): the smallest and the largest value (search.html#sort)."""
    field = {"string": "f", "token": "c", "reference": "r", "number": "v", "quantity": "v", "uri": "u"}.get(kind)
    if kind == "date":
        return min(e["lo"] for e in entries), max(e["hi"] for e in entries)
    keys = [e[field] for e in entries if field and e.get(field) is not None]
    return (min(keys), max(keys)) if keys else None


def _meta_entries(resource: dict[str, Any]) -> dict[str, list[Entry]]:
    meta = resource.get("meta") or {}
    found = {
        "_tag": [e for c in meta.get("tag", []) for e in token_entries(c)],
        "_security": [e for c in meta.get("security", []) for e in token_entries(c)],
        "_profile": [e for p in meta.get("profile", []) for e in uri_entries(p.partition("|")[0])],
        "_source": uri_entries(meta.get("source")),
    }
    return {k: v for k, v in found.items() if v}


def token_keys(entry: Entry) -> list[str]:
    """The forms a token query can take, for one entry: ``code``, ``system|code``, ``system|``, ``|code``."""
    system, code = entry.get("s"), entry.get("c")
    keys = []
    if code is not None:
        keys.append(code)
        keys.append(f"{system}|{code}" if system else f"|{code}")
    if system:
        keys.append(f"{system}|")
    return keys


def stored_keys(entry: Entry) -> list[str]:
    """What a token column holds of an entry: its keys, but ``system|`` when there is a code (the query
    ``system|`` is then the prefix of ``system|code``: ``compile.key_filter``). A quarter fewer values
    to store, and to read in every scan."""
    keys = token_keys(entry)
    return keys[:2] if entry.get("c") is not None else keys


RANGED = frozenset({"date", "number", "quantity", "composite"})


def columns(kind: str, entries: list[Entry]) -> dict[str, Any]:
    """The flat, queryable form of one parameter's entries (see the module docstring)."""
    out: dict[str, list[Any]] = {}

    def add(name: str, *values: Any) -> None:
        out.setdefault(name, []).extend(v for v in values if v is not None)

    for e in entries:
        if kind == "string":
            add("f", e["f"])
            add("x", e["x"])
        elif kind == "token":
            add("k", *stored_keys(e))
            add("t", e.get("t"))
            if "tc" in e:
                add("y", f"{e.get('ts') or ''}|{e['tc']}|{e.get('c')}")
        elif kind == "reference":
            add("r", e.get("r"), e.get("u"))
            if e.get("v"):
                add("r", f"{e.get('u')}|{e['v']}")
            if "c" in e:
                add("k", *stored_keys(e))
        elif kind == "uri":
            add("u", e["u"])
        elif kind in ("date", "number", "quantity"):
            add("lo", e["lo"])
            add("hi", e["hi"])
            if kind != "date":
                add("v", e["v"])
            if kind == "quantity":
                add("k", *stored_keys(e))
                add("k", e.get("u"))
    result: dict[str, Any] = {name: list(dict.fromkeys(values)) for name, values in out.items() if values}
    if kind in RANGED and len(entries) > 1:
        result["n"] = len(entries)
    return result


def composite_columns(param: SearchParam, entries: list[Entry]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for i, component in enumerate(param.components):
        part = columns(component.type, [e[str(i)] for e in entries])
        part.pop("n", None)
        result[str(i)] = part
    if len(entries) > 1:
        result["n"] = len(entries)
    return result


def entries_of(resource: dict[str, Any]) -> dict[str, list[Entry]]:
    """Every parameter's entries for ``resource`` (what ``match`` works on)."""
    rtype = resource["resourceType"]
    search: dict[str, list[Entry]] = _meta_entries(resource)
    for code, param in params_for(rtype).items():
        if code.startswith("_"):
            continue
        try:
            if param.type == "composite":
                entries = composite_entries(param, resource)
            else:
                entries = [e for v in evaluator(param.expression)(resource) for e in ENTRIES[param.type](_unwrap(v))]
        except Exception:  # noqa: BLE001 - an expression the engine cannot evaluate indexes nothing
            entries = []
        if entries:
            search[code] = entries
    return search


INDEX_FORMAT = 2  # of what index() stores; the store re-indexes older documents (Store.upgrade)


def unindexed() -> dict[str, Any]:
    """What a document holds for search when it has nothing to index (a deletion, a placeholder, a store
    without indexer): every part ``index`` writes, empty, so that no earlier version's values remain."""
    return {"search": {}, "sa": {}, "sd": {}, "compartments": []}


def column(code: str, name: str) -> str:
    """The stored path of one column of a parameter: ``search.<code>:<column>``."""
    return f"search.{code}:{name}"


# The columns of which at least one is there whenever a parameter of the type has a value.
_PRESENT = {"string": ("f",), "token": ("k", "t"), "reference": ("r", "k"), "date": ("lo",), "number": ("v",),
            "quantity": ("v",), "uri": ("u",)}


def presence(param: SearchParam) -> list[str]:
    """The columns of which one at least is stored when ``param`` has a value (``:missing``)."""
    if param.type == "composite":
        return [column(param.code, f"0:{name}") for name in _PRESENT[param.components[0].type]]
    return [column(param.code, name) for name in _PRESENT[param.type]]


def _flat(prefix: str, columns: dict[str, Any]) -> dict[str, Any]:
    """``{"0": {"k": [...]}, "n": 2}`` -> ``{"<prefix>:0:k": [...], "<prefix>:n": 2}``."""
    flat: dict[str, Any] = {}
    for name, value in columns.items():
        if isinstance(value, dict):
            flat.update(_flat(f"{prefix}:{name}", value))
        else:
            flat[f"{prefix}:{name}"] = value
    return flat


def index(resource: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps beside a resource for search: ``{"search": {"<code>:<column>": values},
    "sa": {code: ascending sort key}, "sd": {code: descending sort key}, "compartments": ["Patient/1"]}``.

    Flat, one level under ``search``: a document-oriented store pays for every sub-document it encodes,
    stores and scans (FerretDB: about half of an AuditEvent's insert went to its nested columns).
    ``_id`` and ``_lastUpdated`` are not repeated: the store's ``_id`` and ``ts`` serve them.
    """
    rtype = resource["resourceType"]
    entries = entries_of(resource)
    params = params_for(rtype)
    search: dict[str, Any] = {}
    ascending: dict[str, Any] = {}
    descending: dict[str, Any] = {}
    for code, found in entries.items():
        kind = params[code].type
        search.update(_flat(code, composite_columns(params[code], found) if kind == "composite"
                            else columns(kind, found)))
        if (key := _sort_key(kind, found)) is not None:
            ascending[code], descending[code] = key
    return {"search": search, "sa": ascending, "sd": descending,
            "compartments": compartments_of(rtype, resource.get("id"), entries)}


def compartments_of(rtype: str, rid: Any, search: dict[str, list[Entry]]) -> list[str]:
    """The compartments (https://hl7.org/fhir/R4/compartmentdefinition.html) the resource is in."""
    found: set[str] = set()
    for compartment, members in compartments().items():
        if rtype == compartment and isinstance(rid, str):
            found.add(f"{compartment}/{rid}")
        for code in members.get(rtype, ()):
            for entry in search.get(code, ()):
                ref = entry.get("r", "")
                if ref.startswith(compartment + "/"):
                    found.add(ref)
    return sorted(found)
