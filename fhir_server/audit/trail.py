"""Writing the audit trail: before an access is answered, its AuditEvents are durably stored; when
they cannot be, the request fails closed (503) and nothing is returned.

Group commit, led by the requests themselves: a request that finds no write in progress stores its
events at once, in its own thread (no hand-over to another thread: the uncontended case costs one
insert and nothing else). Requests that arrive while a write is in progress queue their events; when
it ends, the first of them stores the whole queue in one ``insert_many`` (one durable write) for all.
Under load, N concurrent requests share one database round trip instead of paying N.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import ServiceUnavailable
from ..storage import Store

log = logging.getLogger(__name__)
WRITER = ("server/audit",)
MAX_BATCH = 500  # events per insert
WAIT_SECONDS = 30.0


class _Waiting:
    """One request's events, and how their write ended (``error`` None: stored)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.woken = threading.Event()  # stored, failed, or this request now leads the next write
        self.done = False
        self.error: BaseException | None = None


class _GroupWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.queue: list[_Waiting] = []
        self.writing = False  # a request is storing a batch; the others queue behind it

    def write(self, events: list[dict[str, Any]]) -> None:
        me = _Waiting(events)
        with self.lock:
            self.queue.append(me)
            leads = not self.writing
            self.writing = True
        while not me.done:
            if not leads and not me.woken.wait(WAIT_SECONDS):
                with self.lock:
                    if not me.woken.is_set():  # never handed the lead now: leave the queue
                        if me in self.queue:
                            self.queue.remove(me)
                        raise TimeoutError("the audit trail's write did not end in time")
            if not me.done:
                self._lead(me)
            leads = False
        if me.error is not None:
            raise me.error

    def _lead(self, me: _Waiting) -> None:
        """Store the queue's head (at most MAX_BATCH events, one request at least), then hand the lead
        to the next request waiting, if any."""
        with self.lock:
            me.woken.clear()
            batch, size = [], 0
            while self.queue and (not batch or size + len(self.queue[0].events) <= MAX_BATCH):
                batch.append(self.queue.pop(0))
                size += len(batch[-1].events)
        error: BaseException | None = RuntimeError("the audit write was interrupted")
        try:
            self.store.append("AuditEvent", [e for waiting in batch for e in waiting.events], WRITER)
            error = None
        except Exception as failure:  # noqa: BLE001 - every request of the batch learns it failed
            error = failure
        finally:
            for waiting in batch:
                waiting.error, waiting.done = error, True
                waiting.woken.set()
            with self.lock:
                if self.queue:
                    self.queue[0].woken.set()  # the next write is theirs
                else:
                    self.writing = False


_writers: dict[int, _GroupWriter] = {}
_lock = threading.Lock()


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
