"""Opaque, signed keyset cursors for paging: no result sets kept on the server, and a client can
neither forge nor edit a cursor (it would otherwise choose what the next query filters on)."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson

from ..errors import BadRequest


def pack(values: list[Any]) -> list[Any]:
    """Keyset values as JSON: datetimes are tagged so that they come back as datetimes."""
    return [{"dt": v.isoformat()} if isinstance(v, datetime) else v for v in values]


def unpack(values: list[Any]) -> list[Any]:
    return [datetime.fromisoformat(v["dt"]) if isinstance(v, dict) and "dt" in v else v for v in values]


def _sign(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:16]


def encode_cursor(secret: str, keyset: Any) -> str:
    payload = orjson.dumps(keyset)
    return base64.urlsafe_b64encode(payload + _sign(secret, payload)).decode().rstrip("=")


def decode_cursor(secret: str, token: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raw = b""
    payload, signature = raw[:-16], raw[-16:]
    if len(raw) <= 16 or not hmac.compare_digest(signature, _sign(secret, payload)):
        raise BadRequest("invalid or expired paging cursor")
    return orjson.loads(payload)  # signed by us: valid JSON
