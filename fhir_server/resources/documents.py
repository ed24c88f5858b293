"""The checks of an ITI-65 Provide Document Bundle (IHE MHD 4.2, Comprehensive Metadata) as the ANS
PDSm profiles it for the DMP (DMP.md, "Documents exchange"; dmp-research.md §1.2, §2.1, §6.B).

A transaction Bundle carries exactly one SubmissionSet ``List``, one or more ``DocumentReference``s and
their ``Binary``s. Each DocumentReference must carry the metadata the DMP indexes and filters on (type,
class, author, custodian, dates, confidentiality) and an ``attachment.size``/``hash`` that match the
bytes, so that a consumer can trust what it retrieves. The value sets come from
``data/dmp_documents.json``. Pure: the caller resolves Binary references (``binaries``).

Issue expressions are FHIRPath from the Bundle: ``Bundle.entry[3].resource.content[0].attachment.size``.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import Issue
from .jsonio import base64_bytes

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
# Bundle profiles that announce ITI-65: MHD's Minimal / Comprehensive / UnContained ProvideBundle and
# PDSm's ComprehensiveProvideDocumentBundle.
PROFILE_BASES = ("https://profiles.ihe.net/ITI/MHD/StructureDefinition/",
                 "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/")
PROFILE_NAMES = ("ProvideBundle", "ProvideDocumentBundle")
DATA = Path(__file__).resolve().parent.parent / "data" / "dmp_documents.json"
_RELATIVE = re.compile(r"^DocumentReference/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$")

Binaries = Callable[[str], bytes | None]


# -- the DMP's value sets ----------------------------------------------------------------------

@dataclass(frozen=True)
class DocumentCodes:
    """Allowed codes per element: system -> codes. ``aliases`` maps other spellings of a system (its
    OID, its MOS FHIR URL) to the one used in the tables."""

    type: dict[str, frozenset[str]]
    category: dict[str, frozenset[str]]
    security_label: dict[str, frozenset[str]]
    aliases: dict[str, str]

    def system(self, system: str | None) -> str | None:
        return self.aliases.get(system, system) if isinstance(system, str) and system else None


@cache
def dmp_codes() -> DocumentCodes:
    """The shipped tables (data/dmp_documents.json; its "source" says where each comes from)."""
    table = json.loads(DATA.read_text(encoding="utf-8"))

    def element(name: str) -> dict[str, frozenset[str]]:
        return {system: frozenset(codes) for system, codes in table[name].items()}
    return DocumentCodes(element("type"), element("category"), element("securityLabel"), dict(table["aliases"]))


# -- reading JSON of any shape: schema validation runs first, but these checks must never crash -----

def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in _list(value) if isinstance(v, dict)]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- recognising an ITI-65 bundle ------------------------------------------------------------------

def _resources(bundle: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(index, entry, resource) for each entry holding a resource."""
    for i, entry in enumerate(_list(bundle.get("entry"))):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield i, entry, entry["resource"]


def _codings(concept: Any) -> list[dict[str, Any]]:
    return _dicts(_obj(concept).get("coding"))


