#!/usr/bin/env python3
"""Search at scale: the FHIR server's searches against hand-written pymongo finds, on a generated DMP.

    .venv/bin/python bench/bench_search.py [--patients 50000] [--seconds 10] [--clients 8]

What it does, all on 127.0.0.1:
1. starts one FerretDB (or uses ``--mongodb-uri``, in a database of its own dropped at the end), the
   FHIR server (which creates its indexes) and the baseline (bench/baseline_app.py, same gunicorn
   settings);
2. generates a DMP data set (bench/dmp_data.py: per patient a Patient with an INS, encounters, lab
   Observations, Conditions, sometimes an AllergyIntolerance, MedicationStatements, a
   DocumentReference; a pool of Practitioners) and loads it without HTTP: a pool of processes runs the
   server's own create path, ``Store._write`` with the server's indexer (``search.index:index``), on a
   database object that only records the documents it would insert (the history entry and the current
   document with its search columns), then inserts them with ``insert_many``. It then checks the
   document counts, and that the server reads a sample of resources back byte for byte;
3. prints the query plans (``explain``) of the common searches of each DMP type, compiled by the
   server's own compiler, with the index MongoDB would use (``SEARCH_INDEXES``), and checks the count
   the server answers for each against what the generator knows;
4. for the four benchmarked searches, writes 1,000 random requests per side into files, and checks
   on the first ``--check`` of each that the server's Bundle, the baseline's and the generator's
   expectation hold the same resources (it stops if not);
5. measures each search with wrk (paths mode of wrk_bench.lua: a random line per request), server
   and baseline alternated ABBA, and prints throughput, p50/p99, errors, ratios, CPU per request and
   the verdict against the target (each search at least 0.5 of its baseline's throughput).

On FerretDB (SQLite) every search scans its collection at 1.3-2 ms per document: at 10,000 patients
one search takes minutes, so the 50,000-patient default is for ``--mongodb-uri``; on FerretDB run the
load, plans and checks at scale with ``--no-wrk`` and measure throughput on a few hundred patients
(see bench/README.md).

The searches: (a) ``Observation?patient=Patient/<id>``, (b) ``Patient?identifier=<INS system>|<INS>``,
(c) ``Observation?code=http://loinc.org|<code>&date=ge<day>&date=lt<day>`` (a window of a few days,
so that about 15 match), (d) ``Encounter?patient=Patient/<id>&_include=Encounter:subject
&_revinclude=Observation:encounter``; all with ``_count=50`` on both sides.

Not a test: it prints figures. It exits non-zero when it cannot measure, or when a correctness check
fails. Nothing is cached between runs: the data set is generated and loaded anew each time.
"""
from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import random
import signal
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dmp_data import (CODE_PARAM, DATE_PARAM, FIRST_DAY, INS_SYSTEM, LAB, LAB_WEIGHTS, LOINC,  # noqa: E402
                      SPAN_DAYS, Fact, patient_record, practitioners)
from harness import (FHIR_JSON, Bench, RecordingDatabase, Run, Stack, add_common_arguments,  # noqa: E402
                     error_details, fmt, http_call, parse_clients, ratio, report_tables, results_json, run_main)
from fhir_server.capability import PUBLISHER  # noqa: E402

SEARCH_TARGET = 0.5  # the issue's target: each search at least 0.5 x its baseline's throughput
COUNT = 50  # _count, given explicitly to both sides
PATHS_PER_SEARCH = 1000
CHUNK = 25  # patients per loading task
SEARCHES = {
    "observation-patient": "Observation?patient=Patient/<id>",
    "patient-identifier": "Patient?identifier=<INS system>|<INS>",
    "observation-code-date": "Observation?code=loinc|<code>&date=ge<d1>&date=lt<d2>",
    "encounter-include": "Encounter?patient=Patient/<id>&_include=Encounter:subject&_revinclude=Observation:encounter",
}
TYPES = ("Patient", "Practitioner", "Encounter", "Observation", "Condition", "AllergyIntolerance",
         "MedicationStatement", "DocumentReference")


