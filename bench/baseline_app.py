"""The baseline for bench/bench_crud.py and bench/bench_search.py: the least a Flask + pymongo app
can do for the same requests.

    GET  /Patient/<id>  find_one({"_id": id}) in the server's ``Patient`` collection, answer its
                        stored ``json`` bytes as they are (the document the FHIR server serves)
    POST /Patient       orjson.loads the body, give it a uuid id, orjson.dumps, insert_one into
                        ``BASELINE_COLLECTION`` (not the server's collections), answer 201 + the JSON

and, for bench_search.py, one hand-written endpoint per benchmarked search, each a pymongo ``find``
on the server's own collections and search columns (``search.<code>.<column>``, ``d: False``), sorted
on ``_id`` like the server's default sort, ``_count + 1`` rows to know whether a next page exists, and
(unless ``_total=none``) a ``count_documents`` of the same filter for ``Bundle.total``, as the server
does; the searchset Bundle is built by concatenating the stored bytes:

    GET /search/observation-patient?patient=Patient/<id>&_count=N
    GET /search/patient-identifier?identifier=<system>|<value>&_count=N
    GET /search/observation-code-date?code=<system>|<code>&date=ge<day>&date=lt<day>&_count=N
    GET /search/encounter-patient-include?patient=Patient/<id>&_count=N
        (the Encounters, their subjects, and the Observations referring to them: what
        ``_include=Encounter:subject&_revinclude=Observation:encounter`` returns)

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
from datetime import UTC, datetime
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

    def stored(doc: dict[str, Any]) -> bytes:
        return zlib.decompress(doc["json"]) if doc.get("z") else bytes(doc["json"])

    def searchset(entries: list[tuple[str, dict[str, Any], bytes]], total: int | None,
                  next_after: str | None) -> Response:
        """``entries``: (type, document, search mode). Concatenated bytes, like the server's fragments."""
        base = request.host_url.encode() + b"fhir/"
        links = [b'{"relation":"self","url":' + orjson.dumps(request.url) + b"}"]
        if next_after is not None:
            links.append(b'{"relation":"next","url":' + orjson.dumps(f"{request.url}&_after={next_after}") + b"}")
        parts = [b'{"resourceType":"Bundle","type":"searchset"']
        if total is not None:
            parts.append(b',"total":%d' % total)
        parts.append(b',"link":[' + b",".join(links) + b"]")
        if entries:
            parts.append(b',"entry":[' + b",".join(
                b'{"fullUrl":"' + base + rtype.encode() + b"/" + doc["_id"].encode() + b'","resource":' + stored(doc)
                + b',"search":{"mode":"' + mode + b'"}}' for rtype, doc, mode in entries) + b"]")
        parts.append(b"}")
        return Response(b"".join(parts), status=200, content_type=FHIR_JSON)

    def page(rtype: str, condition: dict[str, Any], extra: dict[str, int] | None = None
             ) -> tuple[list[dict[str, Any]], int | None, str | None]:
        count = int(request.args.get("_count", "50"))
        condition = {**condition, "d": False}
        total = None if request.args.get("_total") == "none" else db[rtype].count_documents(condition)
        docs = list(db[rtype].find(condition, {"json": 1, "z": 1, **(extra or {})}, sort=[("_id", 1)],
                                   limit=count + 1))
        more = docs[count - 1]["_id"] if len(docs) > count else None
        return docs[:count], total, more

    @app.get("/search/observation-patient")
    def observation_patient() -> Response:
        docs, total, more = page("Observation", {"search.patient:r": request.args["patient"]})
        return searchset([("Observation", d, b"match") for d in docs], total, more)

    @app.get("/search/patient-identifier")
    def patient_identifier() -> Response:
        docs, total, more = page("Patient", {"search.identifier:k": request.args["identifier"]})
        return searchset([("Patient", d, b"match") for d in docs], total, more)

    @app.get("/search/observation-code-date")
    def observation_code_date() -> Response:
        bounds = {v[:2]: datetime.fromisoformat(v[2:]).replace(tzinfo=UTC) for v in request.args.getlist("date")}
        docs, total, more = page("Observation", {"search.code:k": request.args["code"],
                                                 "search.date:hi": {"$gt": bounds["ge"]},
                                                 "search.date:lo": {"$lt": bounds["lt"]}})
        return searchset([("Observation", d, b"match") for d in docs], total, more)

    @app.get("/search/encounter-patient-include")
    def encounter_patient_include() -> Response:
        docs, total, more = page("Encounter", {"search.patient:r": request.args["patient"]}, {"search.subject:r": 1})
        entries = [("Encounter", d, b"match") for d in docs]
        subjects = sorted({r.split("/", 1)[1] for d in docs for r in d.get("search", {}).get("subject:r", ())
                           if r.startswith("Patient/") and r.count("/") == 1})
        if subjects:
            entries += [("Patient", d, b"include")
                        for d in db["Patient"].find({"_id": {"$in": subjects}, "d": False}, {"json": 1, "z": 1})]
        if docs:
            refs = [f"Encounter/{d['_id']}" for d in docs]
            entries += [("Observation", d, b"include")
                        for d in db["Observation"].find({"search.encounter:r": {"$in": refs}, "d": False},
                                                        {"json": 1, "z": 1}, limit=1000)]
        return searchset(entries, total, more)

    @app.get("/readyz")
    def readyz() -> Response:
        db.command("ping")
        return Response(b'{"status":"ready"}', content_type="application/json")

    return app
