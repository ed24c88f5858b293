"""The only package that imports pymongo: versioned storage, indexes, the local FerretDB."""
from __future__ import annotations

import time
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure as DatabaseUnavailable

from ..resources.version import Version, instant
from .auth import AuthStore
from .store import Store

__all__ = ["AuthStore", "DatabaseUnavailable", "Store", "Version", "connect", "instant", "sweep"]


def connect(uri: str, database: str, compress_above: int) -> Store:
    """A Store on ``uri``, indexing resources for search as it writes them. Writes are acknowledged
    only once journaled on a majority (durable)."""
    from ..consent.engine import FACT_TYPES
    from ..resources.identity import unique_identifiers
    from ..search.index import index

    client: MongoClient[Any] = MongoClient(uri, tz_aware=True, w="majority", journal=True,
                                           serverSelectionTimeoutMS=5000, appname="fhir-server")
    return Store(client[database], compress_above, index, unique_identifiers, FACT_TYPES)


def sweep(store: Store, every: float) -> None:
    """Recover transactions in the background (storage/transaction.py): the ones whose owner died
    are rolled back, or finished if they had committed."""
    import logging
    import threading

    def loop() -> None:
        while True:
            time.sleep(every)
            try:
                store.recover()
            except Exception:  # noqa: BLE001 - the database may be away for a while; try next round
                logging.getLogger(__name__).warning("transaction sweep failed", exc_info=True)

    if every > 0:
        threading.Thread(target=loop, name="transaction-sweep", daemon=True).start()
