"""Running compiled searches: pages by keyset, exact counts, chains, includes.

The compiled filter is exact except for ranged parameters holding several entries (see
search/index.py); such candidates are confirmed one by one with ``search.match`` before they count.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import orjson

from ..errors import BadRequest
from ..search.compile import Compiled, Compiler, Filter, conjunction, keyset_filter
from ..search.index import column
from ..search.match import matches
from ..search.parse import Clause, SearchQuery
from .store import Store

ACCESS_FIELDS = {"json": 1, "z": 1, "compartments": 1, "by": 1}  # what a policy decides a document on
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


class Policy(Protocol):
    """What the request may see (fhir_server/guard.py): a clause ANDed into every query, a decision
    per stored document, and whether the clause alone is exact for a type (else counts check each)."""

    def clause(self, rtype: str, letters: str) -> Filter | None: ...

    def allows(self, rtype: str, letters: str, doc: dict[str, Any]) -> bool: ...

    def exact(self, rtype: str) -> bool: ...


class Everything:
    def clause(self, rtype: str, letters: str) -> Filter | None:
        return None

    def allows(self, rtype: str, letters: str, doc: dict[str, Any]) -> bool:
        return True

    def exact(self, rtype: str) -> bool:
        return True


class Searcher:
    """Runs searches for one request. Its ``policy``'s clause is ANDed into every query it makes
    (matches, chains, ``_has``, includes), and every document it returns is allowed by the policy:
    a page holds ``count`` permitted matches whenever there are that many."""

    def __init__(self, store: Store, base_url: str, policy: Policy | None = None) -> None:
        self.store = store
        self.base_url = base_url
        self.policy: Policy = policy or Everything()
        self.compiler = Compiler(base_url, self._resolve, self._referrers)

    def _visible(self, rtype: str, letters: str, *conditions: Filter) -> Filter:
        access = self.policy.clause(rtype, letters)
        return conjunction({"d": False}, *conditions, access)

    def _allowed(self, rtype: str, letters: str, docs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (d for d in docs if self.policy.allows(rtype, letters, d))

    def _decided(self, rtype: str, docs: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """Documents a chain or ``_has`` may use: the clause decides, unless it is not exact for the type
        (then the documents carry ACCESS_FIELDS and each is checked)."""
        return docs if self.policy.exact(rtype) else self._allowed(rtype, "rs", docs)

    # -- chains and _has --------------------------------------------------------------------------

    def _clause_filter(self, rtype: str, clause: Clause) -> Filter:
        return self._visible(rtype, "rs", self.compiler.clause(rtype, clause))

    def _resolve(self, rtype: str, clause: Clause) -> list[str]:
        projection = {"_id": 1} if self.policy.exact(rtype) else ACCESS_FIELDS
        docs = self.store.db[rtype].find(self._clause_filter(rtype, clause), projection, limit=MAX_CHAIN_IDS + 1)
        ids = [d["_id"] for d in self._decided(rtype, docs)]
        if len(ids) > MAX_CHAIN_IDS:
            raise BadRequest("the chained search matches too many resources: narrow it")
        return ids

    def _referrers(self, rtype: str, clause: Clause, code: str, target: str) -> list[str]:
        projection = {column(code, "r"): 1, **({} if self.policy.exact(rtype) else ACCESS_FIELDS)}
        docs = self.store.db[rtype].find(self._clause_filter(rtype, clause), projection, limit=MAX_CHAIN_IDS + 1)
        ids: set[str] = set()
        for doc in self._decided(rtype, docs):
            for ref in _field(doc, column(code, "r")) or ():
                if isinstance(ref, str) and ref.startswith(target + "/"):
                    ids.add(ref.split("/", 1)[1])
        return sorted(ids)

    # -- matches ----------------------------------------------------------------------------------

    def compile(self, rtype: str, query: SearchQuery, extra: list[Filter] | None = None) -> Compiled:
        access = self.policy.clause(rtype, "s")
        return self.compiler.compile(rtype, query, [*(extra or []), *([access] if access else [])])

    def _confirmed(self, rtype: str, compiled: Compiled, query: SearchQuery, doc: dict[str, Any]) -> bool:
        multi = [c for c in compiled.checked if _field(doc, column(c, "n"))]
        if not multi:
            return True
        return matches(query, _resource(doc), doc["ts"], base_url=self.base_url, codes=frozenset(multi))

    def _projection(self, compiled: Compiled, include_codes: set[str]) -> dict[str, int]:
        projection = {**ACCESS_FIELDS, "v": 1, "ts": 1}
        for field, _ in compiled.sort:
            projection[field] = 1
        for code in compiled.checked:
            projection[column(code, "n")] = 1
        for code in include_codes:
            projection[column(code, "r")] = 1
        return projection

    def page(self, rtype: str, compiled: Compiled, query: SearchQuery, count: int, after: list[Any] | None,
             reverse: bool, include_codes: set[str]) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``count`` matching documents after (or, ``reverse``, before) the keyset ``after``,
        and whether more exist beyond them."""
        condition = compiled.filter
        if after is not None:
            condition = conjunction(condition, keyset_filter(compiled.sort, after, reverse))
        sort = [(f, -d if reverse else d) for f, d in compiled.sort]
        found: list[dict[str, Any]] = []
        cursor = self.store.db[rtype].find(condition, self._projection(compiled, include_codes), sort=sort,
                                           batch_size=min(BATCH, count + 1))
        if not compiled.checked and self.policy.exact(rtype):
            cursor = cursor.limit(count + 1)
        for doc in cursor:
            if self._confirmed(rtype, compiled, query, doc) and self.policy.allows(rtype, "s", doc):
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
        if not self.policy.exact(rtype):
            docs = self.store.db[rtype].find(compiled.filter, self._projection(compiled, set()))
            return sum(1 for d in docs if self._confirmed(rtype, compiled, query, d)
                       and self.policy.allows(rtype, "s", d))
        if not compiled.checked:
            return self.store.db[rtype].count_documents(compiled.filter)
        single = {column(c, "n"): {"$exists": False} for c in compiled.checked}
        total = self.store.db[rtype].count_documents(conjunction(compiled.filter, single))
        multi = {"$or": [{column(c, "n"): {"$exists": True}} for c in compiled.checked]}
        for doc in self.store.db[rtype].find(conjunction(compiled.filter, multi), self._projection(compiled, set())):
            total += self._confirmed(rtype, compiled, query, doc)
        return total

    # -- _include / _revinclude ---------------------------------------------------------------------

    def fetch(self, rtype: str, ids: list[str], codes: set[str]) -> Iterator[dict[str, Any]]:
        projection = {**ACCESS_FIELDS, "v": 1, "ts": 1, **{column(c, "r"): 1 for c in codes}}
        if len(ids) > 20:
            docs: Iterable[dict[str, Any]] = self.store.db[rtype].find(
                self._visible(rtype, "rs", {"_id": {"$in": ids}}), projection)
        else:  # one by one, by top-level _id equality: the lookup every server serves from its index
            access = self.policy.clause(rtype, "rs")
            found = (self.store.db[rtype].find_one(conjunction({"_id": rid, "d": False}, access), projection)
                     for rid in ids)
            docs = (d for d in found if d is not None)
        yield from self._allowed(rtype, "rs", docs)

    def referring(self, rtype: str, code: str, refs: list[str], codes: set[str], limit: int
                  ) -> Iterator[dict[str, Any]]:
        projection = {**ACCESS_FIELDS, "v": 1, "ts": 1, **{column(c, "r"): 1 for c in codes}}
        docs = self.store.db[rtype].find(self._visible(rtype, "rs", {column(code, "r"): {"$in": refs}}),
                                         projection, limit=limit)
        yield from self._allowed(rtype, "rs", docs)


def references(doc: dict[str, Any], code: str) -> list[str]:
    return [r for r in _field(doc, column(code, "r")) or () if isinstance(r, str) and r.count("/") == 1]


def stored_json(doc: dict[str, Any]) -> bytes:
    return zlib.decompress(doc["json"]) if doc.get("z") else bytes(doc["json"])
