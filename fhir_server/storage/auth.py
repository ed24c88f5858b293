"""The authorization server's state, in the same database, so that any worker on any host serves any
request: clients, users, signing keys, authorization codes, refresh tokens, EHR launch contexts,
revoked access tokens and the client-assertion ``jti`` values already seen (replay protection).

Each kind is a collection of small documents keyed by ``_id``; short-lived ones carry ``expires`` (a
TTL index removes them on MongoDB; readers check it anyway)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

KINDS = ("clients", "users", "keys", "codes", "refresh", "launches", "revoked", "jti")
EXPIRING = ("codes", "refresh", "launches", "revoked", "jti")


class AuthStore:
    def __init__(self, db: Database[Any]) -> None:
        self.db = db

    def _coll(self, kind: str) -> Any:
        assert kind in KINDS, kind
        return self.db[f"auth_{kind}"]

    def ensure_indexes(self) -> None:
        for kind in EXPIRING:
            try:
                self._coll(kind).create_index([("expires", ASCENDING)], name="expires", expireAfterSeconds=0)
            except OperationFailure:
                self._coll(kind).create_index([("expires", ASCENDING)], name="expires")

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._coll(kind).find_one({"_id": key})
        if doc is not None and doc.get("expires") and doc["expires"] <= datetime.now(UTC):
            return None
        return doc

    def put(self, kind: str, doc: dict[str, Any]) -> None:
        """Insert or replace."""
        self._coll(kind).replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def claim(self, kind: str, doc: dict[str, Any]) -> bool:
        """Insert ``doc`` unless its ``_id`` exists: True for the one caller that wins."""
        try:
            self._coll(kind).insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def take(self, kind: str, key: str) -> dict[str, Any] | None:
        """Remove and return (single use: two concurrent takers never both get it)."""
        doc: dict[str, Any] | None = self._coll(kind).find_one_and_delete({"_id": key})
        if doc is not None and doc.get("expires") and doc["expires"] <= datetime.now(UTC):
            return None
        return doc

    def update(self, kind: str, key: str, changes: dict[str, Any]) -> None:
        self._coll(kind).update_one({"_id": key}, {"$set": changes})

    def find_one(self, kind: str, field: str, value: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._coll(kind).find_one({field: value})
        return doc

    def all(self, kind: str) -> list[dict[str, Any]]:
        return list(self._coll(kind).find({}, sort=[("_id", ASCENDING)]))

    def delete(self, kind: str, key: str) -> bool:
        return bool(self._coll(kind).delete_one({"_id": key}).deleted_count)
