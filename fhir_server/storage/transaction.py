"""Atomic writes of several resources without multi-document transactions (ARCHITECTURE.md, "Atomic
bundles"): a commit record, as in Percolator, that works on FerretDB and on any MongoDB.

The record ``{_id: txid, state, ts, writes: [{t, i, v}]}`` in ``transactions`` arbitrates:

1. prepare: the record (``pending``); each new version claimed in ``history`` tagged ``tx`` (the unique
   ``Type/id/version`` key stops every other writer); each current document tagged ``tx`` (a new
   resource gets an invisible placeholder, ``v: 0``). Readers still see the previous versions.
2. commit: one single-document update of the record to ``committed``, the atomic point.
3. roll forward: each current document moves to its new version and loses its tag, history entries lose
   theirs, the record becomes ``done`` (deleted by the sweep a while later).

A reader meeting a tag asks the record: committed, the new version; otherwise the previous one. A search
runs between two looks at the records (``Store.consistent``) and runs again if a transaction committed
meanwhile, so it never sees part of one. Recovery rolls a stale ``pending`` record back and finishes a
``committed`` one; the record's state is changed only by compare-and-swap, so a slow owner and the
recovery can never both win.
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from ..errors import Conflict, PreconditionFailed, ServiceUnavailable
from ..resources.version import Version
from ..search.index import unindexed

if TYPE_CHECKING:
    from .store import Store

TRANSACTIONS = "transactions"
PENDING, COMMITTED, DONE, ABORTED = "pending", "committed", "done", "aborted"
MAX_ATTEMPTS = 50
DONE_KEPT = timedelta(seconds=60)  # longer than any search, and than the clock skew between hosts
# Operations per bulk write. FerretDB 1.24 keeps every statement's cursor of an update
# command open until the command ends (a ``defer`` in a loop, handler/msg_update.go) and its SQLite
# pool has 100 connections: a command of about 100 updates that match waits forever for a connection,
# and the whole database with it (tests/storage/test_transaction_faults.py met it: 50 updates and 50
# new resources roll forward with 100 history updates). MongoDB does not care.
BULK_BATCH = 50


@dataclass(frozen=True)
class Write:
    """One resource's change in a transaction: a new version, or a deletion (``resource`` None)."""

    type: str
    id: str
    resource: dict[str, Any] | None
    method: str  # POST, PUT (PATCH stores as PUT) or DELETE
    if_match: int | None = None


def commit(store: Store, writes: Sequence[Write], by: Sequence[str], timeout: float) -> list[Version]:
    """Store every write or none of them; the versions, in the order of ``writes``."""
    searches = [store.search_of(w.type, w.id, w.resource) for w in writes]
    for attempt in range(MAX_ATTEMPTS):
        txid = uuid.uuid4().hex
        ts = store.now()
        bases = [_base(store, w) for w in writes]
        entries = []
        for w, base, search in zip(writes, bases, searches):
            if w.if_match is not None and (base is None or base.get("d") or base["v"] != w.if_match):
                raise PreconditionFailed(f"{w.type}/{w.id} is not at version {w.if_match}")
            v = (base or {}).get("v", 0) + 1
            if w.resource is None:  # a deletion stays in the compartments of what it deleted
                search = {"compartments": (base or {}).get("compartments") or []}
            entries.append(store.history_entry(w.type, w.id, v, ts, w.method, w.resource, search, by, txid))
        record = {"_id": txid, "state": PENDING, "ts": ts,
                  "writes": [{"t": e["t"], "i": e["i"], "v": e["v"]} for e in entries]}
        store.db[TRANSACTIONS].insert_one(record)
        try:
            # sorted: two transactions claim in the same order, so one waits for the other, never both
            store.history.insert_many(sorted(entries, key=lambda e: e["_id"]), ordered=True)
        except BulkWriteError as failed:
            abort(store, record)
            if any(w.if_match is not None for w in writes):
                raise PreconditionFailed("a resource of the transaction was updated concurrently") from None
            taken = failed.details["writeErrors"][0]["op"]
            store.wait_for_claim(taken["t"], taken["i"], taken["v"] - 1, attempt)
            continue
        try:
            _tag(store, txid, entries)
        except Exception:
            abort(store, record)
            raise
        done = store.db[TRANSACTIONS].update_one({"_id": txid, "state": PENDING}, {"$set": {"state": COMMITTED}})
        if done.modified_count != 1:
            raise ServiceUnavailable("the transaction took too long and was rolled back; try again")
        roll_forward(store, record, entries, searches)
        return [store.version_of(e) for e in entries]
    raise Conflict("too many concurrent writers on the transaction's resources, try again")


def _base(store: Store, w: Write) -> dict[str, Any] | None:
    if w.method == "POST":
        return None  # a new id: nothing to read
    return store.db[w.type].find_one({"_id": w.id}, {"v": 1, "d": 1, "compartments": 1})


def _tag(store: Store, txid: str, entries: list[dict[str, Any]]) -> None:
    """Mark the current documents: readers must now ask the record which version they see."""
    by_type: dict[str, list[UpdateOne]] = {}
    for e in entries:
        base = e["v"] - 1
        change: dict[str, Any] = {"$set": {"tx": txid}}
        if base == 0:  # an invisible placeholder until the commit
            change["$set"].update({"d": True, "json": None, "ts": e["ts"], **unindexed()})
        by_type.setdefault(e["t"], []).append(UpdateOne({"_id": e["i"], "v": base}, change, upsert=base == 0))
    for rtype, ops in by_type.items():
        _bulk(store.db[rtype], ops)


