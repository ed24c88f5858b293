"""The writer of tests/storage/test_transaction_faults.py, run as a child process (so that it can be
killed): one ``Store.commit`` of ``SIZE`` writes, half updates of existing Patients, half new
Observations referencing them. ``python tx_writer.py URI DATABASE``; exit 0 once committed, 3 when the
commit raised (the database went away).

``python tx_writer.py --serve``: imports everything once, then for each JSON line on stdin
(``{"uri", "database", "env"}``) forks a writer with those FAULT_* variables (sitecustomize.py) and
answers ``{"pid", "status"}`` once it has exited (status -9: killed), saving an interpreter start per
case. It holds no database connection, so forking is safe."""
from __future__ import annotations

import sys
from typing import Any

SIZE = 50
PATIENTS = [f"p{n:02d}" for n in range(SIZE // 2)]
OBSERVATIONS = [f"o{n:02d}" for n in range(SIZE // 2)]


def old_patient(rid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "active": False, "name": [{"family": "Before", "given": [rid]}]}


def new_patient(rid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "active": True, "name": [{"family": "After", "given": [rid]}]}


def new_observation(oid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"text": "fault injection"},
            "subject": {"reference": f"Patient/p{oid[1:]}"}, "valueString": oid}


def writes() -> list[Any]:
    from fhir_server.storage.transaction import Write

    return ([Write("Patient", p, new_patient(p), "PUT") for p in PATIENTS]
            + [Write("Observation", o, new_observation(o), "POST") for o in OBSERVATIONS])


def main(uri: str, database: str) -> int:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from fhir_server.search.index import index
    from fhir_server.storage import Store

    client: MongoClient[Any] = MongoClient(uri, tz_aware=True, w="majority", journal=True,
                                           serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    store = Store(client[database], indexer=index)
    try:
        versions = store.commit(writes(), by=["test/transaction-faults"])
    except PyMongoError as failed:
        print(f"commit failed: {type(failed).__name__}", flush=True)
        return 3
    print(f"committed {len(versions)}", flush=True)
    return 0


def serve() -> None:
    import importlib
    import json
    import os

    import sitecustomize

    for module in ("pymongo", "fhir_server.search.index", "fhir_server.storage"):  # once, before forking
        importlib.import_module(module)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.environ.update(request["env"])
            sitecustomize.configure()
            code = 1
            try:
                code = main(request["uri"], request["database"])
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(main(sys.argv[1], sys.argv[2]))
