"""The search interaction (https://hl7.org/fhir/R4/http.html#search): type, system (``_type``) and
compartment search, paging, ``_total``, ``_include``/``_revinclude``, ``_summary``/``_elements``.

Parsing and compiling are pure (search/); running the compiled query is the store's (storage/search.py).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from .config import Config
from .errors import BadRequest
from .resources import bundle, jsonio
from .resources.elements import select_elements, summarize
from .resources.schema import RESOURCE_TYPES
from .search.paging import decode_cursor, encode_cursor, pack, unpack
from .search.parse import Include, SearchQuery, parse
from .search.registry import params_for
from .storage import Store
from .storage.search import Policy, Searcher, references, stored_json

MAX_ITERATE = 3


def run(store: Store, config: Config, base_url: str, path: str, types: tuple[str, ...],
        params: list[tuple[str, str]], strict: bool = False,
        compartment: tuple[str, str] | None = None, policy: Policy | None = None,
        excluding: list[tuple[str, str]] | None = None) -> tuple[dict[str, Any], set[str]]:
    """The searchset Bundle for ``params`` over ``types`` (optionally inside a compartment), as far as
    the ``policy`` lets the caller see (narrowed in every query, every resource checked again), and
    the patients whose data it holds (for the audit trail). ``excluding``: search parameters whose
    matches are left out (the server's own projections, such as ``$access-history``)."""
    query = parse(types, params, default_count=config.default_count, max_count=config.max_count, strict=strict)
    searcher = Searcher(store, base_url, policy)
    extra = [{"compartments": f"{compartment[0]}/{compartment[1]}"}] if compartment else []
    unwanted = parse(types, excluding, default_count=1, max_count=1, strict=True) if excluding else None
    compiled = {t: searcher.compile(t, query, extra + (
        [{"$nor": [searcher.compiler.compile(t, unwanted).filter]}] if unwanted else [])) for t in types}

    total = None
    if query.total != "none" or query.summary == "count":
        total = sum(searcher.count(t, compiled[t], query) for t in types)
    if query.summary == "count":
        return bundle.searchset([], total, {"self": _url(base_url, path, list(query.kept))}), set()

    position = decode_cursor(config.secret, query.cursor) if query.cursor else None
    start = position["t"] if position else 0
    after = unpack(position["k"]) if position else None
    reverse = bool(position and position.get("r"))
    if reverse and len(types) > 1:
        raise BadRequest("previous pages are not available across several types")

    include_codes = _include_codes(query)
    matches: list[tuple[str, dict[str, Any]]] = []
    more = False
    for index in range(start, len(types)):
        rtype = types[index]
        docs, more = searcher.page(rtype, compiled[rtype], query, query.count - len(matches),
                                   after if index == start else None, reverse, include_codes)
        matches += [(rtype, d) for d in docs]
        if more:
            break
        if len(matches) >= query.count:
            more = any(searcher.exists(t, compiled[t]) for t in types[index + 1:])
            break

    links = {"self": _url(base_url, path, list(query.kept) + ([("_cursor", query.cursor)] if query.cursor else []))}
    if query.cursor:
        links["first"] = _url(base_url, path, list(query.kept))
    if matches:
        (first_type, first_doc), (last_type, last_doc) = matches[0], matches[-1]
        if more or reverse:
            keys = pack(searcher.keyset(compiled[last_type], last_doc))
            links["next"] = _page_link(config, base_url, path, query, {"t": types.index(last_type), "k": keys})
        if (query.cursor and not reverse) or (reverse and more):
            keys = pack(searcher.keyset(compiled[first_type], first_doc))
            links["previous"] = _page_link(config, base_url, path, query,
                                           {"t": types.index(first_type), "k": keys, "r": 1})

    included = _included(searcher, config, query, matches, include_codes)
    entries = [bundle.search_entry(base_url, t, d["_id"], _body(query, d), "match") for t, d in matches]
    entries += [bundle.search_entry(base_url, t, d["_id"], _body(query, d), "include") for t, d in included]
    patients = {c.split("/", 1)[1] for _, d in matches + included for c in d.get("compartments") or ()
                if c.startswith("Patient/")}
    return bundle.searchset(entries, total if query.total != "none" else None, links), patients


def _body(query: SearchQuery, doc: dict[str, Any]) -> bytes | dict[str, Any]:
    raw = stored_json(doc)
    if query.summary in (None, "false") and not query.elements:
        return raw
    resource = jsonio.loads(raw)
    if query.summary not in (None, "false"):
        resource = summarize(resource, query.summary)
    if query.elements:
        resource = select_elements(resource, list(query.elements))
    return resource


def _include_codes(query: SearchQuery) -> set[str]:
    codes: set[str] = set()
    for item in query.includes + query.revincludes:
        if item.code == "*":
            codes |= {c for t in query.types for c, p in params_for(t).items() if p.type == "reference"}
        else:
            codes.add(item.code)
    return codes


def _included(searcher: Searcher, config: Config, query: SearchQuery, matches: list[tuple[str, dict[str, Any]]],
              codes: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Resources named by ``_include`` / ``_revinclude`` (``:iterate`` up to three rounds), de-duplicated
    against the matches and each other, at most ``max_count`` of them."""
    seen = {f"{t}/{d['_id']}" for t, d in matches}
    included: list[tuple[str, dict[str, Any]]] = []
    sources = matches
    for round_ in range(MAX_ITERATE):
        found: list[tuple[str, dict[str, Any]]] = []
        wanted: dict[str, set[str]] = {}
        for item in query.includes:
            if round_ and not item.iterate:
                continue
            for rtype, doc in sources:
                if item.source not in ("*", rtype):
                    continue
                item_codes = _reference_codes(rtype, item)
                for code in item_codes:
                    for ref in references(doc, code):
                        target, _, rid = ref.partition("/")
                        if (item.target in (None, target)) and ref not in seen:
                            wanted.setdefault(target, set()).add(rid)
        for target, ids in wanted.items():
            if target in RESOURCE_TYPES:
                for doc in searcher.fetch(target, sorted(ids), codes):
                    _add(found, seen, target, doc)
        for item in query.revincludes:
            if round_ and not item.iterate:
                continue
            refs = [f"{t}/{d['_id']}" for t, d in sources if item.target in (None, t)]
            if not refs or item.code == "*":
                continue
            for doc in searcher.referring(item.source, item.code, refs, codes, config.max_count):
                _add(found, seen, item.source, doc)
        included += found
        if not found or len(included) >= config.max_count:
            break
        sources = found
    return included[: config.max_count]


def _reference_codes(rtype: str, item: Include) -> list[str]:
    if item.code == "*":
        return [c for c, p in params_for(rtype).items() if p.type == "reference"]
    return [item.code]


def _add(found: list[tuple[str, dict[str, Any]]], seen: set[str], rtype: str, doc: dict[str, Any]) -> None:
    key = f"{rtype}/{doc['_id']}"
    if key not in seen:
        seen.add(key)
        found.append((rtype, doc))


def _page_link(config: Config, base_url: str, path: str, query: SearchQuery, position: dict[str, Any]) -> str:
    return _url(base_url, path, [*query.kept, ("_cursor", encode_cursor(config.secret, position))])


def _url(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    return f"{base_url}/{path}" + (f"?{urlencode(params)}" if params else "")