# -- loading ----------------------------------------------------------------------------------------


_worker: dict[str, Any] = {}


def _init_worker(uri: str, database: str, seed: int, doctors: list[str], compress_above: int) -> None:
    from pymongo import MongoClient
    # the parent's handlers (harness.signals_as_interrupts) are not for workers: the pool ends them with SIGTERM
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from fhir_server.search.index import index
    _worker.update(db=MongoClient(uri, tz_aware=True, appname="bench-loader")[database], seed=seed,
                   doctors=doctors, compress_above=compress_above, index=index)


def store_documents(resources: list[dict[str, Any]], compress_above: int, indexer: Any) -> dict[str, list[dict]]:
    """The documents the server's create path writes for ``resources`` (history entry and current document
    with its search columns, stamped and packed), per collection, without a database."""
    from fhir_server.storage.store import Store
    recording = RecordingDatabase()
    store = Store(recording, compress_above, indexer)  # type: ignore[arg-type]
    for resource in resources:
        store._write(resource["resourceType"], resource["id"], resource, if_match=None, method="POST")
    return recording.docs


def _insert(db: Any, docs: dict[str, list[dict[str, Any]]]) -> None:
    for name, batch in docs.items():
        db[name].insert_many(batch, ordered=False)


def _load_chunk(bounds: tuple[int, int]) -> tuple[list[Fact], Counter[str], Counter[str]]:
    facts: list[Fact] = []
    resources: list[dict[str, Any]] = []
    for number in range(*bounds):
        found, known = patient_record(_worker["seed"], number, _worker["doctors"])
        resources += found
        facts += known
    docs = store_documents(resources, _worker["compress_above"], _worker["index"])
    _insert(_worker["db"], docs)
    sizes: Counter[str] = Counter()
    for name, batch in docs.items():
        if name != "history":
            sizes[name] += sum(len(d["json"]) for d in batch)
    return facts, Counter(r["resourceType"] for r in resources), sizes


@dataclass
class DataSet:
    facts: list[Fact]
    counts: Counter[str]
    json_bytes: Counter[str]
    load_seconds: float
    load_started: datetime
    doctors: list[dict[str, Any]]


