"""ITI-65 Provide Document Bundle checks (PDSm Comprehensive): a valid bundle passes, and each missing
or wrong element yields an issue that names it."""
from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import pytest

from fhir_server.errors import Issue
from fhir_server.resources.documents import DATA, check_provide_bundle, dmp_codes, is_provide_bundle, replaced_ids
from tests.documents_fixtures import (CONFIDENTIALITY, PDF, VISIBILITY, bundle_binaries, entry_of, provide_bundle,
                                      sha1_b64)


def check(bundle: dict[str, Any]) -> list[Issue]:
    return check_provide_bundle(bundle, bundle_binaries(bundle))


def errors(bundle: dict[str, Any]) -> list[Issue]:
    return [i for i in check(bundle) if i.severity == "error"]


def expressions(issues: list[Issue]) -> set[str]:
    return {e for i in issues for e in i.expression}


def delete(resource: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        resource = resource[int(name)] if name.isdigit() else resource[name]
    del resource[last]


# -- valid bundles -------------------------------------------------------------------------------

@pytest.mark.parametrize("inline", [False, True], ids=["binary-entry", "inline-data"])
def test_a_valid_bundle_passes(inline: bool) -> None:
    bundle = provide_bundle(inline=inline)
    assert is_provide_bundle(bundle)
    assert check(bundle) == []


def test_several_documents_with_visibility_labels_pass() -> None:
    bundle = provide_bundle(payloads=(PDF, b"%PDF-1.7 other", b"x"), type_code="11502-2",
                            labels=((CONFIDENTIALITY, "N"), (VISIBILITY, "MASQUE_PS")))
    assert check(bundle) == []


def test_systems_are_recognised_under_their_other_spellings() -> None:
    bundle = provide_bundle(labels=(("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                                     "TRE-A07-StatutVisibiliteDocument", "INVISIBLE_PATIENT"),))
    _, document = entry_of(bundle, "DocumentReference")
    document["category"][0]["coding"][0]["system"] = "urn:oid:1.2.250.1.213.1.1.4.1"
    document["type"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.6.1"
    assert check(bundle) == []


def test_a_dmp_complementary_type_passes() -> None:
    bundle = provide_bundle()
    _, document = entry_of(bundle, "DocumentReference")
    document["type"] = {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.12", "code": "EXPPAT_3"}]}
    assert check(bundle) == []


# -- recognising ITI-65 ----------------------------------------------------------------------------

def test_is_provide_bundle() -> None:
    bundle = provide_bundle()
    assert not is_provide_bundle({**bundle, "type": "batch"})
    del bundle["meta"]
    assert is_provide_bundle(bundle)  # the SubmissionSet is enough
    list_index, _ = entry_of(bundle, "List")
    del bundle["entry"][list_index]
    assert not is_provide_bundle(bundle)  # a plain transaction
    bundle["meta"] = {"profile": ["https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
                                  "PDSm_ComprehensiveProvideDocumentBundle|3.1.1"]}
    assert is_provide_bundle(bundle)  # the profile claims it, so it is checked ...
    assert "Bundle.entry" in expressions(errors(bundle))  # ... and the missing SubmissionSet reported
    assert not is_provide_bundle({"resourceType": "Bundle", "type": "transaction", "entry": []})


# -- the SubmissionSet -----------------------------------------------------------------------------

@pytest.mark.parametrize("element,value", [("status", "retired"), ("mode", "snapshot"), ("subject", None),
                                           ("date", None)])
def test_submission_set_elements(element: str, value: Any) -> None:
    bundle = provide_bundle()
    i, submission = entry_of(bundle, "List")
    if value is None:
        del submission[element]
    else:
        submission[element] = value
    assert expressions(errors(bundle)) == {f"Bundle.entry[{i}].resource.{element}"}


def test_exactly_one_submission_set() -> None:
    bundle = provide_bundle()
    bundle["entry"].append(copy.deepcopy(bundle["entry"][0]))
    [issue] = errors(bundle)
    assert issue.expression == ("Bundle.entry",) and "found 2" in issue.diagnostics


def test_the_submission_set_lists_every_document() -> None:
    bundle = provide_bundle(payloads=(PDF, b"second"))
    i, submission = entry_of(bundle, "List")
    j, _ = entry_of(bundle, "DocumentReference", 1)
    del submission["entry"][1]
    [issue] = errors(bundle)
    assert issue.expression == (f"Bundle.entry[{i}].resource.entry",) and f"Bundle.entry[{j}]" in issue.diagnostics


def test_an_item_may_reference_the_document_by_type_and_id() -> None:
    bundle = provide_bundle()
    _, submission = entry_of(bundle, "List")
    j, document = entry_of(bundle, "DocumentReference")
    document["id"] = "doc1"
    bundle["entry"][j]["fullUrl"] = "http://example.org/fhir/DocumentReference/doc1"
    submission["entry"][0]["item"]["reference"] = "DocumentReference/doc1"
    assert check(bundle) == []


def test_no_document_at_all() -> None:
    bundle = provide_bundle()
    j, _ = entry_of(bundle, "DocumentReference")
    del bundle["entry"][j]
    assert any("DocumentReference" in i.diagnostics for i in errors(bundle))


# -- each DocumentReference ----------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "status", "type", "category", "subject", "date", "author", "custodian", "securityLabel", "masterIdentifier",
    "context.period.start", "content.0.attachment.contentType", "content.0.attachment.title",
    "content.0.attachment.creation", "content.0.attachment.size", "content.0.attachment.hash",
])
def test_a_missing_element_is_named(path: str) -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    delete(document, path)
    expected = f"Bundle.entry[{j}].resource." + path.replace(".0.", "[0].")
    if path == "masterIdentifier":
        expected += ".value"
    issues = errors(bundle)
    assert expected in expressions(issues), issues
    assert all(i.code == "required" for i in issues if expected in i.expression)


@pytest.mark.parametrize("path", ["author", "securityLabel", "category"])
def test_an_empty_list_counts_as_missing(path: str) -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    document[path] = []
    assert f"Bundle.entry[{j}].resource.{path}" in expressions(errors(bundle))


def test_status_must_be_current() -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    document["status"] = "superseded"
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.status"}


def test_the_documents_patient_is_the_submission_sets() -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    document["subject"] = {"reference": "Patient/someone-else"}
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.subject"}


def test_a_type_outside_the_dmp_types_is_rejected() -> None:
    bundle = provide_bundle(type_code="99999-9")
    j, _ = entry_of(bundle, "DocumentReference")
    [issue] = errors(bundle)
    assert issue.code == "code-invalid" and issue.expression == (f"Bundle.entry[{j}].resource.type.coding",)
    assert "JDV_J66" in issue.diagnostics


def test_a_type_without_a_coding_is_rejected() -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    document["type"] = {"text": "compte rendu"}
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.type.coding"}


def test_a_class_outside_the_dmp_classes_is_rejected() -> None:
    bundle = provide_bundle(class_code="99")  # TRE_A03's "technical document", not in JDV_J57
    j, _ = entry_of(bundle, "DocumentReference")
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.category[0].coding"}


def test_security_labels() -> None:
    bundle = provide_bundle(labels=((VISIBILITY, "MASQUE_TOUT"),))
    j, _ = entry_of(bundle, "DocumentReference")
    [issue] = errors(bundle)
    assert issue.expression == (f"Bundle.entry[{j}].resource.securityLabel[0].coding[0].code",)
    # the binding is extensible: another system warns, it does not reject
    other = provide_bundle(labels=((CONFIDENTIALITY, "N"), ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "PSY")))
    [warning] = check(other)
    assert warning.severity == "warning" and warning.expression[0].endswith("securityLabel[1].coding[0]")


def test_more_than_one_content_is_rejected() -> None:
    bundle = provide_bundle(inline=True)
    j, document = entry_of(bundle, "DocumentReference")
    document["content"].append(copy.deepcopy(document["content"][0]))
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.content"}


def test_duplicate_master_identifiers() -> None:
    bundle = provide_bundle(payloads=(PDF, b"other"))
    _, first = entry_of(bundle, "DocumentReference")
    j, second = entry_of(bundle, "DocumentReference", 1)
    second["masterIdentifier"] = dict(first["masterIdentifier"])
    [issue] = errors(bundle)
    assert issue.code == "duplicate" and issue.expression == (f"Bundle.entry[{j}].resource.masterIdentifier",)


# -- size and hash against the bytes -------------------------------------------------------------

@pytest.mark.parametrize("inline", [False, True], ids=["binary-entry", "inline-data"])
def test_size_mismatch(inline: bool) -> None:
    bundle = provide_bundle(inline=inline)
    j, document = entry_of(bundle, "DocumentReference")
    document["content"][0]["attachment"]["size"] = len(PDF) + 1
    [issue] = errors(bundle)
    assert issue.expression == (f"Bundle.entry[{j}].resource.content[0].attachment.size",)
    assert str(len(PDF)) in issue.diagnostics


@pytest.mark.parametrize("inline", [False, True], ids=["binary-entry", "inline-data"])
def test_hash_mismatch(inline: bool) -> None:
    bundle = provide_bundle(inline=inline)
    j, document = entry_of(bundle, "DocumentReference")
    document["content"][0]["attachment"]["hash"] = sha1_b64(PDF + b"tampered")
    [issue] = errors(bundle)
    assert issue.expression == (f"Bundle.entry[{j}].resource.content[0].attachment.hash",)


def test_a_sha256_hash_is_not_fhirs_sha1() -> None:
    bundle = provide_bundle()
    _, document = entry_of(bundle, "DocumentReference")
    document["content"][0]["attachment"]["hash"] = base64.b64encode(hashlib.sha256(PDF).digest()).decode()
    assert [i.expression[0].rsplit(".", 1)[-1] for i in errors(bundle)] == ["hash"]


def test_the_binary_changed_after_the_metadata() -> None:
    bundle = provide_bundle()
    _, binary = entry_of(bundle, "Binary")
    binary["data"] = base64.b64encode(PDF[:-1]).decode()
    assert {e.rsplit(".", 1)[-1] for e in expressions(errors(bundle))} == {"size", "hash"}


def test_an_unresolved_binary_and_bad_base64() -> None:
    bundle = provide_bundle()
    j, document = entry_of(bundle, "DocumentReference")
    assert [i.code for i in check_provide_bundle(bundle, lambda url: None)] == ["not-found"]
    document["content"][0]["attachment"].pop("url")
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.content[0].attachment.url"}
    document["content"][0]["attachment"]["data"] = "not base64!"
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.content[0].attachment.data"}
    document["content"][0]["attachment"]["data"] = base64.b64encode(PDF).decode()
    document["content"][0]["attachment"]["hash"] = "%%%"
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.content[0].attachment.hash"}


def test_a_non_transaction_is_reported() -> None:
    bundle = provide_bundle()
    bundle["type"] = "batch"
    assert expressions(errors(bundle)) == {"Bundle.type"}


# -- replacement ---------------------------------------------------------------------------------

def test_replaced_ids() -> None:
    bundle = provide_bundle(payloads=(PDF, b"other"), replaces="DocumentReference/old-1")
    assert check(bundle) == []
    assert replaced_ids(bundle) == ["DocumentReference/old-1"]  # two documents naming it: once
    _, second = entry_of(bundle, "DocumentReference", 1)
    second["relatesTo"] = [{"code": "replaces", "target": {"reference": "DocumentReference/old-2/_history/3"}},
                           {"code": "appends", "target": {"reference": "DocumentReference/other"}}]
    assert replaced_ids(bundle) == ["DocumentReference/old-1", "DocumentReference/old-2"]
    assert replaced_ids(provide_bundle()) == []


def test_replacement_targets_must_be_on_this_server() -> None:
    absolute = "https://dmp.example.fr/fhir/DocumentReference/old-1"
    bundle = provide_bundle(replaces=absolute)
    j, _ = entry_of(bundle, "DocumentReference")
    assert replaced_ids(bundle) == []
    assert expressions(errors(bundle)) == {f"Bundle.entry[{j}].resource.relatesTo[0].target"}
    assert replaced_ids(bundle, base="https://dmp.example.fr/fhir/") == ["DocumentReference/old-1"]
    assert check_provide_bundle(bundle, bundle_binaries(bundle), base="https://dmp.example.fr/fhir") == []
    for target in ("urn:uuid:0b5e4a39-3f1f-4e2a-9d43-1b2f3c4d5e6f", "Binary/1"):
        assert errors(provide_bundle(replaces=target)), target


# -- the shipped value sets ----------------------------------------------------------------------

def test_the_data_file_names_its_source_and_holds_the_dmp_types() -> None:
    table = json.loads(DATA.read_text(encoding="utf-8"))
    assert "JDV_J57" in table["source"] and "JDV_J66" in table["source"]
    loinc = dmp_codes().type["http://loinc.org"]
    # DMP.md's documents: VSM, hospital report, discharge letter, consultation, lab and imaging reports
    assert {"60591-5", "34112-3", "11490-0", "11488-4", "11502-2", "18748-4"} <= loinc
    visibility = dmp_codes().security_label[VISIBILITY]
    assert {"MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"} <= visibility


# -- malformed input -----------------------------------------------------------------------------

def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [path] + [p for key, child in children for p in _paths(child, (*path, key))]


def test_any_element_of_any_shape_yields_issues_not_exceptions() -> None:
    """Schema validation runs first on the server, but the checks must not crash on what it lets by."""
    original = provide_bundle(payloads=(PDF, b"other"), replaces="DocumentReference/old")
    for path in _paths(original)[1:]:
        for value in ("text", 7, True, [], {}, None, [{"x": 1}], {"reference": 5}):
            bundle = copy.deepcopy(original)
            parent = bundle
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            check_provide_bundle(bundle, lambda url: PDF)
            check_provide_bundle(bundle, lambda url: None)
            replaced_ids(bundle)
            is_provide_bundle(bundle)
