"""Search (https://hl7.org/fhir/R4/search.html, http.html#search): every search parameter the
CapabilityStatement advertises, for every type, with a value computed from the created example by the
parameter's FHIRPath expression (it must find the example) and an altered one (it must not); and the
searchset Bundle, paging, POST, unknown parameters, system search."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from .data import PLAIN, RUN, TAG_SYSTEM, Instances, tagged
from .searchvalues import definition, fhirpath, search_values
from .support import (assert_outcome, assert_status, bundle_ids, describe, fetch_all, interactions, json_body, link,
                      resource_entry, types_with, url_with)

# type -> parameter name -> (matching value, missing value, the values found) or why it is not testable
_cases: dict[str, dict[str, tuple[str, str, list[Any]] | str]] = {}
_answers: dict[str, requests.Response] = {}  # search URL -> answer, fetched a type at a time


@pytest.fixture(autouse=True, scope="module")
def _examples(instances: Instances, capability: dict[str, Any]) -> None:
    instances.create_all(types_with(capability, "create"))


def _searchset(response: requests.Response) -> dict[str, Any]:
    """search.html#return: "The response to a search is a Bundle with type searchset"."""
    assert_status(response, 200)
    bundle = json_body(response)
    assert isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", \
        f"not a searchset Bundle: {describe(response)}"
    return bundle


def _case(rtype: str, name: str, sptype: str, canonical: str | None, resource: dict[str, Any]) -> tuple[str, str, list[Any]] | str:
    """The two search values for one parameter, from the resource as stored, or why there are none."""
    if sptype in ("composite", "special"):
        return f"{sptype} parameters are not covered by this suite (their values need per-parameter rules)"
    sp = definition(rtype, name, canonical)
    if sp is None or not sp.get("expression"):
        return "no R4 SearchParameter definition with an expression to compute a value from"
    try:
        values = fhirpath(sp["expression"], rtype, resource)
    except Exception as error:  # fhirpathpy's gaps: reported as skips, not failures of the server
        return f"the FHIRPath expression could not be evaluated here ({type(error).__name__})"
    pair = search_values(sptype, values, rtype)
    return pair if isinstance(pair, str) else (pair[0], pair[1], values)


def _url(base_url: str, rtype: str, rid: str, name: str, value: str) -> str:
    """Every search adds ``_id`` so that other data on the server does not matter (AND of parameters)."""
    return url_with(f"{base_url}/{rtype}", {name: value} if name == "_id" else {name: value, "_id": rid})


def _prepare(rtype: str, instances: Instances, http: requests.Session, base_url: str,
             capability: dict[str, Any]) -> dict[str, tuple[str, str, list[Any]] | str]:
    """The cases of every advertised parameter of the type, and their searches run a few at a time."""
    if rtype not in _cases:
        created = instances.of(rtype)
        resource = instances.current(created)
        _cases[rtype] = {sp["name"]: _case(rtype, sp["name"], sp.get("type", ""), sp.get("definition"), resource)
                         for sp in resource_entry(capability, rtype).get("searchParam") or ()}
        urls = [_url(base_url, rtype, created.id, name, value) for name, case in _cases[rtype].items()
                if not isinstance(case, str) for value in case[:2]]
        _answers.update(fetch_all(http, urls))
    return _cases[rtype]


@pytest.mark.interaction("search-type")
def test_search_by_id(rtype: str, instances: Instances, http: requests.Session, base_url: str,
                      capability: dict[str, Any]) -> None:
    """A search answers a searchset Bundle whose entries are the matches (search.mode "match"), with a
    self link (search.html#self: the server SHALL return the parameters it actually used, as the self
    link), and each entry's fullUrl names the resource (Bundle: fullUrl is the resource's identity).
    The type's parameter searches are run here, a few at a time; ``[type]?_id=[id]`` is one of them when
    ``_id`` is advertised, and its answer is checked here too rather than asked for twice."""
    created = instances.of(rtype)
    _prepare(rtype, instances, http, base_url, capability)
    url = _url(base_url, rtype, created.id, "_id", created.id)
    bundle = _searchset(_answers[url] if url in _answers else http.get(url))
    assert bundle_ids(bundle, rtype) == [created.id], f"_id={created.id} found {bundle_ids(bundle)}"
    assert link(bundle, "self"), f"no self link: {bundle.get('link')}"
    entry = bundle["entry"][0]
    assert entry.get("search", {}).get("mode", "match") == "match", entry.get("search")
    if entry.get("fullUrl"):
        assert entry["fullUrl"].endswith(f"{rtype}/{created.id}"), f"fullUrl {entry['fullUrl']} for {rtype}/{created.id}"


