"""The scripted EHR session (issue 9) with fhirpy's sync client, against any FHIR R4 base URL.

    python ehr_session.py --base-url http://127.0.0.1:8080/fhir [--token TOKEN]

Each step checks what it got; the first that fails ends the program with exit 1 and
``FAILED <step>: <what>`` on stderr. On success one JSON line on stdout sums the session up (the
same keys as the Java and Node clients print, read by conformance_tests/test_clients.py).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import BaseFHIRError, MultipleResourcesFound, OperationOutcome, ResourceNotFound

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
CLASSES = "urn:oid:1.2.250.1.213.1.1.4.1"  # TRE_A03-ClasseDocument
SECTORS = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
STEPS = ("metadata", "create-patient", "search-patient", "submit-documents", "read-documents",
         "update-patient", "patient-history")


class StepFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise StepFailed(what)


def ins_nir(gender: str, birth_date: str) -> str:
    """A 15-digit NIR, new each run: sex, birth year and month, a random place and order, and the
    key 97 - (number mod 97) that real ones carry."""
    rng = random.SystemRandom()
    body = f"{1 if gender == 'male' else 2}{birth_date[2:4]}{birth_date[5:7]}99{rng.randrange(1000):03d}" \
           f"{rng.randrange(1000):03d}"
    return body + f"{97 - int(body) % 97:02d}"


def new_patient(ins: str, birth_date: str) -> dict[str, Any]:
    return {"resourceType": "Patient",
            "identifier": [{"use": "official", "system": INS_NIR, "value": ins}],
            "name": [{"use": "official", "family": "MARTIN", "given": ["Camille", "Louise"]},
                     {"use": "usual", "family": "DURAND", "given": ["Camille"]}],
            "gender": "female", "birthDate": birth_date}


def provide_bundle(patient_id: str, data: bytes) -> tuple[dict[str, Any], str, str]:
    """An ITI-65 transaction: SubmissionSet List, DocumentReference, Binary. Plain R4 that also carries
    what the DMP's PDSm profile requires (masterIdentifier, custodian, securityLabel, size and hash...)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    list_url, doc_url, binary_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    subject = {"reference": f"Patient/{patient_id}"}
    document = {
        "resourceType": "DocumentReference",
        "contained": [{"resourceType": "Practitioner", "id": "author",
                       "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810000000001"}],
                       "name": [{"family": "BERNARD", "given": ["Claire"]}]}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}]},
        "category": [{"coding": [{"system": CLASSES, "code": "10", "display": "Compte rendu"}]}],
        "subject": subject, "date": now, "author": [{"reference": "#author"}],
        "custodian": {"type": "Organization",
                      "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000001"}},
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}],
        "content": [{"attachment": {"contentType": "text/plain", "language": "fr-FR", "url": binary_url,
                                    "title": "Compte rendu de consultation", "creation": now, "size": len(data),
                                    "hash": base64.b64encode(hashlib.sha1(data).digest()).decode()}}],
        "context": {"period": {"start": now},
                    "facilityType": {"coding": [{"system": SECTORS, "code": "SA07"}]},
                    "practiceSetting": {"coding": [{"system": "http://snomed.info/sct", "code": "394802001",
                                                    "display": "General medicine"}]}},
    }
    submission = {"resourceType": "List", "status": "current", "mode": "working",
                  "identifier": [{"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
                  "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
                  "subject": subject, "date": now, "entry": [{"item": {"reference": doc_url}}]}
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(data).decode()}
    entries = [(list_url, submission), (doc_url, document), (binary_url, binary)]
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"fullUrl": url, "resource": resource,
                         "request": {"method": "POST", "url": resource["resourceType"]}} for url, resource in entries]}
    return bundle, doc_url, binary_url


def local_id(location: str, rtype: str) -> str:
    """The id in a Location (absolute or relative, with or without _history)."""
    parts = location.split("/")
    check(rtype in parts[:-1], f"location {location!r} is not a {rtype}")
    return parts[parts.index(rtype) + 1]


