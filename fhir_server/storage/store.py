"""Versioned resource storage on the MongoDB wire protocol (MongoDB, or FerretDB locally).

Layout (https://hl7.org/fhir/R4/http.html#versioning):
- one collection per resource type holds the current version: ``{_id: id, v, ts, d (deleted), json}``;
- the ``history`` collection holds every version ever written, append-only except for ``until`` (when
  the version was superseded, for ``_history?_at``): ``{_id: "Type/id/v", t, i, v, ts, m, json, until}``.

``json`` is the exact FHIR JSON served to clients (orjson bytes, zlib-compressed when large), so a read
never parses or re-serialises the resource.

A write claims its version by inserting ``Type/id/v`` into ``history`` (a unique ``_id``: the commit
point, atomic on any server), then moves the current document forward with a compare-and-swap on ``v``.
Two writers can never both claim a version, so no update is lost. A writer that dies between the two
steps leaves a committed version the current collection does not show yet; the next writer of that
resource rolls it forward (``_roll_forward``), so the state always converges to the history.
"""
from __future__ import annotations

import base64
import binascii
import random
from contextlib import ExitStack, contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from ..errors import Conflict, InvalidResource, PreconditionFailed, ServiceUnavailable
from ..resources.jsonio import base64_bytes, dumps
from ..resources.version import Version, instant
from ..search.compile import conjunction
from ..search.index import INDEX_FORMAT, column, unindexed
from ..search.registry import search_types
from . import transaction
from .blobs import Blobs
from .transaction import COMMITTED, DONE, Write

T = TypeVar("T")
COMMITTED_STATES = (COMMITTED, DONE)
CONSISTENT_ATTEMPTS = 20
LOCK_STALE_SECONDS = 30.0
# A Binary whose base64 data is longer is stored in chunks (storage/blobs.py), not in its document.
INLINE_BINARY_CHARS = 64 << 10
KEEP_APART_ANYWAY_CHARS = 8 << 20  # even a non-canonical base64 text: documents stay far below 16 MB

HISTORY = "history"
UPGRADE_PAGE = 500  # documents read at a time when re-indexing (Store.upgrade)
GENERATIONS = "generations"  # how many times the ``watched`` types changed (Store.generation)
HISTORY_INDEXES = {
    "t_1_i_1_v_-1": [("t", ASCENDING), ("i", ASCENDING), ("v", DESCENDING)],
    "t_1_ts_-1__id_-1": [("t", ASCENDING), ("ts", DESCENDING), ("_id", DESCENDING)],
    "ts_-1__id_-1": [("ts", DESCENDING), ("_id", DESCENDING)],
}
# Indexes on the current collections for the searches the DMP makes most (by patient, identifier,
# code, date); MongoDB uses them, FerretDB's SQLite backend scans (see README).
_PATIENT = ["compartments", column("patient", "r"), "ts"]


def _dates(code: str) -> list[str]:
    return [column(code, "lo"), column(code, "hi")]


SEARCH_INDEXES: dict[str, list[str]] = {
    "Patient": [column("identifier", "k"), column("family", "f"), column("name", "f"), *_dates("birthdate"),
                column("general-practitioner", "r")],
    "Practitioner": [column("identifier", "k")], "Organization": [column("identifier", "k")],
    "PractitionerRole": [column("practitioner", "r")],
    **{t: [*_PATIENT, column("code", "k"), *_dates("date")] for t in (
        "AllergyIntolerance", "Procedure", "Observation", "DiagnosticReport")},
    "Encounter": [*_PATIENT, column("type", "k"), *_dates("date")],
    "Condition": [*_PATIENT, column("code", "k"), *_dates("onset-date")],
    "MedicationStatement": [*_PATIENT, column("code", "k"), *_dates("effective")],
    "DocumentReference": [*_PATIENT, column("type", "k"), column("identifier", "k"), *_dates("date")],
    "List": [*_PATIENT, column("code", "k")], "Composition": [*_PATIENT, column("type", "k")],
    # the consent engine's lookups (guard.py): who authorised whom, care teams
    "Consent": [*_PATIENT, column("actor", "r")], "CareTeam": ["compartments", column("participant", "r")],
    "AuditEvent": [column("patient", "r"), "compartments", *_dates("date")],
    "ExplanationOfBenefit": [*_PATIENT, *_dates("created")],
}
# A version claimed in history but not yet in the current collection is given this long to land
# before another writer treats its writer as dead and rolls it forward.
ORPHAN_GRACE_SECONDS = 2.0
MAX_WRITE_ATTEMPTS = 200


