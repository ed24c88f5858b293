"""Search over real HTTP (https://hl7.org/fhir/R4/search.html), on a small DMP-like data set."""
from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Fhir, assert_outcome

INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def data(fhir: Fhir) -> dict[str, Any]:
    """Patients and their observations under a unique tag, so that searches see only these."""
    tag = uuid.uuid4().hex[:10]
    meta = {"tag": [{"system": "urn:test", "code": tag}]}
    patients = {
        "helene": {"name": [{"family": "Dupont", "given": ["Hélène"]}], "birthDate": "1970-03-04", "gender": "female",
                   "identifier": [{"system": INS, "value": f"2700312345{tag[:3]}"}], "address": [{"city": "Lyon"}]},
        "marc": {"name": [{"family": "Martin", "given": ["Marc"]}], "birthDate": "1980", "gender": "male",
                 "address": [{"city": "Paris"}], "active": True},
        "zoe": {"name": [{"family": "Zoé-Durand", "given": ["Zoé"]}], "birthDate": "2015-06", "gender": "female",
                "active": False},
    }
    ids = {}
    for key, body in patients.items():
        response = fhir.post("Patient", {"resourceType": "Patient", "meta": meta, **body})
        assert response.status_code == 201
        ids[key] = response.json()["id"]
    observations = []
    for n, (who, code, value, when) in enumerate([
        ("helene", "2345-7", 5.4, "2020-01-15T10:00:00+01:00"), ("helene", "2345-7", 7.1, "2021-06-01"),
        ("helene", "718-7", 13.5, "2021-06-01"), ("marc", "2345-7", 6.0, "2019-12-31T23:30:00Z"),
        ("marc", "718-7", 15.25, "2022"), ("zoe", "8302-2", 110, "2020-02-29"),
    ]):
        body = {"resourceType": "Observation", "meta": meta, "status": "final" if n % 3 else "amended",
                "code": {"coding": [{"system": LOINC, "code": code}], "text": f"test {code}"},
                "subject": {"reference": f"Patient/{ids[who]}"}, "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}}
        response = fhir.post("Observation", body)
        assert response.status_code == 201
        observations.append(response.json()["id"])
    return {"tag": tag, "patients": ids, "observations": observations}


def _ids(fhir: Fhir, path: str, data: dict[str, Any], **params: str) -> list[str]:
    response = fhir.get(path, params={"_tag": f"urn:test|{data['tag']}", **params})
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def _names(data: dict[str, Any], ids: list[str]) -> set[str]:
    reverse = {v: k for k, v in data["patients"].items()}
    return {reverse[i] for i in ids}


@pytest.mark.parametrize("params,expected", [
    ({"name": "helene"}, {"helene"}),
    ({"name": "HÉL"}, {"helene"}),
    ({"family": "dup"}, {"helene"}),
    ({"name:exact": "Dupont"}, {"helene"}),
    ({"name:exact": "dupont"}, set()),
    ({"name:contains": "uran"}, {"zoe"}),
    ({"name": "helene,marc"}, {"helene", "marc"}),
    ({"gender": "female"}, {"helene", "zoe"}),
    ({"gender:not": "female"}, {"marc"}),
    ({"active": "true"}, {"marc"}),
    ({"active:missing": "true"}, {"helene"}),
    ({"address-city": "lyon"}, {"helene"}),
    ({"birthdate": "1970"}, {"helene"}),
    ({"birthdate": "1970-03-04"}, {"helene"}),
    ({"birthdate": "gt1975"}, {"marc", "zoe"}),
    ({"birthdate": "lt2015-06-15"}, {"helene", "marc", "zoe"}),  # 2015-06 starts before the 15th
    ({"birthdate": "lt2015-06-01"}, {"helene", "marc"}),
    ({"birthdate": "le2015-06"}, {"helene", "marc", "zoe"}),
    ({"birthdate": "sa1980"}, {"zoe"}),
    ({"birthdate": "eb1980"}, {"helene"}),
    ({"birthdate": "ne1980"}, {"helene", "zoe"}),
])
def test_patient_search(fhir: Fhir, data: dict[str, Any], params: dict[str, str], expected: set[str]) -> None:
    assert _names(data, _ids(fhir, "Patient", data, **params)) == expected


def test_identifier_search(fhir: Fhir, data: dict[str, Any]) -> None:
    ins = f"2700312345{data['tag'][:3]}"
    assert _names(data, _ids(fhir, "Patient", data, identifier=f"{INS}|{ins}")) == {"helene"}
    assert _names(data, _ids(fhir, "Patient", data, identifier=ins)) == {"helene"}
    assert _names(data, _ids(fhir, "Patient", data, identifier=f"{INS}|")) == {"helene"}
    assert _ids(fhir, "Patient", data, identifier=f"urn:other|{ins}") == []


def test_repeated_parameters_are_anded(fhir: Fhir, data: dict[str, Any]) -> None:
    response = fhir.get(f"Patient?_tag=urn:test|{data['tag']}&birthdate=ge1970&birthdate=lt1990")
    assert _names(data, [e["resource"]["id"] for e in response.json()["entry"]]) == {"helene", "marc"}


@pytest.mark.parametrize("params,expected", [
    ({"code": f"{LOINC}|2345-7"}, 3),
    ({"code": "718-7"}, 2),
    ({"code:text": "test 83"}, 1),
    ({"value-quantity": "5.4"}, 1),
    ({"value-quantity": "gt7"}, 4),
    ({"value-quantity": f"ge13.5|{UCUM}|mmol/L"}, 3),
    ({"value-quantity": "15.25||mmol/L"}, 1),
    ({"value-quantity": "ap100"}, 1),
    ({"date": "2021-06-01"}, 2),
    ({"date": "ge2021"}, 3),
    ({"date": "2019-12-31"}, 1),
    ({"date": "2020-01-01"}, 0),
    ({"code-value-quantity": f"{LOINC}|2345-7$gt6"}, 1),
    ({"code-value-quantity": "718-7$lt14,8302-2$ge100"}, 2),
    ({"status": "amended"}, 2),
])
def test_observation_search(fhir: Fhir, data: dict[str, Any], params: dict[str, str], expected: int) -> None:
    assert len(_ids(fhir, "Observation", data, **params)) == expected


def test_reference_forms(fhir: Fhir, data: dict[str, Any]) -> None:
    helene = data["patients"]["helene"]
    for value in (f"Patient/{helene}", helene, f"{fhir.base}/Patient/{helene}"):
        assert len(_ids(fhir, "Observation", data, subject=value)) == 3, value
    assert len(_ids(fhir, "Observation", data, **{"subject:Patient": helene})) == 3
    assert len(_ids(fhir, "Observation", data, patient=helene)) == 3
    assert len(_ids(fhir, "Patient/" + helene + "/Observation", data)) == 3


def test_chains_and_has(fhir: Fhir, data: dict[str, Any]) -> None:
    assert len(_ids(fhir, "Observation", data, **{"subject:Patient.name": "martin"})) == 2
    assert len(_ids(fhir, "Observation", data, **{"patient.birthdate": "lt1975", "code": "718-7"})) == 1
    has = _ids(fhir, "Patient", data, **{"_has:Observation:subject:code": "718-7"})
    assert _names(data, has) == {"helene", "marc"}
    nested = _ids(fhir, "Patient", data, **{"_has:Observation:subject:value-quantity": "gt100"})
    assert _names(data, nested) == {"zoe"}


def test_include_and_revinclude(fhir: Fhir, data: dict[str, Any]) -> None:
    bundle = fhir.get("Observation", params={"_tag": f"urn:test|{data['tag']}", "code": "718-7",
                                             "_include": "Observation:subject"}).json()
    modes = [(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]]
    assert modes.count(("Observation", "match")) == 2 and modes.count(("Patient", "include")) == 2
    assert bundle["total"] == 2  # included resources do not count
    rev = fhir.get("Patient", params={"_id": data["patients"]["helene"], "_revinclude": "Observation:subject"}).json()
    assert [e["search"]["mode"] for e in rev["entry"]].count("include") == 3
    iterate = fhir.get("Observation", params={"_id": data["observations"][0], "_include": "Observation:subject",
                                              "_revinclude:iterate": "Observation:subject"}).json()
    assert len(iterate["entry"]) == 1 + 1 + 2  # the match, its patient, the patient's two other observations


def test_sort_and_paging(fhir: Fhir, data: dict[str, Any]) -> None:
    ordered = _ids(fhir, "Observation", data, _sort="-date,_id")
    dates = [fhir.get(f"Observation/{i}").json()["effectiveDateTime"] for i in ordered]
    assert dates[0] == "2022" and dates[-1] == "2019-12-31T23:30:00Z"
    first = fhir.get("Observation", params={"_tag": f"urn:test|{data['tag']}", "_sort": "-date", "_count": "2"}).json()
    seen, page = [], first
    while True:
        seen += [e["resource"]["id"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
        if "next" not in links:
            break
        page = fhir.get(links["next"]).json()
        assert page["total"] == 6
    assert seen == ordered
    back = fhir.get({link["relation"]: link["url"] for link in page["link"]}["previous"]).json()
    assert [e["resource"]["id"] for e in back["entry"]] == ordered[2:4]
    by_name = _ids(fhir, "Patient", data, _sort="family")
    assert _names(data, by_name[:1]) == {"helene"} and _names(data, by_name[-1:]) == {"zoe"}


def test_total_summary_elements(fhir: Fhir, data: dict[str, Any]) -> None:
    base = {"_tag": f"urn:test|{data['tag']}"}
    count = fhir.get("Observation", params={**base, "_summary": "count"}).json()
    assert count["total"] == 6 and "entry" not in count
    none = fhir.get("Observation", params={**base, "_total": "none"}).json()
    assert "total" not in none and len(none["entry"]) == 6
    elements = fhir.get("Patient", params={**base, "_elements": "birthDate"}).json()
    assert all(set(e["resource"]) == {"resourceType", "id", "meta", "birthDate"} for e in elements["entry"])


def test_post_search_and_system_search(fhir: Fhir, data: dict[str, Any]) -> None:
    form = fhir.post("Patient/_search", f"_tag=urn:test|{data['tag']}&gender=male",
                     headers={"Content-Type": "application/x-www-form-urlencoded"}).json()
    assert _names(data, [e["resource"]["id"] for e in form["entry"]]) == {"marc"}
    system = fhir.get("", params={"_type": "Patient,Observation", "_tag": f"urn:test|{data['tag']}"}).json()
    assert system["total"] == 9


def test_unknown_and_malformed_parameters(fhir: Fhir, data: dict[str, Any]) -> None:
    lenient = fhir.get("Patient", params={"_tag": f"urn:test|{data['tag']}", "colour": "blue"}).json()
    assert lenient["total"] == 3
    assert "colour" not in lenient["link"][0]["url"]
    assert_outcome(fhir.get("Patient", params={"colour": "blue"}, headers={"Prefer": "handling=strict"}), 400)
    for params in ({"birthdate": "1970-13"}, {"birthdate": "xx1970"}, {"value-quantity": "abc"},
                   {"name:foo": "x"}, {"_count": "-1"}, {"_sort": "nope"}, {"_include": "Nope:x"},
                   {"gender:missing": "maybe"}, {"_cursor": "forged"}, {"_total": "all"}):
        assert_outcome(fhir.get("Observation" if "value-quantity" in params else "Patient", params=params), 400)


def test_search_text_never_becomes_an_operator(fhir: Fhir, data: dict[str, Any]) -> None:
    for value in ("$where", '{"$ne": null}', ".*", "^", "a|b", "\\", "(", "[a-z]"):
        response = fhir.get("Patient", params={"_tag": f"urn:test|{data['tag']}", "name": value})
        assert response.status_code == 200 and response.json()["total"] == 0, value
    assert fhir.get("Patient", params={"name:contains": ".*"}).json()["total"] == 0


def test_patient_everything(fhir: Fhir, data: dict[str, Any]) -> None:
    helene = data["patients"]["helene"]
    bundle = fhir.get(f"Patient/{helene}/$everything").json()
    kinds = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert kinds == ["Observation"] * 3 + ["Patient"] and bundle["total"] == 4
    only = fhir.get(f"Patient/{helene}/$everything", params={"_type": "Observation", "_count": "2"}).json()
    assert len(only["entry"]) == 2 and only["total"] == 3
    rest = fhir.get({link["relation"]: link["url"] for link in only["link"]}["next"]).json()
    assert len(rest["entry"]) == 1
    later = fhir.get(f"Patient/{helene}/$everything", params={"_since": "2999-01-01"}).json()
    assert later["total"] == 0
    assert_outcome(fhir.get(f"Patient/{uuid.uuid4()}/$everything"), 404, "not-found")
