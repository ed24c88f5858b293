"""RequestContext: everything the layers below the views need to know about one request: where the
server is reached, what the client asked for, and who is calling (from the SMART access token)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .auth.scopes import Scope

PURPOSES = ("TREAT", "BTG", "ETREAT")  # normal care, break the glass, emergency regulation (centre 15)


@dataclass(frozen=True)
class Identity:
    """Who is calling, as the access token says.

    ``kind``: ``patient``, ``representative`` (a patient's legal representative), ``practitioner``,
    ``system`` (software with no person behind the request), or ``development`` (authentication
    switched off on loopback)."""

    kind: str
    client_id: str
    scopes: tuple[Scope, ...]
    fhir_user: str | None = None  # "Practitioner/123", "Patient/456", "RelatedPerson/7"
    patient: str | None = None  # the patient in context (launch/patient, or the patient themself)
    purpose: str = "TREAT"
    jti: str = ""
    rpps: str | None = None
    profession: str | None = None
    organization: str | None = None
    operator: bool = False  # a registered operator client (administration and migration)


DEVELOPMENT = Identity("development", "development", (Scope("system", "*", "cruds"),))
ANONYMOUS = Identity("anonymous", "", ())  # a request whose token was refused


@dataclass(frozen=True)
class RequestContext:
    base_url: str  # the FHIR base as the client reached it, without a trailing slash
    request_id: str = ""
    prefer_return: str = "representation"  # minimal | representation | OperationOutcome
    handling: str = "lenient"  # Prefer: handling=strict refuses unknown search parameters
    headers: dict[str, str] = field(default_factory=dict)
    who: Identity = DEVELOPMENT
    client_address: str | None = None  # the network address the request came from, for the audit trail
