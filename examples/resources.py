"""Building blocks of the example DMP: business identifiers, references across transactions, transaction
bundles whose every entry is a conditional create (``ifNoneExist`` on the business identifier, so that
loading twice changes nothing), and ITI-65 Provide Document Bundles that pass the server's PDSm checks.

References inside one transaction use the entries' ``urn:uuid:`` fullUrls; references to what an
earlier transaction loaded are conditional references (``Practitioner?identifier=...``), which the
server resolves to the ids it gave: the data never depends on server-assigned ids.
"""
from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fhir_server.resources.profiles import supported_profiles

INS = "urn:oid:1.2.250.1.213.1.4.8"  # INS-NIR
ID_NAT_PS = "urn:oid:1.2.250.1.71.4.2.1"  # idNatPs: "8" + RPPS number
RPPS = "https://rpps.esante.gouv.fr"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
URI = "urn:ietf:rfc:3986"  # identifiers that are URIs: urn:uuid:..., urn:oid:...
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
DOC_CLASSES = "urn:oid:1.2.250.1.213.1.1.4.1"  # TRE_A03 ClasseDocument
DOC_TYPES_FR = "urn:oid:1.2.250.1.213.1.1.4.12"  # TRE_A05 TypeDocComplementaire
VISIBILITY = "urn:oid:1.2.250.1.213.1.1.4.13"  # TRE_A07 StatutVisibiliteDocument
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SECTORS = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
PROFESSIONS = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
SPECIALTIES = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
PROVIDE_PROFILE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://dmp-exemple.fr/examples")


def key_uuid(key: str) -> str:
    """A stable UUID for an example key ("jeanne/condition/I10"): same key, same identifier, every run."""
    return str(uuid.uuid5(_NAMESPACE, key))


def business_id(key: str) -> dict[str, str]:
    """A business identifier for resources that have no national one (a producer's own document or
    observation id, written as a URN)."""
    return {"system": URI, "value": f"urn:uuid:{key_uuid(key)}"}


def by_identifier(rtype: str, identifier: dict[str, str]) -> dict[str, str]:
    """A conditional reference, resolved by the server inside the transaction."""
    return {"reference": f"{rtype}?identifier={identifier['system']}|{identifier['value']}"}


