#!/usr/bin/env python3
"""A bounded load test of the audit trail: concurrent clients reading and searching patient data on an
audited server; at the end, the AuditEvents written must match, patient by patient, the answers the
clients got.

    .venv/bin/python bench/audit_load.py [--minutes 2] [--clients 8] [--patients 150]

What it does, all on 127.0.0.1:
1. starts one FerretDB (or uses ``--mongodb-uri``) and one FHIR server with access tokens required
   and the audit trail on (the default), loads bench_search's DMP data set (bench/dmp_data.py, through
   the server's write path: no AuditEvents) and mints an operator token (consent bypassed);
2. runs ``--clients`` Python threads (requests, one keep-alive session each) for ``--minutes``: each
   sends, one after the other, ``GET Observation/<random id>`` (``--read-share`` of the requests, 95 %) or
   ``GET Observation?subject=Patient/<random>``, and logs every request: what, which patient, the
   status or the error. When the time is up, each finishes the request it has started;
3. waits until the server is idle, then reads every AuditEvent written during the run and compares,
   per patient, the PatientRead events with the reads answered 200 and the PatientQuery events with
   the searches answered 200 (BALP: one event per patient per access; every patient has
   Observations, so each search returns data of exactly one patient). Prints the counts, the events
   lost (an answer without its event) and duplicated (an event without its answer), and any other event.

With ``--crash-at S`` the database is killed (SIGKILL) S seconds into the load and started again on
its files ``--down`` seconds later: requests meanwhile fail (503, the trail cannot be written), and at
the end every access answered 200 must still have exactly its event; an event may exist for a request
that got no 200 (the database stored it, then died before the answer), never more of them than such
requests.

Exits 0 when every answered access has exactly one event, 2 when not, 1 when it could not run.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Stack, cpu_seconds_of_group, environment, signals_as_interrupts  # noqa: E402
from secured import audit_events, base_of, load_dmp, mint, start_fhir  # noqa: E402

PROFILE = {"read": "PatientRead", "search": "PatientQuery"}


@dataclass
class Logged:
    op: str
    patient: str
    status: int | None  # None: no answer (the error says why)
    seconds: float
    error: str = ""


def client(base: str, token: str, observations: list[tuple[str, str]], patients: list[str], read_share: float,
           deadline: float, stop: threading.Event, seed: int, timeout: float, log: list[Logged]) -> None:
    import requests
    rng = random.Random(seed)
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
    while time.monotonic() < deadline and not stop.is_set():
        if rng.random() < read_share:
            oid, patient = rng.choice(observations)
            op, url = "read", f"{base}/Observation/{oid}"
        else:
            patient = rng.choice(patients)
            op, url = "search", f"{base}/Observation?subject=Patient/{patient}"
        started = time.perf_counter()
        try:
            response = session.get(url, timeout=timeout)
            response.content  # noqa: B018 - the whole answer
            log.append(Logged(op, patient, response.status_code, time.perf_counter() - started))
        except Exception as error:  # noqa: BLE001 - logged: no answer
            log.append(Logged(op, patient, None, time.perf_counter() - started, f"{type(error).__name__}: {error}"))
    session.close()


def crash_database(stack: Stack, at: float, down: float, stop: threading.Event, log: list[str]) -> None:
    """Kill the database ``at`` seconds into the load (no clean shutdown), start it again on its files
    ``down`` seconds later, on the same port."""
    ferret = stack.ferret
    if stop.wait(at) or ferret is None or ferret.process is None:
        return
    ferret.process.kill()
    ferret.process.wait()
    log.append(f"{time.strftime('%H:%M:%S')} database killed")
    time.sleep(down)
    ferret.start()
    log.append(f"{time.strftime('%H:%M:%S')} database started again on its files")


def wait_idle(pgids: list[int], max_wait: float = 300) -> None:
    deadline = time.monotonic() + max_wait
    before = sum(cpu_seconds_of_group(g) for g in pgids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds_of_group(g) for g in pgids)
        if now - before < 0.05:
            return
        before = now


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * int(p) // 100) - 1)]


def run(stack: Stack, args: argparse.Namespace) -> int:
    stack.start_database()
    server = start_fhir(stack, "server")
    print(f"one FHIR server, FHIR_AUTH=on, audit on, {args.workers} workers x {args.threads} threads, port {server.port}")
    print(f"loading {args.patients:,} patients ...", flush=True)
    facts, counts, seconds = load_dmp(stack, args.patients, args.seed, args.load_processes)
    print(f"loaded {sum(counts.values()):,} resources in {seconds:.0f}s ({counts['Observation']:,} Observations)",
          flush=True)
    observations = [(f.id, f.patient) for f in facts if f.type == "Observation"]
    patients = sorted({f.patient for f in facts if f.type == "Observation"})
    token = mint(stack, server, "system/*.rs", operator=True)
    before = audit_events(stack.uri, stack.database)

    logs: list[list[Logged]] = [[] for _ in range(args.clients)]
    stop = threading.Event()
    deadline = time.monotonic() + args.minutes * 60
    threads = [threading.Thread(target=client, args=(base_of(server), token, observations, patients, args.read_share,
                                                      deadline, stop, args.seed + n, args.timeout, logs[n]),
                                name=f"client-{n}", daemon=True) for n in range(args.clients)]
    print(f"\n{args.clients} clients for {args.minutes:g} minutes ({args.read_share:.0%} reads) ...", flush=True)
    crashes: list[str] = []
    if args.crash_at is not None:
        if stack.ferret is None:
            raise RuntimeError("--crash-at needs the FerretDB this script starts (not --mongodb-uri)")
        threads.append(threading.Thread(target=crash_database, args=(stack, args.crash_at, args.down, stop, crashes),
                                        name="crash", daemon=True))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    report_at = 30.0
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            elapsed = time.monotonic() - started
            if elapsed >= report_at:
                report_at += 30
                print(f"  {elapsed:.0f}s: {sum(len(log) for log in logs):,} requests answered or failed", flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(args.timeout + 5)
    elapsed = time.monotonic() - started
    wait_idle([server.process.pid] + ([stack.ferret.process.pid] if stack.ferret and stack.ferret.process else []))
    after = audit_events(stack.uri, stack.database)

    entries = [entry for log in logs for entry in log]
    answered = Counter((PROFILE[e.op], e.patient) for e in entries if e.status == 200)
    written: Counter[tuple[str, str | None]] = Counter()
    other: Counter[tuple[str, str]] = Counter()
    for (profile, subtype, patient), n in (after - before).items():
        if profile in PROFILE.values() and patient is not None:
            written[(profile, patient)] += n
        else:
            other[(profile, subtype)] += n
    lost = answered - written
    # an event for a request that got no 200: stored, then the answer failed (the database died)
    unanswered = Counter((PROFILE[e.op], e.patient) for e in entries if e.status != 200)
    duplicated = Counter({key: n - min(n, unanswered[key]) for key, n in (written - answered).items()})
    duplicated += Counter()  # drop the zeros
    attempts = sum(min(n, unanswered[key]) for key, n in (written - answered).items())
    statuses = Counter((e.op, e.status) for e in entries if e.status is not None)
    failures = Counter((e.op, e.error.split(":")[0]) for e in entries if e.status is None)
    mismatched = {key[1] for key in (lost + duplicated)}

    print(f"\n## Audit trail under load: {args.clients} clients, {elapsed:.0f}s, {args.patients:,} patients "
          f"({counts['Observation']:,} Observations), operator token\n")
    print("| op | requests | answered 200 | other answers | no answer | req/s | p50 ms | p99 ms | AuditEvents | lost | duplicated |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for op, profile in PROFILE.items():
        mine = [e for e in entries if e.op == op]
        ok = sum(n for (o, s), n in statuses.items() if o == op and s == 200)
        others = sum(n for (o, s), n in statuses.items() if o == op and s != 200)
        none = sum(n for (o, _), n in failures.items() if o == op)
        times = [e.seconds * 1000 for e in mine if e.status is not None]
        print(f"| {op} | {len(mine):,} | {ok:,} | {others:,} | {none:,} | {len(mine) / elapsed:,.1f} "
              f"| {percentile(times, 50):,.1f} | {percentile(times, 99):,.1f} "
              f"| {sum(n for (p, _), n in written.items() if p == profile):,} ({profile}) "
              f"| {sum(n for (p, _), n in lost.items() if p == profile):,} "
              f"| {sum(n for (p, _), n in duplicated.items() if p == profile):,} |")
    print(f"\n- patients accessed: {len({p for _, p in answered}):,}; patients whose events differ from the answers: "
          f"{len(mismatched)}")
    if any(s != 200 for (_, s) in statuses):
        print(f"- answers other than 200: {dict((f'{o} {s}', n) for (o, s), n in statuses.items() if s != 200)}")
    if failures:
        print(f"- requests without an answer: {dict((f'{o} {k}', n) for (o, k), n in failures.items())} (the server "
              "may have audited them: they count as duplicated above when it did)")
    print(f"- other AuditEvents written during the run: {dict((f'{p}/{s}', n) for (p, s), n in other.items()) or 'none'}")
    for line in crashes:
        print(f"- {line}")
    if args.crash_at is not None:
        print(f"- events of requests that got no 200 (stored before the failure reached the answer): {attempts:,}")
    verdict = not lost and not duplicated and not other
    print(f"\nEvery access answered 200 has exactly one AuditEvent for its patient, and no event lacks its answer: "
          f"{'yes' if verdict else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({
            "minutes": args.minutes, "clients": args.clients, "patients": args.patients, "elapsed_s": elapsed,
            "requests": len(entries), "statuses": {f"{o} {s}": n for (o, s), n in statuses.items()},
            "failures": {f"{o} {k}": n for (o, k), n in failures.items()},
            "events": {p: sum(n for (q, _), n in written.items() if q == p) for p in PROFILE.values()},
            "lost": sum(lost.values()), "duplicated": sum(duplicated.values()), "unanswered_with_event": attempts,
            "other_events": {f"{p}/{s}": n for (p, s), n in other.items()}}, indent=2))
    return 0 if verdict else 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2, help="load duration, at most 10 (default 2)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent Python clients (default 8)")
    parser.add_argument("--patients", type=int, default=50,
                        help="patients generated (default 50: FerretDB scans the Observations for every search)")
    parser.add_argument("--read-share", type=float, default=0.95, help="share of reads, the rest searches (default 0.95)")
    parser.add_argument("--timeout", type=float, default=120, help="client timeout per request in seconds (default 120)")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FHIR_WORKERS", 2)))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FHIR_THREADS", 4)))
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--mongodb-uri", help="use this MongoDB instead of starting a FerretDB (a database "
                        "fhir_bench_<pid>, dropped at the end)")
    parser.add_argument("--json", type=Path, help="also write the counts to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--crash-at", type=float, help="kill the database this many seconds into the load")
    parser.add_argument("--down", type=float, default=5, help="seconds the killed database stays down (default 5)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 10:
        parser.error("--minutes must be more than 0 and at most 10")
    if args.clients < 1 or args.patients < 1 or not 0 <= args.read_share <= 1:
        parser.error("--clients and --patients must be positive, --read-share between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("# fhir-server audit trail load test\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    work = Path(tempfile.mkdtemp(prefix="fhir-audit-load-"))
    stack = Stack(args, work)
    code = 1
    try:
        with signals_as_interrupts():
            code = run(stack, args)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        code = 130
    except Exception as error:  # noqa: BLE001 - report, keep the logs, and still clean up
        print(f"\nload test failed: {error}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stdout.flush()
        stack.stop()
        if args.keep or code not in (0, 130):
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