def load(uri: str, database: str, seed: int, patients: int, n_doctors: int, processes: int) -> DataSet:
    from pymongo import MongoClient

    from fhir_server.config import Config
    from fhir_server.search.index import index
    compress_above = Config.load().compress_above_bytes
    doctors = practitioners(seed, n_doctors)
    doctor_ids = [d["id"] for d in doctors]
    started_at = datetime.now(UTC).replace(microsecond=0)
    started = time.monotonic()
    facts: list[Fact] = []
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    chunks = [(a, min(a + CHUNK, patients)) for a in range(0, patients, CHUNK)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_init_worker,
                      initargs=(uri, database, seed, doctor_ids, compress_above)) as pool:
        for done, (chunk_facts, chunk_counts, chunk_sizes) in enumerate(pool.imap_unordered(_load_chunk, chunks), 1):
            facts += chunk_facts
            counts.update(chunk_counts)
            sizes.update(chunk_sizes)
            if done % max(1, len(chunks) // 20) == 0 and done < len(chunks):
                elapsed = time.monotonic() - started
                print(f"  loaded {done * CHUNK:,}/{patients:,} patients, {sum(counts.values()):,} resources "
                      f"({elapsed:.0f}s, {sum(counts.values()) / elapsed:,.0f} resources/s)", flush=True)
    with MongoClient(uri, tz_aware=True) as client:
        docs = store_documents(doctors, compress_above, index)
        _insert(client[database], docs)
    counts["Practitioner"] += len(doctors)
    sizes["Practitioner"] += sum(len(d["json"]) for d in docs["Practitioner"])
    facts += [Fact("Practitioner", d["id"], None, None, None, None,
                   f"{d['identifier'][0]['system']}|{d['identifier'][0]['value']}", None) for d in doctors]
    return DataSet(facts, counts, sizes, time.monotonic() - started, started_at, doctors)


def check_load(db: Any, data: DataSet, server_port: int, rng: random.Random) -> None:
    """Document counts per collection, and a sample of server reads equal to what the loader stored."""
    for rtype, expected in sorted(data.counts.items()):
        found = db[rtype].estimated_document_count()
        if found != expected:
            raise RuntimeError(f"{rtype}: {found} documents loaded, {expected} expected")
    history = db["history"].count_documents({"by": {"$ne": PUBLISHER[0]}})  # not the published profiles
    if history != sum(data.counts.values()):
        raise RuntimeError(f"history: {history} documents, {sum(data.counts.values())} expected")
    by_type: dict[str, list[Fact]] = defaultdict(list)
    for fact in data.facts:
        by_type[fact.type].append(fact)
    checked = 0
    for rtype, facts in sorted(by_type.items()):
        for fact in rng.sample(facts, min(3, len(facts))):
            doc = db[rtype].find_one({"_id": fact.id})
            stored = zlib.decompress(doc["json"]) if doc.get("z") else bytes(doc["json"])
            status, _, body = http_call("127.0.0.1", server_port, "GET", f"/fhir/{rtype}/{fact.id}")
            if status != 200 or body != stored:
                raise RuntimeError(f"GET /fhir/{rtype}/{fact.id}: {status}, and not the stored bytes: {body[:300]!r}")
            checked += 1
    print(f"document counts as generated ({sum(data.counts.values()):,} current, {history:,} history); "
          f"the server reads {checked} sampled resources ({len(by_type)} types) byte for byte as loaded", flush=True)


def check_valid(server_port: int, seed: int, doctors: list[dict[str, Any]]) -> None:
    """One resource of each generated type through the server's $validate: the data set is valid R4."""
    resources, _ = patient_record(seed, 0, [d["id"] for d in doctors])
    seen: dict[str, dict[str, Any]] = {"Practitioner": doctors[0]}
    for resource in resources:
        seen.setdefault(resource["resourceType"], resource)
    for rtype, resource in seen.items():
        status, _, body = http_call("127.0.0.1", server_port, "POST", f"/fhir/{rtype}/$validate",
                                    json.dumps(resource).encode(), {"Content-Type": FHIR_JSON})
        issues = json.loads(body).get("issue", []) if body else []
        errors = [i for i in issues if i.get("severity") in ("error", "fatal")]
        if status != 200 or errors:
            raise RuntimeError(f"the generated {rtype} is not valid: {status} {json.dumps(errors)[:800]}")
    print(f"generated resources valid ($validate on one of each: {', '.join(sorted(seen))})", flush=True)


# -- what the generator knows -------------------------------------------------------------------------


class Truth:
    """Indexes of the facts: the expected answer of each search."""

    def __init__(self, facts: list[Fact]) -> None:
        self.by_type: dict[str, list[Fact]] = defaultdict(list)
        self.of_patient: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.ins: dict[str, str] = {}
        self.obs_by_encounter: dict[str, list[str]] = defaultdict(list)
        self.obs_by_code: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        for fact in facts:
            self.by_type[fact.type].append(fact)
            if fact.patient:
                self.of_patient[(fact.type, fact.patient)].append(fact.id)
            if fact.type == "Patient":
                self.ins[fact.id] = fact.identifier.split("|", 1)[1]
            if fact.type == "Observation":
                self.obs_by_encounter[fact.encounter].append(fact.id)
                self.obs_by_code[fact.code].append((fact.lo, fact.id))
        for values in self.obs_by_code.values():
            values.sort()
        self.patients = sorted(self.ins)

    def observations_between(self, code: str, start: datetime, end: datetime) -> list[str]:
        """Observations of ``code`` effective in [start, end) (one-second values: ge/lt day bounds)."""
        values = self.obs_by_code.get(code, [])
        low = bisect.bisect_left(values, (start, ""))
        high = bisect.bisect_left(values, (end, ""))
        return [rid for _, rid in values[low:high]]


@dataclass
class Request:
    server: str
    baseline: str
    matches: list[str]  # every expected match, "Type/id"
    includes: set[str] = field(default_factory=set)


def _day(value: date) -> str:
    return value.isoformat()


def requests_for(search: str, truth: Truth, rng: random.Random, total: str) -> Iterator[Request]:
    suffix = f"&_count={COUNT}" + ("&_total=none" if total == "none" else "")
    code_rows = [(f"{LOINC}|{row[0]}", row) for row in LAB]
    while True:
        pid = rng.choice(truth.patients)
        if search == "observation-patient":
            ref = f"Patient/{pid}"
            yield Request(f"/fhir/Observation?patient={ref}{suffix}", f"/search/observation-patient?patient={ref}{suffix}",
                          [f"Observation/{i}" for i in truth.of_patient[("Observation", pid)]])
        elif search == "patient-identifier":
            value = quote(f"{INS_SYSTEM}|{truth.ins[pid]}", safe=":")
            yield Request(f"/fhir/Patient?identifier={value}{suffix}",
                          f"/search/patient-identifier?identifier={value}{suffix}", [f"Patient/{pid}"])
        elif search == "observation-code-date":
            code, _ = rng.choices(code_rows, LAB_WEIGHTS)[0]
            per_day = len(truth.obs_by_code[code]) / (SPAN_DAYS + 4)
            window = max(1, min(365, round(15 / per_day))) if per_day else 365
            first = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS))
            last = first + timedelta(days=window)
            start = datetime(first.year, first.month, first.day, tzinfo=UTC)
            end = datetime(last.year, last.month, last.day, tzinfo=UTC)
            query = f"code={quote(code, safe=':/')}&date=ge{_day(first)}&date=lt{_day(last)}{suffix}"
            yield Request(f"/fhir/Observation?{query}", f"/search/observation-code-date?{query}",
                          [f"Observation/{i}" for i in truth.observations_between(code, start, end)])
        elif search == "encounter-include":
            ref = f"Patient/{pid}"
            encounters = truth.of_patient[("Encounter", pid)]
            includes = {ref} | {f"Observation/{o}" for e in encounters for o in truth.obs_by_encounter[e]}
            yield Request(f"/fhir/Encounter?patient={ref}&_include=Encounter:subject"
                          f"&_revinclude=Observation:encounter{suffix}",
                          f"/search/encounter-patient-include?patient={ref}{suffix}",
                          [f"Encounter/{e}" for e in encounters], includes)


