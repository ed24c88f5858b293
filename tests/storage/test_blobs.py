"""Chunked, content-addressed document bytes on a real FerretDB."""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
from typing import Any

import pytest

from fhir_server.storage.blobs import BLOBS, CHUNKS, BlobMissing, Blobs, chunk_id

CHUNK = 1024  # small chunks keep the multi-chunk cases fast


@pytest.fixture()
def db(mongo: Any) -> Any:
    return mongo[f"blobs_{uuid.uuid4().hex[:8]}"]


@pytest.fixture()
def blobs(db: Any) -> Blobs:
    return Blobs(db, chunk_size=CHUNK)


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK * 7 // 2], ids=["empty", "one-byte", "one-chunk", "3.5-chunks"])
def test_round_trip(blobs: Blobs, db: Any, size: int) -> None:
    data = os.urandom(size)
    sha, stored = blobs.put(data)
    assert (sha, stored) == (hashlib.sha256(data).hexdigest(), size)
    assert blobs.read(sha) == data
    assert blobs.exists(sha) and blobs.size(sha) == size
    record = db[BLOBS].find_one({"_id": sha})
    assert record["chunks"] == -(-size // CHUNK) == db[CHUNKS].count_documents({})
    assert record["ts"] is not None


def test_five_megabytes_with_the_default_chunk_size(db: Any) -> None:
    blobs = Blobs(db)
    data = os.urandom(5 << 20)
    sha, size = blobs.put(data)
    assert size == len(data)
    assert blobs.read(sha) == data
    assert db[CHUNKS].count_documents({}) == -(-len(data) // (255 * 1024)) == 21


def test_stream_yields_chunk_sized_pieces_in_order(blobs: Blobs) -> None:
    data = os.urandom(CHUNK * 12 + 5)  # 13 chunks: ids 000010.. sort after 000009 only with padding
    sha, _ = blobs.put(data)
    pieces = list(blobs.stream(sha))
    assert [len(p) for p in pieces] == [CHUNK] * 12 + [5]
    assert b"".join(pieces) == data


def test_putting_the_same_bytes_again_stores_nothing_new(blobs: Blobs, db: Any) -> None:
    data = os.urandom(CHUNK * 3)
    first = blobs.put(data)
    ts = db[BLOBS].find_one({"_id": first[0]})["ts"]
    assert blobs.put(data) == first
    assert db[BLOBS].count_documents({}) == 1 and db[CHUNKS].count_documents({}) == 3
    assert db[BLOBS].find_one({"_id": first[0]})["ts"] == ts  # the record was not rewritten


def test_unknown_blob(blobs: Blobs) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not blobs.exists(sha) and blobs.size(sha) is None
    with pytest.raises(BlobMissing):
        blobs.stream(sha)  # raises before the first chunk, so before any response is sent


def test_a_missing_chunk_raises(blobs: Blobs, db: Any) -> None:
    sha, _ = blobs.put(os.urandom(CHUNK * 3))
    db[CHUNKS].delete_one({"_id": chunk_id(sha, 1)})
    pieces = blobs.stream(sha)
    assert len(next(pieces)) == CHUNK
    with pytest.raises(BlobMissing, match="chunk 1 of 3"):
        next(pieces)
    with pytest.raises(BlobMissing):
        blobs.read(sha)


def test_orphan_chunks_of_a_dead_writer_are_completed(blobs: Blobs, db: Any) -> None:
    """A writer that died after some chunks (no record): the blob is absent, and a later put
    completes it, overwriting an orphan written with another chunk size."""
    data = os.urandom(CHUNK * 3)
    sha = hashlib.sha256(data).hexdigest()
    db[CHUNKS].insert_one({"_id": chunk_id(sha, 0), "data": data[:CHUNK]})
    db[CHUNKS].insert_one({"_id": chunk_id(sha, 1), "data": data[:10]})  # another chunk size
    assert not blobs.exists(sha)
    blobs.put(data)
    assert blobs.read(sha) == data


def test_concurrent_puts_of_the_same_bytes(blobs: Blobs, db: Any) -> None:
    data = os.urandom(CHUNK * 40 + 17)
    start = threading.Barrier(8)
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def put() -> None:
        start.wait()
        try:
            results.append(blobs.put(data))
        except BaseException as error:  # reported below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 8
    assert db[BLOBS].count_documents({}) == 1 and db[CHUNKS].count_documents({}) == 41
    assert blobs.read(results[0][0]) == data


def test_a_chunk_is_fetched_through_the_id_index(blobs: Blobs, db: Any) -> None:
    """The read path's query, ``_id`` equality, is the one FerretDB's SQLite backend answers from its
    index; an ``_id`` range scans the table (measured: fhir_server/storage/blobs.py)."""
    sha, _ = blobs.put(os.urandom(CHUNK * 2))
    plan = db.command("explain", {"find": CHUNKS, "filter": {"_id": chunk_id(sha, 1)}})
    if "Plan" in plan.get("queryPlanner", {}):  # FerretDB's SQLite explain
        assert any("USING INDEX" in step for step in plan["queryPlanner"]["Plan"]), plan
