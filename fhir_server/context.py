"""RequestContext: everything the layers below the views need to know about one request.

SMART (identity, scopes, purpose of use, token jti) joins it with the authorization issue; for now it
carries where the server is reached and what the client asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    base_url: str  # the FHIR base as the client reached it, without a trailing slash
    request_id: str = ""
    prefer_return: str = "representation"  # minimal | representation | OperationOutcome
    handling: str = "lenient"  # Prefer: handling=strict refuses unknown search parameters
    headers: dict[str, str] = field(default_factory=dict)
