#!/usr/bin/env python3
"""Ingest of patient records as FHIR transaction Bundles, in resources per second, against pymongo
``insert_many`` of the same resources straight into the database, in the same run.

    .venv/bin/python bench/bench_ingest.py [--bundles 20] [--clients 2] [--entries 100,300]

What it does, all on 127.0.0.1:
1. starts one FerretDB (or uses ``--mongodb-uri``) and the FHIR server on it, and creates a pool of
   Practitioners with ``PUT Practitioner/<id>`` (the records refer to them, as DMP records refer to
   practitioners that exist already);
2. generates ``--bundles`` patient records (bench/dmp_data.py ``patient_history``: a Patient, its
   Encounters, Conditions, allergy, MedicationStatements, DocumentReference, and lab Observations up to
   a size drawn between the ``--entries`` bounds from the seed), each as a transaction Bundle
   (``dmp_data.transaction_bundle``: every entry ``POST``, fullUrl ``urn:uuid:``, references between
   entries written as fullUrls) and as the documents of the baseline (the resource JSON with its id as
   ``_id``, one collection ``baseline_<type>`` per type);
3. warms both sides up with ``--warmup`` more bundles, and checks on the first one that the server
   stored what was sent with the references resolved (one resource of each type read back);
4. measures, ``--clients`` at a time in a closed loop, the server (``POST /fhir`` with the Bundle) and
   the baseline (one ``insert_many`` per type of the record, the server's write concern), in the order
   server, baseline, baseline, server on two halves of the bundles (ABBA): each side writes the same
   records; every answer of the server is checked (200, a ``transaction-response`` with one entry per
   request entry, each ``201`` with a location of the entry's type);
5. checks the document counts of both sides' collections, and prints resources/s, the ratio server /
   baseline, p50 and p99 per bundle, the CPU per resource (server, FerretDB, this client) and the errors.

Not a test: it prints figures and asserts nothing about them. It exits non-zero when it cannot measure,
and when any bundle failed (a benchmark with errors is not a result): the errors are printed first.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import resource
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dmp_data import patient_history, practitioners, transaction_bundle  # noqa: E402
from harness import (FHIR_JSON, Bench, Run, Service, Stack, add_stack_arguments, cpu_seconds_of_group,  # noqa: E402
                     fmt, http_call, machine_cpu, ratio, run_main)

BASELINE_PREFIX = "baseline_"  # the baseline's collections, beside the server's in the same database
SIDES = ("server", "baseline")
Answer = Any  # what a side's write returns: (status, body) for the server, None for the baseline, or an error text


# -- data -------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One patient's record: the transaction Bundle for the server, the documents for the baseline."""

    number: int
    resources: list[dict[str, Any]]
    body: bytes
    documents: dict[str, list[dict[str, Any]]]  # baseline collection -> documents

    @property
    def size(self) -> int:
        return len(self.resources)


def make_batch(seed: int, number: int, doctors: list[str], entries: tuple[int, int]) -> Batch:
    size = random.Random(f"{seed}-size-{number}").randint(*entries)
    resources, _ = patient_history(seed, number, doctors, size)
    body = json.dumps(transaction_bundle(resources), ensure_ascii=False).encode()
    documents: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        documents.setdefault(BASELINE_PREFIX + r["resourceType"], []).append({"_id": r["id"], **r})
    return Batch(number, resources, body, documents)