def is_submission_set(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "List" and any(
        c.get("system") == MHD_LIST_TYPES and c.get("code") == "submissionset" for c in _codings(resource.get("code")))


def _names_provide_profile(bundle: dict[str, Any]) -> bool:
    for profile in _list(_obj(bundle.get("meta")).get("profile")):
        url = str(profile).split("|")[0]
        if url.startswith(PROFILE_BASES) and any(name in url.rsplit("/", 1)[-1] for name in PROFILE_NAMES):
            return True
    return False


def is_provide_bundle(bundle: dict[str, Any]) -> bool:
    """A transaction Bundle that is an ITI-65 Provide Document Bundle: it holds a SubmissionSet List,
    or its meta.profile names an MHD/PDSm ProvideBundle profile (then it is checked, and rejected if
    the SubmissionSet is missing)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        return False
    return _names_provide_profile(bundle) or any(is_submission_set(r) for _, _, r in _resources(bundle))


# -- references --------------------------------------------------------------------------------

def _refers_to(reference: str, entry: dict[str, Any], resource: dict[str, Any]) -> bool:
    """Whether a reference inside the Bundle points at this entry (by fullUrl, or by Type/id)."""
    full_url = _str(entry.get("fullUrl")) or ""
    local = f"{resource.get('resourceType')}/{resource['id']}" if _str(resource.get("id")) else None
    return reference in (full_url, local) or (full_url.startswith("http") and full_url.endswith("/" + reference))


def _reference(value: Any) -> str | None:
    return _str(_obj(value).get("reference"))


def _same_subject(a: Any, b: Any) -> bool:
    """Two Reference(Patient)s name the same patient: same reference, or same identifier."""
    if _reference(a) or _reference(b):
        return _reference(a) == _reference(b)
    return bool(_obj(a).get("identifier")) and _obj(a).get("identifier") == _obj(b).get("identifier")


def _replaced_target(reference: str | None, base: str | None) -> str | None:
    """``DocumentReference/<id>`` for a reference to a DocumentReference on this server, else None."""
    if reference and base and reference.startswith(base.rstrip("/") + "/"):
        reference = reference[len(base.rstrip("/")) + 1:]
    match = _RELATIVE.match(reference or "")
    return f"DocumentReference/{match.group(1)}" if match else None


def replaced_ids(bundle: dict[str, Any], base: str | None = None) -> list[str]:
    """The ``DocumentReference/<id>`` that the bundle's documents replace (``relatesTo.code =
    replaces``), in order, once each: the server marks them ``superseded`` in the same transaction.
    Absolute references count only under ``base`` (this server's base URL)."""
    found: list[str] = []
    for _, _, resource in _resources(bundle):
        if resource.get("resourceType") != "DocumentReference":
            continue
        for relation in _dicts(resource.get("relatesTo")):
            if relation.get("code") == "replaces":
                target = _replaced_target(_reference(relation.get("target")), base)
                if target and target not in found:
                    found.append(target)
    return found


# -- the checks --------------------------------------------------------------------------------

def _missing(path: str, what: str) -> Issue:
    return Issue("required", f"{what} is required in an ITI-65 Provide Document Bundle (PDSm)", expression=(path,))


def _wrong(path: str, text: str, code: str = "value", severity: str = "error") -> Issue:
    return Issue(code, text, severity, expression=(path,))


def check_provide_bundle(bundle: dict[str, Any], binaries: Binaries, *, codes: DocumentCodes | None = None,
                         base: str | None = None) -> list[Issue]:
    """Every way ``bundle`` falls short of a PDSm Comprehensive Provide Document Bundle; empty if none.

    ``binaries(url)`` returns the bytes of the Binary that an ``attachment.url`` names (a fullUrl of the
    Bundle, or ``Binary/<id>``), or None. ``codes`` defaults to the DMP's tables; ``base`` is this
    server's base URL, for absolute ``relatesTo`` targets."""
    codes = codes or dmp_codes()
    issues: list[Issue] = []
    if bundle.get("type") != "transaction":
        issues.append(_wrong("Bundle.type", "an ITI-65 Provide Document Bundle is a transaction"))
    entries = list(_resources(bundle))
    sets = [(i, r) for i, _, r in entries if is_submission_set(r)]
    documents = [(i, e, r) for i, e, r in entries if r.get("resourceType") == "DocumentReference"]
    if len(sets) != 1:
        issues.append(_wrong("Bundle.entry", f"exactly one SubmissionSet List is required, found {len(sets)}",
                             "required" if not sets else "invariant"))
    if not documents:
        issues.append(_missing("Bundle.entry", "at least one DocumentReference"))
    subject = None
    if sets:
        i, submission = sets[0]
        subject = submission.get("subject")
        issues += _check_submission_set(f"Bundle.entry[{i}].resource", submission, documents)
    for i, _, document in documents:
        issues += _check_document(f"Bundle.entry[{i}].resource", document, binaries, codes, subject, base)
    issues += _check_unique_master_identifiers(documents)
    return issues


def _check_submission_set(path: str, submission: dict[str, Any],
                          documents: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[Issue]:
    issues: list[Issue] = []
    if submission.get("status") != "current":
        issues.append(_wrong(f"{path}.status", "the SubmissionSet's status must be 'current'"))
    if submission.get("mode") != "working":
        issues.append(_wrong(f"{path}.mode", "the SubmissionSet's mode must be 'working'"))
    if not (_reference(submission.get("subject")) or _obj(submission.get("subject")).get("identifier")):
        issues.append(_missing(f"{path}.subject", "SubmissionSet subject (the patient)"))
    if not submission.get("date"):
        issues.append(_missing(f"{path}.date", "SubmissionSet date (submission time)"))
    items = [_reference(e.get("item")) for e in _dicts(submission.get("entry"))]
    for i, entry, document in documents:
        if not any(item and _refers_to(item, entry, document) for item in items):
            issues.append(_wrong(f"{path}.entry", f"the SubmissionSet does not list the DocumentReference of "
                                 f"Bundle.entry[{i}] ({entry.get('fullUrl')}) in entry.item", "invariant"))
    return issues


def _check_document(path: str, document: dict[str, Any], binaries: Binaries, codes: DocumentCodes,
                    subject: Any, base: str | None) -> list[Issue]:
    issues = _check_required(path, document)
    if document.get("status") not in (None, "current"):
        issues.append(_wrong(f"{path}.status", "a provided DocumentReference's status must be 'current'"))
    if document.get("subject") and subject and not _same_subject(document["subject"], subject):
        issues.append(_wrong(f"{path}.subject", "the DocumentReference's subject is not the SubmissionSet's"))
    issues += _check_coded(f"{path}.type", document.get("type"), codes.type, codes, "JDV_J66-TypeCode-DMP")
    for k, category in enumerate(_list(document.get("category"))):
        issues += _check_coded(f"{path}.category[{k}]", category, codes.category, codes, "JDV_J57-ClassCode-DMP")
    for k, label in enumerate(_list(document.get("securityLabel"))):
        issues += _check_security_label(f"{path}.securityLabel[{k}]", label, codes)
    content = _list(document.get("content"))
    if len(content) > 1:
        issues.append(_wrong(f"{path}.content", "MHD allows one content (one document) per DocumentReference",
                             "invariant"))
    if content and isinstance(content[0], dict):
        issues += _check_attachment(f"{path}.content[0].attachment", content[0].get("attachment"), binaries)
    issues += _check_relations(path, document, base)
    return issues


# (FHIRPath below the DocumentReference, what it is): PDSm_ComprehensiveDocumentReference's 1.. elements
REQUIRED = (
    ("status", "status"), ("type", "type (the document's kind)"), ("category", "category (the document's class)"),
    ("subject", "subject (the patient)"), ("date", "date"), ("author", "author (at least one)"),
    ("custodian", "custodian"), ("content", "content"), ("context.period.start", "context.period.start"),
    ("securityLabel", "securityLabel (at least one confidentiality code)"),
    ("masterIdentifier.value", "masterIdentifier (the document's unique id)"),
)


def _get(resource: dict[str, Any], dotted: str) -> Any:
    value: Any = resource
    for name in dotted.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _check_required(path: str, document: dict[str, Any]) -> list[Issue]:
    return [_missing(f"{path}.{element}", what) for element, what in REQUIRED
            if _get(document, element) in (None, "", [], {})]


def _check_coded(path: str, concept: Any, allowed: dict[str, frozenset[str]], codes: DocumentCodes,
                 value_set: str) -> list[Issue]:
    """The concept has a coding from the value set (absence is reported by _check_required)."""
    if concept is None:
        return []
    codings = [c for c in _codings(concept) if _str(c.get("system")) and _str(c.get("code"))]
    if not codings:
        return [_wrong(f"{path}.coding", "a coding with system and code is required", "required")]
    if any(c["code"] in allowed.get(codes.system(c["system"]) or "", ()) for c in codings):
        return []
    shown = ", ".join(f"{c['system']}|{c['code']}" for c in codings)
    return [_wrong(f"{path}.coding", f"{shown} is not in {value_set}", "code-invalid")]


def _check_security_label(path: str, label: Any, codes: DocumentCodes) -> list[Issue]:
    """Codes of JDV_J58-ConfidentialityCode-DMP (HL7 N/R/V, the TRE_A07 visibility codes). The binding is
    extensible, so a code of another system only warns; a wrong code of a known system is an error."""
    issues: list[Issue] = []
    codings = _codings(label)
    if not codings:
        return [_wrong(f"{path}.coding", "a confidentiality coding is required", "required")]
    for k, coding in enumerate(codings):
        system = codes.system(_str(coding.get("system")))
        known = codes.security_label.get(system or "")
        if known is None:
            issues.append(_wrong(f"{path}.coding[{k}]", f"{coding.get('system')} is not a confidentiality system "
                                 "of JDV_J58-ConfidentialityCode-DMP", "code-invalid", "warning"))
        elif _str(coding.get("code")) not in known:
            issues.append(_wrong(f"{path}.coding[{k}].code", f"{coding.get('code')!r} is not a code of "
                                 f"{coding.get('system')} in JDV_J58-ConfidentialityCode-DMP", "code-invalid"))
    return issues


def _check_attachment(path: str, attachment: Any, binaries: Binaries) -> list[Issue]:
    if not isinstance(attachment, dict):
        return [_missing(path, "content.attachment")]
    issues = [_missing(f"{path}.{name}", f"attachment.{name}")
              for name in ("contentType", "title", "creation", "size", "hash") if attachment.get(name) in (None, "")]
    data = _attachment_bytes(path, attachment, binaries)
    if isinstance(data, Issue):
        return [*issues, data]
    size = attachment.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size != len(data)):
        issues.append(_wrong(f"{path}.size", f"attachment.size is {size!r} but the document has {len(data)} bytes"))
    if attachment.get("hash"):
        issues += _check_hash(f"{path}.hash", attachment["hash"], data)
    return issues


def _attachment_bytes(path: str, attachment: dict[str, Any], binaries: Binaries) -> bytes | Issue:
    """The document's bytes, inline (``data``) or from the Binary that ``url`` names; or why not."""
    if attachment.get("data") is not None:  # b64decode refuses non-str below
        try:
            return base64_bytes(attachment["data"])
        except (binascii.Error, TypeError, ValueError):
            return _wrong(f"{path}.data", "attachment.data is not valid base64")
    url = _str(attachment.get("url"))
    if not url:
        return _missing(f"{path}.url", "attachment.url (to a Binary) or attachment.data")
    data = binaries(url)
    if data is None:
        return _wrong(f"{path}.url", f"attachment.url {url} names no Binary of the bundle", "not-found")
    return data


def _check_hash(path: str, value: Any, data: bytes) -> list[Issue]:
    """FHIR's attachment.hash is the base64 of the SHA-1 of the bytes."""
    try:
        claimed = base64_bytes(value)
    except (binascii.Error, TypeError, ValueError):
        return [_wrong(path, "attachment.hash is not valid base64")]
    if claimed != hashlib.sha1(data).digest():
        return [_wrong(path, "attachment.hash is not the SHA-1 of the document's bytes")]
    return []


def _check_relations(path: str, document: dict[str, Any], base: str | None) -> list[Issue]:
    issues: list[Issue] = []
    for k, relation in enumerate(_list(document.get("relatesTo"))):
        if not isinstance(relation, dict) or relation.get("code") != "replaces":
            continue
        reference = _reference(relation.get("target"))
        if _replaced_target(reference, base) is None:
            issues.append(_wrong(f"{path}.relatesTo[{k}].target", f"a replaced document must be referenced as "
                                 f"DocumentReference/<id> on this server, not {reference!r}"))
    return issues


def _check_unique_master_identifiers(documents: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[Issue]:
    seen: dict[tuple[Any, Any], int] = {}
    issues: list[Issue] = []
    for i, _, document in documents:
        ident = _obj(document.get("masterIdentifier"))
        if not _str(ident.get("value")):
            continue
        key = (str(ident.get("system")), ident["value"])
        if key in seen:
            issues.append(_wrong(f"Bundle.entry[{i}].resource.masterIdentifier",
                                 f"the same masterIdentifier as Bundle.entry[{seen[key]}]", "duplicate"))
        seen.setdefault(key, i)
    return issues