def _entries(body: bytes) -> tuple[list[str], set[str], int | None]:
    bundle = json.loads(body)
    matches, includes = [], set()
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        key = f"{resource['resourceType']}/{resource['id']}"
        if not entry["fullUrl"].endswith("/" + key):
            raise RuntimeError(f"fullUrl {entry['fullUrl']} does not name {key}")
        (matches.append(key) if entry["search"]["mode"] == "match" else includes.add(key))
    return matches, includes, bundle.get("total")


def check_results(search: str, requests: list[Request], server_port: int, baseline_port: int, total: str) -> str:
    """Server = baseline = generator, on ``requests``: the page of matches in order (by id), the
    included resources as a set, and Bundle.total. Raises on the first difference."""
    sizes = []
    seconds: Counter[str] = Counter()
    for request in requests:
        expected_page = sorted(request.matches, key=lambda k: k.split("/", 1)[1])[:COUNT]
        answers = {}
        for side, port, path in (("server", server_port, request.server), ("baseline", baseline_port, request.baseline)):
            started = time.perf_counter()
            status, _, body = http_call("127.0.0.1", port, "GET", path, timeout=600)
            seconds[side] += time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"{search}: {side} answered {status} to {path}: {body[:500]!r}")
            answers[side] = _entries(body)
        for side, (matches, includes, total_found) in answers.items():
            want_total = None if total == "none" else len(request.matches)
            if matches != expected_page or includes != request.includes or total_found != want_total:
                raise RuntimeError(
                    f"{search}: the {side}'s answer to {request.server if side == 'server' else request.baseline} "
                    f"differs from what the generator knows: matches {len(matches)} (expected {len(expected_page)}, "
                    f"missing {sorted(set(expected_page) - set(matches))[:5]}, extra "
                    f"{sorted(set(matches) - set(expected_page))[:5]}), includes {len(includes)} (expected "
                    f"{len(request.includes)}, missing {sorted(request.includes - includes)[:5]}, extra "
                    f"{sorted(includes - request.includes)[:5]}), total {total_found} (expected {want_total})")
        sizes.append(len(request.matches) + len(request.includes))
    n = len(requests)
    return (f"{search}: server = baseline = generator on {n} requests "
            f"({min(sizes)}-{max(sizes)} resources each, mean {sum(sizes) / n:.1f}); one at a time, mean latency "
            f"server {seconds['server'] * 1000 / n:,.0f} ms, baseline {seconds['baseline'] * 1000 / n:,.0f} ms "
            f"(ratio {ratio(seconds['server'], seconds['baseline'])})")


