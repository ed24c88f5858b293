"""The real server killed in the middle of a transaction: ``POST [base]`` of 50 entries (25 Patients
updated, 25 Observations created) to a gunicorn server whose whole process group is SIGKILLed at a
chosen write of the commit (tests/storage/fault_injection/sitecustomize.py, from the test side only),
while readers poll through a second server on the same database. After a restart, every entry or
none is visible, and no reader ever saw part of it."""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Fhir, LiveServer

FAULTS = Path(__file__).resolve().parent.parent / "storage" / "fault_injection"
COMMIT_CALL = 5  # record, claims, tags of Patients, tags of Observations, then the commit (call 5)


def _transaction(patients: list[str], tag: str) -> dict[str, Any]:
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "PUT", "url": f"Patient/{p}"},
                "resource": {"resourceType": "Patient", "id": p, "name": [{"family": f"new-{tag}"}]}} for p in patients]
    entries += [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "request": {"method": "POST", "url": "Observation"},
                 "resource": {"resourceType": "Observation", "status": "final", "code": {"text": tag},
                              "subject": {"reference": f"Patient/{p}"}}} for p in patients]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _state(fhir: Fhir, patients: list[str], tag: str) -> tuple[set[str], int]:
    """The families the patients show and how many of the transaction's Observations exist, in one search."""
    found = fhir.get("Patient", params={"_id": ",".join(patients), "_revinclude": "Observation:subject",
                                        "_count": "200"}).json()
    families = {e["resource"]["name"][0]["family"] for e in found.get("entry", [])
                if e["resource"]["resourceType"] == "Patient"}
    observations = sum(1 for e in found.get("entry", []) if e["resource"]["resourceType"] == "Observation"
                       and e["resource"]["code"]["text"] == tag)
    return families, observations


@pytest.mark.parametrize("at,when", [(1, "after"), (COMMIT_CALL, "before"), (COMMIT_CALL, "after"), (30, "before")])
def test_a_killed_server_leaves_all_or_nothing(ferretdb: Any, tmp_path: Path, at: int, when: str) -> None:
    database = f"fhir_killed_{at}_{when}"
    reader = LiveServer(ferretdb.uri, database, tmp_path, FHIR_TRANSACTION_TIMEOUT_SECONDS="1").start()
    writer = None
    try:
        fhir = reader.client()
        patients = [fhir.put(f"Patient/k{at}{when}{n}", {"resourceType": "Patient", "id": f"k{at}{when}{n}",
                                                          "name": [{"family": "old"}]}).json()["id"] for n in range(25)]
        tag = uuid.uuid4().hex
        writer = LiveServer(ferretdb.uri, database, tmp_path, FHIR_TRANSACTION_TIMEOUT_SECONDS="1",
                            PYTHONPATH=os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]),
                            FAULT_AT=str(at), FAULT_WHEN=when, FAULT_ACTION="group", FAULT_DELAY="0.02").start()
        seen: list[tuple[frozenset[str], int]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                families, observations = _state(fhir, patients, tag)
                seen.append((frozenset(families), observations))

        readers = [threading.Thread(target=poll) for _ in range(2)]
        for thread in readers:
            thread.start()
        with pytest.raises(requests.ConnectionError):  # the server dies under the request
            writer.client().post("", _transaction(patients, tag))
        assert writer.process is not None and writer.process.wait(30) == -9
        stop.set()
        for thread in readers:
            thread.join()
        reader.kill()
        reader = LiveServer(ferretdb.uri, database, tmp_path, FHIR_TRANSACTION_TIMEOUT_SECONDS="1").start()
        fhir = reader.client()
        committed = at > COMMIT_CALL or (at == COMMIT_CALL and when == "after")
        expected = ({f"new-{tag}"}, 25) if committed else ({"old"}, 0)
        assert _state(fhir, patients, tag) == expected
        assert seen, "the readers polled"
        mixes = [s for s in seen if s not in ((frozenset({"old"}), 0), (frozenset({f"new-{tag}"}), 25))]
        assert not mixes, mixes[:3]
        # nothing left behind blocks the next writer
        assert fhir.put(f"Patient/{patients[0]}", {"resourceType": "Patient", "id": patients[0],
                                                   "name": [{"family": "later"}]}).status_code == 200
    finally:
        reader.kill()
        if writer is not None:
            writer.kill()
