"""The DMP's profiles, written here as rules, and what the server ships of them; with the search
parameters the server defines beyond R4's.

    python capability/profiles.py     # rebuild fhir_server/data/profiles.json

Each profile says, for one resource type, the elements the DMP needs (``required``: min 1), its
invariants (FHIRPath that must hold on the resource) and its required code bindings. From these rules
this script writes StructureDefinitions (``derivation = constraint``, a differential only: the FHIR
validator builds the snapshot from the R4 base) and the ValueSets they bind to (from
``data/dmp_documents.json``), together in one collection Bundle that the server both enforces
(``fhir_server/resources/profiles.py``) and serves (``GET /fhir/StructureDefinition/dmp-patient``).
One source, so what the server checks is what it publishes. Never edit the JSON by hand.

Sources: FR Core 2.1 (Patient INS rules fr-core-1 and fr-core-2, RPPS / idNatPs, FINESS / idNatSt),
ANS PDSm 3.1 (the DocumentReference's metadata) — see ../shared/docs/reference/dmp-research.md §1.1-1.2.
The rules are ours, in our words: FR Core's own StructureDefinitions (whose slices and extensions we do
not reproduce) stay the reference; a Patient claiming ``fr-core-patient-ins`` is checked against
``dmp-patient`` (``fhir_server/resources/profiles.py``, ``ALIASES``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fhir_server" / "data" / "profiles.json"
DOCUMENT_CODES = ROOT / "fhir_server" / "data" / "dmp_documents.json"

BASE = "https://fhir-server-dmp.org/fhir"  # canonical base of what this project defines
VERSION = "0.1.0"
DATE = "2026-11-27"  # fixed, so that a rebuild gives the same bytes

NIR, NIA, NIR_TEST, NIR_DEMO = (f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11))
RPPS, IDNATPS = "https://rpps.esante.gouv.fr", "urn:oid:1.2.250.1.71.4.2.1"
FINESS, IDNATST = "https://finess.esante.gouv.fr", "urn:oid:1.2.250.1.71.4.2.2"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"


def _ins(system: str, use: str) -> str:
    return f"identifier.where(system = '{system}' and use = '{use}').exists()"


QUALIFIED = f"extension('{RELIABILITY}').extension('identityStatus').value.exists(code = 'VALI')"


@dataclass(frozen=True)
class Profile:
    id: str
    type: str
    title: str
    description: str
    # element paths below the type ("context.period.start", "effective[x]"), in the base's order (a
    # differential follows its base's element order, or the validator cannot build the snapshot)
    required: tuple[str, ...] = ()
    rules: tuple[tuple[str, str, str], ...] = ()  # (key, what it means, FHIRPath that must be true)
    bindings: tuple[tuple[str, str, str], ...] = ()  # (element path, ValueSet id, strength)


PROFILES = (
    Profile(
        "dmp-patient", "Patient", "DMP Patient",
        "The holder of a DMP, identified by the INS (Identifiant National de Santé) under FR Core's rules. "
        "A second Patient with the same INS is refused (409) whatever the profile.",
        required=("name", "gender", "birthDate"),
        rules=(
            ("dmp-pat-1", "At most one identifier is 'official'",
             "identifier.where(use = 'official').count() <= 1"),
            ("dmp-pat-2", "A qualified identity (identity status VALI) carries its INS: an official INS-NIR "
             "(or its test or demo form) or a temporary INS-NIA (as FR Core's fr-core-1)",
             f"{QUALIFIED} implies ({_ins(NIR, 'official')} or {_ins(NIA, 'temp')} "
             f"or {_ins(NIR_TEST, 'official')} or {_ins(NIR_DEMO, 'official')})"),
            ("dmp-pat-3", "An INS-NIR is 'official' (or 'old' once deactivated); an INS-NIA is 'temp'",
             f"identifier.where(system = '{NIR}' and type.coding.where(code = 'NH').empty())"
             f".all(use = 'official' or use = 'old') and identifier.where(system = '{NIA}').all(use = 'temp')"),
            ("dmp-pat-4", "An INS (NIR or NIA, test and demo included) is 13 characters and a 2-digit key; "
             "the department may be 2A or 2B (Corsica)",
             f"identifier.where(system = '{NIR}' or system = '{NIA}' or system = '{NIR_TEST}' "
             f"or system = '{NIR_DEMO}').all(value.matches('^[0-9]{{5}}([0-9]{{2}}|2A|2B)[0-9]{{8}}$'))"),
        )),
    Profile(
        "dmp-practitioner", "Practitioner", "DMP Practitioner",
        "A health professional, identified by the national directory: RPPS number or idNatPs.",
        required=("identifier", "name"),
        rules=(
            ("dmp-pra-1", "The professional has an RPPS or idNatPs identifier",
             f"identifier.where(system = '{RPPS}' or system = '{IDNATPS}').exists()"),
            ("dmp-pra-2", "An RPPS number is 11 digits",
             f"identifier.where(system = '{RPPS}').all(value.matches('^[0-9]{{11}}$'))"),
            ("dmp-pra-3", "An idNatPs is a one-digit source prefix (TRE_G08) then the source's identifier",
             f"identifier.where(system = '{IDNATPS}').all(value.matches('^[0-9][0-9A-Za-z/]+$'))"),
        )),
    Profile(
        "dmp-practitionerrole", "PractitionerRole", "DMP PractitionerRole",
        "A professional's role: the profession (TRE_G15, it drives the habilitation grid) where they work.",
        required=("practitioner", "code"),
        rules=(("dmp-rol-1", "The profession is coded", "code.coding.where(system.exists() and code.exists()).exists()"),)),
    Profile(
        "dmp-organization", "Organization", "DMP Organization",
        "A care facility, identified by FINESS or idNatSt; or a payer (the Assurance Maladie), which has "
        "neither.",
        required=("identifier", "name"),
        rules=(
            ("dmp-org-1", "A care facility has a FINESS or idNatSt identifier (a payer or insurer need not)",
             f"identifier.where(system = '{FINESS}' or system = '{IDNATST}').exists() "
             "or type.coding.where(code = 'pay' or code = 'ins').exists()"),
            ("dmp-org-2", "A FINESS number is 9 characters: department (2A/2B for Corsica), 7 digits",
             f"identifier.where(system = '{FINESS}').all(value.matches('^([0-9]{{2}}|2A|2B)[0-9]{{7}}$'))"),
        )),
    Profile(
        "dmp-documentreference", "DocumentReference", "DMP DocumentReference",
        "A document of the DMP, with the metadata ANS PDSm requires (PDSm_ComprehensiveDocumentReference): "
        "type and class from the DMP's value sets, visibility labels from TRE_A07.",
        required=("masterIdentifier", "masterIdentifier.value", "status", "type", "category", "subject", "date",
                  "author", "custodian", "securityLabel", "content", "content.attachment.contentType",
                  "content.attachment.title", "content.attachment.creation", "context", "context.period",
                  "context.period.start"),
        rules=(("dmp-doc-1", "One document (one content) per DocumentReference", "content.count() = 1"),),
        bindings=(("type", "dmp-document-type", "required"), ("category", "dmp-document-class", "required"),
                  ("securityLabel", "dmp-confidentiality", "extensible"))),
    Profile(
        "dmp-allergyintolerance", "AllergyIntolerance", "DMP AllergyIntolerance",
        "An allergy or intolerance of the record: what, and whether it is active.",
        required=("clinicalStatus", "code", "recordedDate")),
    Profile(
        "dmp-medicationstatement", "MedicationStatement", "DMP MedicationStatement",
        "A current or past treatment: the medicine (ATC or CIS code, or a Medication) and when it is taken.",
        required=("effective[x]", "dosage"),
        rules=(("dmp-med-1", "The medicine is coded or referenced",
                "medication.ofType(CodeableConcept).coding.exists() or medication.ofType(Reference).exists()"),)),
    Profile(
        "dmp-condition", "Condition", "DMP Condition",
        "An antecedent (medical history): the problem, coded, and since when.",
        required=("code", "onset[x]", "recordedDate")),
    Profile(
        "dmp-procedure", "Procedure", "DMP Procedure",
        "A surgical or medical antecedent: the act, coded, and when it was done.",
        required=("code", "performed[x]")),
    Profile(
        "dmp-observation", "Observation", "DMP Observation",
        "An exam result: what was measured, for whom, when, and its value (or why there is none).",
        required=("subject", "effective[x]"),
        rules=(("dmp-obs-1", "A result has a value, a reason for its absence, components or members",
                "value.exists() or dataAbsentReason.exists() or component.exists() or hasMember.exists()"),)),
    Profile(
        "dmp-diagnosticreport", "DiagnosticReport", "DMP DiagnosticReport",
        "A lab or imaging report: whose, when, issued by whom, with its results.",
        required=("subject", "effective[x]", "issued", "performer")),
    Profile(
        "dmp-explanationofbenefit", "ExplanationOfBenefit", "DMP ExplanationOfBenefit",
        "A reimbursement of the Assurance Maladie: the care reimbursed, when, and what was paid.",
        required=("item", "total"),
        rules=(("dmp-eob-1", "Each item says when the care was given", "item.all(serviced.exists())"),)),
    Profile(
        "dmp-consent", "Consent", "DMP Consent",
        "A patient's decision: an access rule of the record (scope patient-privacy), or an organ donation "
        "statement or advance directive (scope adr, with the patient's document as source).",
        required=("patient", "dateTime"),
        rules=(
            ("dmp-con-1", "An access rule says what it permits or denies",
             "scope.coding.where(code = 'patient-privacy').exists() implies provision.type.exists()"),
            ("dmp-con-2", "A statement of the patient's wishes cites the patient's document",
             "scope.coding.where(code = 'adr').exists() implies source.exists()"),
        )),
)


def _name(profile: Profile) -> str:
    return profile.title.replace(" ", "")


def structure_definition(profile: Profile) -> dict[str, Any]:
    url = f"{BASE}/StructureDefinition/{profile.id}"
    t = profile.type
    root: dict[str, Any] = {"id": t, "path": t}
    if profile.rules:
        root["constraint"] = [{"key": key, "severity": "error", "human": human, "expression": expression,
                               "source": url} for key, human, expression in profile.rules]
    elements: dict[str, dict[str, Any]] = {}
    for path in profile.required:
        elements.setdefault(path, {})["min"] = 1
    for path, value_set, strength in profile.bindings:
        elements.setdefault(path, {})["binding"] = {"strength": strength,
                                                    "valueSet": f"{BASE}/ValueSet/{value_set}"}
    differential = [root] + [{"id": f"{t}.{path}", "path": f"{t}.{path}", **rule}
                             for path, rule in elements.items()]
    return {
        "resourceType": "StructureDefinition", "id": profile.id, "url": url, "version": VERSION,
        "name": _name(profile), "title": profile.title, "status": "active", "date": DATE,
        "publisher": "fhir-server-dmp", "description": profile.description, "fhirVersion": "4.0.1",
        "kind": "resource", "abstract": False, "type": t,
        "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{t}", "derivation": "constraint",
        "differential": {"element": differential},
    }


VALUE_SETS = (  # (id, title, element of dmp_documents.json)
    ("dmp-document-type", "DMP document types (JDV_J66-TypeCode-DMP, the codes this server knows)", "type"),
    ("dmp-document-class", "DMP document classes (JDV_J57-ClassCode-DMP)", "category"),
    ("dmp-confidentiality", "DMP confidentiality and visibility codes (JDV_J58, TRE_A07)", "securityLabel"),
)


def value_set(vid: str, title: str, codes: dict[str, dict[str, str | None]]) -> dict[str, Any]:
    include = [{"system": system, "concept": [{"code": c, **({"display": d} if d else {})}
                                              for c, d in concepts.items()]}
               for system, concepts in codes.items()]
    return {"resourceType": "ValueSet", "id": vid, "url": f"{BASE}/ValueSet/{vid}", "version": VERSION,
            "name": "".join(w.capitalize() for w in vid.split("-")), "title": title, "status": "active",
            "date": DATE, "publisher": "fhir-server-dmp", "immutable": False, "compose": {"include": include}}


SEARCH_PARAMETERS = (  # (base, code, type, FHIRPath expression, description): beyond the R4 ones
    ("AuditEvent", "purpose", "token", "AuditEvent.purposeOfEvent | AuditEvent.agent.purposeOfUse",
     "The purpose of use of the access, the event's or an agent's (v3-ActReason: TREAT, and the emergency "
     "modes BTG, break the glass, and ETREAT, emergency regulation); R5 defines AuditEvent-purpose alike"),
)


def search_parameter(base: str, code: str, kind: str, expression: str, description: str) -> dict[str, Any]:
    sid = f"{base}-{code}"
    return {"resourceType": "SearchParameter", "id": sid, "url": f"{BASE}/SearchParameter/{sid}",
            "version": VERSION, "name": base + code.capitalize(), "status": "active", "date": DATE,
            "publisher": "fhir-server-dmp", "description": description, "code": code, "base": [base],
            "type": kind, "expression": expression, "xpathUsage": "normal"}


def build() -> dict[str, Any]:
    table = json.loads(DOCUMENT_CODES.read_text(encoding="utf-8"))
    resources = [structure_definition(p) for p in PROFILES]
    resources += [value_set(vid, title, table[element]) for vid, title, element in VALUE_SETS]
    resources += [search_parameter(*sp) for sp in SEARCH_PARAMETERS]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": r["url"], "resource": r} for r in resources]}


def main() -> None:
    OUT.write_text(json.dumps(build(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
