"""Parse a search request into a frozen ``SearchQuery`` (https://hl7.org/fhir/R4/search.html).

Step one of three (parse -> compile -> match). Values are checked here, so a malformed date, prefix
or number is a 400 before anything runs; unknown parameters are ignored and left out of the self link,
or refused with ``Prefer: handling=strict``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import BadRequest
from ..resources.schema import RESOURCE_TYPES
from .dates import parse_period
from .index import number_range
from .registry import MODIFIERS, PREFIXED, SearchParam, params_for

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
CONTROL = {"_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_cursor",
           "_format", "_pretty", "_type", "_contained", "_containedType"}
TOTALS = ("none", "estimate", "accurate")
_SUMMARIES = ("true", "false", "text", "data", "count")


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` except where escaped with a backslash (search.html#escaping)."""
    parts, current, i = [], "", 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in ",|$\\":
            current += "\\" + text[i + 1]
            i += 2
            continue
        if char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", text)


@dataclass(frozen=True)
class Value:
    """One OR-alternative of a parameter: its prefix and its ``|``-separated parts, unescaped."""

    raw: str
    prefix: str = "eq"
    parts: tuple[str, ...] = ()
    components: tuple[Value, ...] = ()  # composite: one value per component


@dataclass(frozen=True)
class Clause:
    """``code[:modifier]=v1,v2`` (OR). A chained clause holds the clause to apply to the target type;
    a ``_has`` clause the one to apply to the referring type."""

    code: str
    param: SearchParam
    modifier: str | None = None
    values: tuple[Value, ...] = ()
    chain: tuple[str, Clause] | None = None  # (target type, clause on it)
    has: tuple[str, str, Clause] | None = None  # (referring type, its reference parameter, clause on it)


@dataclass(frozen=True)
class Include:
    source: str  # the type holding the reference
    code: str  # reference parameter, or "*"
    target: str | None = None
    iterate: bool = False


@dataclass(frozen=True)
class SortKey:
    code: str
    descending: bool = False


@dataclass(frozen=True)
class SearchQuery:
    types: tuple[str, ...]
    clauses_by_type: tuple[tuple[str, tuple[Clause, ...]], ...] = ()  # ANDed, resolved per type
    sort: tuple[SortKey, ...] = ()
    count: int = 50
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    total: str = "accurate"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    cursor: str | None = None
    kept: tuple[tuple[str, str], ...] = field(default=())  # the parameters the self link reproduces

    def clauses(self, rtype: str) -> tuple[Clause, ...]:
        return dict(self.clauses_by_type).get(rtype, ())


def _prefixed(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2] in PREFIXES and not raw[2].isalpha():
        return raw[:2], raw[2:]
    return "eq", raw


def _value(param_type: str, raw: str) -> Value:
    if param_type in PREFIXED:
        prefix, rest = _prefixed(raw)
        parts = tuple(unescape(p) for p in split_unescaped(rest, "|"))
        if param_type == "date":
            parse_period(parts[0])
        elif number_range(parts[0]) is None:
            raise BadRequest(f"'{parts[0]}' is not a number")
        if param_type == "quantity" and len(parts) not in (1, 3):
            raise BadRequest(f"a quantity is number|system|code, not '{raw}'")
        return Value(raw, prefix, parts)
    return Value(raw, "eq", tuple(unescape(p) for p in split_unescaped(raw, "|")))


