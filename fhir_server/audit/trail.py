"""Writing the audit trail: before an access is answered, its AuditEvents are durably stored; when
they cannot be, the request fails closed (503) and nothing is returned."""
from __future__ import annotations

import logging
from typing import Any

from ..errors import ServiceUnavailable
from ..storage import Store

log = logging.getLogger(__name__)
WRITER = ("server/audit",)


def record(store: Store, events: list[dict[str, Any]]) -> None:
    if not events:
        return
    try:
        store.append("AuditEvent", events, WRITER)
    except Exception as error:  # noqa: BLE001 - whatever stops the audit stops the answer
        log.error("audit trail not written (%d events): %s", len(events), error)
        raise ServiceUnavailable("the audit trail cannot be written: the request is refused") from None