def criteria(identifier: dict[str, str], param: str = "identifier") -> str:
    return urlencode({param: f"{identifier['system']}|{identifier['value']}"})


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if display:
        concept["coding"][0]["display"] = display
        concept["text"] = display
    return concept


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def profiled(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` claiming the server's DMP profile of its type (meta.profile), so that the server
    checks it against the profile on write."""
    profiles = supported_profiles(resource["resourceType"])
    return {**resource, "meta": {**resource.get("meta", {}), "profile": profiles}} if profiles else resource


@dataclass
class Transaction:
    """A transaction Bundle of conditional creates, one per resource, keyed by business identifier."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] | None = None

    def add(self, resource: dict[str, Any], identifier: dict[str, str] | None = None, param: str = "identifier") -> str:
        """Add ``resource`` (created unless one with its identifier exists); returns its fullUrl."""
        identifier = identifier or resource["identifier"][0]
        full_url = f"urn:uuid:{key_uuid(resource['resourceType'] + '|' + identifier['system'] + '|' + identifier['value'])}"
        self.entries.append({"fullUrl": full_url, "resource": profiled(resource),
                             "request": {"method": "POST", "url": resource["resourceType"],
                                         "ifNoneExist": criteria(identifier, param)}})
        return full_url

    def bundle(self) -> dict[str, Any]:
        """The Bundle; conditional references to its own entries become their fullUrls (the server
        resolves conditional references against what is stored, not against the same transaction)."""
        local = {f"{e['resource']['resourceType']}?identifier={i['system']}|{i['value']}": e["fullUrl"]
                 for e in self.entries for i in e["resource"].get("identifier") or ()}
        entries = [{**e, "resource": _local_references(e["resource"], local)} for e in self.entries]
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        if self.meta:
            bundle["meta"] = self.meta
        return bundle


def _local_references(value: Any, local: dict[str, str]) -> Any:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference in local:
            return {**value, "reference": local[reference]}
        return {k: _local_references(v, local) for k, v in value.items()}
    if isinstance(value, list):
        return [_local_references(v, local) for v in value]
    return value


@dataclass(frozen=True)
class Document:
    """One document of the record, with its bytes and its PDSm metadata."""

    key: str  # unique in the data set: the masterIdentifier and the business identifier derive from it
    type: tuple[str, str, str]  # (system, code, display): JDV_J66 type
    category: tuple[str, str]  # (code, display): TRE_A03 class
    title: str
    data: bytes
    content_type: str
    when: str  # dateTime: the act the document reports (context.period.start, attachment.creation)
    author: dict[str, str]  # a Reference
    custodian: dict[str, str]  # a Reference to the Organization keeping it
    sector: tuple[str, str] = ("SA07", "Cabinet individuel")  # TRE_R02 facility type
    labels: tuple[tuple[str, str], ...] = ((CONFIDENTIALITY, "N"),)
    description: str | None = None


def document_reference(doc: Document, subject: dict[str, str], binary_url: str) -> dict[str, Any]:
    """A PDSm Comprehensive DocumentReference for ``doc``, its bytes in the Binary at ``binary_url``."""
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": URI, "value": f"urn:uuid:{key_uuid(doc.key + '/master')}"},
        "identifier": [business_id(doc.key)],
        "status": "current",
        "type": coding(*doc.type),
        "category": [coding(DOC_CLASSES, *doc.category)],
        "subject": subject,
        "date": doc.when,
        "author": [doc.author],
        "custodian": doc.custodian,
        "description": doc.description or doc.title,
        "securityLabel": [{"coding": [{"system": system, "code": code}]} for system, code in doc.labels],
        "content": [{"attachment": {"contentType": doc.content_type, "language": "fr-FR", "url": binary_url,
                                    "size": len(doc.data), "hash": sha1_b64(doc.data), "title": doc.title,
                                    "creation": doc.when},
                     "format": {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3",
                                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"period": {"start": doc.when}, "facilityType": coding(SECTORS, *doc.sector)},
    }
    visibility = [code for system, code in doc.labels if system == VISIBILITY]
    if visibility:  # the server reads the labels from either place; meta.security makes _security find them
        resource["meta"] = {"security": [{"system": VISIBILITY, "code": code} for code in visibility]}
    return profiled(resource)


def provide_bundle(key: str, subject: dict[str, str], documents: list[Document], when: str,
                   source: str = "urn:oid:1.2.250.1.213.1.1.9.1") -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle: the SubmissionSet, the DocumentReferences and their Binaries,
    each a conditional create. A Binary has no identifier element, so its business identifier travels
    as a ``meta.tag`` (searchable with ``_tag``): the only way a Binary can be created idempotently."""
    tx = Transaction(meta={"profile": [PROVIDE_PROFILE]})
    submission: dict[str, Any] = {
        "resourceType": "List",
        "extension": [{"url": SOURCE_ID, "valueIdentifier": {"system": URI, "value": source}}],
        "identifier": [{"use": "usual", **business_id(key + "/submission")}],
        "status": "current", "mode": "working",
        "code": coding(MHD_LIST_TYPES, "submissionset"),
        "subject": subject, "date": when, "entry": [],
    }
    tx.add(submission)
    binaries = []
    for doc in documents:
        tag = business_id(doc.key + "/binary")
        binary = {"resourceType": "Binary", "meta": {"tag": [{"system": tag["system"], "code": tag["value"]}]},
                  "contentType": doc.content_type, "data": base64.b64encode(doc.data).decode()}
        binary_url = f"urn:uuid:{key_uuid('Binary|' + tag['value'])}"
        binaries.append((binary, tag, binary_url))
        reference = document_reference(doc, subject, binary_url)
        submission["entry"].append({"item": {"reference": tx.add(reference)}})
    for binary, tag, binary_url in binaries:
        tx.entries.append({"fullUrl": binary_url, "resource": binary,
                           "request": {"method": "POST", "url": "Binary", "ifNoneExist": criteria(tag, "_tag")}})
    return tx.bundle()
