"""What bench_consent.py, bench_audit.py and audit_load.py share: the FHIR server with SMART access
tokens required (``FHIR_AUTH=on``), tokens minted with its own signing key, and data sets loaded in
bulk through the server's own write path.

- ``start_fhir``: a ``fhir-server serve`` on the stack's database with access tokens on and extra
  settings (``FHIR_AUDIT``), registered in the Stack so that it is always stopped;
- ``mint``: an access token for one server, as ``fhir-server token`` prints it
  (``fhir_server.auth.admin.mint_token`` with a KeyRing on the same database; issuer and audience
  are the server's FHIR base ``http://127.0.0.1:<port>/fhir``, the base it derives from the request);
- ``load``: a pool of processes generating ``make(number)`` for each number and writing the
  documents the server's create path writes (``Store._write`` with the server's indexer: history
  entry, current document with its search columns and compartments) with ``insert_many``: fast, and
  exactly what ``POST`` would have stored, so the guard's lookups (``search.actor:r``,
  ``compartments``) find the Consents and Patients.

Not a test module.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from harness import FHIR_JSON, RecordingDatabase, Service, Stack, http_call

from fhir_server.capability import PUBLISHER
from fhir_server.storage.ferretdb import free_port

# -- the server -------------------------------------------------------------------------------------


def start_fhir(stack: Stack, name: str, env: dict[str, str] | None = None) -> Service:
    """``fhir-server serve`` with access tokens required, the stack's workers and threads, ``env`` on top."""
    port = free_port()
    service = Service(name, [sys.executable, "-m", "fhir_server.cli", "serve"],
                      {**stack.common_env, "FHIR_MONGODB_URI": stack.uri, "FHIR_MONGODB_DATABASE": stack.database,
                       "FHIR_HOST": "127.0.0.1", "FHIR_PORT": str(port),
                       "FHIR_WORKERS": str(stack.args.workers), "FHIR_THREADS": str(stack.args.threads),
                       "FHIR_SECRET": os.urandom(16).hex(), "FHIR_AUTH": "on", **(env or {})},
                      port, "/readyz", stack.work, stack.work)
    stack.services.append(service)
    return service.start()


def base_of(service: Service) -> str:
    return f"http://127.0.0.1:{service.port}/fhir"


def mint(stack: Stack, service: Service, scope: str, expires: int = 4 * 3600, **claims: Any) -> str:
    """An access token for ``service`` signed with the servers' key (the same database)."""
    from pymongo import MongoClient

    from fhir_server.auth.admin import mint_token
    from fhir_server.auth.tokens import KeyRing
    from fhir_server.storage import AuthStore
    with MongoClient(stack.uri, tz_aware=True) as client:
        return mint_token(KeyRing(AuthStore(client[stack.database])), base_of(service), scope,
                          expires=expires, **claims)


def get_json(service: Service, path: str, token: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    status, _, body = http_call("127.0.0.1", service.port, "GET", path,
                                headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}, timeout=timeout)
    return status, (json.loads(body) if body else {})