def roll_forward(store: Store, record: dict[str, Any], entries: list[dict[str, Any]] | None = None,
                 searches: list[dict[str, Any]] | None = None) -> None:
    """Move every current document of a committed transaction to its new version (idempotent: the
    owner, a reader that met it, or the sweep may all do it)."""
    if entries is None:
        ids = [f"{w['t']}/{w['i']}/{w['v']}" for w in record["writes"]]
        entries = [e for e in (store.history.find_one({"_id": i}) for i in ids) if e is not None]
    for n, entry in enumerate(entries):
        search = searches[n] if searches else store.search_of_entry(entry)
        store.advance_current(entry["t"], entry["i"], entry["v"] - 1, entry, search)
    history_ops = [UpdateOne({"_id": e["_id"]}, {"$unset": {"tx": ""}}) for e in entries]
    history_ops += [UpdateOne({"_id": f"{e['t']}/{e['i']}/{e['v'] - 1}"}, {"$set": {"until": e["ts"]}})
                    for e in entries if e["v"] > 1]
    _bulk(store.history, history_ops)
    store.db[TRANSACTIONS].update_one({"_id": record["_id"]}, {"$set": {"state": DONE, "done": store.now()}})


def _bulk(collection: Any, ops: list[UpdateOne]) -> None:
    """Unordered bulk updates, ``BULK_BATCH`` at a time (each step is idempotent: a crash between two
    batches leaves nothing the recovery does not finish or undo)."""
    for start in range(0, len(ops), BULK_BATCH):
        collection.bulk_write(ops[start:start + BULK_BATCH], ordered=False)


def abort(store: Store, record: dict[str, Any], force: bool = False) -> bool:
    """Roll a transaction back unless it committed; True when it is (now) rolled back. ``force``: its
    record is already gone."""
    txid = record["_id"]
    won = store.db[TRANSACTIONS].update_one({"_id": txid, "state": {"$in": [PENDING, ABORTED]}},
                                            {"$set": {"state": ABORTED}})
    if won.matched_count != 1 and not force:
        return False
    for w in record["writes"]:
        store.history.delete_one({"_id": f"{w['t']}/{w['i']}/{w['v']}", "tx": txid})
        if w["v"] == 1:
            store.db[w["t"]].delete_one({"_id": w["i"], "v": 0, "tx": txid})
        else:
            store.db[w["t"]].update_one({"_id": w["i"], "tx": txid}, {"$unset": {"tx": ""}})
    store.db[TRANSACTIONS].delete_one({"_id": txid})
    return True


def state(store: Store, txid: str) -> str:
    """A transaction's state; a record that is gone was rolled back (committed ones lose their tags
    before their record goes)."""
    record = store.db[TRANSACTIONS].find_one({"_id": txid}, {"state": 1})
    return record["state"] if record else ABORTED


def resolve(store: Store, claimed: dict[str, Any], timeout: float, attempt: int) -> None:
    """Another writer met a transaction's claim (a history entry tagged ``tx``): finish the transaction,
    roll it back if its owner is gone, or wait a little for it."""
    record = store.db[TRANSACTIONS].find_one({"_id": claimed["tx"]})
    if record is None:  # rolled back while its owner was still preparing: this claim survived
        abort(store, {"_id": claimed["tx"], "writes": [{k: claimed[k] for k in ("t", "i", "v")}]}, force=True)
    elif record["state"] in (COMMITTED, DONE):
        roll_forward(store, record)
    elif record["state"] == ABORTED or _stale(store, record, timeout):
        abort(store, record)
    else:
        time.sleep(random.uniform(0.002, 0.008) * min(attempt + 1, 10))


def _stale(store: Store, record: dict[str, Any], timeout: float) -> bool:
    return bool(record["state"] == PENDING and (store.now() - record["ts"]).total_seconds() > timeout)


def recover(store: Store, timeout: float) -> int:
    """The sweep (at start-up, then periodically): roll back stale pending transactions, finish
    committed ones, forget old done ones. Returns how many transactions it acted on."""
    acted = 0
    for record in store.db[TRANSACTIONS].find({"state": {"$in": [PENDING, COMMITTED, ABORTED]}}):
        if record["state"] == COMMITTED:
            roll_forward(store, record)
            acted += 1
        elif record["state"] == ABORTED or _stale(store, record, timeout):
            acted += abort(store, record)
    store.db[TRANSACTIONS].delete_many({"state": DONE, "done": {"$lt": store.now() - DONE_KEPT}})
    return acted


def settled(store: Store) -> set[str]:
    """Finish the transactions that are committed but not yet rolled forward; the ids of those that
    have committed lately (a search compares them before and after it runs)."""
    seen = set()
    for record in store.db[TRANSACTIONS].find({"state": {"$in": [COMMITTED, DONE]}}, {"state": 1, "writes": 1}):
        if record["state"] == COMMITTED:
            roll_forward(store, record)
        seen.add(record["_id"])
    return seen


def committed_since(store: Store, seen: set[str]) -> bool:
    ids = {r["_id"] for r in store.db[TRANSACTIONS].find({"state": {"$in": [COMMITTED, DONE]}}, {"_id": 1})}
    return bool(ids - seen)