def put_practitioners(port: int, doctors: list[dict[str, Any]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for doctor in doctors:
            status, _, data = http_call("127.0.0.1", port, "PUT", f"/fhir/Practitioner/{doctor['id']}",
                                        json.dumps(doctor, ensure_ascii=False).encode(),
                                        {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, conn=conn)
            if status not in (200, 201):
                raise RuntimeError(f"PUT Practitioner/{doctor['id']} answered {status}: {data[:500]!r}")
    finally:
        conn.close()


# -- the two sides ----------------------------------------------------------------------------------


class ServerSide:
    """``POST /fhir`` with the transaction Bundle, one keep-alive connection per client thread."""

    name = "server"

    def __init__(self, service: Service, timeout: float) -> None:
        self.service, self.timeout = service, timeout
        self.local = threading.local()

    def write(self, batch: Batch) -> Answer:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=self.timeout)
        try:
            status, _, body = http_call("127.0.0.1", self.service.port, "POST", "/fhir", batch.body,
                                        {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, conn=conn)
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            self.local.conn = None
            return f"no answer: {type(error).__name__}: {error}"
        return status, body

    @staticmethod
    def check(batch: Batch, answer: Answer) -> str | None:
        """None if the answer is the transaction-response expected, else what is wrong with it."""
        if isinstance(answer, str):
            return answer
        status, body = answer
        if status != 200:
            return f"status {status}: {body[:1000].decode(errors='replace')}"
        try:
            bundle = json.loads(body)
        except ValueError as error:
            return f"200 but not JSON ({error}): {body[:300]!r}"
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction-response":
            return f"200 but a {bundle.get('resourceType')} of type {bundle.get('type')}: {body[:300]!r}"
        entries = bundle.get("entry") or []
        if len(entries) != batch.size:
            return f"transaction-response with {len(entries)} entries for {batch.size} requested"
        wrong = Counter()
        for entry, sent in zip(entries, batch.resources):
            response = entry.get("response") or {}
            if not str(response.get("status", "")).startswith("201"):
                wrong[f"status {response.get('status')!r}"] += 1
            elif location_of(response.get("location", ""))[0] != sent["resourceType"]:
                wrong[f"location {response.get('location')!r} for a {sent['resourceType']}"] += 1
        if wrong:
            return f"{sum(wrong.values())} of {batch.size} entries wrong: " + "; ".join(
                f"{n} x {what}" for what, n in wrong.most_common(5))
        return None


class BaselineSide:
    """pymongo ``insert_many`` of the record's documents, one call per type, with the server's write concern."""

    name = "baseline"

    def __init__(self, db: Any) -> None:
        self.db = db

    def write(self, batch: Batch) -> Answer:
        from pymongo.errors import PyMongoError
        try:
            for collection, documents in batch.documents.items():
                self.db[collection].insert_many(documents)
        except PyMongoError as error:
            return f"{type(error).__name__}: {str(error)[:500]}"
        return None

    @staticmethod
    def check(batch: Batch, answer: Answer) -> str | None:
        return answer


Side = ServerSide | BaselineSide


def location_of(location: str) -> tuple[str, str]:
    """(type, id) of a response location, relative (``Observation/1/_history/1``) or absolute."""
    path = location.split("/fhir/", 1)[-1].strip("/").split("/")
    return (path[0], path[1]) if len(path) >= 2 else ("", "")


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class IngestRun(Run):
    """One side: bundles as requests, plus the resources they held and what went wrong with each."""

    resources: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Run) -> None:
        super().add(other)
        if isinstance(other, IngestRun):
            self.resources += other.resources
            self.problems += other.problems

    @property
    def errors(self) -> int:
        return len(self.problems)

    @property
    def resources_per_s(self) -> float:
        return self.resources / (self.duration_us / 1e6) if self.duration_us else 0.0

    def cpu_ms_per_resource(self, what: str) -> float:
        return self.cpu[what] * 1000 / self.resources if self.resources and what in self.cpu else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "resources": self.resources, "resources_per_s": self.resources_per_s,
                "problems": self.problems}


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive(side: Side, batches: list[Batch], clients: int) -> tuple[list[tuple[Batch, int, Answer]], int]:
    """Every batch through ``side.write``, ``clients`` at a time, each client sending its next batch when
    the previous one is done (closed loop): (batch, latency µs, answer) for each, and the wall time µs."""
    def timed(batch: Batch) -> tuple[Batch, int, Answer]:
        started = time.perf_counter_ns()
        answer = side.write(batch)
        return batch, (time.perf_counter_ns() - started) // 1000, answer

    started = time.perf_counter_ns()
    with ThreadPoolExecutor(clients, thread_name_prefix=f"{side.name}-client") as pool:
        done = list(pool.map(timed, batches))
    return done, (time.perf_counter_ns() - started) // 1000


def measure_half(side: Side, batches: list[Batch], args: argparse.Namespace, stack: Stack, bench: Bench) -> IngestRun:
    """One side on some batches, with the CPU of the server, FerretDB and this process around it. On the
    baseline side this process *is* the application (its pymongo calls), so its CPU counts as ``app``."""
    assert bench.server.process is not None
    app_pid = bench.server.process.pid
    db_pid = stack.ferret.process.pid if stack.ferret and stack.ferret.process else None
    before = (cpu_seconds_of_group(app_pid), cpu_seconds_of_group(db_pid) if db_pid else 0.0, self_cpu(), machine_cpu())
    done, wall_us = drive(side, batches, args.clients)
    after = (cpu_seconds_of_group(app_pid), cpu_seconds_of_group(db_pid) if db_pid else 0.0, self_cpu(), machine_cpu())
    bench.settle()
    run = IngestRun(requests=len(done), duration_us=wall_us, resources=sum(b.size for b in batches))
    for batch, latency_us, answer in done:
        run.latency_us[latency_us] += 1
        if isinstance(answer, tuple):
            run.statuses[answer[0]] += 1
        problem = side.check(batch, answer)
        if problem:
            run.problems.append(f"bundle {batch.number} ({batch.size} entries): {problem}")
    server_cpu, db_cpu, client_cpu = (a - b for a, b in zip(after[:3], before[:3]))
    app, client = (server_cpu, client_cpu) if side.name == "server" else (client_cpu, 0.0)
    # harness.Run names the load generator's CPU "wrk": here it is this process's client threads
    run.cpu.update({"app": app, **({"db": db_cpu} if db_pid else {}), "wrk": client,
                    "busy": after[3][0] - before[3][0], "total": after[3][1] - before[3][1]})
    return run


def abba(sides: dict[str, Side], batches: list[Batch], args: argparse.Namespace, stack: Stack,
         bench: Bench) -> dict[str, IngestRun]:
    """server, baseline, baseline, server on the two halves of the batches: both sides write the same
    records, and a drift of the machine weighs on both alike."""
    half = len(batches) // 2
    halves = [batches[:half], batches[half:]] if half else [batches]
    order = [(name, 0) for name in SIDES] + ([(name, 1) for name in reversed(SIDES)] if half else [])
    results = {name: IngestRun() for name in sides}
    for name, h in order:
        if name not in sides:
            continue
        run = measure_half(sides[name], halves[h], args, stack, bench)
        results[name].add(run)
        print(f"  {name}, half {h + 1}: {run.requests} bundles, {run.resources:,} resources in "
              f"{run.duration_us / 1e6:.1f}s: {run.resources_per_s:,.1f} resources/s, {run.errors} errors", flush=True)
    return results


# -- checks -----------------------------------------------------------------------------------------


def check_stored(server: Service, batch: Batch, answer: Answer) -> list[str]:
    """Read back the first resource of each type of a bundle the server took: the references between
    entries must now name the new resources; anything else that differs from what was sent is a note."""
    if ServerSide.check(batch, answer):
        return []  # already an error
    entries = json.loads(answer[1])["entry"]
    new = {f"{r['resourceType']}/{r['id']}": "/".join(location_of(e["response"]["location"]))
           for r, e in zip(batch.resources, entries)}
    notes, seen = [], set()
    for sent, target in ((r, new[f"{r['resourceType']}/{r['id']}"]) for r in batch.resources):
        if sent["resourceType"] in seen:
            continue
        seen.add(sent["resourceType"])
        status, _, body = http_call("127.0.0.1", server.port, "GET", f"/fhir/{target}", headers={"Accept": FHIR_JSON})
        if status != 200:
            raise RuntimeError(f"GET {target} (created by the transaction) answered {status}: {body[:300]!r}")
        stored = json.loads(body)
        expected = _resolved({k: v for k, v in sent.items() if k != "id"}, new)
        if references(stored) != references(expected):
            raise RuntimeError(f"{target}: references {references(stored)} stored, {references(expected)} expected")
        got = {k: v for k, v in stored.items() if k not in ("id", "meta", "text")}
        if got != expected:
            notes.append(f"{target} differs from what was sent beyond its references: "
                         + ", ".join(sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))))
    return notes