def now() -> datetime:
    ts = datetime.now(UTC)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def _ceil_ms(ts: datetime) -> datetime:
    """Round up to the millisecond, the database's precision, so an exclusive bound stays exclusive."""
    extra = ts.microsecond % 1000
    return ts + timedelta(microseconds=1000 - extra) if extra else ts


def _unpack(doc: dict[str, Any]) -> bytes | None:
    data = doc.get("json")
    if data is None:
        return None
    return zlib.decompress(data) if doc.get("z") else bytes(data)


INSTANCE_LOOKUPS = 200  # versions of one resource read one by one before a history scan is cheaper
Indexer = Callable[[dict[str, Any]], dict[str, Any]]
Unique = Callable[[str, dict[str, Any]], list[str]]  # (type, resource) -> identifiers no other may hold


class Store:
    now = staticmethod(now)

    def __init__(self, db: Database[Any], compress_above: int = 8 << 10, indexer: Indexer | None = None,
                 unique: Unique | None = None, watched: frozenset[str] = frozenset()) -> None:
        self.db = db
        self.unique = unique
        self.watched = watched
        self.history = db[HISTORY]
        self.compress_above = compress_above
        self.indexer = indexer
        self.blobs = Blobs(db)
        self._secondary: bool | None = None
        self.transaction_timeout = 30.0  # seconds a pending transaction may take before recovery rolls it back

    # -- set-up ---------------------------------------------------------------------------------

    @property
    def secondary_indexes(self) -> bool:
        """False on FerretDB's SQLite backend: it serves only ``_id`` equality from an index (its explain
        shows a SCAN for every other filter), so other indexes would cost every write and serve no read."""
        if self._secondary is None:
            self._secondary = "ferretdbVersion" not in self.db.client.server_info()
        return self._secondary

    def ensure_indexes(self) -> None:
        if not self.secondary_indexes:
            return
        for name, keys in HISTORY_INDEXES.items():
            self.history.create_index(keys, name=name)
        for rtype, fields in SEARCH_INDEXES.items():
            for field in fields:
                self.db[rtype].create_index([(field, ASCENDING)], name=field)

    def indexes_ready(self) -> bool:
        if not self.secondary_indexes:
            return True
        present = {index["name"] for index in self.history.list_indexes()}
        return set(HISTORY_INDEXES) <= present

    # -- reads ----------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str) -> Version | None:
        """The current version (possibly a deletion), or None if the resource never existed."""
        doc = self.db[rtype].find_one({"_id": rid})
        if doc is not None and "tx" in doc and transaction.state(self, doc["tx"]) in COMMITTED_STATES:
            entry = self.history.find_one({"_id": f"{rtype}/{rid}/{doc['v'] + 1}"})
            if entry is not None:  # committed, not rolled forward yet: the new version is the one
                return self._history_version(entry)
        if doc is None or doc["v"] == 0:  # v 0: the placeholder of a resource a transaction creates
            return None
        return Version(rtype, rid, doc["v"], doc["ts"], doc.get("d", False), _unpack(doc),
                       compartments=tuple(doc.get("compartments") or ()), by=tuple(doc.get("by") or ()),
                       blob=doc.get("blob"))

    def vread(self, rtype: str, rid: str, version: int) -> Version | None:
        doc = self.history.find_one({"_id": f"{rtype}/{rid}/{version}"})
        if doc is not None and "tx" in doc and transaction.state(self, doc["tx"]) not in COMMITTED_STATES:
            return None  # claimed by a transaction that has not committed
        if doc is None:  # an appended record (``append``) has its only version in the current collection
            current = self.read(rtype, rid)
            return current if current is not None and current.version == version else None
        return self._history_version(doc)

    @staticmethod
    def _history_version(doc: dict[str, Any]) -> Version:
        compartments = tuple(doc["c"]) if "c" in doc else None
        return Version(doc["t"], doc["i"], doc["v"], doc["ts"], doc["m"] == "DELETE", _unpack(doc), doc["m"],
                       compartments, tuple(doc.get("by") or ()), doc.get("blob"))

    def history_page(self, query: dict[str, Any], count: int, after: tuple[Any, ...] | None
                     ) -> tuple[list[Version], tuple[Any, ...] | None]:
        """One page of history, newest first: ``count`` versions after the keyset ``after``.

        Returns the versions and the keyset of the next page (None on the last page).
        Instance history orders by version; type and system history by time, then ``_id``.
        """
        if "i" in query:
            return self._instance_page(query, count, after)
        if after is not None:
            ts, last_id = datetime.fromisoformat(after[0]), after[1]
            query = conjunction(query, {"$or": [{"ts": {"$lt": ts}}, {"ts": ts, "_id": {"$lt": last_id}}]})
        docs = list(self.history.find(query, sort=[("ts", DESCENDING), ("_id", DESCENDING)], limit=count + 1))
        versions = [self._history_version(d) for d in docs[:count]]
        if len(docs) <= count:
            return versions, None
        last = docs[count - 1]
        return versions, (last["ts"].isoformat(), last["_id"])

    def _instance_page(self, query: dict[str, Any], count: int, after: tuple[Any, ...] | None
                       ) -> tuple[list[Version], tuple[Any, ...] | None]:
        """Instance history version by version, newest first, each found by ``_id`` equality (with the
        rest of ``query`` applied to it): the one lookup FerretDB serves from its index, where any other
        query on ``history`` scans every resource's versions."""
        rtype, rid = query["t"], query["i"]
        if after is not None:
            newest = int(after[0]) - 1
        else:
            current = self.db[rtype].find_one({"_id": rid}, {"v": 1})
            newest = current["v"] if current else 0
            while self.history.find_one({"_id": f"{rtype}/{rid}/{newest + 1}"}, {"_id": 1}):
                newest += 1  # committed by a transaction, not yet rolled forward into the current document
        docs: list[dict[str, Any]] = []
        for v in range(newest, max(newest - INSTANCE_LOOKUPS, 0), -1):
            doc = self.history.find_one(conjunction({"_id": f"{rtype}/{rid}/{v}"}, query))
            if doc is not None:
                docs.append(doc)
                if len(docs) > count:
                    break
        else:
            if newest > INSTANCE_LOOKUPS:  # a long history filtered by _since / _at: one scan
                older = conjunction(query, {"v": {"$lte": newest - INSTANCE_LOOKUPS}})
                docs += self.history.find(older, sort=[("v", DESCENDING)], limit=count + 1 - len(docs))
        versions = [self._history_version(d) for d in docs[:count]]
        return versions, ((docs[count - 1]["v"],) if len(docs) > count else None)

    def history_total(self, query: dict[str, Any]) -> int:
        return self.history.count_documents(query)

    @staticmethod
    def history_query(rtype: str | None = None, rid: str | None = None, since: datetime | None = None,
                      at: tuple[datetime, datetime] | None = None, access: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        """The filter for ``_history`` at system, type or instance level with ``_since`` / ``_at``,
        and the caller's ``access`` clause over history entries (``t``, ``c`` compartments, ``by``)."""
        query: dict[str, Any] = {"tx": {"$exists": False}}  # not versions of uncommitted transactions
        if rtype:
            query["t"] = rtype
        if rid:
            query["i"] = rid
        clauses: list[dict[str, Any]] = [access] if access else []
        if since:
            clauses.append({"ts": {"$gte": since}})
        if at:
            start, end = at
            end = _ceil_ms(end)
            # current at some point of [start, end): written before its end, superseded after its start
            clauses += [{"ts": {"$lt": end}}, {"$or": [{"until": None}, {"until": {"$gt": start}}]}]
        return conjunction(query, *clauses)

    def find_current(self, rtype: str, query: dict[str, Any], projection: dict[str, int]
                     ) -> Iterator[dict[str, Any]]:
        """Current, undeleted documents of a type matching ``query`` (only the ``projection`` fields)."""
        yield from self.db[rtype].find(conjunction({"d": False}, query), projection)

    def current_by_ids(self, rtype: str, ids: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The current, undeleted resources with these ids, parsed. A few ids are fetched one by one:
        every MongoDB-compatible server serves ``_id`` equality from its index (FerretDB scans ``$in``)."""
        if len(ids) > 20:
            yield from self.current_resources(rtype, {"_id": {"$in": list(ids)}})
            return
        for rid in ids:
            doc = self.db[rtype].find_one({"_id": rid}, {"json": 1, "z": 1, "d": 1})
            body = _unpack(doc) if doc is not None and not doc.get("d") else None
            if body is not None:
                yield orjson.loads(body)

    def current_resources(self, rtype: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The current, undeleted resources of a type matching ``query``, parsed."""
        for doc in self.find_current(rtype, query, {"json": 1, "z": 1}):
            body = _unpack(doc)
            if body is not None:
                yield orjson.loads(body)

    # -- writes ---------------------------------------------------------------------------------

    def create(self, rtype: str, resource: dict[str, Any], by: Sequence[str] = ()) -> Version:
        """Store a new resource under a server-assigned id. ``by``: who writes ("client/<id>", fhirUser)."""
        rid = str(uuid.uuid4())
        version, _ = self._write(rtype, rid, resource, if_match=None, method="POST", by=by)
        return version

    def update(self, rtype: str, rid: str, resource: dict[str, Any], if_match: int | None = None,
               by: Sequence[str] = ()) -> tuple[Version, bool]:
        """Store a new version (or the first one: update as create). Returns it and whether it created."""
        return self._write(rtype, rid, resource, if_match=if_match, method="PUT", by=by)

    def delete(self, rtype: str, rid: str, if_match: int | None = None, by: Sequence[str] = ()) -> Version | None:
        """Logically delete; None when there was nothing to delete (missing or already deleted)."""
        current = self.read(rtype, rid)
        if current is None or current.deleted:
            if if_match is not None:
                raise PreconditionFailed(f"{rtype}/{rid} has no current version {if_match}")
            return None
        version, _ = self._write(rtype, rid, None, if_match=if_match, method="DELETE", by=by)
        return version

    def _write(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, if_match: int | None,
               method: str, by: Sequence[str] = ()) -> tuple[Version, bool]:
        with self.claiming([(rtype, rid, resource)]):
            written = self._write_version(rtype, rid, resource, if_match=if_match, method=method, by=by)
        self._changed([rtype])
        return written

    def _write_version(self, rtype: str, rid: str, resource: dict[str, Any] | None, *, if_match: int | None,
                       method: str, by: Sequence[str]) -> tuple[Version, bool]:
        current_coll = self.db[rtype]
        search = self.search_of(rtype, rid, resource)
        for attempt in range(MAX_WRITE_ATTEMPTS):
            # a create's id is new: nothing to read (a clash would surface as a duplicate version)
            current = None if method == "POST" else current_coll.find_one({"_id": rid},
                                                                           {"v": 1, "d": 1, "compartments": 1})
            base = current["v"] if current else 0
            if resource is None:  # a deletion stays in the compartments of what it deleted
                search = {"compartments": (current or {}).get("compartments") or []}
            if if_match is not None and (current is None or current.get("d") or base != if_match):
                raise PreconditionFailed(f"{rtype}/{rid} is not at version {if_match}")
            entry = self.history_entry(rtype, rid, base + 1, now(), method, resource, search, by)
            try:
                self.history.insert_one(entry)  # the commit point
            except DuplicateKeyError:
                if if_match is not None:
                    raise PreconditionFailed(f"{rtype}/{rid} was updated concurrently") from None
                self.wait_for_claim(rtype, rid, base, attempt)
                continue
            self.advance_current(rtype, rid, base, entry, search)
            if base:  # by _id, the one lookup every MongoDB-compatible server serves from an index
                self.history.update_one({"_id": f"{rtype}/{rid}/{base}"}, {"$set": {"until": entry["ts"]}})
            created = current is None or bool(current.get("d"))
            return self.version_of(entry), created
        raise Conflict(f"{rtype}/{rid}: too many concurrent writers, try again")

    def commit(self, writes: Sequence[Write], by: Sequence[str] = ()) -> list[Version]:
        """Store all of ``writes`` or none of them, and no reader ever sees part of them
        (storage/transaction.py)."""
        with self.claiming([(w.type, w.id, w.resource) for w in writes]):
            versions = transaction.commit(self, writes, by, self.transaction_timeout)
        self._changed([w.type for w in writes])
        return versions

    def generation(self) -> int:
        """How many times resources of the ``watched`` types changed. Each worker may keep what it
        learnt from them (the consent facts, guard.py) while this number stays the same: a write
        counts once its new version is visible, before it is acknowledged."""
        doc = self.db[GENERATIONS].find_one({"_id": "watched"})
        return int(doc["n"]) if doc else 0

    def _changed(self, rtypes: Iterable[str]) -> None:
        if self.watched.intersection(rtypes):
            self.db[GENERATIONS].update_one({"_id": "watched"}, {"$inc": {"n": 1}}, upsert=True)

    @contextmanager
    def claiming(self, writes: Sequence[tuple[str, str, dict[str, Any] | None]]) -> Iterator[None]:
        """Writes that give a resource an identifier no other may hold (``unique``: a Patient's INS)
        take turns on it; one that another current resource holds already is a 409 (Conflict)."""
        claims: dict[tuple[str, str], str] = {}
        for rtype, rid, resource in writes:
            for key in self.unique(rtype, resource) if self.unique and resource is not None else ():
                holder = claims.setdefault((rtype, key), rid)
                if holder != rid:
                    raise Conflict(f"{rtype}/{holder} and {rtype}/{rid} would both hold the identifier {key}")
        with ExitStack() as held:
            for rtype, key in sorted(claims):  # one order for every writer: no deadlock
                held.enter_context(self.lock(f"identifier|{rtype}|{key}"))
            for (rtype, key), rid in claims.items():
                for doc in self.find_current(rtype, {column("identifier", "k"): key, "_id": {"$ne": rid}},
                                             {"json": 1, "z": 1}):
                    body = _unpack(doc)  # the index has the identifier; is it one in force there?
                    if body is not None and self.unique and key in self.unique(rtype, orjson.loads(body)):
                        raise Conflict(f"the identifier {key} is {rtype}/{doc['_id']}'s already")
            yield

    def consistent(self, run: Callable[[], T]) -> T:
        """``run`` (a search) on a state no transaction is half-way through: run again when one
        committed meanwhile."""
        for attempt in range(CONSISTENT_ATTEMPTS):
            seen = transaction.settled(self)
            result = run()
            if not transaction.committed_since(self, seen):
                return result
            time.sleep(random.uniform(0.001, 0.005) * (attempt + 1))
        raise ServiceUnavailable("transactions keep committing under this search; try again")

    def recover(self) -> int:
        acted = transaction.recover(self, self.transaction_timeout)
        if acted:  # what it rolled forward or back may be of the watched types
            self._changed(self.watched)
        return acted

    def upgrade(self) -> int:
        """Re-index every current document when the database's search columns are of an earlier format
        than INDEX_FORMAT (format 1: nested per parameter, sort keys under ``sortkey``), and drop the
        indexes on paths that format no longer has; once per database, by one worker while the others
        wait."""
        def current() -> bool:
            return (self.db[GENERATIONS].find_one({"_id": "format"}) or {}).get("v", 0) >= INDEX_FORMAT

        if current() or self.indexer is None:
            return 0
        with self.lock("upgrade-index-format", wait=3600.0):  # the other workers wait for the one upgrading
            if current():
                return 0
            for rtype in sorted(set(self.db.list_collection_names()) & set(search_types())):
                for old in ({i["name"] for i in self.db[rtype].list_indexes()} if self.secondary_indexes else ()):
                    if old.startswith(("search.", "sortkey.")) and old not in SEARCH_INDEXES.get(rtype, ()):
                        self.db[rtype].drop_index(old)  # on a path of the earlier format: serves nothing
            done = self.reindex()
            self.db[GENERATIONS].update_one({"_id": "format"}, {"$set": {"v": INDEX_FORMAT}}, upsert=True)
        return done

    def reindex(self, rtypes: Iterable[str] = ()) -> int:
        """Recompute, from its JSON, what is stored for search beside every current document of
        ``rtypes`` (every type by default): after a search parameter was added or changed. Online: a
        document a writer moved on meanwhile keeps the columns its writer computed."""
        done = 0
        for rtype in sorted(set(self.db.list_collection_names()) & set(rtypes or search_types())):
            last = None
            while page := list(self.db[rtype].find({} if last is None else {"_id": {"$gt": last}},
                                                   {"v": 1, "json": 1, "z": 1}, sort=[("_id", 1)], limit=UPGRADE_PAGE)):
                for doc in page:
                    body = _unpack(doc)
                    fresh = self.search_of(rtype, doc["_id"], orjson.loads(body)) if body is not None else {}
                    change = {"$unset": {"sortkey": ""},
                              "$set": {**unindexed(), **fresh}}
                    done += self.db[rtype].update_one({"_id": doc["_id"], "v": doc["v"]}, change).matched_count
                last = page[-1]["_id"]
            self._changed([rtype])  # the compartments may have moved: the consent facts are learnt again
        return done

    def search_of(self, rtype: str, rid: str, resource: dict[str, Any] | None) -> dict[str, Any]:
        """The search index stored beside a version (search/index.py)."""
        return self.indexer({**resource, "id": rid}) if resource is not None and self.indexer else {}

    def search_of_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        body = _unpack(entry)
        return self.indexer(orjson.loads(body)) if body is not None and self.indexer else \
            {"compartments": entry.get("c") or []}

    def history_entry(self, rtype: str, rid: str, version: int, ts: datetime, method: str,
                      resource: dict[str, Any] | None, search: dict[str, Any], by: Sequence[str],
                      txid: str | None = None) -> dict[str, Any]:
        blob = None
        if rtype == "Binary" and resource is not None and len(resource.get("data") or "") > INLINE_BINARY_CHARS:
            blob, resource = self._keep_apart(resource) or (None, resource)
        body = None if resource is None else self._stamp(resource, rid, version, ts)
        entry = {"_id": f"{rtype}/{rid}/{version}", "t": rtype, "i": rid, "v": version, "ts": ts, "m": method,
                 "c": search.get("compartments") or [], "by": list(by), **self._pack(body)}
        if blob:
            entry["blob"] = blob
        if txid:
            entry["tx"] = txid
        return entry

    def _keep_apart(self, binary: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Large document bytes go to the blob store (before the version that names them). Their
        base64 is given back in its canonical form, so a text with line breaks stays in its document
        (served as sent) unless it is too large for one."""
        try:
            data = base64_bytes(binary["data"])
        except (binascii.Error, TypeError, ValueError):
            raise InvalidResource("Binary.data is not valid base64") from None
        if len(binary["data"]) < KEEP_APART_ANYWAY_CHARS and base64.b64encode(data).decode("ascii") != binary["data"]:
            return None
        sha, _ = self.blobs.put(data)
        return sha, {k: v for k, v in binary.items() if k != "data"}

    def binary_json(self, version: Version) -> bytes | None:
        """A Binary as FHIR JSON, its data put back from the blob store."""
        if version.blob is None or version.json is None:
            return version.json
        resource = orjson.loads(version.json)
        resource["data"] = base64.b64encode(self.blobs.read(version.blob)).decode("ascii")
        return dumps(resource)

    def version_of(self, entry: dict[str, Any]) -> Version:
        return self._history_version(entry)

    def first(self, key: str) -> bool:
        """True for the one caller that marks ``key`` first (a unique insert into ``markers``)."""
        try:
            self.db["markers"].insert_one({"_id": key, "ts": now()})
            return True
        except DuplicateKeyError:
            return False

    def forget(self, key: str) -> None:
        self.db["markers"].delete_one({"_id": key})

    @contextmanager
    def lock(self, key: str, wait: float = 10.0) -> Iterator[None]:
        """Hold ``key`` against every other worker and host (a marker): conditional creates with the
        same criteria take turns, so only the first creates. A holder that died loses it after
        ``LOCK_STALE_SECONDS``."""
        marker, deadline = f"lock|{key}", time.monotonic() + wait
        while not self.first(marker):
            held = self.db["markers"].find_one({"_id": marker})
            if held is not None and (now() - held["ts"]).total_seconds() > LOCK_STALE_SECONDS:
                self.db["markers"].delete_one({"_id": marker, "ts": held["ts"]})
            elif time.monotonic() > deadline:
                raise Conflict(f"busy: another request holds {key}; try again")
            else:
                time.sleep(random.uniform(0.002, 0.01))
        try:
            yield
        finally:
            self.forget(marker)

    def append(self, rtype: str, resources: list[dict[str, Any]], by: Sequence[str] = ()) -> list[Version]:
        """Store new records that are never changed (AuditEvents, notices): one bulk insert into the
        current collection, which holds their only version (``vread`` finds it there); they stay out
        of the ``history`` feed, which they would otherwise swamp."""
        if not resources:
            return []
        ts = now()
        docs, versions = [], []
        for resource in resources:
            rid = str(uuid.uuid4())
            body = self._stamp(resource, rid, 1, ts)
            search = self.indexer({**resource, "id": rid}) if self.indexer else {}
            docs.append({"_id": rid, "v": 1, "ts": ts, "d": False, "by": list(by), **unindexed(), **search,
                         **self._pack(body)})
            versions.append(Version(rtype, rid, 1, ts, False, body, "POST", tuple(docs[-1]["compartments"]),
                                    tuple(by)))
        if len(docs) == 1:
            self.db[rtype].insert_one(docs[0])  # a third less client CPU than a bulk of one
        else:
            self.db[rtype].insert_many(docs, ordered=True)  # one write: all of them or, on failure, none acknowledged
        return versions

    def _stamp(self, resource: dict[str, Any], rid: str, version: int, ts: datetime) -> bytes:
        """The server owns id, meta.versionId and meta.lastUpdated."""
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant(ts)
        stamped = {"resourceType": resource["resourceType"], "id": rid, "meta": meta}
        stamped.update((k, v) for k, v in resource.items() if k not in stamped)
        return dumps(stamped)

    def _pack(self, body: bytes | None) -> dict[str, Any]:
        if body is None:
            return {"json": None}
        if len(body) > self.compress_above:
            return {"json": zlib.compress(body, 1), "z": True}
        return {"json": body}

    def advance_current(self, rtype: str, rid: str, base: int, entry: dict[str, Any],
                         search: dict[str, Any]) -> None:
        """Compare-and-swap the current document from ``base`` to the version in ``entry``, with the
        search index of that version (search/index.py) beside it."""
        coll = self.db[rtype]
        doc = {"v": entry["v"], "ts": entry["ts"], "d": entry["m"] == "DELETE", "json": entry["json"],
               "by": entry.get("by") or [], **unindexed(), **search}
        for flag in ("z", "blob"):
            if entry.get(flag):
                doc[flag] = entry[flag]
        unset = {"tx": "", **{flag: "" for flag in ("z", "blob") if flag not in doc}}
        change: dict[str, Any] = {"$set": doc, "$unset": unset}
        try:  # a first version replaces a transaction's placeholder (v 0), if there is one
            coll.update_one({"_id": rid, "v": base}, change, upsert=base == 0)
        except DuplicateKeyError:
            pass  # another writer rolled our committed version forward already

    def wait_for_claim(self, rtype: str, rid: str, base: int, attempt: int) -> None:
        """Version ``base + 1`` is claimed: wait for its writer, or finish its work if it died."""
        claimed = self.history.find_one({"_id": f"{rtype}/{rid}/{base + 1}"})
        if claimed is None:
            return
        if "tx" in claimed:
            transaction.resolve(self, claimed, self.transaction_timeout, attempt)
            return
        current = self.db[rtype].find_one({"_id": rid}, {"v": 1})
        if (current["v"] if current else 0) > base:
            return  # it landed meanwhile
        age = (now() - claimed["ts"]).total_seconds()
        if age > ORPHAN_GRACE_SECONDS:
            self.advance_current(rtype, rid, base, claimed, self.search_of_entry(claimed))
            return
        time.sleep(random.uniform(0.001, 0.004) * min(attempt + 1, 10))
