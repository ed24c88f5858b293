"""Documents exchange (IHE MHD as profiled by ANS PDSm, DMP.md "Documents exchange"): the rules the
generic interactions apply when the resource is a document."""
from __future__ import annotations

from typing import Any

from .errors import MethodNotAllowed

ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
# what a metadata update (PDSm flow 03) may change: everything else about a document is its content
_METADATA = ("status", "securityLabel", "meta", "text")


def patched(rtype: str, before: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """The patched resource (resources/patch.py); a DocumentReference's patch may only change its
    status, its security labels and its archive flag (405 otherwise, as PDSm says)."""
    from .resources.patch import apply_patch

    after = apply_patch(before, body, content_type)
    if rtype == "DocumentReference" and _content(before) != _content(after):
        raise MethodNotAllowed("a document's metadata update may change only its status, securityLabel and "
                               f"archive flag ({ARCHIVED})", headers={"Allow": "GET, PATCH"})
    return after


def _archive_flag(url: str) -> bool:
    """PDSm's archive flag; its canonical has been spelled two ways (``PDSm_isArchived``)."""
    return url == ARCHIVED or url.lower().rsplit("/", 1)[-1] in ("pdsm-ext-is-archived", "pdsm_isarchived")


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in resource.items() if k not in _METADATA}
    extensions = [e for e in resource.get("extension") or () if not _archive_flag(e.get("url") or "")]
    if extensions:
        kept["extension"] = extensions
    else:
        kept.pop("extension", None)
    return kept