def search_all(service: Service, path: str, token: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every resource of a search, following the ``next`` links; and Bundle.total of the first page."""
    found: list[dict[str, Any]] = []
    total = None
    first = True
    while path:
        status, bundle = get_json(service, path, token)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {json.dumps(bundle)[:500]}")
        if first:
            total, first = bundle.get("total"), False
        found += [e["resource"] for e in bundle.get("entry") or () if (e.get("search") or {}).get("mode") != "include"]
        following = next((link["url"] for link in bundle.get("link") or () if link.get("relation") == "next"), None)
        path = following.split(f":{service.port}", 1)[1] if following else ""
    return found, total


# -- bulk loading through the server's write path ----------------------------------------------------


def store_documents(resources: list[dict[str, Any]], compress_above: int, indexer: Any) -> dict[str, list[dict]]:
    """The documents ``POST`` of each resource (with its id) would store, per collection."""
    from fhir_server.storage.store import Store
    recording = RecordingDatabase()
    store = Store(recording, compress_above, indexer)  # type: ignore[arg-type]
    for resource in resources:
        store._write(resource["resourceType"], resource["id"], resource, if_match=None, method="POST")
    return recording.docs


_worker: dict[str, Any] = {}
Maker = Callable[[int], tuple[list[dict[str, Any]], list[Any]]]


def _init_worker(uri: str, database: str, make: Maker, compress_above: int) -> None:
    from pymongo import MongoClient

    from fhir_server.search.index import index
    # the parent's handlers (harness.signals_as_interrupts) are not for workers: the pool ends them with SIGTERM
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.update(db=MongoClient(uri, tz_aware=True, appname="bench-loader")[database], make=make,
                   compress_above=compress_above, index=index)


def _load_chunk(bounds: tuple[int, int]) -> tuple[list[Any], Counter[str]]:
    resources: list[dict[str, Any]] = []
    facts: list[Any] = []
    for number in range(*bounds):
        made, known = _worker["make"](number)
        resources += made
        facts += known
    docs = store_documents(resources, _worker["compress_above"], _worker["index"])
    for name, batch in docs.items():
        _worker["db"][name].insert_many(batch, ordered=False)
    return facts, Counter(r["resourceType"] for r in resources)


def load(uri: str, database: str, make: Maker, count: int, processes: int, chunk: int = 25,
         extra: list[dict[str, Any]] | None = None) -> tuple[list[Any], Counter[str], float]:
    """Generate and store ``make(n)`` for n in range(count) (plus ``extra`` resources); returns the
    facts the generator returned, the resources per type, and the seconds it took."""
    from pymongo import MongoClient

    from fhir_server.config import Config
    from fhir_server.search.index import index
    compress_above = Config.load().compress_above_bytes
    started = time.monotonic()
    facts: list[Any] = []
    counts: Counter[str] = Counter()
    chunks = [(a, min(a + chunk, count)) for a in range(0, count, chunk)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_init_worker, initargs=(uri, database, make, compress_above)) as pool:
        for done, (chunk_facts, chunk_counts) in enumerate(pool.imap_unordered(_load_chunk, chunks), 1):
            facts += chunk_facts
            counts.update(chunk_counts)
            if done % max(1, len(chunks) // 10) == 0 and done < len(chunks):
                elapsed = time.monotonic() - started
                print(f"  loaded {min(done * chunk, count):,}/{count:,} patients, {sum(counts.values()):,} resources "
                      f"({elapsed:.0f}s)", flush=True)
    if extra:
        with MongoClient(uri, tz_aware=True) as client:
            for name, batch in store_documents(extra, compress_above, index).items():
                client[database][name].insert_many(batch, ordered=False)
        counts.update(r["resourceType"] for r in extra)
    return facts, counts, time.monotonic() - started


def check_counts(uri: str, database: str, counts: Counter[str]) -> None:
    """Every generated resource is in its collection, with its history entry."""
    from pymongo import MongoClient
    with MongoClient(uri, tz_aware=True) as client:
        db = client[database]
        for rtype, expected in sorted(counts.items()):
            found = db[rtype].estimated_document_count()
            if found != expected:
                raise RuntimeError(f"{rtype}: {found} documents loaded, {expected} expected")
        history = db["history"].count_documents({"by": {"$ne": PUBLISHER[0]}})  # not the published profiles
        if history != sum(counts.values()):
            raise RuntimeError(f"history: {history} documents, {sum(counts.values())} expected")


def iter_resources(uri: str, database: str, rtype: str, query: dict[str, Any] | None = None
                   ) -> Iterator[dict[str, Any]]:
    """The stored resources of a collection, parsed (for counting AuditEvents)."""
    import zlib

    import orjson
    from pymongo import MongoClient
    with MongoClient(uri, tz_aware=True) as client:
        for doc in client[database][rtype].find(query or {}, {"json": 1, "z": 1}):
            data = doc.get("json")
            if data is not None:
                yield orjson.loads(zlib.decompress(data) if doc.get("z") else bytes(data))


# -- the DMP data set of bench_search (bench/dmp_data.py), for the audit benchmarks -----------------------


class DmpRecords:
    """``patient_record`` of bench/dmp_data.py as a loader's ``make`` (picklable, deterministic)."""

    def __init__(self, seed: int, doctors: list[str]) -> None:
        self.seed, self.doctors = seed, doctors

    def __call__(self, number: int) -> tuple[list[dict[str, Any]], list[Any]]:
        from dmp_data import patient_record
        return patient_record(self.seed, number, self.doctors)


def load_dmp(stack: Stack, patients: int, seed: int, processes: int, n_doctors: int = 50
             ) -> tuple[list[Any], Counter[str], float]:
    """bench_search's DMP data set (about 11 resources per patient), loaded through the server's write path."""
    from dmp_data import practitioners
    doctors = practitioners(seed, n_doctors)
    facts, counts, seconds = load(stack.uri, stack.database, DmpRecords(seed, [d["id"] for d in doctors]), patients,
                                  processes, extra=doctors)
    check_counts(stack.uri, stack.database, counts)
    return facts, counts, seconds


def audit_events(uri: str, database: str) -> Counter[tuple[str, str, str | None]]:
    """The AuditEvents stored, as (BALP profile, subtype, patient) -> count: the profile without its
    prefix (``PatientRead``, ``PatientQuery``, ``Query``, ...), the first subtype's code (``read``,
    ``search-type``, ...), the patient of the entity in role 1 (Patient), or None."""
    found: Counter[tuple[str, str, str | None]] = Counter()
    for event in iter_resources(uri, database, "AuditEvent"):
        profile = ((event.get("meta") or {}).get("profile") or ["?"])[0].rsplit(".", 1)[-1]
        subtype = next((c.get("code", "?") for c in event.get("subtype") or ()), "")
        patients = [e["what"]["reference"].split("/", 1)[1] for e in event.get("entity") or ()
                    if (e.get("role") or {}).get("code") == "1" and "what" in e]
        found[(profile, subtype, patients[0] if patients else None)] += 1
    return found
