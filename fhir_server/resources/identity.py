"""Identifiers that name one resource only: a Patient's INS (Identifiant National de Santé, FR Core).
The DMP keys a record on it (dmp-research.md §6.A.1): a search by INS finds at most one patient, so a
second Patient with the same INS is refused (409, storage/store.py ``Store.claiming``)."""
from __future__ import annotations

from typing import Any

# INS-NIR, INS-NIA, and the NIR of test and of demonstration patients
INS_SYSTEMS = frozenset(f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11))


def unique_identifiers(rtype: str, resource: dict[str, Any]) -> list[str]:
    """``system|value`` of each identifier of ``resource`` that no other current resource of its type
    may hold: a Patient's INS in force. Not an ``old`` (deactivated) one, which stays on the merged
    record, nor a billing number (type ``NH``): a child may be billed under a parent's NIR."""
    if rtype != "Patient":
        return []
    keys = []
    for ident in resource.get("identifier") or ():
        if not isinstance(ident, dict) or ident.get("system") not in INS_SYSTEMS or ident.get("use") == "old":
            continue
        kind = ident.get("type")
        codings = kind.get("coding") or [] if isinstance(kind, dict) else []
        if isinstance(ident.get("value"), str) and not any(isinstance(c, dict) and c.get("code") == "NH"
                                                           for c in codings):
            keys.append(f"{ident['system']}|{ident['value']}")
    return keys
