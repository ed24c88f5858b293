"""Writing the audit trail: before an access is answered, its AuditEvents are durably stored; when
they cannot be, the request fails closed (503) and nothing is returned.

Group commit: the requests of a worker hand their events to one writer thread and wait for it; while
it stores one batch (a single ``insert_many``, one durable write), the next requests' events queue up
and go together in the next. Alone, a request waits for its own write only; under load, N concurrent
requests share one database round trip and one journal flush instead of paying N.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from ..errors import ServiceUnavailable
from ..storage import Store

log = logging.getLogger(__name__)
WRITER = ("server/audit",)
MAX_BATCH = 500  # events per insert
WAIT_SECONDS = 30.0

_writers: dict[int, _GroupWriter] = {}
_lock = threading.Lock()


class _GroupWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: queue.SimpleQueue[tuple[list[dict[str, Any]], Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="audit-writer", daemon=True).start()

    def write(self, events: list[dict[str, Any]]) -> None:
        done: Future[None] = Future()
        self.pending.put((events, done))
        done.result(timeout=WAIT_SECONDS)

    def _run(self) -> None:
        while True:
            batch = [self.pending.get()]
            size = len(batch[0][0])
            while size < MAX_BATCH:
                try:
                    batch.append(self.pending.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1][0])
            try:
                self.store.append("AuditEvent", [e for events, _ in batch for e in events], WRITER)
            except Exception as error:  # noqa: BLE001 - every waiting request learns it failed
                for _, done in batch:
                    done.set_exception(error)
            else:
                for _, done in batch:
                    done.set_result(None)


def _writer(store: Store) -> _GroupWriter:
    with _lock:
        writer = _writers.get(id(store))
        if writer is None or writer.store is not store:
            writer = _writers[id(store)] = _GroupWriter(store)
        return writer


def record(store: Store, events: list[dict[str, Any]]) -> None:
    if not events:
        return
    try:
        _writer(store).write(events)
    except Exception as error:  # noqa: BLE001 - whatever stops the audit stops the answer
        log.error("audit trail not written (%d events): %s", len(events), error)
        raise ServiceUnavailable("the audit trail cannot be written: the request is refused") from None
