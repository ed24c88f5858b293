"""Batch and transaction over real HTTP, from the spec text (https://hl7.org/fhir/R4/http.html#transaction).

A transaction is all or nothing: every failure below is checked for its status, for an OperationOutcome
naming the entry, and for nothing stored (the database's document counts, and searches, before and after).
"""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import FHIR_JSON, Fhir, LiveServer, assert_outcome, own_server, snapshot

SYSTEM = "urn:test:bundles"
NARRATIVE = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
# statuses the spec leaves open for a refused transaction (http.html#transaction-response)
REFUSED = (400, 404, 409, 412, 422)


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def ident() -> str:
    return uuid.uuid4().hex


def patient(value: str | None = None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Transac", "given": ["Ada"]}], **more}
    if value:
        body["identifier"] = [{"system": SYSTEM, "value": value}]
    return body


def observation(subject: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": subject}, **more}


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
        out["fullUrl"] = full_url or urn()
    elif full_url:
        out["fullUrl"] = full_url
    return out


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_ok(fhir: Fhir, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    response = fhir.post("", body, **kw)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    result: dict[str, Any] = response.json()
    assert result["resourceType"] == "Bundle"
    assert result["type"] == f"{body['type']}-response"
    assert len(result["entry"]) == len(body["entry"])
    return result


def located(response_entry: dict[str, Any]) -> tuple[str, str, str]:
    """(type, id, version) of a response entry's location ``Type/id/_history/v`` (absolute or not)."""
    parts = response_entry["response"]["location"].split("/")
    assert parts[-2] == "_history", response_entry
    return parts[-4], parts[-3], parts[-1]


def status(response_entry: dict[str, Any]) -> int:
    return int(response_entry["response"]["status"].split()[0])


def create(fhir: Fhir, resource: dict[str, Any]) -> str:
    response = fhir.post(resource["resourceType"], resource)
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def found(fhir: Fhir, rtype: str, value: str) -> list[str]:
    """The ids of the ``rtype`` resources with identifier SYSTEM|value."""
    response = fhir.get(rtype, params={"identifier": f"{SYSTEM}|{value}"})
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def refused(fhir: Fhir, db: Any, body: Any, statuses: tuple[int, ...] = REFUSED, entry_index: int | None = None,
            **kw: Any) -> dict[str, Any]:
    """POST [base] ``body`` is refused with one of ``statuses``, stores nothing, and its OperationOutcome names
    Bundle.entry[entry_index] (in an expression or the diagnostics) when given."""
    before = snapshot(db)
    response = fhir.post("", body, **kw)
    assert response.status_code in statuses, response.text
    outcome = assert_outcome(response, response.status_code)
    assert all(i["severity"] in ("error", "fatal") for i in outcome["issue"] if i["severity"] != "information")
    if entry_index is not None:
        where = f"Bundle.entry[{entry_index}]"
        texts = [e for i in outcome["issue"] for e in i.get("expression", [])] + \
                [i.get("diagnostics", "") for i in outcome["issue"]]
        assert any(where in t for t in texts), outcome
    assert snapshot(db) == before
    return outcome


# -- references ---------------------------------------------------------------------------------------


def test_urn_uuid_references_are_rewritten_everywhere(fhir: Fhir) -> None:
    """http.html#trules: the server replaces every link to an entry's fullUrl: references, uri/url
    elements, and the narrative's <a href> / <img src>; entries may refer forward."""
    pat, binary, doc, obs = urn(), urn(), urn(), urn()
    value = ident()
    body = bundle(
        entry("POST", "Observation", observation(pat, derivedFrom=[{"reference": doc}],
                                                  text={"status": "generated", "div": NARRATIVE.format(
                                                      f'see <a href="{pat}">the patient</a> and '
                                                      f'<img src="{binary}" alt="scan"/>')}), obs),
        entry("POST", "DocumentReference", {
            "resourceType": "DocumentReference", "status": "current",
            # an identifier's value is a string, not a link: it stays even when it spells an entry's fullUrl
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": doc},
            "extension": [{"url": "urn:test:about", "valueUri": pat},
                          {"url": "urn:test:source", "valueReference": {"reference": binary}}],
            "subject": {"reference": pat}, "description": f"about {pat}",
            "content": [{"attachment": {"contentType": "text/plain", "url": binary}}]}, doc),
        entry("POST", "Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                 "data": base64.b64encode(b"hello").decode()}, binary),
        entry("POST", "Patient", patient(value) | {"text": {"status": "generated",
                                                                       "div": NARRATIVE.format("Ada")}}, pat),
    )
    result = post_ok(fhir, body)
    kinds = [located(e)[0] for e in result["entry"]]
    assert kinds == ["Observation", "DocumentReference", "Binary", "Patient"]  # request order
    ids = {kind: located(e)[1] for kind, e in zip(kinds, result["entry"])}
    assert all(status(e) == 201 for e in result["entry"])

    stored_obs = fhir.get(f"Observation/{ids['Observation']}").json()
    assert stored_obs["subject"]["reference"] in (f"Patient/{ids['Patient']}", f"{fhir.base}/Patient/{ids['Patient']}")
    assert stored_obs["derivedFrom"][0]["reference"].endswith(f"DocumentReference/{ids['DocumentReference']}")
    div = stored_obs["text"]["div"]
    assert "urn:uuid:" not in div, div
    assert f'Patient/{ids["Patient"]}"' in div and f'Binary/{ids["Binary"]}"' in div, div

    stored_doc = fhir.get(f"DocumentReference/{ids['DocumentReference']}").json()
    assert stored_doc["subject"]["reference"].endswith(f"Patient/{ids['Patient']}")
    url = stored_doc["content"][0]["attachment"]["url"]
    assert url.endswith(f"Binary/{ids['Binary']}") and not url.startswith("urn:"), url
    assert stored_doc["description"] == f"about {pat}"  # a string that merely contains a fullUrl stays as is
    assert stored_doc["masterIdentifier"]["value"] == doc
    assert stored_doc["extension"][0]["valueUri"].endswith(f"Patient/{ids['Patient']}")
    assert stored_doc["extension"][1]["valueReference"]["reference"].endswith(f"Binary/{ids['Binary']}")
    assert fhir.get(url).status_code == 200  # the url resolves on this server
    assert found(fhir, "Patient", value) == [ids["Patient"]]


def test_conditional_reference_is_resolved(fhir: Fhir) -> None:
    value = ident()
    pid = create(fhir, patient(value))
    result = post_ok(fhir, bundle(entry("POST", "Observation", observation(f"Patient?identifier={SYSTEM}|{value}"))))
    _, oid, _ = located(result["entry"][0])
    assert fhir.get(f"Observation/{oid}").json()["subject"]["reference"].endswith(f"Patient/{pid}")


@pytest.mark.parametrize("matches", [0, 2])
def test_conditional_reference_not_matching_exactly_one_fails_the_bundle(fhir: Fhir, db: Any, matches: int) -> None:
    value = ident()
    for _ in range(matches):
        create(fhir, patient(value))
    other = ident()
    body = bundle(entry("POST", "Patient", patient(other)),
                  entry("POST", "Observation", observation(f"Patient?identifier={SYSTEM}|{value}")))
    refused(fhir, db, body, entry_index=1)
    assert found(fhir, "Patient", other) == []


def test_dangling_urn_reference_fails(fhir: Fhir, db: Any) -> None:
    value = ident()
    body = bundle(entry("POST", "Patient", patient(value)), entry("POST", "Observation", observation(urn())))
    refused(fhir, db, body, (400, 404, 422), entry_index=1)
    assert found(fhir, "Patient", value) == []


# -- processing order and responses --------------------------------------------------------------------


def test_processing_order_delete_post_put_get(fhir: Fhir) -> None:
    """http.html#trules: deletes, then creates, then updates, then reads, whatever the entries' order;
    the response entries stay in request order."""
    value, gone_value = ident(), ident()
    old = create(fhir, patient(gone_value))
    kept = create(fhir, patient(ident()))
    pat = urn()
    body = bundle(
        entry("GET", f"Patient?identifier={SYSTEM}|{value}"),  # sees the create below
        entry("GET", f"Patient/{kept}"),  # sees the update below
        entry("PUT", f"Patient/{kept}", patient(None, id=kept, active=False)),
        entry("POST", "Patient", patient(value), pat),
        # a conditional create on the identifier the DELETE below frees: deletes come first, so it creates
        entry("POST", "Patient", patient(gone_value, gender="female"), ifNoneExist=f"identifier={SYSTEM}|{gone_value}"),
        entry("DELETE", f"Patient/{old}"),
        entry("GET", f"Patient/{old}"),  # reads come last: the resource is gone
    )
    result = post_ok(fhir, body)
    statuses = [status(e) for e in result["entry"]]
    assert statuses[:4] == [200, 200, 200, 201], result
    assert statuses[5] in (200, 204), result
    assert statuses[6] == 410, result
    search = result["entry"][0]["resource"]
    assert search["resourceType"] == "Bundle" and search["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["entry"]] == [located(result["entry"][3])[1]]
    read = result["entry"][1]["resource"]
    assert read["id"] == kept and read["active"] is False and read["meta"]["versionId"] == "2"
    assert result["entry"][1]["response"]["etag"] == 'W/"2"'
    assert statuses[4] == 201, "the conditional create must not see the resource deleted in the same transaction"
    created = located(result["entry"][4])[1]
    assert created != old and found(fhir, "Patient", gone_value) == [created]
    assert fhir.get(f"Patient/{old}").status_code == 410


def test_response_entries_carry_status_location_etag_last_modified(fhir: Fhir) -> None:
    existing = create(fhir, patient(ident()))
    body = bundle(entry("POST", "Patient", patient(ident())),
                  entry("PUT", f"Patient/{existing}", patient(None, id=existing, active=True)),
                  entry("PUT", f"Patient/{(new := f'tx-{ident()[:20]}')}", patient(None, id=new)))
    result = post_ok(fhir, body)
    assert [status(e) for e in result["entry"]] == [201, 200, 201]
    assert [e["response"]["status"].split()[0] for e in result["entry"]] == ["201", "200", "201"]
    for e, version in zip(result["entry"], ("1", "2", "1")):
        rtype, rid, vid = located(e)
        assert (rtype, vid) == ("Patient", version)
        assert e["response"]["etag"] == f'W/"{version}"'
        stored = fhir.get(f"Patient/{rid}").json()
        assert stored["meta"]["versionId"] == version
        when = datetime.fromisoformat(e["response"]["lastModified"].replace("Z", "+00:00"))
        assert when == datetime.fromisoformat(stored["meta"]["lastUpdated"].replace("Z", "+00:00"))
    # the PUT with a client id made the resource with that id (update as create)
    assert located(result["entry"][2])[1] == body["entry"][2]["request"]["url"].split("/")[1]


def test_prefer_representation_puts_the_resources_in_the_response(fhir: Fhir) -> None:
    body = bundle(entry("POST", "Patient", patient(ident())), entry("POST", "Observation", observation("Patient/x")))
    full = post_ok(fhir, body, headers={"Prefer": "return=representation"})
    for e in full["entry"]:
        rtype, rid, vid = located(e)
        assert e["resource"]["resourceType"] == rtype and e["resource"]["id"] == rid
        assert e["resource"]["meta"]["versionId"] == vid
        assert e["resource"] == fhir.get(f"{rtype}/{rid}").json()
    minimal = post_ok(fhir, body | {"entry": [entry("POST", "Patient", patient(ident()))]},
                      headers={"Prefer": "return=minimal"})
    assert "resource" not in minimal["entry"][0]


# -- per-entry preconditions ---------------------------------------------------------------------------


def test_if_match_per_entry(fhir: Fhir, db: Any) -> None:
    rid = create(fhir, patient(ident()))
    fhir.put(f"Patient/{rid}", patient(None, id=rid, active=True))  # now at version 2
    value = ident()
    stale = bundle(entry("POST", "Patient", patient(value)),
                   entry("PUT", f"Patient/{rid}", patient(None, id=rid, active=False), ifMatch='W/"1"'))
    outcome = refused(fhir, db, stale, (409, 412), entry_index=1)
    assert {i["code"] for i in outcome["issue"]} & {"conflict", "processing"}
    assert found(fhir, "Patient", value) == []
    assert fhir.get(f"Patient/{rid}").json()["active"] is True
    fresh = post_ok(fhir, bundle(entry("PUT", f"Patient/{rid}", patient(None, id=rid, active=False), ifMatch='W/"2"')))
    # an ifMatch on a resource that does not exist cannot hold
    refused(fhir, db, bundle(entry("PUT", "Patient/tx-nothing", patient(None, id="tx-nothing"), ifMatch='W/"1"')),
            (404, 409, 412), entry_index=0)
    assert fhir.get("Patient/tx-nothing").status_code == 404
    assert located(fresh["entry"][0])[2] == "3"
    # a DELETE with a stale ifMatch fails too
    refused(fhir, db, bundle(entry("DELETE", f"Patient/{rid}", ifMatch='W/"2"')), (409, 412), entry_index=0)
    assert fhir.get(f"Patient/{rid}").status_code == 200


def test_if_none_exist_per_entry(fhir: Fhir) -> None:
    value = ident()
    pid = create(fhir, patient(value))
    result = post_ok(fhir, bundle(entry("POST", "Patient", patient(value, gender="male"),
                                        ifNoneExist=f"identifier={SYSTEM}|{value}")))
    assert status(result["entry"][0]) == 200
    assert located(result["entry"][0])[:2] == ("Patient", pid)
    assert found(fhir, "Patient", value) == [pid]
    assert "gender" not in fhir.get(f"Patient/{pid}").json()  # the existing one is left as it was


def test_if_none_match_and_if_modified_since_on_reads(fhir: Fhir) -> None:
    pid = create(fhir, patient(ident()))
    current = fhir.get(f"Patient/{pid}")
    result = post_ok(fhir, bundle(
        entry("GET", f"Patient/{pid}", ifNoneMatch=current.headers["ETag"]),
        entry("GET", f"Patient/{pid}", ifNoneMatch='W/"9"'),
        entry("GET", f"Patient/{pid}", ifModifiedSince=current.json()["meta"]["lastUpdated"]),
        entry("GET", f"Patient/{pid}", ifModifiedSince="2001-01-01T00:00:00Z"),
        kind="batch"))
    assert [status(e) for e in result["entry"]] == [304, 200, 304, 200]
    assert "resource" not in result["entry"][0] and "resource" not in result["entry"][2]
    assert result["entry"][1]["resource"]["id"] == pid and result["entry"][3]["resource"]["id"] == pid


# -- a failing entry fails the whole transaction -------------------------------------------------------


def test_a_failing_entry_fails_everything(fhir: Fhir, db: Any) -> None:
    values = [ident(), ident()]
    rid = create(fhir, patient(ident()))
    body = bundle(entry("POST", "Patient", patient(values[0])),
                  entry("PUT", f"Patient/{rid}", patient(None, id=rid, active=True)),
                  entry("DELETE", f"Patient/{create(fhir, patient(ident()))}"),
                  entry("POST", "Patient", patient(values[1], gender="femme")))
    outcome = refused(fhir, db, body, (400, 422), entry_index=3)
    assert any("gender" in e for i in outcome["issue"] for e in i.get("expression", []) + [i.get("diagnostics", "")])
    assert found(fhir, "Patient", values[0]) == [] and found(fhir, "Patient", values[1]) == []
    assert fhir.get(f"Patient/{rid}").json()["meta"]["versionId"] == "1"


def _two_changes_of_one_resource(fhir: Fhir) -> dict[str, Any]:
    rid = create(fhir, patient(value := ident()))
    return bundle(entry("PUT", f"Patient/{rid}", patient(value, id=rid, active=True)),
                  entry("PUT", f"Patient?identifier={SYSTEM}|{value}", patient(value, active=False)))


SAME_URN = urn()
INVALID: list[tuple[str, Any, tuple[int, ...], int | None]] = [
    ("missing fullUrl on a PUT", bundle({"resource": patient(ident(), id="nofullurl"),
                                         "request": {"method": "PUT", "url": "Patient/nofullurl"}}), (400, 422), 0),
    ("collection bundle", bundle(entry("POST", "Patient", patient(ident())), kind="collection"), (400, 422), None),
    ("searchset bundle", bundle(entry("POST", "Patient", patient(ident())), kind="searchset"), (400, 422), None),
    ("not a bundle", patient(ident()), (400, 405, 422), None),
    ("not even JSON", "{not json", (400,), None),
    ("schema error in an entry", bundle(entry("POST", "Patient", patient(ident())),
                                        entry("POST", "Patient", patient(ident(), active="yes"))), (400, 422), 1),
    ("unknown element in an entry", bundle(entry("POST", "Patient", patient(ident()) | {"colour": "blue"})),
     (400, 422), 0),
    ("unknown resource type in a url", bundle(entry("POST", "Patientz", patient(ident()))), (400, 404), 0),
    ("resource type disagreeing with the url", bundle(entry("POST", "Observation", patient(ident()))), (400, 422), 0),
    ("no request", bundle({"fullUrl": urn(), "resource": patient(ident())}), (400, 422), 0),
    ("unknown method", bundle(entry("POST", "Patient", patient(ident())) | {"request": {"method": "FETCH",
                                                                                       "url": "Patient"}}), (400,), 0),
    ("id in the body disagreeing with the url", bundle(entry("PUT", "Patient/tx-dup", patient(ident(), id="tx-other"))),
     (400,), 0),
    ("two entries with the same fullUrl", bundle(entry("POST", "Patient", patient(ident()), SAME_URN),
                                                 entry("POST", "Patient", patient(ident()), SAME_URN)),
     (400, 422), None),
    ("conditional reference with an unknown parameter",
     bundle(entry("POST", "Observation", observation("Patient?colour=blue"))), (400,), 0),
    ("ifNoneExist with an unknown parameter", bundle(entry("POST", "Patient", patient(ident()), ifNoneExist="colour=blue")),
     (400,), 0),
    ("two entries creating the same id", bundle(entry("PUT", "Patient/tx-dup", patient(None, id="tx-dup")),
                                                entry("PUT", "Patient/tx-dup", patient(None, id="tx-dup"))), (400,),
     None),
    ("a delete and an update of the same resource", bundle(entry("DELETE", "Patient/tx-dup2"),
                                                           entry("PUT", "Patient/tx-dup2", patient(None, id="tx-dup2"))),
     (400,), None),
]


@pytest.mark.parametrize("name,body,statuses,index", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_transactions_are_refused_and_store_nothing(fhir: Fhir, db: Any, name: str, body: Any,
                                                            statuses: tuple[int, ...], index: int | None) -> None:
    before = {v: found(fhir, "Patient", v) for v in _values(body)}
    refused(fhir, db, json.dumps(body) if not isinstance(body, str) else body, statuses, index)
    assert {v: found(fhir, "Patient", v) for v in before} == before
    assert fhir.get("Patient/tx-dup").status_code == 404


def _values(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    return [i["value"] for e in body.get("entry", []) for i in (e.get("resource") or {}).get("identifier", [])] + \
        [i["value"] for i in body.get("identifier", [])]


def test_two_entries_resolving_to_the_same_resource_fail(fhir: Fhir, db: Any) -> None:
    """http.html#trules: if resource identities (conditional ones resolved) overlap, the transaction fails."""
    body = _two_changes_of_one_resource(fhir)
    rid = body["entry"][0]["request"]["url"].split("/")[1]
    refused(fhir, db, body, (400, 409, 422))
    assert fhir.get(f"Patient/{rid}").json()["meta"]["versionId"] == "1"


@pytest.fixture(scope="module")
def small(ferretdb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from own_server(ferretdb, tmp_path_factory, "fhir_small_bundles", FHIR_MAX_BUNDLE_ENTRIES="5")


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_bundle_over_the_configured_size_is_refused(small: LiveServer, mongo: Any, kind: str) -> None:
    client, db = small.client(), mongo[small.database]
    value = ident()
    at_limit = bundle(*[entry("POST", "Patient", patient(value)) for _ in range(5)], kind=kind)
    post_ok(client, at_limit)
    assert len(found(client, "Patient", value)) == 5
    over = bundle(*[entry("POST", "Patient", patient(value)) for _ in range(6)], kind=kind)
    refused(client, db, over, (400, 413, 422))
    assert len(found(client, "Patient", value)) == 5


# -- batch ---------------------------------------------------------------------------------------------


def test_batch_entries_succeed_or_fail_on_their_own(fhir: Fhir) -> None:
    """http.html#transaction: a batch's entries have no interdependencies; one failing does not stop the
    others, and the batch-response has one entry per request, in order."""
    good, bad, later = ident(), ident(), ident()
    rid = create(fhir, patient(ident()))
    body = bundle(entry("POST", "Patient", patient(good)),
                  entry("POST", "Patient", patient(bad, gender="femme")),
                  entry("GET", f"Patient/nope-{ident()[:10]}"),
                  entry("PUT", f"Patient/{rid}", patient(None, id=rid, active=True), ifMatch='W/"5"'),
                  entry("DELETE", "Patientz/1"),
                  entry("POST", "Patient", patient(later)),
                  {"request": {"method": "GET"}},
                  entry("PATCH", f"Patient/{rid}", _json_patch([{"op": "add", "path": "/gender", "value": "other"}])),
                  entry("PUT", f"Patient?identifier={SYSTEM}|{later}", patient(later, active=False)),
                  kind="batch")
    result = post_ok(fhir, body)
    statuses = [status(e) for e in result["entry"]]
    assert statuses[0] == 201 and statuses[5] == 201, result
    assert statuses[1] in (400, 422) and statuses[2] == 404 and statuses[3] in (409, 412), result
    assert 400 <= statuses[4] < 500 and 400 <= statuses[6] < 500, result
    for n in (1, 2, 3, 4, 6):
        assert result["entry"][n]["response"]["outcome"]["resourceType"] == "OperationOutcome", result["entry"][n]
    assert found(fhir, "Patient", good) == [located(result["entry"][0])[1]]
    assert found(fhir, "Patient", later) == [located(result["entry"][5])[1]]
    assert found(fhir, "Patient", bad) == []
    # the PATCH, and the conditional update of the Patient the batch created, ran after their predecessors
    assert status(result["entry"][7]) == 200 and located(result["entry"][7])[2] == "2"
    assert status(result["entry"][8]) == 200 and located(result["entry"][8])[1] == located(result["entry"][5])[1]
    assert fhir.get(f"Patient/{rid}").json()["gender"] == "other"
    assert fhir.get(f"Patient/{located(result['entry'][5])[1]}").json()["active"] is False


def test_batch_does_not_resolve_references_between_entries(fhir: Fhir) -> None:
    """A batch has no interdependencies: a reference to another entry's urn:uuid is not a link."""
    pat = urn()
    result = post_ok(fhir, bundle(entry("POST", "Patient", patient(ident()), pat),
                                  entry("POST", "Observation", observation(pat)), kind="batch"))
    assert status(result["entry"][0]) == 201
    if status(result["entry"][1]) == 201:
        stored = fhir.get("Observation/" + located(result["entry"][1])[1]).json()
        assert stored["subject"]["reference"] == pat
    else:
        assert 400 <= status(result["entry"][1]) < 500


# -- patch, conditional update and delete inside a transaction -----------------------------------------


def _json_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(json.dumps(operations).encode()).decode()}


def _fhirpath_patch(kind: str, path: str, **value: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    if "name" in value:
        parts.append({"name": "name", "valueString": value.pop("name")})
    if value:
        parts.append({"name": "value", **value})
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}


def test_patch_entries(fhir: Fhir, db: Any) -> None:
    first = create(fhir, patient(ident(), active=True))
    second = create(fhir, patient(ident(), birthDate="1970-01-01"))
    result = post_ok(fhir, bundle(
        entry("PATCH", f"Patient/{first}", _json_patch([{"op": "replace", "path": "/active", "value": False}])),
        entry("PATCH", f"Patient/{second}", _fhirpath_patch("replace", "Patient.birthDate", valueDate="1980-02-03"),
              ifMatch='W/"1"'),
    ))
    assert [status(e) for e in result["entry"]] == [200, 200]
    assert [located(e)[2] for e in result["entry"]] == ["2", "2"]
    assert fhir.get(f"Patient/{first}").json()["active"] is False
    assert fhir.get(f"Patient/{second}").json()["birthDate"] == "1980-02-03"
    # a stale ifMatch, a patch making an invalid resource, a patch that cannot apply: nothing changes
    for body, statuses in [
        (bundle(entry("PATCH", f"Patient/{first}", _json_patch([{"op": "remove", "path": "/active"}]), ifMatch='W/"1"'),
                entry("POST", "Patient", patient(ident()))), (409, 412)),
        (bundle(entry("POST", "Patient", patient(ident())),
                entry("PATCH", f"Patient/{second}", _fhirpath_patch("replace", "Patient.birthDate", valueString="x"))),
         (400, 422)),
        (bundle(entry("POST", "Patient", patient(ident())),
                entry("PATCH", f"Patient/{first}", _json_patch([{"op": "test", "path": "/active", "value": True}]))),
         (400, 409, 412, 422)),
    ]:
        refused(fhir, db, body, statuses, entry_index=next(n for n, e in enumerate(body["entry"])
                                                           if e["request"]["method"] == "PATCH"))
    assert fhir.get(f"Patient/{first}").json()["meta"]["versionId"] == "2"
    assert fhir.get(f"Patient/{second}").json()["birthDate"] == "1980-02-03"


def test_conditional_update_and_delete_entries(fhir: Fhir, db: Any) -> None:
    existing, new, doomed, many = ident(), ident(), ident(), ident()
    pid = create(fhir, patient(existing))
    gone = create(fhir, patient(doomed))
    result = post_ok(fhir, bundle(
        entry("PUT", f"Patient?identifier={SYSTEM}|{existing}", patient(existing, active=True)),
        entry("PUT", f"Patient?identifier={SYSTEM}|{new}", patient(new, active=False)),
        entry("DELETE", f"Patient?identifier={SYSTEM}|{doomed}"),
    ))
    assert [status(e) for e in result["entry"]][:2] == [200, 201]
    assert status(result["entry"][2]) in (200, 204)
    assert located(result["entry"][0])[:3] == ("Patient", pid, "2")
    assert fhir.get(f"Patient/{pid}").json()["active"] is True
    assert found(fhir, "Patient", new) == [located(result["entry"][1])[1]]
    assert fhir.get(f"Patient/{gone}").status_code == 410
    # several matches: a conditional update, and a conditional delete (single mode), fail the transaction
    create(fhir, patient(many))
    create(fhir, patient(many))
    refused(fhir, db, bundle(entry("POST", "Patient", patient(ident())),
                             entry("PUT", f"Patient?identifier={SYSTEM}|{many}", patient(many))), (412,), entry_index=1)
    refused(fhir, db, bundle(entry("POST", "Patient", patient(ident())),
                             entry("DELETE", f"Patient?identifier={SYSTEM}|{many}")), (412,), entry_index=1)
    assert len(found(fhir, "Patient", many)) == 2
    # a conditional update's criteria must be known search parameters
    refused(fhir, db, bundle(entry("PUT", "Patient?colour=blue", patient(ident()))), (400,), entry_index=0)


# -- the CapabilityStatement ---------------------------------------------------------------------------


def test_capability_statement_advertises_bundles_patch_and_conditionals(fhir: Fhir) -> None:
    rest = fhir.get("metadata").json()["rest"][0]
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    by_type = {r["type"]: r for r in rest["resource"]}
    for rtype in ("Patient", "Observation", "DocumentReference"):
        resource = by_type[rtype]
        assert {"patch", "update", "delete", "create"} <= {i["code"] for i in resource["interaction"]}
        assert resource["conditionalCreate"] is True and resource["conditionalUpdate"] is True
        assert resource["conditionalDelete"] == "single"


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_post_entry_may_have_no_full_url(fhir: Fhir, kind: str) -> None:
    """Bundle.entry.fullUrl: "fullUrl can be empty on a POST" (nothing in the bundle can refer to it)."""
    value = ident()
    response = fhir.post("", bundle({"resource": patient(value), "request": {"method": "POST", "url": "Patient"}},
                                    kind=kind))
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"].startswith("201")
    assert fhir.get(f"Patient?identifier={SYSTEM}|{value}").json()["total"] == 1