def _clause(rtype: str, name: str, raw: str, strict: bool, depth: int = 0) -> Clause | None:
    if depth > 4:
        raise BadRequest("chains are limited to four levels")
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) != 4 or parts[1] not in RESOURCE_TYPES:
            raise BadRequest(f"'{name}' is not _has:Type:reference:parameter")
        _, referring, ref_code, rest = parts
        ref = params_for(referring).get(ref_code)
        if ref is None or ref.type != "reference":
            raise BadRequest(f"{referring} has no reference parameter '{ref_code}'")
        inner = _clause(referring, rest, raw, strict, depth + 1)
        if inner is None:
            return None
        return Clause("_has", ref, has=(referring, ref_code, inner))
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = params_for(rtype).get(code)
    if param is None:
        if strict:
            raise BadRequest(f"unknown search parameter '{code}' for {rtype}")
        return None
    if dot:  # chaining: subject:Patient.name=x
        if param.type != "reference":
            raise BadRequest(f"'{code}' is not a reference parameter: it cannot be chained")
        targets = [modifier] if modifier else list(param.targets)
        if modifier and param.targets and modifier not in param.targets:
            raise BadRequest(f"'{code}' cannot refer to {modifier}")
        candidates = [t for t in targets if rest.partition(".")[0].partition(":")[0] in params_for(t)]
        if len(candidates) > 1:  # `subject.where(resolve() is Patient)` names its one real target
            candidates = [t for t in candidates if f"resolve() is {t})" in param.expression] or candidates
        if len(candidates) != 1:
            raise BadRequest(f"the chain '{name}' needs a type: {code}:Type.{rest}")
        inner = _clause(candidates[0], rest, raw, strict, depth + 1)
        return None if inner is None else Clause(code, param, modifier or None, chain=(candidates[0], inner))
    if modifier:
        allowed = MODIFIERS.get(param.type, frozenset())
        is_type = param.type == "reference" and modifier in RESOURCE_TYPES
        if modifier not in allowed and not is_type:
            raise BadRequest(f"modifier ':{modifier}' is not supported on {param.type} parameter '{code}'")
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise BadRequest(f"{code}:missing takes true or false, not '{raw}'")
        return Clause(code, param, modifier, (Value(raw),))
    if raw == "":
        return None  # an empty value means no constraint
    values = []
    for alternative in split_unescaped(raw, ","):
        if param.type == "composite":
            pieces = split_unescaped(alternative, "$")
            if len(pieces) != len(param.components):
                raise BadRequest(f"'{code}' needs {len(param.components)} '$'-separated values")
            comps = tuple(_value(c.type, p) for c, p in zip(param.components, pieces))
            values.append(Value(alternative, components=comps))
        else:
            values.append(_value(param.type, alternative))
    return Clause(code, param, modifier or None, tuple(values))


def _include(value: str, reverse: bool, types: tuple[str, ...]) -> Include:
    parts = value.split(":")
    if value == "*":
        return Include("*", "*")
    if len(parts) < 2 or parts[0] not in RESOURCE_TYPES:
        raise BadRequest(f"'{value}' is not Type:parameter[:targetType]")
    source, code = parts[0], parts[1]
    if code != "*":
        param = params_for(source).get(code)
        if param is None or param.type != "reference":
            raise BadRequest(f"{source} has no reference parameter '{code}'")
    target = parts[2] if len(parts) > 2 else None
    if target is not None and target not in RESOURCE_TYPES:
        raise BadRequest(f"unknown type '{target}' in '{value}'")
    return Include(source, code, target)


def parse(types: tuple[str, ...], params: list[tuple[str, str]], *, default_count: int, max_count: int,
          strict: bool = False) -> SearchQuery:
    """``params``: the query's (name, value) pairs in order; repeated names are ANDed."""
    clauses: dict[str, list[Clause]] = {t: [] for t in types}
    kept: list[tuple[str, str]] = []
    sort: list[SortKey] = []
    includes: list[Include] = []
    revincludes: list[Include] = []
    count, total, summary, elements, cursor = default_count, "accurate", None, (), None
    for name, raw in params:
        base = name.split(":")[0]
        if base == "_count":
            if not raw.isdigit():
                raise BadRequest(f"_count must be a non-negative integer, not '{raw}'")
            count = min(int(raw), max_count)
        elif base == "_sort":
            for key in raw.split(","):
                code = key.lstrip("-")
                if not all(code in params_for(t) for t in types):
                    raise BadRequest(f"cannot sort on '{code}'")
                sort.append(SortKey(code, key.startswith("-")))
        elif base in ("_include", "_revinclude"):
            item = _include(raw, base == "_revinclude", types)
            item = Include(item.source, item.code, item.target, name.endswith(":iterate") or name.endswith(":recurse"))
            (revincludes if base == "_revinclude" else includes).append(item)
        elif base == "_total":
            if raw not in TOTALS:
                raise BadRequest(f"_total must be one of {', '.join(TOTALS)}")
            total = raw
        elif base == "_summary":
            if raw not in _SUMMARIES:
                raise BadRequest(f"_summary must be one of {', '.join(_SUMMARIES)}")
            summary = raw
        elif base == "_elements":
            elements = tuple(e.strip() for e in raw.split(",") if e.strip())
        elif base == "_cursor":
            cursor = raw
            continue
        elif base in CONTROL:
            if base not in ("_format", "_pretty", "_type"):
                continue
        else:
            found = {t: _clause(t, name, raw, strict) for t in types}
            present = {t: c for t, c in found.items() if c is not None}
            if not present:
                continue
            if len(present) != len(types):
                raise BadRequest(f"'{name}' is not a parameter of every type in _type")
            for t, clause in present.items():
                clauses[t].append(clause)
        kept.append((name, raw))
    by_type = tuple((t, tuple(c)) for t, c in clauses.items())
    return SearchQuery(tuple(types), by_type, tuple(sort), count, tuple(includes), tuple(revincludes),
                       total, summary, elements, cursor, tuple(kept))
