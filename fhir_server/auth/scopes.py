"""SMART scopes, v1 and v2 (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html).

``patient/Observation.rs``, ``user/*.cruds``, ``system/*.rs``, v1 ``patient/*.read`` / ``.write`` / ``.*``,
and v2 restrictions such as ``patient/Observation.rs?category=laboratory``. Scopes only ever narrow:
a scope grants interactions on a type, never more than the DMP rules allow. Pure: no IO.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

LEVELS = ("patient", "user", "system")
V2_LETTERS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?(.*))?$")

# The letters each interaction needs (SMART v2: c create, r read, u update, d delete, s search).
INTERACTION_LETTER = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search-type": "s", "search-system": "s", "search-compartment": "s", "history-type": "s",
    "history-system": "s", "everything": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}


@dataclass(frozen=True)
class Scope:
    level: str  # patient | user | system
    type: str  # a resource type or "*"
    letters: str  # a subset of "cruds"
    query: tuple[tuple[str, str], ...] = ()  # a v2 restriction, ANDed search parameters

    def covers(self, letter: str, rtype: str) -> bool:
        return letter in self.letters and self.type in ("*", rtype)

    def __str__(self) -> str:
        text = f"{self.level}/{self.type}.{self.letters}"
        return text + ("?" + "&".join(f"{k}={v}" for k, v in self.query) if self.query else "")


def _letters(permissions: str) -> str | None:
    if permissions in V1_PERMISSIONS:
        return V1_PERMISSIONS[permissions]
    # v2: letters in the order c, r, u, d, s, each at most once
    position = -1
    for letter in permissions:
        at = V2_LETTERS.find(letter)
        if at <= position:
            return None
        position = at
    return permissions or None


def parse_scope(text: str) -> Scope | None:
    """A resource scope, or None for anything else (``openid``, ``launch/patient``, malformed...)."""
    found = _SCOPE.match(text)
    if not found:
        return None
    level, rtype, permissions, query = found.groups()
    letters = _letters(permissions)
    if letters is None:
        return None
    if query is not None and (permissions in V1_PERMISSIONS or not query):
        return None  # restrictions are a v2 feature
    return Scope(level, rtype, letters, tuple(parse_qsl(query or "", keep_blank_values=True)))


def parse_scopes(text: str) -> tuple[Scope, ...]:
    return tuple(s for s in (parse_scope(t) for t in text.split()) if s is not None)


def narrower(requested: str, allowed: str) -> str:
    """The requested scopes an application may have, given the scopes it is registered for: a
    resource scope passes when a registered scope of the same level covers its type and letters
    (restrictions only narrow); other scopes (openid, launch...) must be registered as they are."""
    granted_resource = parse_scopes(allowed)
    plain = set(allowed.split())
    kept = []
    for text in requested.split():
        scope = parse_scope(text)
        if scope is None:
            if text in plain:
                kept.append(text)
            continue
        for g in granted_resource:
            if g.level == scope.level and g.type in ("*", scope.type) and set(scope.letters) <= set(g.letters) \
                    and set(g.query) <= set(scope.query):
                kept.append(text)
                break
    return " ".join(dict.fromkeys(kept))