def test_search_parameter(search_param: tuple[str, str, str, str | None], instances: Instances,
                          http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """search.html#ptypes: the value computed from the stored resource finds it, the altered one does not."""
    rtype, name, sptype, _ = search_param
    if sptype in ("composite", "special"):
        pytest.skip(f"{sptype} parameters are not covered by this suite (their values need per-parameter rules)")
    case = _prepare(rtype, instances, http, base_url, capability)[name]
    if isinstance(case, str):
        pytest.skip(case)
    matching, missing, values = case
    rid = instances.of(rtype).id
    found = _searchset(_answers[_url(base_url, rtype, rid, name, matching)])
    assert rid in bundle_ids(found, rtype), f"{rtype}?{name}={matching} did not find {rtype}/{rid} (values {values!r:.300})"
    found = _searchset(_answers[_url(base_url, rtype, rid, name, missing)])
    assert rid not in bundle_ids(found, rtype), f"{rtype}?{name}={missing} found {rtype}/{rid}, whose values are {values!r:.300}"


def test_paging(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """search.html#count: the server returns no more than _count entries, with a next link while there are
    more (http.html#paging: the links are opaque; following next gives the following page)."""
    if "Patient" not in types_with(capability, "create", "search-type"):
        pytest.skip("the server does not advertise create and search for Patient")
    tag = {"system": TAG_SYSTEM, "code": f"{RUN}-paging"}  # three Patients of their own
    ids = set()
    for _ in range(3):
        patient = tagged(PLAIN["Patient"])
        patient["meta"]["tag"].append(tag)
        response = instances.create(patient)
        assert_status(response, 201)
        ids.add(instances.created(patient, response, read=False).id)
    seen: list[str] = []
    url: str | None = f"{base_url}/Patient?_tag={TAG_SYSTEM}|{tag['code']}&_count=1"
    for _ in range(10):
        if not url:
            break
        page = _searchset(http.get(url))
        assert len(page.get("entry") or ()) <= 1, f"_count=1 gave {len(page['entry'])} entries"
        seen += bundle_ids(page, "Patient")
        url = link(page, "next")
    assert len(seen) == len(set(seen)), f"a resource came twice while paging: {seen}"
    assert ids <= set(seen), f"paging with _count=1 did not reach every match: {ids - set(seen)} missing"


def test_search_by_post(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#search: POST [base]/[type]/_search with the parameters as
    application/x-www-form-urlencoded finds what GET finds (a server may answer 405 to one of them)."""
    rtype = "Patient" if "Patient" in types_with(capability, "search-type") else None
    if rtype is None:
        pytest.skip("the server does not advertise search for Patient")
    created = instances.plain(rtype)
    response = http.post(f"{base_url}/{rtype}/_search", data={"_id": created.id})
    if response.status_code == 405:
        pytest.skip("the server answers 405 to POST _search (allowed)")
    assert bundle_ids(_searchset(response), rtype) == [created.id]


@pytest.mark.should
def test_unknown_parameter_is_ignored(instances: Instances, http: requests.Session, base_url: str) -> None:
    """search.html#errors: servers SHOULD ignore unknown parameters by default (Prefer: handling=lenient);
    and the self link leaves out what was ignored (the server SHALL return the parameters it used)."""
    created = instances.plain("Patient")
    bundle = _searchset(http.get(f"{base_url}/Patient", params={"_id": created.id, "zzqx-unknown": "1"}))
    assert bundle_ids(bundle, "Patient") == [created.id]
    assert "zzqx-unknown" not in (link(bundle, "self") or ""), f"the self link names an ignored parameter: {link(bundle, 'self')}"


@pytest.mark.should
def test_strict_handling_refuses_unknown_parameter(http: requests.Session, base_url: str) -> None:
    """search.html#errors: with Prefer: handling=strict the client asks for an error on any unknown
    parameter (a server SHOULD honour it)."""
    response = http.get(f"{base_url}/Patient", params={"zzqx-unknown": "1"}, headers={"Prefer": "handling=strict"})
    assert_outcome(response, 400)


def test_invalid_parameter_value_is_an_error(http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """search.html#errors: a value the server cannot process (a date that is not a date) is an error:
    400 Bad Request with an OperationOutcome."""
    if "Patient" not in types_with(capability, "search-type"):
        pytest.skip("the server does not advertise search for Patient")
    assert_outcome(http.get(f"{base_url}/Patient", params={"birthdate": "not-a-date"}), 400)


def test_system_search(instances: Instances, http: requests.Session, base_url: str, capability: dict[str, Any]) -> None:
    """http.html#search: GET [base]?[parameters] searches every type (when search-system is advertised)."""
    if "search-system" not in interactions(capability):
        pytest.skip("the server does not advertise search-system")
    created = instances.plain("Patient")
    bundle = _searchset(http.get(f"{base_url}", params={"_id": created.id}))
    assert created.id in bundle_ids(bundle, "Patient"), f"system search _id={created.id} found {bundle_ids(bundle)}"
