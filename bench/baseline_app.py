"""The baseline for bench/bench_crud.py: the least a Flask + pymongo app can do for the same requests.

    GET  /Patient/<id>  find_one({"_id": id}) in the server's ``Patient`` collection, answer its
                        stored ``json`` bytes as they are (the document the FHIR server serves)
    POST /Patient       orjson.loads the body, give it a uuid id, orjson.dumps, insert_one into
                        ``BASELINE_COLLECTION`` (not the server's collections), answer 201 + the JSON

No validation, no versioning, no history, no content negotiation, no headers beyond Content-Type
(and Location on create). The pymongo client uses the same write concern as the server
(``w="majority", journal=True``), so creates compare the application layers, not durability settings.

Run under gunicorn like the server (gthread, same workers and threads), from the repository root:

    BASELINE_MONGODB_URI=mongodb://127.0.0.1:27017/ BASELINE_DATABASE=fhir \\
        .venv/bin/gunicorn --chdir bench -k gthread -w 2 --threads 4 'baseline_app:create_app()'
"""
from __future__ import annotations

import os
import uuid
import zlib
from typing import Any

import orjson
from flask import Flask, Response, request
from pymongo import MongoClient

FHIR_JSON = "application/fhir+json"


def create_app() -> Flask:
    client: MongoClient[Any] = MongoClient(os.environ["BASELINE_MONGODB_URI"], w="majority", journal=True,
                                           appname="bench-baseline")
    db = client[os.environ.get("BASELINE_DATABASE", "fhir")]
    current = db["Patient"]
    created = db[os.environ.get("BASELINE_COLLECTION", "baseline_Patient")]
    app = Flask(__name__)

    @app.get("/Patient/<rid>")
    def read(rid: str) -> Response:
        doc = current.find_one({"_id": rid})
        if doc is None or doc.get("json") is None:
            return Response(b'{"resourceType":"OperationOutcome"}', status=404, content_type=FHIR_JSON)
        data = zlib.decompress(doc["json"]) if doc.get("z") else bytes(doc["json"])
        return Response(data, status=200, content_type=FHIR_JSON)

    @app.post("/Patient")
    def create() -> Response:
        resource = orjson.loads(request.get_data())
        resource["id"] = str(uuid.uuid4())
        data = orjson.dumps(resource)
        created.insert_one({"_id": resource["id"], "json": data})
        return Response(data, status=201, content_type=FHIR_JSON,
                        headers={"Location": f"/Patient/{resource['id']}"})

    @app.get("/readyz")
    def readyz() -> Response:
        db.command("ping")
        return Response(b'{"status":"ready"}', content_type="application/json")

    return app