# -- query plans ------------------------------------------------------------------------------------


def _conjunct_fields(condition: Any) -> list[str]:
    """The fields a filter constrains in every match (its top-level conjunction), the ones an index on
    a single field can serve."""
    fields: list[str] = []
    if isinstance(condition, dict):
        for key, value in condition.items():
            if key == "$and":
                for part in value:
                    fields += _conjunct_fields(part)
            elif not key.startswith("$"):
                fields.append(key)
    return list(dict.fromkeys(fields))


def _ferret_plan(result: dict[str, Any]) -> str:
    plan = "; ".join(str(p).split("detail=", 1)[-1] for p in result.get("queryPlanner", {}).get("Plan", []))
    pushed = [name for name in ("filterPushdown", "sortPushdown", "limitPushdown") if result.get(name)]
    return f"{plan or '?'} (pushed down: {', '.join(pushed) or 'nothing'})"


def _mongo_plan(result: dict[str, Any]) -> str:
    stages = []
    node = result.get("queryPlanner", {}).get("winningPlan", {})
    node = node.get("queryPlan", node)
    while node:
        stages.append(node.get("stage", "?") + (f" {node['indexName']}" if node.get("indexName") else ""))
        node = node.get("inputStage") or (node.get("inputStages") or [None])[0]
    return " <- ".join(stages) or "?"


def plan_queries(truth: Truth, rng: random.Random, load_started: datetime) -> list[tuple[str, str, list[tuple[str, str]], int]]:
    """(type, what, search parameters, expected count) for the common searches of each DMP type."""
    queries: list[tuple[str, str, list[tuple[str, str]], int]] = []
    pid = rng.choice(truth.patients)
    first = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS))
    last = first + timedelta(days=30)
    start, end = (datetime(d.year, d.month, d.day, tzinfo=UTC) for d in (first, last))
    since = load_started - timedelta(seconds=1)
    for rtype in TYPES:
        facts = truth.by_type[rtype]
        if rtype not in ("Patient", "Practitioner"):
            queries.append((rtype, "by patient", [("patient", f"Patient/{pid}")],
                            len(truth.of_patient[(rtype, pid)])))
        with_identifier = [f for f in facts if f.identifier]
        if with_identifier:
            key = rng.choice(with_identifier).identifier
            queries.append((rtype, "by identifier", [("identifier", key)],
                            sum(f.identifier == key for f in facts)))
        if rtype in CODE_PARAM:
            key = rng.choice(facts).code
            queries.append((rtype, f"by code ({CODE_PARAM[rtype]})", [(CODE_PARAM[rtype], key)],
                            sum(f.code == key for f in facts)))
        if rtype in DATE_PARAM:
            low, high = start, end
            if rtype == "Patient":  # birth dates span a century: 30 days around one of them
                birth = rng.choice(facts).lo
                low, high = birth - timedelta(days=15), birth + timedelta(days=15)
            param = DATE_PARAM[rtype]
            queries.append((rtype, f"by date range ({param}, 30 days)",
                            [(param, f"ge{low.date().isoformat()}"), (param, f"lt{high.date().isoformat()}")],
                            sum(f.hi > low and f.lo < high for f in facts)))
        queries.append((rtype, "_lastUpdated", [("_lastUpdated", f"ge{since.isoformat().replace('+00:00', 'Z')}")],
                        len(facts)))
    return queries


