"""Every FHIR resource the server returned during the session, checked by the offline HAPI validator
(validator.py) against the R4 core and the server's own profiles. Runs last (conftest.py orders it).

The self-checks first prove that the validator can fail: a validator that passes everything would make
the main test worthless."""
from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from .data import EXAMPLES, example_file
from .recording import RESPONSES
from .validator import Issue, Result, Validator

CONFORMANCE_TYPES = ("StructureDefinition", "ValueSet", "CodeSystem")
NOT_SUPPORTED = {400, 403, 404, 405, 501}  # how servers refuse a resource type they don't have
MAX_PAGES = 50

# A differential-only profile of our own: the validator must build its snapshot, then enforce it.
SELF_CHECK_PROFILE = "http://example.org/fhir/StructureDefinition/conformance-selfcheck-patient"
SELF_CHECK_SD: dict[str, Any] = {
    "resourceType": "StructureDefinition", "id": "conformance-selfcheck-patient", "url": SELF_CHECK_PROFILE,
    "name": "ConformanceSelfcheckPatient", "status": "active", "fhirVersion": "4.0.1", "kind": "resource",
    "abstract": False, "type": "Patient", "derivation": "constraint",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "differential": {"element": [{"id": "Patient", "path": "Patient"},
                                 {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1}]},
}


@dataclass(frozen=True)
class Finding:
    """One warning of the validator on a resource the server returned (read by report.py via str())."""
    request: str
    resource: str  # type/id
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource} ({self.request}) at {self.location}: {self.message}"


WARNINGS: list[Finding] = []


def _example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _fetch_conformance(http: requests.Session, base_url: str, rtype: str, into: Path) -> int:
    """Saves the server's resources of ``rtype`` (every page of the search) into ``into``; their count."""
    url: str | None = f"{base_url.rstrip('/')}/{rtype}?_count=100"
    count = 0
    for page in range(MAX_PAGES):
        if not url:
            break
        response = http.get(url, headers={"Accept": "application/fhir+json"})
        if page == 0 and response.status_code in NOT_SUPPORTED:
            return 0
        assert response.status_code == 200, f"GET {url}: {response.status_code} {response.text[:300]}"
        bundle = response.json()
        found = [e["resource"] for e in bundle.get("entry") or ()
                 if (e.get("resource") or {}).get("resourceType") == rtype]
        if found:
            (into / f"{rtype}-{page}.json").write_text(
                json.dumps({"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": r} for r in found]}), encoding="utf-8")
        count += len(found)
        url = next((link["url"] for link in bundle.get("link") or () if link.get("relation") == "next"), None)
    return count


@pytest.fixture(scope="module")
def server_profiles(http: requests.Session, base_url: str, tmp_path_factory: pytest.TempPathFactory
                    ) -> tuple[Path, int]:
    """The server's own conformance resources (its DMP profiles, when it serves them; maybe none)."""
    into = tmp_path_factory.mktemp("server-profiles")
    return into, sum(_fetch_conformance(http, base_url, rtype, into) for rtype in CONFORMANCE_TYPES)


@pytest.fixture(scope="module")
def validator(server_profiles: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Validator]:
    own = tmp_path_factory.mktemp("selfcheck-profiles") / "selfcheck.json"
    own.write_text(json.dumps(SELF_CHECK_SD), encoding="utf-8")
    with Validator(server_profiles[0], own) as started:
        yield started


def _errors(result: Result) -> str:
    return "; ".join(f"{i.location}: {i.message}" for i in result.of("error", "fatal"))


# -- self-checks of the validator ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Patient-example.json", "Observation-example.json", "Bundle-bundle-example.json"])
def test_official_example_is_valid(validator: Validator, name: str) -> None:
    result = validator.validate(_example(name))
    assert result.errors == 0, _errors(result)


def _broken_patient(change: dict[str, Any]) -> dict[str, Any]:
    return {**_example("Patient-example.json"), **change}


def _observation_without_status() -> dict[str, Any]:
    observation = _example("Observation-example.json")
    del observation["status"]
    return observation


@pytest.mark.parametrize("resource, location, words", [
    (_broken_patient({"active": "yes"}), "Patient.active", "boolean"),
    (_broken_patient({"birthDate": 1974}), "Patient.birthDate", ""),
    (_broken_patient({"favouriteColour": "blue"}), "Patient", "favouriteColour"),
    (_broken_patient({"gender": "x"}), "Patient.gender", "x"),
    (_observation_without_status(), "Observation", "status"),
    ({"resourceType": "NoSuchType", "id": "1"}, "", ""),
], ids=["wrong-type", "number-for-date", "unknown-element", "required-binding", "missing-required", "unknown-type"])
def test_broken_resource_has_errors(validator: Validator, resource: dict[str, Any], location: str,
                                    words: str) -> None:
    errors = validator.validate(resource).of("error", "fatal")
    assert any(i.location.startswith(location) and words in i.message for i in errors), \
        f"expected an error at {location!r} mentioning {words!r}, got {errors}"


