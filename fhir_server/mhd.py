"""Documents exchange (IHE MHD as profiled by ANS PDSm, DMP.md "Documents exchange"): the rules the
generic interactions apply when the resource is a document."""
from __future__ import annotations

import binascii
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, Forbidden, PayloadTooLarge, Unprocessable
from .resources import documents, jsonio

if TYPE_CHECKING:
    from .bundles import Entry
    from .context import RequestContext
    from .pipeline import Services

ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
# what a metadata update (PDSm flow 03) may change: everything else about a document is its content
_METADATA = ("status", "securityLabel", "meta", "text")


def patched(rtype: str, before: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """The patched resource (resources/patch.py); a DocumentReference's patch may only change its
    status, its security labels and its archive flag (422 otherwise: PDSm's business rule)."""
    from .resources.patch import apply_patch

    after = apply_patch(before, body, content_type)
    if rtype == "DocumentReference" and _content(before) != _content(after):
        raise Unprocessable("a document's metadata update may change only its status, securityLabel and "
                            f"archive flag ({ARCHIVED})")
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


def provided_documents(ctx: RequestContext, bundle: dict[str, Any]) -> list[str]:
    """For an ITI-65 Provide Document Bundle: PDSm's checks (422 naming every problem, nothing stored),
    each document's Binary given the document as its ``securityContext`` (its access is the
    document's), and the documents it replaces. Any other bundle: nothing to do."""
    if not documents.is_provide_bundle(bundle):
        return []
    entries = [e for e in bundle.get("entry") or () if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    binaries = {e.get("fullUrl"): e["resource"] for e in entries if e["resource"].get("resourceType") == "Binary"}

    def content(url: str) -> bytes | None:
        binary = binaries.get(url)
        try:
            return jsonio.base64_bytes(binary.get("data") or "") if binary else None
        except (binascii.Error, TypeError, ValueError):
            return None

    issues = [i for i in documents.check_provide_bundle(bundle, content, base=ctx.base_url) if i.severity == "error"]
    if issues:
        raise Unprocessable(f"the ITI-65 Provide Document Bundle breaks {len(issues)} PDSm rule(s): "
                            + "; ".join(f"{i.expression[0] if i.expression else ''}: {i.diagnostics}" for i in issues),
                            issues=issues)
    for entry in entries:
        document = entry["resource"]
        if document.get("resourceType") == "DocumentReference":
            for item in document.get("content") or ():
                binary = binaries.get((item.get("attachment") or {}).get("url"))
                if binary is not None and not binary.get("securityContext"):
                    binary["securityContext"] = {"reference": entry.get("fullUrl")}
    return documents.replaced_ids(bundle, ctx.base_url)


def supersede(svc: Services, ctx: RequestContext, reference: str, index: int) -> Entry:
    """The extra entry of a transaction that marks a replaced document ``superseded`` (PDSm: in the
    same transaction as its replacement)."""
    from . import pipeline
    from .bundles import Entry

    rtype, _, rid = reference.partition("/")
    old = pipeline.visible_version(svc, ctx, rtype, rid)  # not an audited read: nothing is returned
    assert old.json is not None
    resource = jsonio.loads(old.json)
    if resource.get("status") != "current":
        raise Unprocessable(f"{reference} is '{resource.get('status')}': only a current document can be replaced")
    request = {"method": "PUT", "url": reference, "ifMatch": old.etag}
    return Entry(index, "PUT", reference, "", {**resource, "status": "superseded"}, None, request,
                 targets=[(rtype, rid)])


def check_size(limit: int, rtype: str, resource: dict[str, Any]) -> None:
    """Documents above the configured size are refused before anything is stored (413)."""
    if rtype == "Binary":
        datas = [resource.get("data")]
    elif rtype == "DocumentReference":
        datas = [(c.get("attachment") or {}).get("data") for c in resource.get("content") or () if isinstance(c, dict)]
    else:
        return
    for data in datas:
        if isinstance(data, str) and len(data) * 3 // 4 > limit:
            raise PayloadTooLarge(f"the document is larger than the {limit} bytes this server takes")


_PATIENT_PARAMS = ("patient", "subject", "_id", "identifier", "_has")


def check_document_search(who_kind: str, params: list[tuple[str, str]]) -> None:
    """ITI-67: a person searching documents says whose (``patient`` or ``patient.identifier``)."""
    if who_kind in ("practitioner", "patient", "representative") and not any(
            name.split(":")[0].split(".")[0] in _PATIENT_PARAMS for name, _ in params):
        raise BadRequest("a DocumentReference search names the patient (patient=, patient.identifier=), as IHE "
                         "MHD ITI-67 requires")


def check_document_delete(ctx: RequestContext, document: dict[str, Any], written_by: tuple[str, ...]) -> None:
    """PDSm TD3.3c: only a document's author deletes it (logically); anyone else gets a 403."""
    who = ctx.who
    if who.kind not in ("practitioner", "patient", "representative"):
        return  # systems (their own feeds, by the scopes and consent checks) and operators
    authors = {(a.get("reference") or "").removeprefix(ctx.base_url + "/") for a in document.get("author") or ()
               if isinstance(a, dict)}
    if not who.fhir_user or who.fhir_user not in authors | set(written_by):
        raise Forbidden("only the document's author may delete it")
