#!/usr/bin/env python3
"""Read-by-id and create: the FHIR server against a bare Flask + pymongo baseline on the same database.

    .venv/bin/python bench/bench_crud.py [--seconds 10] [--patients 2000] [--clients 1,8,32]

What it does, all on 127.0.0.1:
1. starts one FerretDB (fhir_server.storage.ferretdb) in a temporary directory (or uses the MongoDB
   given with ``--mongodb-uri``, in a database of its own that it drops at the end);
2. starts the FHIR server (``python -m fhir_server.cli serve``, gunicorn gthread) on it and seeds
   ``--patients`` French Patients through ``POST /fhir/Patient``;
3. starts the baseline (bench/baseline_app.py under gunicorn, same worker class, workers and
   threads) on the same database, and checks it serves byte for byte what the server serves;
4. for each number of concurrent clients, measures with wrk (one wrk thread, closed loop, keep-alive)
   ``GET /fhir/Patient/{random seeded id}`` against the baseline's ``GET /Patient/{id}``, then
   ``POST /fhir/Patient`` against the baseline's ``POST /Patient``;
5. prints throughput, p50 and p99 latency, errors, the ratio server / baseline, and the CPU time per
   request of each side (application processes, FerretDB, wrk), as Markdown tables.

Every cell gives each side ``--seconds`` of load, split in two halves run in the order
server, baseline, baseline, server (ABBA), so a drift of the (shared, noisy) machine hits both
sides alike. The halves are merged exactly: wrk's latency histograms are summed. After every wrk run
the script waits for the application and the database to be idle again, so that the requests left in
flight do not load the next run.

Not a test: it asserts nothing about the figures, it prints them. It exits non-zero only when it
cannot measure (no wrk, a process that does not start, a baseline that does not serve the same bytes).
All processes it starts (FerretDB, both gunicorns, wrk) are stopped on exit, on errors and on Ctrl-C.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (FHIR_JSON, Bench, Run, Stack, add_common_arguments, error_details,  # noqa: E402
                     french_patient, http_call, parse_clients, ratio, report_tables, results_json, run_main)

READ_TARGET = 0.6  # the target: read throughput at least 0.6 x the baseline's


# -- data -------------------------------------------------------------------------------------------


def seed(port: int, count: int, rng: random.Random) -> list[str]:
    """Create ``count`` Patients through the FHIR server's API; return their ids."""
    bodies = [json.dumps(french_patient(rng), ensure_ascii=False).encode() for _ in range(count)]
    local = threading.local()

    def create(body: bytes) -> str:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, _, data = http_call("127.0.0.1", port, "POST", "/fhir/Patient", body,
                                    {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}, conn=local.conn)
        if status != 201:
            raise RuntimeError(f"seeding: POST /fhir/Patient answered {status}: {data[:500]!r}")
        return str(json.loads(data)["id"])

    ids: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for rid in pool.map(create, bodies):
            ids.append(rid)
            if len(ids) % 500 == 0 and len(ids) < count:
                print(f"  seeded {len(ids)}/{count} ({time.monotonic() - started:.0f}s)", flush=True)
    return ids


# -- reporting --------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], dict[str, Run]], args: argparse.Namespace) -> str:
    lines = report_tables(results, "op")
    reads = [(c, sides) for (op, c), sides in results.items() if op == "read"]
    if reads:
        verdicts = []
        for clients, sides in reads:
            r = sides["server"].throughput / sides["baseline"].throughput if sides["baseline"].throughput else 0
            verdicts.append(f"{clients} clients: {r:.2f} {'met' if r >= READ_TARGET else 'NOT met'}")
        lines += ["", f"Read target (server >= {READ_TARGET} x baseline throughput): " + "; ".join(verdicts) + "."]
        app_only = [f"{c} clients: " + ratio(sides["baseline"].cpu_ms_per_request("app"),
                                             sides["server"].cpu_ms_per_request("app")) for c, sides in reads]
        lines += ["", "Application CPU per read, baseline / server (the throughput ratio if the database cost nothing "
                  "and the application's CPU were the limit): " + "; ".join(app_only) + "."]
    lines += error_details(results)
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, clients="1,8,32")
    parser.add_argument("--patients", type=int, default=2000, help="Patients seeded for the reads (default 2000)")
    parser.add_argument("--ops", default="read,create", help="read, create or both (default read,create)")
    args = parser.parse_args(argv)
    parse_clients(parser, args)
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.patients < 1:
        parser.error("--patients must be positive")
    if set(args.ops) - {"read", "create"}:
        parser.error("--ops takes read and/or create")
    return args


def measure(stack: Stack, env_info: dict[str, str], args: argparse.Namespace) -> None:
    stack.start_database()
    server = stack.start_server()
    baseline = stack.start_baseline({"BASELINE_COLLECTION": "baseline_Patient"})
    work = stack.work

    rng = random.Random(20240601)
    started = time.monotonic()
    ids = seed(server.port, args.patients, rng)
    print(f"seeded {len(ids)} Patients through POST /fhir/Patient in {time.monotonic() - started:.1f}s", flush=True)
    ids_file, bodies_file = work / "ids.txt", work / "bodies.ndjson"
    ids_file.write_text("\n".join(ids) + "\n")
    bodies_file.write_text("\n".join(json.dumps(french_patient(rng), ensure_ascii=False)
                                     for _ in range(500)) + "\n", encoding="utf-8")
    sample = rng.sample(ids, min(20, len(ids)))
    for rid in sample:
        a = http_call("127.0.0.1", server.port, "GET", f"/fhir/Patient/{rid}")
        b = http_call("127.0.0.1", baseline.port, "GET", f"/Patient/{rid}")
        if a[0] != 200 or b[0] != 200 or a[2] != b[2]:
            raise RuntimeError(f"Patient/{rid}: server and baseline do not serve the same document "
                               f"({a[0]} {a[2][:200]!r} vs {b[0]} {b[2][:200]!r})")
    print(f"server and baseline serve the same bytes ({len(a[2])} bytes for Patient/{rid}, "
          f"checked on {len(sample)} ids)\n", flush=True)

    def target(side: str, op: str) -> dict[str, str]:
        prefix = "/fhir/Patient" if side == "server" else "/Patient"
        return {"BENCH_MODE": op, "BENCH_PATH": prefix + "/" if op == "read" else prefix,
                "BENCH_IDS": str(ids_file), "BENCH_BODIES": str(bodies_file)}

    bench = stack.bench = Bench(args, work, stack.ferret, server, baseline, target)
    results: dict[tuple[str, int], dict[str, Run]] = {}
    for op in args.ops:
        bench.warm_up(op)
        for clients in args.clients:
            print(f"{op} x{clients} ...", end=" ", flush=True)
            sides = bench.cell(op, clients)
            results[(op, clients)] = sides
            print(f"server {sides['server'].throughput:,.0f} req/s, "
                  f"baseline {sides['baseline'].throughput:,.0f} req/s, "
                  f"ratio {ratio(sides['server'].throughput, sides['baseline'].throughput)}", flush=True)

    print()
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps({
            "environment": env_info, "seconds": args.seconds, "patients": args.patients,
            "workers": args.workers, "threads": args.threads, "results": results_json(results)}, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args, "fhir-server CRUD benchmark", lambda stack, env_info: measure(stack, env_info, args))


if __name__ == "__main__":
    sys.exit(main())
