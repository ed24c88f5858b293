"""The only package that imports pymongo: versioned storage, indexes, the local FerretDB."""
from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure as DatabaseUnavailable

from ..resources.version import Version, instant
from .auth import AuthStore
from .store import Store

__all__ = ["AuthStore", "DatabaseUnavailable", "Store", "Version", "connect", "instant"]


def connect(uri: str, database: str, compress_above: int) -> Store:
    """A Store on ``uri``, indexing resources for search as it writes them. Writes are acknowledged
    only once journaled on a majority (durable)."""
    from ..search.index import index

    client: MongoClient[Any] = MongoClient(uri, tz_aware=True, w="majority", journal=True,
                                           serverSelectionTimeoutMS=5000, appname="fhir-server")
    return Store(client[database], compress_above, index)
