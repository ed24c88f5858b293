"""Round trip of every official R4 example (npm package hl7.fhir.r4.examples@4.0.1).

Each example is stored with PUT at its own id (update as create) and read back equal, ignoring
meta.versionId and meta.lastUpdated. The examples the server refuses are listed below with the exact
reason: each one breaks the R4 specification itself.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import EXAMPLES, Fhir

# file -> (what the OperationOutcome names, why the example breaks R4)
REFUSED: dict[str, tuple[str, str]] = {
    "Questionnaire-qs1.json": ("Questionnaire.item[0].item[0].linkId", "Questionnaire.item.linkId is 1..1; these items have none"),
    "ImplementationGuide-fhir.json": ("ImplementationGuide.name", "ImplementationGuide.name and .status are 1..1; absent"),
    "ig-r4.json": ("ImplementationGuide.name", "ImplementationGuide.name and .status are 1..1; absent"),
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json":
        ("not a valid resource id", "the id has 68 characters; an id has at most 64"),
    **{f"SearchParameter-{kind}-extensions-{rtype}-{code}.json": ("SearchParameter.base", "SearchParameter.base is 1..*; absent")
       for kind, rtype in (("codesystem", "CodeSystem"), ("valueset", "ValueSet"))
       for code in ("author", "effective", "end", "keyword", "workflow")},
}


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def _round_trip(fhir: Fhir, name: str) -> tuple[str, str | None]:
    raw = (EXAMPLES / name).read_bytes()
    example = json.loads(raw)
    rtype, rid = example["resourceType"], example.get("id")
    if rid is None:
        response = fhir.post(rtype, raw)
    else:
        response = fhir.put(f"{rtype}/{rid}", raw)
    if response.status_code not in (200, 201):
        issues = response.json().get("issue", [])
        where = issues[0].get("expression", [""])[0] if issues else ""
        return name, f"{response.status_code} at {where}: {issues[0]['diagnostics'] if issues else response.text}"
    stored = response.json()
    read = fhir.get(f"{rtype}/{stored['id']}")
    if read.status_code != 200:
        return name, f"read gave {read.status_code}"
    expected = _without_server_meta(example)
    if rid is None:
        expected["id"] = stored["id"]
    if _without_server_meta(read.json()) != expected:
        return name, "read back differs from the example"
    return name, None


def test_every_official_example_round_trips(fhir: Fhir) -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.json") if p.name != "package.json")
    assert len(names) > 5000, f"the examples package is missing or incomplete in {EXAMPLES}"
    # largest first, so the long ones overlap with the many small ones
    names.sort(key=lambda n: -(EXAMPLES / n).stat().st_size)
    with ThreadPoolExecutor(4) as pool:
        outcomes = dict(pool.map(lambda n: _round_trip(fhir, n), names))
    failures = {name: why for name, why in outcomes.items() if why is not None}
    unexpected = {name: why for name, why in failures.items() if name not in REFUSED}
    assert not unexpected, f"{len(unexpected)} official examples failed: {json.dumps(unexpected, indent=1)[:5000]}"
    for name, (where, _why) in REFUSED.items():
        assert name in failures, f"{name} was expected to be refused but was accepted"
        assert failures[name].startswith("400") and where in failures[name], failures[name]
