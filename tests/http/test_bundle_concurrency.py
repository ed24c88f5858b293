"""Concurrent conditional creates and transactions over real HTTP: no duplicate, no lost update, no
transaction seen or stored in part (https://hl7.org/fhir/R4/http.html#concurrency, #transaction)."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.conftest import Fhir, LiveServer

SYSTEM = "urn:test:concurrency"
PARALLEL = 20


def _clients(server: LiveServer, n: int) -> list[Fhir]:
    """One client (one HTTP session) per thread, sharing a token."""
    token = server.token()
    return [Fhir(server.base, token) for _ in range(n)]


def test_parallel_conditional_creates_make_one_resource(server: LiveServer, fhir: Fhir) -> None:
    value = uuid.uuid4().hex
    body = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}],
            "name": [{"family": "Parallèle"}]}
    start = threading.Barrier(PARALLEL)

    def one(client: Fhir) -> tuple[int, str]:
        start.wait()
        response = client.post("Patient", body, headers={"If-None-Exist": f"identifier={SYSTEM}|{value}"})
        return response.status_code, response.json().get("id", response.text)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(one, _clients(server, PARALLEL)))
    found = fhir.get("Patient", params={"identifier": f"{SYSTEM}|{value}"}).json().get("entry", [])
    assert len(found) == 1, results
    rid = found[0]["resource"]["id"]
    assert sorted(status for status, _ in results).count(201) == 1, results
    assert all(status in (200, 201) and named == rid for status, named in results), results


def test_parallel_conditional_creates_in_transactions_make_one_resource(server: LiveServer, fhir: Fhir) -> None:
    value = uuid.uuid4().hex
    start = threading.Barrier(PARALLEL)

    def one(client: Fhir) -> tuple[int, str]:
        start.wait()
        response = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": value}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYSTEM}|{value}"}}]})
        if response.status_code != 200:
            return response.status_code, response.text
        location = response.json()["entry"][0]["response"]
        return int(location["status"].split()[0]), location["location"].split("/")[-3]

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(one, _clients(server, PARALLEL)))
    found = fhir.get("Patient", params={"identifier": f"{SYSTEM}|{value}"}).json().get("entry", [])
    assert len(found) == 1, results
    rid = found[0]["resource"]["id"]
    assert [status for status, _ in results].count(201) == 1, results
    assert all(status in (200, 201) and named == rid for status, named in results), results


def _counter(tag: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": f"counter {n}"},
            "identifier": [{"system": SYSTEM, "value": f"{tag}-{n}"}],
            "meta": {"tag": [{"system": SYSTEM, "code": tag}]}, "valueInteger": 0}


def test_parallel_read_modify_write_transactions_lose_no_update(server: LiveServer, fhir: Fhir) -> None:
    """Each transaction reads three counters and writes them all back incremented, with ifMatch; on 409 or
    412 it reads again and retries. Every success must show in the final versions and values, and every
    version must have been written by one transaction for all three counters (all or nothing)."""
    tag = uuid.uuid4().hex[:12]
    ids = []
    for n in range(3):
        created = fhir.post("Observation", _counter(tag, n))
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    start = threading.Barrier(PARALLEL)
    stop = threading.Event()
    torn: list[Any] = []
    looks = [0]

    def worker(args: tuple[int, Fhir]) -> tuple[int, int]:
        number, client = args
        start.wait()
        failures = 0
        for attempt in range(500):
            current = [client.get(f"Observation/{rid}").json() for rid in ids]
            writer = f"{number}-{attempt}"
            entries = [{"fullUrl": f"{server.base}/Observation/{r['id']}",
                        "resource": {**r, "valueInteger": r["valueInteger"] + 1, "note": [{"text": writer}],
                                     "meta": {"tag": r["meta"]["tag"]}},
                        "request": {"method": "PUT", "url": f"Observation/{r['id']}",
                                    "ifMatch": f'W/"{r["meta"]["versionId"]}"'}} for r in current]
            response = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
            if response.status_code == 200:
                return attempt, failures
            assert response.status_code in (409, 412), response.text
            failures += 1
        raise AssertionError(f"worker {number} never got through")

    def reader(client: Fhir) -> None:
        """Searches never see part of a transaction: the three counters always agree."""
        while not stop.is_set():
            page = client.get("Observation", params={"_tag": f"{SYSTEM}|{tag}", "_count": "10"}).json()
            looks[0] += 1
            values = {e["resource"]["valueInteger"] for e in page.get("entry", [])}
            versions = {e["resource"]["meta"]["versionId"] for e in page.get("entry", [])}
            if len(page.get("entry", [])) != 3 or len(values) != 1 or len(versions) != 1:
                torn.append(page)

    clients = _clients(server, PARALLEL + 1)
    watcher = threading.Thread(target=reader, args=(clients[-1],))
    watcher.start()
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            outcomes = list(pool.map(worker, enumerate(clients[:PARALLEL])))
    finally:
        stop.set()
        watcher.join()
    successes = len(outcomes)
    assert sum(failures for _, failures in outcomes) > 0, "the workers never contended: the test proves nothing"
    final = [fhir.get(f"Observation/{rid}").json() for rid in ids]
    assert [r["valueInteger"] for r in final] == [successes] * 3
    assert [r["meta"]["versionId"] for r in final] == [str(successes + 1)] * 3
    # every version k of the three counters was written by the same transaction, with value k - 1
    histories = [fhir.get(f"Observation/{rid}/_history", params={"_count": "100"}).json() for rid in ids]
    by_version = [{e["resource"]["meta"]["versionId"]: e["resource"] for e in h["entry"]} for h in histories]
    writers = set()
    for k in range(2, successes + 2):
        versions = [h[str(k)] for h in by_version]
        assert {v["valueInteger"] for v in versions} == {k - 1}, versions
        assert len({v["note"][0]["text"] for v in versions}) == 1, versions
        writers.add(versions[0]["note"][0]["text"])
    assert len(writers) == successes
    assert looks[0] > 3 and not torn, (looks, torn[:3])