def run(client: SyncFHIRClient, fhir: str, summary: dict[str, Any], step: Callable[[str], None]) -> None:
    step("metadata")
    statement = client.execute("metadata", method="get")
    check(statement.get("resourceType") == "CapabilityStatement", f"metadata returned {statement.get('resourceType')}")
    check(str(statement.get("fhirVersion", "")).startswith("4.0"), f"fhirVersion {statement.get('fhirVersion')}")
    summary["fhirVersion"] = statement["fhirVersion"]

    step("create-patient")
    birth_date = f"{random.SystemRandom().randrange(1940, 2000)}-0{random.SystemRandom().randrange(1, 10)}-15"
    ins = ins_nir("female", birth_date)
    patient = client.resource("Patient", **new_patient(ins, birth_date))
    patient.save()  # POST; fhirpy replaces the resource with what the server returned
    check(bool(patient.id), "the created Patient has no id")
    check(patient.get_by_path(["meta", "versionId"]) == "1", f"new Patient meta.versionId {patient.get('meta')}")
    summary.update(patient=patient.id, ins=ins)

    step("search-patient")
    found = client.resources("Patient").search(identifier=f"{INS_NIR}|{ins}").fetch_all()
    summary["searchMatches"] = len(found)
    check(len(found) == 1, f"identifier search found {len(found)} Patients, expected 1")
    check(found[0].id == patient.id, f"identifier search found Patient/{found[0].id}, created Patient/{patient.id}")

    step("submit-documents")
    data = f"Consultation du {datetime.now():%d/%m/%Y}\nPatiente vue pour bilan annuel. RAS.\n".encode()
    bundle, doc_url, binary_url = provide_bundle(patient.id, data)
    try:  # fhirpy has no transaction call: its users execute() a POST on the path ""
        response = client.execute("", method="post", data=bundle)
    except ResourceNotFound:
        # fhirpy sends that to "[base]/?"; a server that serves only "[base]" answers 404: note it and
        # post to the base URL itself (an absolute path is taken as it is), as the spec writes it
        summary["quirks"].append(f"execute(''): POST {fhir}/? got 404; posted to {fhir} instead")
        response = client.execute(fhir, method="post", data=bundle)
    check(response.get("type") == "transaction-response", f"transaction answered a {response.get('type')}")
    entries = response.get("entry", [])
    check(len(entries) == len(bundle["entry"]), f"{len(entries)} response entries for {len(bundle['entry'])}")
    statuses = [e.get("response", {}).get("status", "") for e in entries]
    summary["transaction"] = statuses
    for n, entry in enumerate(entries):
        check(statuses[n].startswith("201"), f"entry {n} status {statuses[n]!r}, expected 201")
        check(bool(entry["response"].get("location")), f"entry {n} has no location")
    doc_id = local_id(entries[1]["response"]["location"], "DocumentReference")
    binary_id = local_id(entries[2]["response"]["location"], "Binary")
    summary.update(documentReference=doc_id, binary=binary_id)

    step("read-documents")
    document = client.reference("DocumentReference", doc_id).to_resource()
    check(document.get_by_path(["subject", "reference"], "").endswith(f"Patient/{patient.id}"),
          f"DocumentReference.subject is {document.get('subject')}")
    check(document.get_by_path(["type", "coding", 0, "code"]) == "11488-4", "DocumentReference.type changed")
    url = document.get_by_path(["content", 0, "attachment", "url"], "")
    check(url.endswith(f"Binary/{binary_id}"), f"attachment.url {url!r} was not resolved to Binary/{binary_id} "
          f"(sent {binary_url})")
    binary = client.reference("Binary", binary_id).to_resource()
    check(binary.get("contentType") == "text/plain", f"Binary.contentType {binary.get('contentType')!r}")
    check(base64.b64decode(binary.get("data", "")) == data, "the Binary's bytes differ from those sent")
    summary["binaryBytes"] = len(data)

    step("update-patient")
    current = client.reference("Patient", patient.id).to_resource()
    read_version = current.get_by_path(["meta", "versionId"])
    current["telecom"] = [{"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"}]
    # fhirpy's save() sends no If-Match: its only way to add one is the client's extra_headers; and its
    # errors drop the status code (412 becomes MultipleResourcesFound, 409 an OperationOutcome), so a
    # requests hook (requests_config goes to every requests.request) notes the statuses.
    statuses: list[int] = []
    versioned = SyncFHIRClient(fhir, authorization=client.authorization,
                               extra_headers={"If-Match": f'W/"{read_version}"'},
                               requests_config={"timeout": 120,
                                                "hooks": {"response": lambda r, **_: statuses.append(r.status_code)}})
    updated = versioned.resource("Patient", **current.serialize())
    updated.save()  # PUT Patient/<id>
    summary["versionAfterUpdate"] = updated.get_by_path(["meta", "versionId"])
    check(summary["versionAfterUpdate"] == str(int(read_version) + 1),
          f"versionId {summary['versionAfterUpdate']!r} after updating version {read_version!r}")
    stale = versioned.resource("Patient", **current.serialize())  # If-Match: the version read, now stale
    try:
        stale.save()
        raise StepFailed(f'an update with the stale If-Match W/"{read_version}" was accepted')
    except (MultipleResourcesFound, OperationOutcome):
        summary["staleUpdateStatus"] = statuses[-1]
    check(statuses[-1] in (409, 412), f"the stale update was refused with {statuses[-1]}, expected 412 or 409")

    step("patient-history")
    history = client.execute(f"Patient/{patient.id}/_history", method="get")
    check(history.get("type") == "history", f"history is a {history.get('type')!r} Bundle")
    versions = [e.get("resource", {}).get("meta", {}).get("versionId") for e in history.get("entry", [])]
    summary["history"] = versions
    check(versions == ["2", "1"], f"history versions {versions}, expected ['2', '1'] (newest first)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", help="bearer token; none: no Authorization header")
    args = parser.parse_args(argv)
    fhir = args.base_url.rstrip("/")
    client = SyncFHIRClient(fhir, authorization=f"Bearer {args.token}" if args.token else None,
                            requests_config={"timeout": 120})
    summary: dict[str, Any] = {"client": f"fhirpy {version('fhirpy')}", "steps": [], "quirks": []}
    current = ["start"]

    def step(name: str) -> None:
        current[0] = name
        summary["steps"].append(name)
    try:
        run(client, fhir, summary, step)
    except (StepFailed, BaseFHIRError, OSError, ValueError, KeyError, TypeError) as error:
        print(f"FAILED {current[0]}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
