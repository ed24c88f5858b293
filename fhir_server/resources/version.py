"""A stored version of a resource, as every layer sees it (https://hl7.org/fhir/R4/http.html#versioning)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def instant(ts: datetime) -> str:
    """A FHIR instant in UTC with milliseconds (the precision the database keeps)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Version:
    """One version; a deletion has no ``json``. ``json`` is the exact FHIR JSON served to clients."""

    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    json: bytes | None
    method: str = "PUT"  # the interaction that wrote it: POST, PUT or DELETE
    # The compartments it belongs to ("Patient/1", ...), when the store knows them; a deletion keeps
    # those of the version it deleted, so access rules still apply to it.
    compartments: tuple[str, ...] | None = None
    by: tuple[str, ...] = ()  # who wrote it: "client/<client id>" and the user's fhirUser
    blob: str | None = None  # a Binary's bytes kept apart (storage/blobs.py): their SHA-256; ``json`` lacks ``data``

    @property
    def last_updated_instant(self) -> str:
        return instant(self.last_updated)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'