def query_plans(db: Any, truth: Truth, rng: random.Random, data: DataSet, server_port: int,
                external: bool) -> list[str]:
    """explain() of each common search as the server compiles it, the index MongoDB would use, and the
    server's count for it (``_summary=count``) against the generator's."""
    from fhir_server.search.compile import Compiler
    from fhir_server.search.parse import parse
    from fhir_server.storage.store import SEARCH_INDEXES
    compiler = Compiler("", lambda *a: [], lambda *a: [])
    lines = ["| type | search | filter fields | explain on this database | index MongoDB would use "
             "| server count | expected |", "|---|---|---|---|---|--:|--:|"]
    wrong = []
    for rtype, what, params, expected in plan_queries(truth, rng, data.load_started):
        query = parse((rtype,), params, default_count=COUNT, max_count=1000)
        compiled = compiler.compile(rtype, query)
        result = db.command("explain", {"find": rtype, "filter": compiled.filter, "sort": dict(compiled.sort),
                                        "limit": COUNT + 1}, verbosity="queryPlanner")
        fields = [f for f in _conjunct_fields(compiled.filter) if f != "d"]
        indexed = [f for f in fields if f in SEARCH_INDEXES.get(rtype, ()) or f == "_id"]
        mongo = ", ".join(f"`{f}`" for f in indexed) if indexed else "none: COLLSCAN"
        plan = _mongo_plan(result) if external else _ferret_plan(result)
        qs = "&".join(f"{k}={quote(v, safe=':/')}" for k, v in params)
        status, _, body = http_call("127.0.0.1", server_port, "GET", f"/fhir/{rtype}?{qs}&_summary=count", timeout=600)
        found = json.loads(body).get("total") if status == 200 else f"HTTP {status}"
        if found != expected:
            wrong.append(f"{rtype}?{qs}: server {found}, expected {expected}")
        lines.append(f"| {rtype} | {what} | {', '.join(f'`{f}`' for f in fields)} | {plan} | {mongo} "
                     f"| {found} | {expected} |")
    if wrong:
        raise RuntimeError("searches whose count differs from the generator's:\n" + "\n".join(wrong))
    return lines


def include_plans(db: Any, truth: Truth, rng: random.Random, external: bool) -> list[str]:
    """How the queries of ``_include=Encounter:subject`` (an ``_id`` ``$in``) and
    ``_revinclude=Observation:encounter`` run, beside a plain ``_id`` lookup, with their times."""
    from fhir_server.storage.store import SEARCH_INDEXES
    pid = rng.choice(truth.patients)
    refs = [f"Encounter/{e}" for e in truth.of_patient[("Encounter", pid)]]
    lines = []
    for label, rtype, condition in (
            ("_include fetch as the server runs it", "Patient", {"_id": {"$in": [pid]}, "d": False}),
            ("the same by _id equality", "Patient", {"_id": pid, "d": False}),
            ("_revinclude as the server runs it", "Observation", {"search.encounter:r": {"$in": refs}, "d": False})):
        result = db.command("explain", {"find": rtype, "filter": condition}, verbosity="queryPlanner")
        started = time.perf_counter()
        for _ in range(3):
            list(db[rtype].find(condition, {"_id": 1}))
        ms = (time.perf_counter() - started) / 3 * 1000
        plan = _mongo_plan(result) if external else _ferret_plan(result)
        fields = [f for f in _conjunct_fields(condition) if f != "d"]
        indexed = [f for f in fields if f in SEARCH_INDEXES.get(rtype, ()) or f == "_id"]
        lines.append(f"- {label}, `{json.dumps(condition)}` on {rtype}: {plan}; {ms:.1f} ms; MongoDB: "
                     + (f"index on {', '.join(indexed)}" if indexed else "no index in SEARCH_INDEXES: COLLSCAN"))
    return lines


