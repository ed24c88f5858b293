"""ITI-65 Provide Document Bundles for tests: valid PDSm Comprehensive bundles to break one field at a time.

``provide_bundle()`` builds a transaction with the SubmissionSet List first, then the DocumentReferences,
then (unless ``inline``) one Binary per document. Every call has fresh fullUrls and masterIdentifiers,
so bundles can be posted to the same server again and again.
"""
from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
PROFILE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"
LOINC = "http://loinc.org"
CLASSES = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"  # TRE_A07
SECTORS = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
NORMAL = ((CONFIDENTIALITY, "N"),)
# A small PDF-looking payload: a header, a body and the end marker, like a real one.
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256)) * 4 + b"\n%%EOF\n"


def sha1_b64(data: bytes) -> str:
    """FHIR's attachment.hash."""
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def document_reference(patient: str, data: bytes, url: str | None, *, type_code: str = "11488-4",
                       class_code: str = "10", labels: Sequence[tuple[str, str]] = NORMAL,
                       replaces: str | None = None) -> dict[str, Any]:
    """A PDSm Comprehensive DocumentReference for ``data``, inline when ``url`` is None."""
    attachment: dict[str, Any] = {"contentType": "application/pdf", "language": "fr-FR",
                                  "title": "Compte rendu de consultation", "creation": "2026-03-02T10:15:00+01:00",
                                  "size": len(data), "hash": sha1_b64(data)}
    if url is None:
        attachment["data"] = base64.b64encode(data).decode()
    else:
        attachment["url"] = url
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "contained": [{"resourceType": "Practitioner", "id": "author",
                       "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000001"}],
                       "name": [{"family": "MARTIN", "given": ["Claire"]}]}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": _urn()},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code}]},
        "category": [{"coding": [{"system": CLASSES, "code": class_code}]}],
        "subject": {"reference": patient},
        "date": "2026-03-02T10:30:00+01:00",
        "author": [{"reference": "#author"}],
        "custodian": {"type": "Organization",
                      "identifier": {"system": "https://finess.esante.gouv.fr", "value": "750000001"}},
        "securityLabel": [{"coding": [{"system": system, "code": code}]} for system, code in labels],
        "content": [{"attachment": attachment,
                     "format": {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
                                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"period": {"start": "2026-03-02T10:00:00+01:00"},
                    "facilityType": {"coding": [{"system": SECTORS, "code": "SA07"}]}},
    }
    if replaces:
        document["relatesTo"] = [{"code": "replaces", "target": {"reference": replaces}}]
    return document


def provide_bundle(patient: str = "Patient/p1", payloads: Sequence[bytes] = (PDF,), *, inline: bool = False,
                   **document: Any) -> dict[str, Any]:
    """A valid ITI-65 bundle: one DocumentReference per payload, its bytes inline or in a Binary entry.
    ``document`` goes to ``document_reference`` (type_code, class_code, labels, replaces)."""
    documents, binaries = [], []
    for data in payloads:
        binary_url = None if inline else _urn()
        documents.append((_urn(), document_reference(patient, data, binary_url, **document)))
        if binary_url:
            binaries.append((binary_url, {"resourceType": "Binary", "contentType": "application/pdf",
                                          "data": base64.b64encode(data).decode()}))
    submission = {
        "resourceType": "List",
        "extension": [{"url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                       "valueIdentifier": {"value": "urn:oid:1.2.250.1.999.1"}}],
        "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": _urn()}],
        "status": "current", "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": {"reference": patient}, "date": "2026-03-02T10:31:00+01:00",
        "entry": [{"item": {"reference": full_url}} for full_url, _ in documents],
    }
    entries = [(_urn(), submission), *documents, *binaries]
    return {"resourceType": "Bundle", "type": "transaction", "meta": {"profile": [PROFILE]},
            "entry": [{"fullUrl": full_url, "resource": resource,
                       "request": {"method": "POST", "url": resource["resourceType"]}}
                      for full_url, resource in entries]}


def bundle_binaries(bundle: dict[str, Any]) -> Callable[[str], bytes | None]:
    """``binaries(url)`` for check_provide_bundle: the bytes of the bundle's Binary entry at ``url``."""
    by_url = {e["fullUrl"]: base64.b64decode(e["resource"].get("data", ""))
              for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") == "Binary"}
    return by_url.get


def entry_of(bundle: dict[str, Any], resource_type: str, n: int = 0) -> tuple[int, dict[str, Any]]:
    """(index, resource) of the n-th entry of that type."""
    found = [(i, e["resource"]) for i, e in enumerate(bundle["entry"])
             if e["resource"]["resourceType"] == resource_type]
    return found[n]
