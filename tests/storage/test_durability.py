"""Acknowledged writes survive kill -9 of both the server and the database."""
from __future__ import annotations

import signal
from pathlib import Path

from fhir_server.storage.ferretdb import FerretDB
from tests.conftest import LiveServer


def test_acknowledged_writes_survive_kill_9_of_server_and_database(tmp_path: Path) -> None:
    data = tmp_path / "db"
    ferret = FerretDB(data).start()
    server = LiveServer(ferret.uri, "durable", tmp_path).start()
    fhir = server.client()
    acknowledged: dict[str, str] = {}
    for n in range(40):
        response = fhir.post("Observation", {"resourceType": "Observation", "status": "final",
                                             "code": {"text": f"measure {n}"}})
        assert response.status_code == 201
        acknowledged[response.json()["id"]] = f"measure {n}"
    updated = next(iter(acknowledged))
    assert fhir.put(f"Observation/{updated}", {"resourceType": "Observation", "id": updated, "status": "amended",
                                               "code": {"text": "changed"}}).status_code == 200

    server.kill(signal.SIGKILL)
    assert ferret.process is not None
    ferret.process.send_signal(signal.SIGKILL)
    ferret.process.wait()

    ferret = FerretDB(data, port=ferret.port).start()
    server = LiveServer(ferret.uri, "durable", tmp_path).start()
    try:
        fhir = server.client()
        for rid, text in acknowledged.items():
            response = fhir.get(f"Observation/{rid}")
            assert response.status_code == 200
            if rid == updated:
                assert response.json()["code"]["text"] == "changed"
                assert response.json()["meta"]["versionId"] == "2"
            else:
                assert response.json()["code"]["text"] == text
        assert fhir.get(f"Observation/{updated}/_history").json()["total"] == 2
    finally:
        server.kill()
        ferret.stop()


def test_an_unreachable_database_is_a_503_not_a_500(tmp_path: Path) -> None:
    ferret = FerretDB(tmp_path / "db").start()
    server = LiveServer(ferret.uri, "gone", tmp_path).start()
    try:
        fhir = server.client()
        rid = fhir.post("Patient", {"resourceType": "Patient"}).json()["id"]
        ferret.stop()
        response = fhir.get(f"Patient/{rid}")
        assert response.status_code == 503, response.text
        assert response.json()["issue"][0]["code"] == "transient"
        import requests
        assert requests.get(f"http://127.0.0.1:{server.port}/readyz", timeout=30).status_code == 503
    finally:
        server.kill()
        ferret.stop()
