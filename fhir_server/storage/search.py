"""Running compiled searches: pages by keyset, exact counts, chains, includes.

The compiled filter is exact except for ranged parameters holding several entries (see
search/index.py); such candidates are confirmed one by one with ``search.match`` before they count.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ..errors import BadRequest
from ..search.compile import Compiled, Compiler, Filter, keyset_filter
from ..search.match import matches
from ..search.parse import Clause, SearchQuery
from .store import Store

MAX_CHAIN_IDS = 10_000  # a chain or _has matching more than this is refused as too broad
BATCH = 200


def _field(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _resource(doc: dict[str, Any]) -> dict[str, Any]:
    data = zlib.decompress(doc["json"]) if doc.get("z") else doc["json"]
    resource: dict[str, Any] = orjson.loads(data)
    return resource


Narrow = Callable[[str, str], Filter | None]  # (type, SMART letters) -> the access clause, None for none


class Searcher:
    """Runs searches for one request. ``narrow`` is the request's access clause per type
    (auth/access.py), ANDed into every query it makes: matches, chains, ``_has`` and includes."""

    def __init__(self, store: Store, base_url: str, narrow: Narrow | None = None) -> None:
        self.store = store
        self.base_url = base_url
        self.narrow: Narrow = narrow or (lambda rtype, letters: None)
        self.compiler = Compiler(base_url, self._resolve, self._referrers)

    def _visible(self, rtype: str, letters: str, *conditions: Filter) -> Filter:
        access = self.narrow(rtype, letters)
        return {"$and": [{"d": False}, *conditions, *([access] if access else [])]}

    # -- chains and _has --------------------------------------------------------------------------

    def _clause_filter(self, rtype: str, clause: Clause) -> Filter:
        return self._visible(rtype, "rs", self.compiler.clause(rtype, clause))

    def _resolve(self, rtype: str, clause: Clause) -> list[str]:
        docs = self.store.db[rtype].find(self._clause_filter(rtype, clause), {"_id": 1}, limit=MAX_CHAIN_IDS + 1)
        ids = [d["_id"] for d in docs]
        if len(ids) > MAX_CHAIN_IDS:
            raise BadRequest("the chained search matches too many resources: narrow it")
        return ids

    def _referrers(self, rtype: str, clause: Clause, code: str, target: str) -> list[str]:
        docs = self.store.db[rtype].find(self._clause_filter(rtype, clause), {f"search.{code}.r": 1},
                                         limit=MAX_CHAIN_IDS + 1)
        ids: set[str] = set()
        for doc in docs:
            for ref in _field(doc, f"search.{code}.r") or ():
                if isinstance(ref, str) and ref.startswith(target + "/"):
                    ids.add(ref.split("/", 1)[1])
        return sorted(ids)

    # -- matches ----------------------------------------------------------------------------------

    def compile(self, rtype: str, query: SearchQuery, extra: list[Filter] | None = None) -> Compiled:
        access = self.narrow(rtype, "s")
        return self.compiler.compile(rtype, query, [*(extra or []), *([access] if access else [])])

    def _confirmed(self, rtype: str, compiled: Compiled, query: SearchQuery, doc: dict[str, Any]) -> bool:
        multi = [c for c in compiled.checked if _field(doc, f"search.{c}.n")]
        if not multi:
            return True
        return matches(query, _resource(doc), doc["ts"], base_url=self.base_url, codes=frozenset(multi))

    def _projection(self, compiled: Compiled, include_codes: set[str]) -> dict[str, int]:
        projection = {"json": 1, "z": 1, "v": 1, "ts": 1, "compartments": 1}
        for field, _ in compiled.sort:
            projection[field] = 1
        for code in compiled.checked:
            projection[f"search.{code}.n"] = 1
        for code in include_codes:
            projection[f"search.{code}.r"] = 1
        return projection

    def page(self, rtype: str, compiled: Compiled, query: SearchQuery, count: int, after: list[Any] | None,
             reverse: bool, include_codes: set[str]) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``count`` matching documents after (or, ``reverse``, before) the keyset ``after``,
        and whether more exist beyond them."""
        condition = compiled.filter
        if after is not None:
            condition = {"$and": [condition, keyset_filter(compiled.sort, after, reverse)]}
        sort = [(f, -d if reverse else d) for f, d in compiled.sort]
        found: list[dict[str, Any]] = []
        cursor = self.store.db[rtype].find(condition, self._projection(compiled, include_codes), sort=sort,
                                           batch_size=min(BATCH, count + 1))
        if not compiled.checked:
            cursor = cursor.limit(count + 1)
        for doc in cursor:
            if self._confirmed(rtype, compiled, query, doc):
                found.append(doc)
                if len(found) > count:
                    break
        cursor.close()
        more = len(found) > count
        found = found[:count]
        return (found[::-1] if reverse else found), more

    def exists(self, rtype: str, compiled: Compiled) -> bool:
        return self.store.db[rtype].find_one(compiled.filter, {"_id": 1}) is not None

    def keyset(self, compiled: Compiled, doc: dict[str, Any]) -> list[Any]:
        return [_field(doc, field) for field, _ in compiled.sort]

    def count(self, rtype: str, compiled: Compiled, query: SearchQuery) -> int:
        if not compiled.checked:
            return self.store.db[rtype].count_documents(compiled.filter)
        single = {f"search.{c}.n": {"$exists": False} for c in compiled.checked}
        total = self.store.db[rtype].count_documents({"$and": [compiled.filter, single]})
        multi = {"$or": [{f"search.{c}.n": {"$exists": True}} for c in compiled.checked]}
        for doc in self.store.db[rtype].find({"$and": [compiled.filter, multi]}, self._projection(compiled, set())):
            total += self._confirmed(rtype, compiled, query, doc)
        return total

    # -- _include / _revinclude ---------------------------------------------------------------------

    def fetch(self, rtype: str, ids: list[str], codes: set[str]) -> Iterator[dict[str, Any]]:
        projection = {"json": 1, "z": 1, "v": 1, "ts": 1, "compartments": 1, **{f"search.{c}.r": 1 for c in codes}}
        yield from self.store.db[rtype].find(self._visible(rtype, "rs", {"_id": {"$in": ids}}), projection)

    def referring(self, rtype: str, code: str, refs: list[str], codes: set[str], limit: int
                  ) -> Iterator[dict[str, Any]]:
        projection = {"json": 1, "z": 1, "v": 1, "ts": 1, "compartments": 1, **{f"search.{c}.r": 1 for c in codes}}
        yield from self.store.db[rtype].find(self._visible(rtype, "rs", {f"search.{code}.r": {"$in": refs}}),
                                             projection, limit=limit)


def references(doc: dict[str, Any], code: str) -> list[str]:
    return [r for r in _field(doc, f"search.{code}.r") or () if isinstance(r, str) and r.count("/") == 1]


def stored_json(doc: dict[str, Any]) -> bytes:
    return zlib.decompress(doc["json"]) if doc.get("z") else bytes(doc["json"])