def _resolved(value: Any, new: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (new.get(v, v) if k == "reference" else _resolved(v, new)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, new) for v in value]
    return value


def references(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if "reference" in value else []
        return own + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def create_collections(db: Any, batches: list[Batch]) -> None:
    """The baseline's collections exist before it is measured, as the server's do (it creates its indexes at
    start-up): creating a table is FerretDB's work, not an insert's."""
    existing = set(db.list_collection_names())
    for name in sorted({c for b in batches for c in b.documents} - existing):
        db.create_collection(name)


def check_counts(db: Any, sent: dict[str, Counter[str]], practitioners_put: int) -> None:
    """Each side's collections hold exactly what it was sent (the server's also the Practitioners)."""
    expected = {"server": sent["server"] + Counter({"Practitioner": practitioners_put}),
                "baseline": Counter({BASELINE_PREFIX + t: n for t, n in sent["baseline"].items()})}
    found = {name: db[name].count_documents({}) for counts in expected.values() for name, n in counts.items() if n}
    wrong = [f"{name}: {found[name]} documents, {n} expected" for counts in expected.values()
             for name, n in sorted(counts.items()) if n and found[name] != n]
    if wrong:
        raise RuntimeError("document counts after the run: " + "; ".join(wrong))


# -- reporting --------------------------------------------------------------------------------------


def report(results: dict[str, IngestRun]) -> str:
    lines = ["| side | bundles | resources | **resources/s** | bundles/s | p50 ms/bundle | p99 ms/bundle | errors "
             "| app CPU ms/resource | FerretDB | client | busy | others |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, run in results.items():
        lines.append(
            f"| {name} | {run.requests} | {run.resources:,} | **{fmt(run.resources_per_s, 1)}** | {fmt(run.throughput, 2)} "
            f"| {fmt(run.percentile_ms(50), 1)} | {fmt(run.percentile_ms(99), 1)} | {run.errors} "
            f"| {fmt(run.cpu_ms_per_resource('app'), 3)} | {fmt(run.cpu_ms_per_resource('db'), 3)} "
            f"| {fmt(run.cpu_ms_per_resource('wrk'), 3)} | {run.machine_busy:.0%} | {run.others_busy:.0%} |")
    lines += ["", "`app`: the server's gunicorn (master + workers); on the baseline side, this process's pymongo "
              "calls. `client`: this process while it sends the Bundles to the server. `busy`: the machine's CPU use; "
              "`others`: the part of it not spent by the server, FerretDB and this process."]
    if set(SIDES) <= set(results):
        s, b = results["server"], results["baseline"]
        cpu = {name: run.cpu_ms_per_resource("app") + (run.cpu_ms_per_resource("db") if "db" in run.cpu else 0.0)
               for name, run in results.items()}
        lines += ["", f"server / baseline: resources/s **{ratio(s.resources_per_s, b.resources_per_s)}**, "
                  f"p50 {ratio(s.percentile_ms(50), b.percentile_ms(50))}, p99 {ratio(s.percentile_ms(99), b.percentile_ms(99))}; "
                  f"CPU per resource (app + FerretDB) {fmt(cpu['server'], 3)} ms against {fmt(cpu['baseline'], 3)} ms: "
                  f"baseline / server {ratio(cpu['baseline'], cpu['server'])} (the throughput ratio if CPU were the only limit)."]
    problems = [f"- {name}: {p}" for name, run in results.items() for p in run.problems]
    if problems:
        lines += ["", f"Errors ({len(problems)} bundles):", *problems[:20]]
    return "\n".join(lines)


def describe(batches: list[Batch]) -> str:
    types = Counter(r["resourceType"] for b in batches for r in b.resources)
    sizes = [b.size for b in batches]
    kib = [len(b.body) / 1024 for b in batches]
    return (f"{len(batches)} bundles of {min(sizes)}–{max(sizes)} entries (mean {sum(sizes) / len(sizes):.0f}), "
            f"{sum(sizes):,} resources, {min(kib):.0f}–{max(kib):.0f} KiB of JSON each "
            f"({sum(kib) * 1024 / sum(sizes):,.0f} bytes per resource): "
            + ", ".join(f"{n:,} {t}" for t, n in types.most_common()))


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", type=int, default=20, help="bundles (patients) per side (default 20)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients per side (default 2)")
    parser.add_argument("--entries", default="100,300", help="min,max entries per bundle (default 100,300)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded bundles per side first (default 2)")
    parser.add_argument("--sides", default=",".join(SIDES), help="server, baseline or both (default both)")
    parser.add_argument("--practitioners", type=int, default=50, help="Practitioners the records refer to (default 50)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for one bundle (default 180)")
    parser.add_argument("--seed", type=int, default=20240601)
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.entries = tuple(int(n) for n in args.entries.split(","))
    except ValueError:
        parser.error("--entries takes min,max")
    args.sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if len(args.entries) != 2 or not 1 <= args.entries[0] <= args.entries[1]:
        parser.error("--entries takes min,max with 1 <= min <= max")
    if set(args.sides) - set(SIDES) or not args.sides:
        parser.error("--sides takes server and/or baseline")
    if args.bundles < 1 or args.clients < 1 or args.warmup < 0 or args.practitioners < 1:
        parser.error("--bundles, --clients and --practitioners must be positive, --warmup not negative")
    return args


def warm_up(sides: dict[str, Side], batches: list[Batch], args: argparse.Namespace, server: Service) -> list[str]:
    """Unrecorded bundles on each side (the server's first requests load its models, the baseline's create
    its collections); the first one the server takes is read back. Returns the notes of the read-back."""
    notes: list[str] = []
    for name, side in sides.items():
        done, _ = drive(side, batches, args.clients)
        problems = [f"bundle {b.number}: {p}" for b, _, answer in done if (p := side.check(b, answer))]
        if problems:
            raise RuntimeError(f"{name} failed during the warm-up:\n" + "\n".join(problems[:5]))
        if name == "server" and done:
            notes = check_stored(server, done[0][0], done[0][2])
    return notes


def measure(stack: Stack, env_info: dict[str, str], args: argparse.Namespace) -> None:
    from pymongo import MongoClient

    stack.start_database()
    server = stack.start_server()
    doctors = practitioners(args.seed, args.practitioners)
    put_practitioners(server.port, doctors)
    doctor_ids = [d["id"] for d in doctors]
    started = time.monotonic()
    batches = [make_batch(args.seed, n, doctor_ids, args.entries) for n in range(args.bundles)]
    extra = [make_batch(args.seed, n, doctor_ids, args.entries) for n in range(args.bundles, args.bundles + args.warmup)]
    print(f"{len(doctors)} Practitioners created with PUT; generated in {time.monotonic() - started:.1f}s: "
          f"{describe(batches)}", flush=True)

    client: Any = MongoClient(stack.uri, tz_aware=True, w="majority", journal=True, appname="bench-ingest-baseline")
    try:
        db = client[stack.database]
        every = {name: ServerSide(server, args.timeout) if name == "server" else BaselineSide(db) for name in SIDES}
        sides = {name: every[name] for name in args.sides}
        bench = stack.bench = Bench(args, stack.work, stack.ferret, server, server, lambda side, op: {})
        create_collections(db, batches + extra)
        notes = warm_up(sides, extra, args, server)
        bench.settle()  # the server's workers finish loading (models, schema) before anything is measured
        print(f"warm-up: {len(extra)} bundles per side" + (", read-back of the server's first bundle: references "
              "resolved" if "server" in sides and extra else "") + "".join(f"\n  note: {n}" for n in notes), flush=True)
        print(f"measuring: {args.bundles} bundles per side, {args.clients} clients, halves in the order "
              "server, baseline, baseline, server", flush=True)
        results = abba(sides, batches, args, stack, bench)
        sent = {name: Counter(r["resourceType"] for b in batches + extra for r in b.resources) if name in sides
                else Counter() for name in SIDES}
        check_counts(db, sent, len(doctors))
        print("document counts: each side's collections hold what it was sent\n")
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps({
                "environment": env_info, "bundles": args.bundles, "clients": args.clients, "entries": args.entries,
                "data": describe(batches), "workers": args.workers, "threads": args.threads,
                "results": {name: run.to_json() for name, run in results.items()}}, indent=2))
        failed = sum(run.errors for run in results.values())
        if failed:
            raise RuntimeError(f"{failed} bundles failed: not a result")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    driver = (f"{args.clients} Python clients per side (closed loop), {args.bundles} bundles of "
              f"{args.entries[0]}–{args.entries[1]} entries per side in ABBA halves, {args.warmup} warm-up bundles")
    return run_main(args, "fhir-server transaction ingest benchmark",
                    lambda stack, env_info: measure(stack, env_info, args), driver=driver)


if __name__ == "__main__":
    sys.exit(main())
