"""Content-addressed storage of document bytes (Binary contents, up to 20 MB and more) in chunks.

GridFS helpers are not used: FerretDB must work too, and a blob here is simpler. Layout:
- ``blob_chunks``: ``{_id: "<sha256>/<n:06d>", data: Binary}``, ``chunk_size`` bytes each but the last;
  the zero-padded ``n`` makes ``_id`` order the chunk order;
- ``blobs``: ``{_id: sha256, size, chunks, ts}``, written LAST. Its existence means every chunk is
  stored, so a writer that dies mid-way leaves only orphan chunks, never a partial blob.

The id is the SHA-256 of the bytes, so putting the same bytes twice stores them once, and two writers
of the same bytes write the same chunks: a duplicate ``_id`` is success, not a conflict.

Reads fetch chunks by ``_id`` equality, one at a time. FerretDB's SQLite backend pushes down nothing
but a lone ``_id`` equality (see ferretdb.py; its explain shows ``SEARCH ... USING INDEX`` for it and
``SCAN`` for an ``_id`` range or ``$in``), so a range reads and decodes every chunk of every blob.
Measured on FerretDB 1.24 (patched, SQLite), streaming one 5 MB blob (21 chunks of 255 KB) among
4 / 20 such blobs: ``_id`` equality one by one 0.27 / 0.25 s; ``_id`` ranges of 4 chunks, sorted,
4.3 / 20.6 s; ``$in`` of 4 ids 4.3 / 21.0 s; one range cursor over the whole blob 0.7 / 3.6 s.
Only equality does not grow with the collection. MongoDB serves all of these from the ``_id`` index.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..errors import FhirError

CHUNKS = "blob_chunks"
BLOBS = "blobs"
DEFAULT_CHUNK_SIZE = 255 * 1024  # well under the 16 MB document limit, and GridFS's habit
INSERT_BATCH = 16  # chunks per insert_many: ~4 MB a round trip
DUPLICATE_KEY = 11000


class BlobMissing(FhirError):
    """A blob, or one of its chunks, is not in the database: the stored data is damaged (500)."""


def chunk_id(sha: str, n: int) -> str:
    return f"{sha}/{n:06d}"


class Blobs:
    def __init__(self, db: Database[Any], chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.chunks = db[CHUNKS]
        self.records = db[BLOBS]

    # -- writes ---------------------------------------------------------------------------------

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` once; returns its SHA-256 (hex) and size. Idempotent and safe when
        concurrent writers put the same bytes."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha, len(data)
        count = -(-len(data) // self.chunk_size)  # an empty blob has no chunk
        view = memoryview(data)
        for first in range(0, count, INSERT_BATCH):
            batch = {chunk_id(sha, n): bytes(view[n * self.chunk_size:(n + 1) * self.chunk_size])
                     for n in range(first, min(first + INSERT_BATCH, count))}
            self._insert_chunks(batch)
        try:
            self.records.insert_one({"_id": sha, "size": len(data), "chunks": count, "ts": datetime.now(UTC)})
        except DuplicateKeyError:
            pass  # another writer finished the same blob first
        return sha, len(data)

    def _insert_chunks(self, batch: dict[str, bytes]) -> None:
        docs = [{"_id": cid, "data": Binary(data)} for cid, data in batch.items()]
        try:
            self.chunks.insert_many(docs, ordered=False)
        except BulkWriteError as error:
            errors = error.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            for e in errors:
                self._settle_duplicate(docs[e["index"]]["_id"], batch)

    def _settle_duplicate(self, cid: str, batch: dict[str, bytes]) -> None:
        """A chunk already stored: a concurrent writer's (same bytes), or an orphan of a dead writer
        that used another chunk size (different bytes, so overwrite it)."""
        stored = self.chunks.find_one({"_id": cid})
        if stored is None or bytes(stored["data"]) != batch[cid]:
            self.chunks.replace_one({"_id": cid}, {"data": Binary(batch[cid])}, upsert=True)

    # -- reads ----------------------------------------------------------------------------------

    def _record(self, sha: str) -> dict[str, Any] | None:
        return self.records.find_one({"_id": sha})

    def exists(self, sha: str) -> bool:
        return self._record(sha) is not None

    def size(self, sha: str) -> int | None:
        record = self._record(sha)
        return None if record is None else int(record["size"])

    def stream(self, sha: str) -> Iterator[bytes]:
        """The blob's bytes, one chunk at a time, in order, holding one chunk in memory.

        The record is read now, so an unknown blob raises ``BlobMissing`` before anything is sent;
        a chunk found missing later raises ``BlobMissing`` while iterating."""
        record = self._record(sha)
        if record is None:
            raise BlobMissing(f"blob {sha} is not stored")
        return self._chunks(sha, int(record["chunks"]), int(record["size"]))

    def _chunks(self, sha: str, count: int, size: int) -> Iterator[bytes]:
        sent = 0
        for n in range(count):
            # one _id equality per chunk: the only lookup FerretDB serves from its index
            doc = self.chunks.find_one({"_id": chunk_id(sha, n)})
            if doc is None:
                raise BlobMissing(f"chunk {n} of {count} of blob {sha} is missing")
            data = bytes(doc["data"])
            sent += len(data)
            yield data
        if sent != size:
            raise BlobMissing(f"blob {sha} has {sent} bytes in its chunks, its record says {size}")

    def read(self, sha: str) -> bytes:
        """The whole blob in memory: for small blobs only."""
        return b"".join(self.stream(sha))
