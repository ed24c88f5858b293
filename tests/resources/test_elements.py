from __future__ import annotations

import pytest

from fhir_server.errors import BadRequest
from fhir_server.resources.elements import SUBSETTED, select_elements, summarize

PATIENT = {"resourceType": "Patient", "id": "p", "meta": {"versionId": "1", "tag": [{"code": "x"}]},
           "text": {"status": "generated", "div": "<div/>"}, "name": [{"family": "F"}], "gender": "male",
           "deceasedBoolean": False, "_birthDate": {"extension": []}, "birthDate": "2000",
           "maritalStatus": {"text": "M"}, "photo": [{"url": "x"}]}


def test_summary_true_keeps_summary_elements_and_choice_types() -> None:
    out = summarize(PATIENT, "true")
    assert set(out) == {"resourceType", "id", "meta", "name", "gender", "deceasedBoolean", "birthDate", "_birthDate"}
    assert out["meta"]["tag"] == [{"code": "x"}, SUBSETTED]
    assert PATIENT["meta"]["tag"] == [{"code": "x"}]  # the input is not changed


def test_summary_text_data_false() -> None:
    assert set(summarize(PATIENT, "text")) == {"resourceType", "id", "meta", "text"}
    assert "text" not in summarize(PATIENT, "data") and "photo" in summarize(PATIENT, "data")
    assert summarize(PATIENT, "false") is PATIENT
    with pytest.raises(BadRequest):
        summarize(PATIENT, "yes")


def test_elements_keeps_mandatory_ones() -> None:
    observation = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "c"},
                   "valueQuantity": {"value": 1}, "note": [{"text": "n"}]}
    out = select_elements(observation, ["value[x]"])
    assert set(out) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
    assert set(select_elements(observation, ["valueQuantity"])) == set(out)
