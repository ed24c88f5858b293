#!/usr/bin/env python3
"""The cost of the audit trail: read-by-id and search with the audit on versus off, two servers on the
same database and data, measured in the same run; then the count of AuditEvents against the answers.

    .venv/bin/python bench/bench_audit.py [--patients 150] [--seconds 20] [--clients 8] [--search-seconds 120]

The issue ("Audit"): read-by-id and search throughput with audit on versus off in the same run.
Target: audit costs at most 30 % (throughput at least 0.7 of the unaudited server's).

What it does, all on 127.0.0.1:
1. starts one FerretDB (or uses ``--mongodb-uri``) and two FHIR servers on it with access tokens
   required and the same workers and threads: one audited (the default, ``FHIR_AUDIT=on``), one with
   ``FHIR_AUDIT=off``;
2. loads bench_search's DMP data set (bench/dmp_data.py: about 11 resources per patient, 2 to 6
   Observations each) through the server's own write path (bench/secured.py);
3. mints an operator token for each server (``system/*.rs``, operator: consent is bypassed, so it
   does not weigh), and checks that both serve the same Observation, that a read on the audited
   server writes one PatientRead AuditEvent naming the patient and the Observation, and that the
   other writes none;
4. measures with wrk, the two servers alternated ABBA: ``GET Observation/<random id>`` (patient data:
   each read writes one PatientRead AuditEvent), then ``Observation?subject=Patient/<random>`` (one
   PatientQuery per search). Prints throughput, p50, p99, errors, ratios, CPU per request, the verdict;
5. after each operation, compares the AuditEvents the audited server wrote (PatientRead with
   subtype ``read``, PatientQuery) with the 2xx answers wrk counted on the audited side (warm-up
   included). wrk stops with up to one request per connection in flight: the server answers them
   (and audits them) after wrk stopped counting, so up to that many more events than 2xx answers is
   expected; wrk_bench.lua counts the requests started, which bounds it exactly.

Not a test: it prints figures. It exits non-zero when it cannot measure or a check fails.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (FHIR_JSON, Bench, Run, Stack, add_common_arguments, cost_sections, cost_table, fmt, http_call,  # noqa: E402
                     ratio, run_main)
from secured import audit_events, load_dmp, mint, start_fhir  # noqa: E402

TARGET_COST = 0.30  # the target: audit costs at most 30 %
SIDES = {"server": "audit on", "baseline": "audit off"}  # harness side -> what it is here
PROFILE = {"read": "PatientRead", "search": "PatientQuery"}


def tally(stack: Stack) -> tuple[Counter[str], int]:
    """AuditEvents stored: per BALP profile, and how many have the subtype ``read``."""
    profiles: Counter[str] = Counter()
    reads = 0
    for (profile, subtype, _), n in audit_events(stack.uri, stack.database).items():
        profiles[profile] += n
        reads += n if subtype == "read" else 0
    return profiles, reads


def check(stack: Stack, servers: dict[str, Any], tokens: dict[str, str], observation: tuple[str, str]) -> str:
    oid, patient = observation
    before = audit_events(stack.uri, stack.database)
    bodies = {}
    for side, server in servers.items():
        status, _, body = http_call("127.0.0.1", server.port, "GET", f"/fhir/Observation/{oid}",
                                    headers={"Authorization": f"Bearer {tokens[side]}", "Accept": FHIR_JSON})
        if status != 200:
            raise RuntimeError(f"{SIDES[side]}: GET Observation/{oid} answered {status}: {body[:300]!r}")
        bodies[side] = body
        after = audit_events(stack.uri, stack.database)
        new = after - before
        expected = Counter({("PatientRead", "read", patient): 1}) if side == "server" else Counter()
        if new != expected:
            raise RuntimeError(f"{SIDES[side]}: a read wrote the AuditEvents {dict(new)}, {dict(expected)} expected")
        before = after
    if bodies["server"] != bodies["baseline"]:
        raise RuntimeError("the two servers do not serve the same Observation")
    return (f"both servers serve Observation/{oid} byte for byte alike; the audited one wrote one PatientRead "
            f"for Patient/{patient}, the other none")


# -- reporting --------------------------------------------------------------------------------------


def report(results: dict[tuple[str, int], dict[str, Run]]) -> str:
    lines, costs = cost_table(results, "op", "audit on", "audit off")
    verdicts = [f"{op} x{clients}: {fmt(cost * 100, 0)}% ({'met' if cost <= TARGET_COST else 'NOT met'})"
                for (op, clients), (cost, _) in costs.items()]
    lines += ["", f"Target (audit costs at most {TARGET_COST:.0%} of the throughput): " + "; ".join(verdicts) + "."]
    return "\n".join(lines + cost_sections(results, SIDES, "op"))


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, clients="8", seconds=20)
    parser.add_argument("--patients", type=int, default=150,
                        help="patients generated (about 11 resources each, 4 Observations on average; default 150: "
                        "FerretDB scans the Observations for every search)")
    parser.add_argument("--ops", default="read,search", help="read, search or both (default read,search)")
    parser.add_argument("--search-clients", default="2", help="concurrent clients for the search (default 2)")
    parser.add_argument("--search-seconds", type=int, default=120, help="load per side for the search (default 120)")
    parser.add_argument("--load-processes", type=int, default=2, help="processes loading the data (default 2)")
    parser.add_argument("--wrk-timeout", type=int, default=60, help="seconds before wrk counts a timeout (default 60)")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.search_clients = [int(c) for c in args.search_clients.split(",") if c.strip()]
    args.ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if set(args.ops) - set(PROFILE):
        parser.error("--ops takes read and/or search")
    if min(args.clients + args.search_clients, default=0) < 1 or args.seconds < 1 or args.search_seconds < 1:
        parser.error("--clients, --search-clients, --seconds and --search-seconds must be positive")
    if args.patients < 1:
        parser.error("--patients must be positive")
    return args


def measure(stack: Stack, env_info: dict[str, str], args: argparse.Namespace) -> None:
    stack.start_database()
    audited = start_fhir(stack, "server")
    plain = start_fhir(stack, "server-noaudit", {"FHIR_AUDIT": "off"})
    servers = {"server": audited, "baseline": plain}
    print(f"two FHIR servers, FHIR_AUTH=on, {args.workers} workers x {args.threads} threads each: audit on (port "
          f"{audited.port}), FHIR_AUDIT=off (port {plain.port})", flush=True)
    print(f"loading {args.patients:,} patients ...", flush=True)
    facts, counts, seconds = load_dmp(stack, args.patients, args.seed, args.load_processes)
    print(f"loaded {sum(counts.values()):,} resources in {seconds:.0f}s: "
          + ", ".join(f"{n:,} {t}" for t, n in sorted(counts.items())), flush=True)
    observations = [(f.id, f.patient) for f in facts if f.type == "Observation"]
    patients = sorted({f.id for f in facts if f.type == "Patient"})
    tokens = {side: mint(stack, server, "system/*.rs", operator=True) for side, server in servers.items()}
    rng = random.Random(args.seed + 1)
    print(check(stack, servers, tokens, rng.choice(observations)) + "\n", flush=True)

    files = {"read": stack.work / "observation-ids.txt", "search": stack.work / "paths-search.txt"}
    files["read"].write_text("\n".join(o for o, _ in observations) + "\n")
    files["search"].write_text("\n".join(f"/fhir/Observation?subject=Patient/{rng.choice(patients)}"
                                         for _ in range(1000)) + "\n")

    def target(side: str, op: str) -> dict[str, str]:
        if op == "read":
            return {"BENCH_MODE": "read", "BENCH_PATH": "/fhir/Observation/", "BENCH_IDS": str(files["read"]),
                    "BENCH_TOKEN": tokens[side]}
        return {"BENCH_MODE": "paths", "BENCH_PATHS": str(files["search"]), "BENCH_TOKEN": tokens[side]}

    bench = stack.bench = Bench(args, stack.work, stack.ferret, audited, plain, target, timeout_s=args.wrk_timeout,
                                settle_s=args.wrk_timeout + 60)
    results: dict[tuple[str, int], dict[str, Run]] = {}
    tallies = []
    for op in args.ops:
        seconds = args.seconds if op == "read" else args.search_seconds
        clients_list = args.clients if op == "read" else args.search_clients
        before, read_before = tally(stack)
        answered = started = 0  # 2xx answers wrk counted on the audited side, requests it started there

        def run(side: str, clients: int, length: int) -> Run:
            nonlocal answered, started
            result = bench.wrk(side, op, clients, length)
            if side == "server":
                out = stack.work / f"wrk-{bench.runs:03d}-{side}-{op}-{clients}.json"
                answered += sum(n for s, n in result.statuses.items() if 200 <= s < 300)
                started += json.loads(out.read_text()).get("sent", result.requests)
            return result

        if args.warmup > 0:
            for side in ("server", "baseline"):
                run(side, max(clients_list), args.warmup)
        for clients in clients_list:
            print(f"{op} x{clients} ...", end=" ", flush=True)
            first = seconds // 2
            halves = [first, seconds - first] if first else [seconds]
            order = [("server", halves[0]), ("baseline", halves[0])]
            if len(halves) == 2:
                order += [("baseline", halves[1]), ("server", halves[1])]
            sides = {"server": Run(), "baseline": Run()}
            for side, length in order:
                sides[side].add(run(side, clients, length))
            results[(op, clients)] = sides
            print(f"audit on {fmt(sides['server'].throughput, 2)} req/s, audit off "
                  f"{fmt(sides['baseline'].throughput, 2)} req/s, ratio "
                  f"{ratio(sides['server'].throughput, sides['baseline'].throughput)}", flush=True)
        bench.settle()
        after, read_after = tally(stack)
        written = after - before
        profile = PROFILE[op]
        line = (f"- {op}: {written[profile]:,} {profile} AuditEvents written during the {op} runs; wrk counted "
                f"{answered:,} 2xx answers on the audited side (warm-up included) and started {started:,} requests "
                f"there: difference {written[profile] - answered:+,} (0 to {started - answered:,} expected: the "
                f"requests in flight when wrk stopped are answered and audited after it stopped counting)")
        if op == "read":
            line += f"; AuditEvents with subtype read: {read_after - read_before:,}"
        others = {p: n for p, n in written.items() if p != profile and n}
        if others:
            line += f"; other AuditEvents: {others}"
        ok = 0 <= written[profile] - answered <= started - answered
        tallies.append(line + (" - consistent" if ok else " - INCONSISTENT"))
        print(tallies[-1], flush=True)

    print(f"\nData set: {args.patients:,} patients, {sum(counts.values()):,} resources ({counts['Observation']:,} "
          f"Observations); reads: GET Observation/<random id>; searches: Observation?subject=Patient/<random> "
          f"(the server's default _count and _total); operator tokens on both servers\n")
    print(report(results))
    print("\nAuditEvents against wrk's answers (the audited server):\n" + "\n".join(tallies))
    if args.json:
        args.json.write_text(json.dumps({
            "environment": env_info, "seconds": args.seconds, "search_seconds": args.search_seconds,
            "patients": args.patients, "resources": dict(counts), "workers": args.workers, "threads": args.threads,
            "audit_counts": tallies,
            "results": [{"op": op, "clients": c, **{SIDES[s]: run.to_json() for s, run in sides.items()}}
                        for (op, c), sides in results.items()]}, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(args, "fhir-server audit benchmark", lambda stack, env_info: measure(stack, env_info, args))


if __name__ == "__main__":
    sys.exit(main())