# -- main -------------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], dict[str, Run]]) -> str:
    lines = report_tables(results, "search", rate_digits=3)
    verdicts = []
    for (search, clients), sides in results.items():
        if not sides["baseline"].throughput:
            verdicts.append(f"{search} x{clients}: n/a (no baseline request completed: give it more --seconds)")
            continue
        r = sides["server"].throughput / sides["baseline"].throughput
        verdicts.append(f"{search} x{clients}: {r:.2f} {'met' if r >= SEARCH_TARGET else 'NOT met'}")
    lines += ["", f"Target (each search >= {SEARCH_TARGET} x its baseline's throughput): " + "; ".join(verdicts) + "."]
    app_only = [f"{s} x{c}: " + ratio(sides["baseline"].cpu_ms_per_request("app"), sides["server"].cpu_ms_per_request("app"))
                for (s, c), sides in results.items()]
    lines += ["", "Application CPU per search, baseline / server (the throughput ratio if the database cost "
              "nothing): " + "; ".join(app_only) + "."]
    lines += error_details(results)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, clients="8")
    parser.add_argument("--patients", type=int, default=50_000,
                        help="patients generated (about 11 resources each; default 50000)")
    parser.add_argument("--practitioners", type=int, default=300, help="Practitioners they refer to (default 300)")
    parser.add_argument("--searches", default=",".join(SEARCHES),
                        help=f"which searches, comma-separated (default all: {', '.join(SEARCHES)})")
    parser.add_argument("--check", type=int, default=30, help="requests per search checked for correctness (default 30)")
    parser.add_argument("--total", choices=("accurate", "none"), default="accurate",
                        help="Bundle.total on both sides (accurate: the server's default, one count per search; "
                        "none: _total=none, no count)")
    parser.add_argument("--load-processes", type=int, default=os.cpu_count() or 2,
                        help="processes generating and indexing the data set (default: the CPU count)")
    parser.add_argument("--wrk-timeout", type=int, default=60, help="seconds before wrk counts a request as "
                        "timed out (default 60: scans at scale are slow)")
    parser.add_argument("--seed", type=int, default=20240601, help="data set seed (default 20240601)")
    parser.add_argument("--skip-plans", action="store_true", help="do not explain and count the common searches")
    parser.add_argument("--no-wrk", action="store_true", help="load, explain and check only: no throughput "
                        "measurement (on FerretDB at 100,000 resources a search scans for minutes)")
    args = parser.parse_args(argv)
    parse_clients(parser, args)
    args.searches = [s.strip() for s in args.searches.split(",") if s.strip()]
    if args.patients < 1 or args.practitioners < 1 or args.check < 0:
        parser.error("--patients and --practitioners must be positive, --check not negative")
    if set(args.searches) - set(SEARCHES):
        parser.error(f"--searches takes {', '.join(SEARCHES)}")
    return args


