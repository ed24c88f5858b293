"""What a request's scopes let it do (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

Three answers, used on every path (ARCHITECTURE.md rules 5 and 6):
- ``require``: may the caller perform this interaction on this type at all (else 403);
- ``narrowing``: the clause ANDed into every query over a type (the patient's compartment for
  ``patient/`` scopes, v2 restrictions such as ``?category=laboratory``), so counts and paging stay true;
- ``permits``: the same decision for one resource about to leave the server.
Pure: no IO. Scopes only narrow; the consent engine narrows further.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from ..context import Identity
from ..errors import BadRequest, Forbidden
from ..search.compile import Compiler, Filter
from ..search.match import matches
from ..search.parse import Clause, SearchQuery, parse
from ..search.registry import compartments
from .scopes import INTERACTION_LETTER, Scope

NOTHING: Filter = {"_id": {"$in": []}}
READ_OR_SEARCH = "rs"  # what an included resource needs


def _no_chains(rtype: str, clause: Clause, *rest: Any) -> list[str]:
    raise BadRequest("scope restrictions cannot chain")


@lru_cache(maxsize=256)
def _restriction(rtype: str, query: tuple[tuple[str, str], ...]) -> SearchQuery | None:
    try:
        return parse((rtype,), list(query), default_count=1, max_count=1, strict=True)
    except BadRequest:
        return None  # a restriction the server cannot apply grants nothing


def _in_patient_compartment(rtype: str) -> bool:
    return rtype == "Patient" or rtype in compartments()["Patient"]


def _covering(who: Identity, letters: str, rtype: str) -> list[Scope]:
    return [s for s in who.scopes if any(s.covers(letter, rtype) for letter in letters)]


def allows(who: Identity, letter: str, rtype: str) -> bool:
    return any(s.covers(letter, rtype) for s in who.scopes)


def require(who: Identity, interaction: str, rtype: str | None) -> None:
    """403 unless a scope grants ``interaction`` on ``rtype`` (any type for system-wide interactions)."""
    letter = INTERACTION_LETTER[interaction]
    if any(letter in s.letters and (rtype is None or s.type in ("*", rtype)) for s in who.scopes):
        return
    what = f"{interaction} on {rtype}" if rtype else interaction
    raise Forbidden(f"the access token's scopes do not allow {what}")


def _patient_bound(who: Identity, scopes: list[Scope], rtype: str) -> str | None:
    """The patient a type's resources must belong to, when every covering scope is a patient scope."""
    if _in_patient_compartment(rtype) and scopes and all(s.level == "patient" for s in scopes):
        return who.patient or ""
    return None


def patient_bound(who: Identity, rtype: str, letters: str) -> str | None:
    """The patient every visible resource of ``rtype`` must belong to ("" for none), or None."""
    return _patient_bound(who, _covering(who, letters, rtype), rtype)


def narrowing(who: Identity, rtype: str, letters: str, base_url: str) -> Filter | None:
    """The filter ANDed into queries over ``rtype``: None for no narrowing, NOTHING when nothing is visible."""
    scopes = _covering(who, letters, rtype)
    if not scopes:
        return NOTHING
    clauses: list[Filter] = []
    patient = _patient_bound(who, scopes, rtype)
    if patient is not None:
        if not patient:
            return NOTHING
        clauses.append({"compartments": f"Patient/{patient}"})
    if all(s.query for s in scopes):
        compiler = Compiler(base_url, _no_chains, _no_chains)
        options = []
        for scope in scopes:
            query = _restriction(rtype, scope.query)
            if query is not None:
                options.append(compiler.compile(rtype, query).filter)
        if not options:
            return NOTHING
        clauses.append(options[0] if len(options) == 1 else {"$or": options})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def permits(who: Identity, rtype: str, letters: str, in_compartments: Callable[[], Sequence[str]],
            resource: Callable[[], dict[str, Any]], base_url: str) -> bool:
    """The same decision as ``narrowing``, for one resource (its compartments and JSON, on demand)."""
    scopes = _covering(who, letters, rtype)
    if not scopes:
        return False
    patient = _patient_bound(who, scopes, rtype)
    if patient is not None and f"Patient/{patient}" not in in_compartments():
        return False
    if all(s.query for s in scopes):
        body = resource()
        return any(q is not None and matches(q, body, base_url=base_url)
                   for q in (_restriction(rtype, s.query) for s in scopes))
    return True