def test_unknown_code_system_is_only_a_warning(validator: Validator) -> None:
    """No terminology server offline: a code of a system the validator lacks can't be an error."""
    patient = _broken_patient({"maritalStatus": {"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_R01-x",
                                                              "code": "NO-SUCH"}]}})
    result = validator.validate(patient)
    assert result.errors == 0, _errors(result)
    assert any("TRE_R01-x" in i.message for i in result.of("warning", "information")), result.issues


def test_profile_from_the_profile_dir_is_enforced(validator: Validator) -> None:
    claiming = _broken_patient({"meta": {"profile": [SELF_CHECK_PROFILE]}})
    valid = validator.validate(claiming)
    assert valid.errors == 0, _errors(valid)
    del claiming["birthDate"], claiming["_birthDate"]  # required by the profile only (_birthDate: an extension)
    unclaimed = {k: v for k, v in claiming.items() if k != "meta"}
    assert validator.validate(unclaimed).errors == 0
    errors = validator.validate(claiming).of("error", "fatal")
    assert any("birthDate" in i.message for i in errors), errors


def test_server_profiles_are_loaded(validator: Validator, server_profiles: tuple[Path, int]) -> None:
    """Each conformance resource the server serves reaches the validator (plus our self-check profile)."""
    assert validator.loaded == server_profiles[1] + 1


# -- the main test --------------------------------------------------------------------------------------

class Baseline:
    """The errors of the official examples the suite sends (data.example_file): many R4 examples are not
    valid themselves (relative canonicals, unknown UCUM units, empty narratives), and a server that
    stores such an example faithfully returns the same error. Only those exact messages are excused."""

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self.known: dict[str, set[str]] = {}

    def errors(self, rtype: str) -> set[str]:
        if rtype not in self.known:
            path = example_file(rtype)
            found = self.validator.validate(json.loads(path.read_text(encoding="utf-8"))) if path else None
            self.known[rtype] = {i.message for i in found.of("error", "fatal")} if found else set()
        return self.known[rtype]

    def excuses(self, resource: dict[str, Any], result: Result) -> bool:
        types = {resource.get("resourceType")} | {(e.get("resource") or {}).get("resourceType")
                                                  for e in resource.get("entry") or () if isinstance(e, dict)}
        inherited = set().union(*(self.errors(t) for t in types if isinstance(t, str)))
        return all(i.message in inherited for i in result.of("error", "fatal"))


def test_baseline_excuses_only_the_examples_errors(validator: Validator) -> None:
    baseline = Baseline(validator)
    patient = _example("Patient-example.json")
    assert baseline.errors("Patient") == set()  # the official Patient example is valid
    broken = {**patient, "gender": "x"}
    result = validator.validate(broken)
    assert result.errors and not baseline.excuses(broken, result)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": broken}]}
    result = validator.validate(bundle)
    assert result.errors and not baseline.excuses(bundle, result)
    media = _example("Media-example.json")  # an official example that is not valid (bad base64)
    result = validator.validate(media)
    assert result.errors and baseline.excuses(media, result)


def _findings(request: str, resource: dict[str, Any], issues: list[Issue], prefix: str = "") -> list[Finding]:
    name = f"{resource.get('resourceType')}/{resource.get('id', '')}"
    return [Finding(request, name, i.location, prefix + i.message) for i in issues]


def test_every_response_is_valid(validator: Validator, capsys: pytest.CaptureFixture[str]) -> None:
    """Every resource returned during the session (Bundles whole, with their entries) has no error but
    those of the official example it was made from."""
    seen: dict[str, str] = {}
    for request, resource in list(RESPONSES):
        seen.setdefault(json.dumps(resource, sort_keys=True), request)  # the same body is validated once
    if not seen:
        pytest.skip("no response was recorded (this module was run alone)")
    baseline = Baseline(validator)
    failures: list[str] = []
    crashes = inherited = 0
    WARNINGS.clear()
    started = time.perf_counter()
    for body, request in seen.items():
        resource = json.loads(body)
        result = validator.validate(resource)
        WARNINGS.extend(_findings(request, resource, result.of("warning")))
        if result.crashed:
            crashes += 1
            WARNINGS.extend(_findings(request, resource, result.of("fatal"), "not validated: "))
        elif result.errors and baseline.excuses(resource, result):
            inherited += 1
            WARNINGS.extend(_findings(request, resource, result.of("error", "fatal"),
                                      "error already in the official example sent: "))
        elif result.errors:
            failures.append(f"{request} ({resource.get('resourceType')}): {_errors(result)[:1500]}")
    with capsys.disabled():  # the summary is shown even when the test passes
        print(f"\nvalidator: {len(seen)} distinct responses in {time.perf_counter() - started:.0f} s: "
              f"{len(failures)} invalid, {inherited} with only the errors of the example sent, "
              f"{crashes} not validated (validator exception), {len(WARNINGS)} warnings")
        for message, count in collections.Counter(w.message for w in WARNINGS).most_common(5):
            print(f"  {count:5d} × {message[:160]}")
    assert not failures, f"{len(failures)} of {len(seen)} responses invalid:\n" + "\n".join(failures[:20])
    # A validator that crashes on much of the input would make this test hollow.
    assert crashes <= len(seen) // 20, f"the validator failed on {crashes} of {len(seen)} responses"