def measure(stack: Stack, env_info: dict[str, str], args: argparse.Namespace) -> None:
    from pymongo import MongoClient

    if not args.mongodb_uri and args.patients > 2000:
        print(f"- WARNING: on FerretDB every search scans; with {args.patients:,} patients (about "
              f"{args.patients * 4:,} Observations) one scan takes about {args.patients * 4 * 1.5 / 1000:,.0f}s"
              + ("" if args.no_wrk else ": consider --no-wrk, or a few hundred patients for the throughput"),
              flush=True)
    stack.start_database()
    server = stack.start_server()  # creates the collections' indexes (SEARCH_INDEXES) before the load
    baseline = stack.start_baseline({"BASELINE_COLLECTION": "baseline_Patient"})
    work = stack.work
    doctors = practitioners(args.seed, args.practitioners)
    check_valid(server.port, args.seed, doctors)

    print(f"loading {args.patients:,} patients with {args.load_processes} processes ...", flush=True)
    data = load(stack.uri, stack.database, args.seed, args.patients, args.practitioners, args.load_processes)
    total_resources = sum(data.counts.values())
    print(f"loaded {total_resources:,} resources (+ as many history entries) in {data.load_seconds:.0f}s "
          f"({total_resources / data.load_seconds:,.0f} resources/s)")
    print("| type | resources | mean stored JSON bytes |\n|---|--:|--:|")
    for rtype in TYPES:
        print(f"| {rtype} | {data.counts[rtype]:,} | {data.json_bytes[rtype] / max(1, data.counts[rtype]):,.0f} |")
    print(flush=True)

    rng = random.Random(args.seed + 1)
    client: Any = MongoClient(stack.uri, tz_aware=True, appname="bench-search")
    try:
        db = client[stack.database]
        check_load(db, data, server.port, rng)
        truth = Truth(data.facts)
        plan_lines: list[str] = []
        if not args.skip_plans:
            print("\nexplaining and counting the common searches ...", flush=True)
            started = time.monotonic()
            plan_lines = query_plans(db, truth, rng, data, server.port, bool(args.mongodb_uri))
            plan_lines += ["", *include_plans(db, truth, rng, bool(args.mongodb_uri))]
            print("\n".join(plan_lines))
            print(f"(every count above equals the generator's; {time.monotonic() - started:.0f}s)\n", flush=True)
    finally:
        client.close()

    paths: dict[str, dict[str, Path]] = {}
    checks = []
    for search in args.searches:
        requests = [r for r, _ in zip(requests_for(search, truth, rng, args.total), range(PATHS_PER_SEARCH))]
        paths[search] = {}
        for side in ("server", "baseline"):
            paths[search][side] = work / f"paths-{search}-{side}.txt"
            paths[search][side].write_text("\n".join(getattr(r, side) for r in requests) + "\n")
        started = time.monotonic()
        if args.check:
            checks.append(check_results(search, requests[: args.check], server.port, baseline.port, args.total))
            print(checks[-1] + f" ({time.monotonic() - started:.0f}s)", flush=True)
    print()

    if args.no_wrk:
        print(f"Data set: {args.patients:,} patients, {total_resources:,} resources, loaded in "
              f"{data.load_seconds:.0f}s; no throughput measurement (--no-wrk)")
        if args.json:
            args.json.write_text(json.dumps({
                "environment": env_info, "patients": args.patients, "resources": dict(data.counts),
                "load_seconds": data.load_seconds, "checks": checks, "plans": plan_lines}, indent=2))
        return

    def target(side: str, op: str) -> dict[str, str]:
        return {"BENCH_MODE": "paths", "BENCH_PATHS": str(paths[op][side])}

    bench = stack.bench = Bench(args, work, stack.ferret, server, baseline, target, timeout_s=args.wrk_timeout,
                                settle_s=args.wrk_timeout + 120)
    results: dict[tuple[str, int], dict[str, Run]] = {}
    for search in args.searches:
        bench.warm_up(search)
        for clients in args.clients:
            print(f"{search} x{clients} ...", end=" ", flush=True)
            sides = bench.cell(search, clients)
            results[(search, clients)] = sides
            print(f"server {fmt(sides['server'].throughput, 2)} req/s, "
                  f"baseline {fmt(sides['baseline'].throughput, 2)} req/s, "
                  f"ratio {ratio(sides['server'].throughput, sides['baseline'].throughput)}", flush=True)

    print(f"\nData set: {args.patients:,} patients, {total_resources:,} resources, loaded in "
          f"{data.load_seconds:.0f}s; _count={COUNT}, _total={args.total}\n")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps({
            "environment": env_info, "seconds": args.seconds, "patients": args.patients,
            "resources": dict(data.counts), "load_seconds": data.load_seconds, "total": args.total,
            "workers": args.workers, "threads": args.threads, "checks": checks, "plans": plan_lines,
            "results": results_json(results, "search")}, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args, "fhir-server search benchmark", lambda stack, env_info: measure(stack, env_info, args))


if __name__ == "__main__":
    sys.exit(main())
