"""What the benchmarks in bench/ share: processes, wrk runs merged exactly, CPU accounting, reports.

- ``Service``: a gunicorn (the FHIR server or a baseline) in its own process group on 127.0.0.1;
- ``Stack``: the database (a FerretDB it starts, or ``--mongodb-uri``), the server and a baseline,
  started and always stopped together; ``run_main`` wraps a benchmark's body with the environment
  report, the work directory, signal handling and the clean-up;
- ``Bench``: one wrk run per side and half (ABBA), the application and database CPU around it, and
  the wait for both sides to be idle again; ``Run``: the merged figures of one side of one cell;
- ``report_tables``: the Markdown tables both benchmarks print; ``french_patient``: test data.

Not a test module: nothing here asserts anything about the figures.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fhir_server.storage.ferretdb import FERRETDB_VERSION, FerretDB, free_port  # noqa: E402

FHIR_JSON = "application/fhir+json"
LUA = BENCH / "wrk_bench.lua"
WRK_TIMEOUT_S = 10  # a request slower than this counts as a wrk timeout error
DATABASE = "fhir_bench"


# -- processes ------------------------------------------------------------------------------------


class Service:
    """A gunicorn (the FHIR server or the baseline) in its own process group, reached on 127.0.0.1."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 log_dir: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.port, self.ready_path = name, argv, env, port, ready_path
        self.log_path = log_dir / f"{name}.log"
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Service:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _, _ = http_call("127.0.0.1", self.port, "GET", self.ready_path, timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)  # gunicorn master and its workers
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                if not _group_alive(self.process.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def http_call(host: str, port: int, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 30,
              conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        if own:
            conn.close()


def cpu_seconds_of_group(pgid: int) -> float:
    """User + system CPU time of the live processes of a process group (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values[:8]) - idle), float(sum(values[:8]))


# -- data -------------------------------------------------------------------------------------------

FAMILY = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
          "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard",
          "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent", "Muller", "Lefèvre", "Faure", "André"]
GIVEN_F = ["Marie", "Camille", "Léa", "Manon", "Chloé", "Inès", "Jeanne", "Louise", "Anne", "Hélène", "Élodie"]
GIVEN_M = ["Jean", "Pierre", "Louis", "Lucas", "Hugo", "Théo", "Nicolas", "François", "Mathieu", "Julien", "Gaël"]
STREETS = ["rue de la République", "avenue Jean Jaurès", "boulevard Victor Hugo", "rue Pasteur",
           "place de la Mairie", "rue des Écoles", "chemin des Vignes", "allée des Tilleuls", "rue Nationale"]
# (postal code, city, INSEE commune code): the department of the postal code is the NIR's birthplace
CITIES = [("75011", "Paris", "111"), ("69003", "Lyon", "383"), ("13005", "Marseille", "205"),
          ("31000", "Toulouse", "555"), ("33000", "Bordeaux", "063"), ("59000", "Lille", "350"),
          ("44000", "Nantes", "109"), ("67000", "Strasbourg", "482"), ("35000", "Rennes", "238"),
          ("34000", "Montpellier", "172")]


def french_patient(rng: random.Random) -> dict[str, Any]:
    """A plausible French Patient: INS (NIR with its key), IPP, name, birth date, address, telecom."""
    female = rng.random() < 0.5
    family = rng.choice(FAMILY)
    given = [rng.choice(GIVEN_F if female else GIVEN_M)] + ([rng.choice(GIVEN_F if female else GIVEN_M)]
                                                            if rng.random() < 0.4 else [])
    birth = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 95 * 365))
    postal, city, commune = rng.choice(CITIES)
    sex = 2 if female else 1
    nir13 = f"{sex}{birth.year % 100:02d}{birth.month:02d}{postal[:2]}{commune}{rng.randrange(1, 1000):03d}"
    ins = f"{nir13}{97 - int(nir13) % 97:02d}"
    email_user = f"{given[0].lower()}.{family.lower()}".encode("ascii", "ignore").decode()
    return {
        "resourceType": "Patient",
        "identifier": [
            {"use": "official",
             "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                                  "code": "INS-NIR", "display": "NIR définitif"}]},
             "system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins},
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                  "code": "PI"}]},
             "system": "urn:oid:1.2.250.1.71.4.2.7", "value": f"{rng.randrange(10**9):09d}"},
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "telecom": [
            {"system": "phone", "value": f"+33 6 {rng.randrange(10**8):08d}", "use": "mobile"},
            {"system": "email", "value": f"{email_user}{rng.randrange(100)}@exemple.fr", "use": "home"},
        ],
        "gender": "female" if female else "male",
        "birthDate": birth.isoformat(),
        "address": [{"use": "home", "type": "physical",
                     "line": [f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"],
                     "city": city, "postalCode": postal, "country": "FRA"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-FR",
                                                    "display": "French (France)"}]},
                           "preferred": True}],
    }



# -- measuring --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One side of one cell: possibly several wrk runs merged."""

    requests: int = 0
    duration_us: int = 0
    latency_us: Counter[int] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: Counter[str] = field(default_factory=Counter)
    cpu: Counter[str] = field(default_factory=Counter)  # seconds: app, db, wrk; jiffies: busy, total

    def add(self, other: Run) -> None:
        self.requests += other.requests
        self.duration_us += other.duration_us
        self.latency_us.update(other.latency_us)
        self.statuses.update(other.statuses)
        self.socket_errors.update(other.socket_errors)
        self.cpu.update(other.cpu)

    @property
    def throughput(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    def percentile_ms(self, p: float) -> float:
        total = sum(self.latency_us.values())
        if not total:
            return float("nan")
        rank = max(1, -(-total * p // 100))  # nearest rank
        seen = 0
        for value in sorted(self.latency_us):
            seen += self.latency_us[value]
            if seen >= rank:
                return value / 1000
        return float("nan")

    @property
    def errors(self) -> int:
        return sum(c for s, c in self.statuses.items() if not 200 <= s < 300) + sum(self.socket_errors.values())

    def cpu_ms_per_request(self, what: str) -> float:
        return self.cpu[what] * 1000 / self.requests if self.requests and what in self.cpu else float("nan")

    @property
    def machine_busy(self) -> float:
        return self.cpu["busy"] / self.cpu["total"] if self.cpu["total"] else float("nan")

    @property
    def others_busy(self) -> float:
        """Share of the machine used by processes outside the benchmark (other users, the idle side)."""
        if not self.cpu["total"]:
            return float("nan")
        ticks = os.sysconf("SC_CLK_TCK")
        ours = self.cpu["app"] + self.cpu.get("db", 0.0) + self.cpu["wrk"]
        return max(0.0, self.cpu["busy"] / ticks - ours) / (self.cpu["total"] / ticks)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "duration_s": self.duration_us / 1e6, "throughput": self.throughput,
                "p50_ms": self.percentile_ms(50), "p99_ms": self.percentile_ms(99),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "socket_errors": dict(self.socket_errors), "cpu_s": dict(self.cpu)}


def uncorrect(hist: Counter[int], duration_us: int, requests: int, connections: int) -> Counter[int]:
    """Undo wrk's coordinated-omission correction (stats_correct in wrk's stats.c).

    At the end of a run wrk adds, for every recorded latency n >= 2e, synthetic samples at n - e,
    n - 2e, ... (all > e), e = duration / (requests // connections). The additions only go to lower
    buckets, so the recorded counts are recovered from the top down. This is a closed-loop
    benchmark (each client waits for its answer), so the recorded latencies are the real ones.
    """
    if requests // connections == 0:
        return Counter(hist)
    e = duration_us // (requests // connections)
    raw: Counter[int] = Counter()
    top = max(hist, default=0)
    for value in sorted(hist, reverse=True):
        count = hist[value]
        if value > e:
            count -= sum(raw.get(value + k * e, 0) for k in range(1, (top - value) // e + 1))
        if count > 0:
            raw[value] = count
    return raw


class Bench:
    """wrk runs against the two sides. ``target(side, op)`` gives the environment of wrk_bench.lua
    (BENCH_MODE, BENCH_PATH, BENCH_IDS, BENCH_BODIES, BENCH_PATHS) for one side and operation."""

    def __init__(self, args: argparse.Namespace, work: Path, ferret: FerretDB | None, server: Service,
                 baseline: Service, target: Callable[[str, str], dict[str, str]],
                 timeout_s: int = WRK_TIMEOUT_S, settle_s: float = 120.0) -> None:
        self.args, self.work = args, work
        self.ferret, self.server, self.baseline = ferret, server, baseline
        self.target = target
        self.timeout_s = timeout_s
        self.settle_s = settle_s
        self.wrk_process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def wrk(self, side: str, op: str, clients: int, seconds: int) -> Run:
        service = self.server if side == "server" else self.baseline
        self.runs += 1
        out = self.work / f"wrk-{self.runs:03d}-{side}-{op}-{clients}.json"
        env = {**os.environ, **self.target(side, op), "BENCH_OUT": str(out)}
        threads = min(self.args.wrk_threads, clients)
        argv = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds}s", "--timeout", f"{self.timeout_s}s",
                "-s", str(LUA), f"http://127.0.0.1:{service.port}"]
        assert service.process is not None
        db_pid = self.ferret.process.pid if self.ferret and self.ferret.process else None  # None: external
        app_before = cpu_seconds_of_group(service.process.pid)
        db_before = cpu_seconds_of_group(db_pid) if db_pid else 0.0
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_before, total_before = machine_cpu()
        with open(self.work / "wrk.log", "ab") as log:
            self.wrk_process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            try:
                code = self.wrk_process.wait(seconds + self.timeout_s + 120)
            finally:
                if self.wrk_process.poll() is None:
                    self.wrk_process.kill()
                    self.wrk_process.wait()
                self.wrk_process = None
        busy_after, total_after = machine_cpu()
        wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        app_after = cpu_seconds_of_group(service.process.pid)
        db_after = cpu_seconds_of_group(db_pid) if db_pid else 0.0
        self.settle()
        if code != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({code}): {' '.join(argv)}; see {self.work / 'wrk.log'}")
        data = json.loads(out.read_text())
        hist = Counter({int(v): int(c) for v, c in data["latency_us"]})
        raw = uncorrect(hist, data["duration_us"], data["requests"], clients)
        if sum(raw.values()) != data["requests"]:
            print(f"(latency histogram of {out.name} holds {sum(raw.values())} of {data['requests']} requests)",
                  end=" ", flush=True)
        run = Run(requests=data["requests"], duration_us=data["duration_us"],
                  latency_us=raw,
                  statuses=Counter({int(k): v for k, v in data["statuses"].items()}),
                  socket_errors=Counter({k: v for k, v in data["errors"].items() if k != "status" and v}))
        run.cpu.update({"app": app_after - app_before, **({"db": db_after - db_before} if db_pid else {}),
                        "wrk": (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime),
                        "busy": busy_after - busy_before, "total": total_after - total_before})
        return run

    def settle(self, max_wait: float | None = None) -> None:
        """Wait until the requests wrk left in flight are done (the application and the database idle).

        When wrk stops, the requests the side has already accepted still run (up to --clients of
        them); with slow database calls they would load the next run for seconds.
        """
        groups = [s.process.pid for s in (self.server, self.baseline) if s.process]
        if self.ferret and self.ferret.process:
            groups.append(self.ferret.process.pid)
        max_wait = self.settle_s if max_wait is None else max_wait
        deadline = time.monotonic() + max_wait
        before = sum(cpu_seconds_of_group(g) for g in groups)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = sum(cpu_seconds_of_group(g) for g in groups)
            if now - before < 0.05:  # under 10 % of a core
                return
            before = now
        print(f"(still busy {max_wait:.0f}s after the load stopped)", end=" ", flush=True)

    def cell(self, op: str, clients: int) -> dict[str, Run]:
        """ABBA: server, baseline, baseline, server, each half of --seconds."""
        first = self.args.seconds // 2
        halves = [first, self.args.seconds - first] if first else [self.args.seconds]
        order = [("server", halves[0]), ("baseline", halves[0])]
        if len(halves) == 2:
            order += [("baseline", halves[1]), ("server", halves[1])]
        results = {"server": Run(), "baseline": Run()}
        for side, seconds in order:
            results[side].add(self.wrk(side, op, clients, seconds))
        return results

    def warm_up(self, op: str) -> None:
        if self.args.warmup <= 0:
            return
        for side in ("server", "baseline"):
            self.wrk(side, op, max(self.args.clients), self.args.warmup)



# -- reporting --------------------------------------------------------------------------------------


def environment(wrk: bool = True) -> dict[str, str]:
    """The machine, the versions and the commit measured; wrk's version only if ``wrk`` drives the load."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    versions = {name: _version(name) for name in ("flask", "werkzeug", "pymongo", "orjson", "gunicorn",
                                                  "fhir.resources", "jsonschema")}
    try:
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        wrk_version = wrk_version.split(" Copyright")[0].strip()
    except OSError:
        wrk_version = "?"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except OSError:
        commit = "?"
    return {
        "cpu": f"{model}, nproc={os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "database": f"FerretDB {FERRETDB_VERSION} (SQLite backend), started by the benchmark",
        **({"wrk": wrk_version} if wrk else {}),
        "fhir-server commit": commit,
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and a == a and b == b else "n/a"


def report_tables(results: dict[tuple[str, int], dict[str, Run]], label: str = "op", rate_digits: int = 1
                  ) -> list[str]:
    """Throughput, latency and errors of both sides with their ratios; then the CPU per request."""
    lines = [
        f"| {label} | clients | server req/s | p50 ms | p99 ms | errors | baseline req/s | p50 ms | p99 ms | errors "
        "| **ratio req/s** | ratio p50 | ratio p99 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (op, clients), sides in results.items():
        s, b = sides["server"], sides["baseline"]
        lines.append(
            f"| {op} | {clients} | {fmt(s.throughput, rate_digits)} | {fmt(s.percentile_ms(50), 2)} "
            f"| {fmt(s.percentile_ms(99), 2)} | {s.errors} | {fmt(b.throughput, rate_digits)} | {fmt(b.percentile_ms(50), 2)} | {fmt(b.percentile_ms(99), 2)} "
            f"| {b.errors} | **{ratio(s.throughput, b.throughput)}** "
            f"| {ratio(s.percentile_ms(50), b.percentile_ms(50))} "
            f"| {ratio(s.percentile_ms(99), b.percentile_ms(99))} |")
    lines += [
        "",
        "CPU time per request (ms) of the application (gunicorn master + workers), FerretDB and wrk, from /proc "
        "around each run; `busy` is the whole machine's CPU use during the runs (100% = all cores), `others` the "
        "part of it not spent by these three processes (other users of the machine: noise):",
        "",
        f"| {label} | clients | server app | FerretDB | wrk | busy | others "
        "| baseline app | FerretDB | wrk | busy | others |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (op, clients), sides in results.items():
        s, b = sides["server"], sides["baseline"]
        cells = []
        for run in (s, b):
            cells += [fmt(run.cpu_ms_per_request("app"), 2), fmt(run.cpu_ms_per_request("db"), 2),
                      fmt(run.cpu_ms_per_request("wrk"), 2), f"{run.machine_busy:.0%}", f"{run.others_busy:.0%}"]
        lines.append(f"| {op} | {clients} | " + " | ".join(cells) + " |")
    return lines


def error_details(results: dict[tuple[str, int], dict[str, Run]]) -> list[str]:
    details = []
    for (op, clients), sides in results.items():
        for side, run in sides.items():
            if run.errors:
                details.append(f"{op} x{clients} {side}: statuses {dict(run.statuses)}, "
                               f"socket errors {dict(run.socket_errors)}")
    return ["", "Errors:", *[f"- {d}" for d in details]] if details else []


def results_json(results: dict[tuple[str, int], dict[str, Run]], label: str = "op") -> list[dict[str, Any]]:
    return [{label: op, "clients": c, **{side: run.to_json() for side, run in sides.items()}}
            for (op, c), sides in results.items()]


# -- the stack and the main loop ------------------------------------------------------------------


class Stack:
    """The database (a FerretDB in the work directory, or the MongoDB of ``--mongodb-uri`` in a database
    of its own), the FHIR server and a baseline on it; ``stop`` stops whatever was started."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.ferret: FerretDB | None = None
        self.database = f"fhir_bench_{os.getpid()}" if args.mongodb_uri else DATABASE
        self.uri = ""
        self.services: list[Service] = []
        self.bench: Bench | None = None
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.common_env = {**os.environ, "PYTHONPATH": pythonpath}

    def start_database(self) -> str:
        if self.args.mongodb_uri:
            self.uri = self.args.mongodb_uri
        else:
            self.ferret = FerretDB(self.work / "ferretdb").start()
            self.uri = self.ferret.uri
        return self.uri

    def start_server(self) -> Service:
        port = free_port()
        server = Service("server", [sys.executable, "-m", "fhir_server.cli", "serve"],
                         {**self.common_env, "FHIR_MONGODB_URI": self.uri, "FHIR_MONGODB_DATABASE": self.database,
                          "FHIR_HOST": "127.0.0.1", "FHIR_PORT": str(port),
                          "FHIR_WORKERS": str(self.args.workers), "FHIR_THREADS": str(self.args.threads),
                          "FHIR_SECRET": os.urandom(16).hex(),
                          # no access token: the benchmarks measure FHIR interactions, not authorisation
                          # (a server without the setting ignores it)
                          "FHIR_AUTH": "off"},
                         port, "/readyz", self.work, self.work)
        self.services.append(server)
        return server.start()

    def start_baseline(self, env: dict[str, str]) -> Service:
        """bench/baseline_app.py under gunicorn with the server's worker class, workers and threads."""
        port = free_port()
        args = self.args
        baseline = Service("baseline",
                           [sys.executable, "-m", "gunicorn", "--chdir", str(BENCH), "--worker-class", "gthread",
                            "--workers", str(args.workers), "--threads", str(args.threads), "--timeout", "120",
                            "--graceful-timeout", "10", "--keep-alive", "5", "--log-level", "info",
                            "--no-control-socket",
                            "--bind", f"127.0.0.1:{port}", "baseline_app:create_app()"],
                           {**self.common_env, "BASELINE_MONGODB_URI": self.uri, "BASELINE_DATABASE": self.database,
                            "PYTHONDONTWRITEBYTECODE": "1", **env},
                           port, "/readyz", self.work, self.work)
        self.services.append(baseline)
        return baseline.start()

    def stop(self) -> None:
        bench = self.bench
        if bench is not None and bench.wrk_process is not None and bench.wrk_process.poll() is None:
            bench.wrk_process.kill()
        for service in reversed(self.services):
            service.stop()
        if self.ferret is not None:
            self.ferret.stop()
        elif self.args.mongodb_uri:
            _drop_database(self.args.mongodb_uri, self.database)

    def server_log_problems(self) -> list[str]:
        server = next((s for s in self.services if s.name == "server"), None)
        if server is None:
            return []
        return [line for line in server.log_tail(10**7).splitlines()
                if " ERROR " in line or "Traceback" in line or "[CRITICAL]" in line]


def add_common_arguments(parser: argparse.ArgumentParser, clients: str, seconds: int = 10) -> None:
    """The options of the wrk benchmarks: the load, then the stack's (``add_stack_arguments``)."""
    parser.add_argument("--seconds", type=int, default=seconds, help=f"load per side and cell (default {seconds})")
    parser.add_argument("--clients", default=clients,
                        help=f"concurrent clients, comma-separated (default {clients})")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leaves the cores to what is measured)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load per side and op (default 2)")
    add_stack_arguments(parser)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``Stack`` and ``run_main`` read, whatever drives the load."""
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FHIR_WORKERS", 2)),
                        help="gunicorn workers of both sides (default FHIR_WORKERS or 2)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FHIR_THREADS", 4)),
                        help="gunicorn threads per worker of both sides (default FHIR_THREADS or 4)")
    parser.add_argument("--mongodb-uri", help="benchmark on this MongoDB instead of starting a FerretDB "
                        "(a database fhir_bench_<pid> is created there and dropped at the end)")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, logs, wrk output)")


def parse_clients(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.seconds < 1 or not args.clients or min(args.clients) < 1:
        parser.error("--seconds and --clients must be positive")


def run_main(args: argparse.Namespace, title: str, body: Callable[[Stack, dict[str, str]], None],
             driver: str | None = None) -> int:
    """Print the environment, then run ``body(stack, environment)`` in a fresh work directory; stop every
    process it started whatever happens (errors, Ctrl-C, SIGTERM, SIGHUP). Exit status: 0, 1 (failed:
    the work directory is kept), 130 (interrupted). ``driver`` describes the load when wrk does not drive it
    (then wrk is not needed)."""
    if driver is None:
        ensure_wrk()
    env_info = environment(wrk=driver is None)
    if args.mongodb_uri:
        env_info["database"] = "external, given with --mongodb-uri (its CPU is not measured)"
    print(f"# {title}\n")
    for key, value in env_info.items():
        print(f"- {key}: {value}")
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"- WARNING: the machine is already busy (load average {load:.2f} for {os.cpu_count()} CPUs): "
              "the figures will be noisy; see the `others` column")
    driver = driver or f"wrk: {args.wrk_threads} thread(s), keep-alive, {args.seconds}s per side and cell (ABBA halves)"
    print(f"- gunicorn: gthread, {args.workers} workers x {args.threads} threads, both sides; {driver}\n", flush=True)

    work = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    stack = Stack(args, work)
    failed = True
    try:
        with signals_as_interrupts():
            body(stack, env_info)
            problems = stack.server_log_problems()
            if problems:
                print(f"\nThe server's log has {len(problems)} error lines, e.g.:\n" + "\n".join(problems[:5]))
            print(f"\n- load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            failed = False
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        failed = False  # nothing to investigate: no need to keep the work directory
        return 130
    except Exception as error:  # noqa: BLE001 - report, keep the logs, and still clean up
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        sys.stdout.flush()
        stack.stop()
        if args.keep or failed:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    explain = ("wrk (the HTTP load generator) is not installed. On Debian/Ubuntu: "
               "sudo apt-get update && sudo apt-get install -y wrk  (or build it from https://github.com/wg/wrk)")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{explain}\nrunning as root: installing it with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        if shutil.which("wrk"):
            return
    sys.exit(explain)


def _drop_database(uri: str, database: str) -> None:
    from pymongo import MongoClient
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(database)
    except Exception as error:  # noqa: BLE001 - clean-up is best effort
        print(f"could not drop the database {database} on {uri}: {error}", file=sys.stderr)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the finally blocks stop every process."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def cpu_per_request(run: Run) -> float:
    """Server plus FerretDB CPU milliseconds per request."""
    return run.cpu_ms_per_request("app") + (run.cpu_ms_per_request("db") if "db" in run.cpu else 0.0)


def cost_table(results: dict[tuple[str, int], dict[str, Run]], label: str, on: str, off: str
               ) -> tuple[list[str], dict[tuple[str, int], tuple[float, float]]]:
    """The side-by-side table of a feature on (``server``) against off (``baseline``): throughput,
    latency, their ratios, and the cost. Returns the lines and, per cell, the throughput cost and the
    p99 increase (for the verdicts)."""
    lines = [f"| {label} | clients | {on} req/s | p50 ms | p99 ms | errors | {off} req/s | p50 ms | p99 ms | errors "
             f"| **ratio req/s** | {on.split()[0]} cost | ratio p50 | ratio p99 |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    costs = {}
    for (op, clients), sides in results.items():
        a, b = sides["server"], sides["baseline"]
        cost = 1 - a.throughput / b.throughput if b.throughput else float("nan")
        p99 = a.percentile_ms(99) / b.percentile_ms(99) - 1 if b.percentile_ms(99) else float("nan")
        costs[(op, clients)] = (cost, p99)
        lines.append(
            f"| {op} | {clients} | {fmt(a.throughput, 2)} | {fmt(a.percentile_ms(50), 2)} | {fmt(a.percentile_ms(99), 2)} "
            f"| {a.errors} | {fmt(b.throughput, 2)} | {fmt(b.percentile_ms(50), 2)} | {fmt(b.percentile_ms(99), 2)} "
            f"| {b.errors} | **{ratio(a.throughput, b.throughput)}** | {fmt(cost * 100, 0)}% "
            f"| {ratio(a.percentile_ms(50), b.percentile_ms(50))} | {ratio(a.percentile_ms(99), b.percentile_ms(99))} |")
    return lines, costs


def cost_sections(results: dict[tuple[str, int], dict[str, Run]], sides: dict[str, str], label: str) -> list[str]:
    """For a benchmark of one server against itself with a feature on ("server") and off ("baseline"):
    the CPU ratio line, the CPU table and the errors, sides named as ``sides`` says."""
    on, off = sides["server"], sides["baseline"]
    lines = ["", f"CPU per request (server + FerretDB), {off} / {on}, the throughput ratio if CPU were the only "
             "limit (steadier than throughput on a shared machine): " + "; ".join(
                 f"{op} x{c}: " + ratio(cpu_per_request(s["baseline"]), cpu_per_request(s["server"]))
                 for (op, c), s in results.items()) + "."]
    lines += ["", "CPU time per request (ms) of the server (gunicorn master + workers), FerretDB and wrk, from /proc "
              "around each run; `busy` is the machine's CPU use, `others` the part of it spent by other processes:", "",
              f"| {label} | clients | {on} app | FerretDB | wrk | busy | others | {off} app | FerretDB | wrk | busy | others |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for (op, clients), s in results.items():
        cells = []
        for run in (s["server"], s["baseline"]):
            cells += [fmt(run.cpu_ms_per_request("app"), 2), fmt(run.cpu_ms_per_request("db"), 2),
                      fmt(run.cpu_ms_per_request("wrk"), 2), f"{run.machine_busy:.0%}", f"{run.others_busy:.0%}"]
        lines.append(f"| {op} | {clients} | " + " | ".join(cells) + " |")
    errors = [f"- {op} x{c} {sides[side]}: statuses {dict(run.statuses)}, socket errors {dict(run.socket_errors)}"
              for (op, c), s in results.items() for side, run in s.items() if run.errors]
    return lines + (["", "Errors:", *errors] if errors else [])


# -- bulk loading ----------------------------------------------------------------------------------


class RecordingCollection:
    """Stands for a collection in Store._write: records what would be inserted, finds nothing."""

    def __init__(self, name: str, sink: dict[str, list[dict[str, Any]]]) -> None:
        self.name, self.sink = name, sink

    def insert_one(self, doc: dict[str, Any]) -> None:
        self.sink.setdefault(self.name, []).append(doc)

    def find_one(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update_one(self, query: dict[str, Any], change: dict[str, Any], upsert: bool = False) -> None:
        if not upsert:
            raise AssertionError("a first version updates nothing")
        self.sink.setdefault(self.name, []).append({"_id": query["_id"], **change["$set"]})  # a first version


class RecordingDatabase:
    """Stands for the database in Store._write (bulk loading through the server's own write path)."""

    def __init__(self) -> None:
        self.docs: dict[str, list[dict[str, Any]]] = {}

    def __getitem__(self, name: str) -> RecordingCollection:
        return RecordingCollection(name, self.docs)
