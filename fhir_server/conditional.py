"""Conditional operations (https://hl7.org/fhir/R4/http.html#cond-update): finding the resources a
search criteria string designates, as far as the caller may see them, and taking turns on it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from . import searching
from .errors import BadRequest, PreconditionFailed
from .storage import Store

if TYPE_CHECKING:
    from .context import RequestContext
    from .pipeline import Services

# parameters that shape a result page, not which resources match
_PAGING = {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude", "_cursor", "_format"}


def criteria(raw: str) -> list[tuple[str, str]]:
    params = [(k, v) for k, v in parse_qsl(raw.lstrip("?"), keep_blank_values=True) if k not in _PAGING]
    if not params:
        raise BadRequest("a conditional operation needs search criteria")
    return params


@contextmanager
def locked(store: Store, rtype: str, raw: str) -> Iterator[None]:
    """Conditional writes with the same criteria take turns (on every worker and host), so parallel
    conditional creates make one resource, not one each."""
    with store.lock(f"{rtype}?{urlencode(sorted(criteria(raw)))}"):
        yield


def matches(svc: Services, ctx: RequestContext, rtype: str, raw: str, limit: int = 1) -> list[str]:
    """The ids of the visible ``rtype`` resources matching ``raw`` (at most ``limit`` + 1: enough to
    tell "more than ``limit``"). Strict: an unknown parameter would otherwise match everything."""
    params = [*criteria(raw), ("_count", str(limit + 1)), ("_total", "none"), ("_elements", "id")]
    body, _ = svc.store.consistent(lambda: searching.run(svc.store, svc.config, ctx.base_url, rtype, (rtype,), params,
                                                         strict=True, policy=svc.guard(ctx)))
    return [e["fullUrl"].rsplit("/", 1)[1] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def one(found: list[str], what: str) -> str:
    if len(found) > 1:
        raise PreconditionFailed(f"{what}: the criteria match more than one resource")
    return found[0]


def target(found: list[str], resource: dict[str, Any]) -> str | None:
    """The id a conditional update writes: the match (the body's id must agree), or, with no match,
    None (a create) unless the body names its id (an update as create)."""
    if not found:
        return resource.get("id")
    rid = one(found, "conditional update")
    if resource.get("id") not in (None, rid):
        raise BadRequest(f"the resource's id '{resource['id']}' is not the id of the match ({rid})")
    return rid
