"""Fault injection on atomic transactions (storage/transaction.py): the writer is SIGKILLed, or the
database kill -9'd, at every step of a 50-entry transaction while readers poll; after recovery every
entry or none is visible, and no reader ever observed a mix.

The writer is a child process (``fault_injection/tx_writer.py``, one ``Store.commit``, or the real
gunicorn server for a transaction Bundle); ``fault_injection/sitecustomize.py``, first on the child's
PYTHONPATH, wraps pymongo's write methods and kills at the k-th write of the transaction. Nothing in
fhir_server knows about it.

A clean commit makes N write calls (``steps``): the pending record, the history claims, the tags (one
bulk write per type), the record to ``committed`` (step C, the atomic point), one compare-and-swap per
resource, the history clean-up (bulk writes of at most 50), the record to ``done``: N = 58. The writer
is killed before and after each of them (all of them with FHIR_FAULTS_EXHAUSTIVE=1, about 10 minutes
on two busy cores; by default all but most of the 50 compare-and-swaps, which differ only by how many
resources moved), and half-way through each bulk write; FerretDB is kill -9'd at eight chosen steps.
The outcome must be "none" exactly when the kill came before step C was sent.

Readers, in this process, poll from before the writer starts until after recovery: (a) ``Store.read``
of every target, (b) a real search (``Patient?_id=...&_revinclude=Observation:subject``) and the type
histories, together through ``Store.consistent`` as the server runs them. Each observation is classified
old / new / mixed; "mixed" fails, and so does an "old" seen after a "new" had been seen
(linearizability: the commit is one point in time, and never undone).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from fhir_server import searching
from fhir_server.config import Config
from fhir_server.search.index import index
from fhir_server.storage import Store
from fhir_server.storage.ferretdb import FerretDB
from fhir_server.storage.transaction import TRANSACTIONS, Write
from tests.storage.fault_injection.tx_writer import (OBSERVATIONS, PATIENTS, new_observation, new_patient,
                                                     old_patient)

ROOT = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent / "fault_injection"
WRITER = FAULTS / "tx_writer.py"
DELAY = "0.002"  # seconds before each write of the writer: readers see every intermediate state
OLD, NEW, MIXED = "old", "new", "mixed"
COLLECTIONS = ("Patient", "Observation", "history", TRANSACTIONS)


# -- the database ------------------------------------------------------------------------------------


class Database:
    """A FerretDB of this module's own, so that it can be kill -9'd and started again on its data."""

    def __init__(self, data_dir: Path) -> None:
        self.ferret = FerretDB(data_dir).start()
        self.client: MongoClient[Any] = MongoClient(self.ferret.uri, tz_aware=True, serverSelectionTimeoutMS=20000)

    @property
    def uri(self) -> str:
        return self.ferret.uri

    def kill_and_restart(self) -> None:
        process = self.ferret.process
        assert process is not None
        process.kill()  # already dead when the writer killed it: reaps it
        process.wait(10)
        self.ferret = FerretDB(self.ferret.data_dir, port=self.ferret.port).start()
        deadline = time.monotonic() + 30
        while True:  # pooled connections to the dead process fail once each: use them up
            try:
                self.client.admin.command("ping")
                self.client["admin"]["probe"].find_one({})
                return
            except PyMongoError:
                assert time.monotonic() < deadline, "FerretDB did not come back"
                time.sleep(0.05)

    def store(self, name: str) -> Store:
        return Store(self.client[name], indexer=index)

    def stop(self) -> None:
        self.client.close()
        self.ferret.stop()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(tmp_path_factory.mktemp("faults-ferretdb"))
    yield db
    db.stop()


def seed(store: Store) -> None:
    for name in COLLECTIONS:
        store.db.drop_collection(name)
    for rid in PATIENTS:
        store.update("Patient", rid, old_patient(rid))


class Writer:
    """``tx_writer.py --serve``: forks one writer per case (module-scoped, so every case saves an
    interpreter start)."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS), str(ROOT)]), "FAULT_INJECTION": "1"}
        self.process = subprocess.Popen([sys.executable, str(WRITER), "--serve"], env=env, cwd=ROOT, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, database: Database, name: str, **env: str) -> tuple[int, list[str]]:
        """Its exit status (-9: killed) and what it printed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"uri": database.uri, "database": name, "env": {"FAULT_DELAY": DELAY, **env}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        printed = []
        for line in self.process.stdout:
            if line.startswith('{"pid"'):
                return int(json.loads(line)["status"]), printed
            printed.append(line.strip())
        raise AssertionError(f"the writer server died: {printed}")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


@pytest.fixture(scope="module")
def writer() -> Iterator[Writer]:
    forks = Writer()
    yield forks
    forks.stop()


# -- the steps of a clean commit -----------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    calls: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return len(self.calls)

    @property
    def commit(self) -> int:
        """C: the update of the record to ``committed``."""
        (k,) = [c["k"] for c in self.calls if c["collection"] == TRANSACTIONS and c["states"] == ["committed"]]
        return int(k)

    def bulk(self) -> list[int]:
        return [c["k"] for c in self.calls if c["ops"] > 1]

    def all_visible(self, when: str, k: int) -> bool:
        """Whether the kill came once the record's update to ``committed`` was sent."""
        return k > self.commit or (k == self.commit and when != "before")


def parse_steps(log: Path) -> Steps:
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["k"] for c in calls] == list(range(1, len(calls) + 1))
    return Steps(calls)


@pytest.fixture(scope="module")
def steps(database: Database, writer: Writer, tmp_path_factory: pytest.TempPathFactory) -> Steps:
    store = database.store("faults_steps")
    seed(store)
    log = tmp_path_factory.mktemp("faults-steps") / "calls.jsonl"
    status, printed = writer.run(database, "faults_steps", FAULT_LOG=str(log))
    assert status == 0 and printed == ["committed 50"], printed
    found = parse_steps(log)
    # the shape storage/transaction.py promises: record, claims, tags, commit, one CAS per resource,
    # history clean-up, done
    first, last = found.calls[0], found.calls[-1]
    assert (first["collection"], first["method"], first["states"]) == (TRANSACTIONS, "insert_one", ["pending"])
    assert (last["collection"], last["states"]) == (TRANSACTIONS, ["done"])
    assert [c["collection"] for c in found.calls[:found.commit - 1]] == [TRANSACTIONS, "history", "Patient",
                                                                          "Observation"]
    rolled = found.calls[found.commit:-1]
    assert sum(c["method"] == "update_one" for c in rolled) == len(PATIENTS) + len(OBSERVATIONS)
    assert_outcome(store, True)
    return found


# -- readers -----------------------------------------------------------------------------------------


@dataclass
class Seen:
    start: float
    end: float
    what: str  # OLD, NEW or MIXED
    detail: str


@dataclass
class Reader:
    """A thread polling ``look`` (which classifies what it saw) until stopped."""

    name: str
    look: Callable[[], tuple[str, str]]
    seen: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Reader:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                what, detail = self.look()
            except PyMongoError as failed:  # the database is down: poll again
                self.errors.append(type(failed).__name__)
                time.sleep(0.02)
                continue
            except Exception as failed:  # noqa: BLE001 - reported by the test, not lost in a thread
                what, detail = MIXED, f"{type(failed).__name__}: {failed}"
            self.seen.append(Seen(start, time.monotonic(), what, detail))
            time.sleep(0.002)  # leave the writer (and a small machine) some room

    def finished_after(self, moment: float) -> int:
        return sum(s.start >= moment for s in self.seen)

    def wait_for_looks(self, moment: float, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.finished_after(moment) < count:
            assert time.monotonic() < deadline, f"{self.name} saw nothing for {timeout}s: {self.errors[-3:]}"
            time.sleep(0.005)

    def halt(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(60)
        assert not self.thread.is_alive()


def patient_state(body: bytes | None, version: int) -> str:
    resource = orjson.loads(body) if body else {}
    if version == 1 and resource.get("active") is False and resource["name"][0]["family"] == "Before":
        return OLD
    if version == 2 and resource.get("active") is True and resource["name"][0]["family"] == "After":
        return NEW
    return MIXED


def one_state(states: list[str], detail: Any) -> tuple[str, str]:
    """All old, all new, or mixed."""
    if len(set(states)) == 1 and states[0] in (OLD, NEW):
        return states[0], ""
    return MIXED, f"{states} {detail}"


def read_targets(store: Store) -> tuple[str, str]:
    """``Store.read`` of the 50 targets, one after the other (each read is its own look: a sweep may
    legitimately start old and end new, never the reverse, which ``check_readers`` checks by time)."""
    states = []
    for rid in PATIENTS:
        version = store.read("Patient", rid)
        states.append(MIXED if version is None else patient_state(version.json, version.version))
    for oid in OBSERVATIONS:
        version = store.read("Observation", oid)
        if version is None:
            states.append(OLD)
        else:
            resource = orjson.loads(version.json or b"{}")
            states.append(NEW if version.version == 1 and resource == {**new_observation(oid), "meta": resource["meta"]}
                          else MIXED)
    # one look per read would be finer; a sweep that goes old -> new is fine, new -> old is not
    if OLD in states and NEW in states:
        first_new = states.index(NEW)
        if OLD in states[first_new:]:
            return MIXED, f"a read saw old after one saw new: {states}"
        return NEW, "old then new within one sweep"
    return one_state(states, "reads")


CONFIG = Config()


def search_and_history(store: Store) -> tuple[str, str]:
    """The search the server runs for ``Patient?_id=...&_revinclude=Observation:subject`` and the
    Patient and Observation type histories, in one ``Store.consistent`` (as pipeline.search does)."""
    params = [("_id", ",".join(PATIENTS)), ("_revinclude", "Observation:subject"), ("_count", "200")]

    def run() -> Any:
        body, _ = searching.run(store, CONFIG, "http://faults/fhir", "Patient", ("Patient",), params)
        patients, _ = store.history_page(store.history_query("Patient"), 200, None)
        observations, _ = store.history_page(store.history_query("Observation"), 200, None)
        return orjson.loads(orjson.dumps(body)), patients, observations

    body, patient_history, observation_history = store.consistent(run)
    resources = [e["resource"] for e in body.get("entry", [])]
    found = [patient_state(orjson.dumps(r), int(r["meta"]["versionId"]))
             for r in resources if r["resourceType"] == "Patient"]
    observations = sorted(r["id"] for r in resources if r["resourceType"] == "Observation")
    if len(found) != len(PATIENTS):
        return MIXED, f"{len(found)} patients found"
    states = found + [NEW if observations == OBSERVATIONS else OLD if not observations else MIXED]
    versions = sorted(v.version for v in patient_history)
    states.append(OLD if versions == [1] * len(PATIENTS)
                  else NEW if versions == [1] * len(PATIENTS) + [2] * len(PATIENTS) else MIXED)
    observed = sorted(v.id for v in observation_history)
    states.append(OLD if not observed else NEW if observed == OBSERVATIONS else MIXED)
    return one_state(states, f"observations {observations}, histories {versions} {observed}")


def check_readers(readers: list[Reader], all_visible: bool, case: str) -> None:
    for reader in readers:
        mixed = [s for s in reader.seen if s.what == MIXED]
        assert not mixed, f"{case}: {reader.name} observed a mix: {mixed[:3]}"
    seen = [s for r in readers for s in r.seen]
    news = [s for s in seen if s.what == NEW]
    if not all_visible:
        assert not news, f"{case}: the transaction was rolled back, yet a reader saw it: {news[:3]}"
        return
    assert news, f"{case}: no reader ever saw the committed transaction"
    first_new = min(s.end for s in news)
    late = [s for s in seen if s.what == OLD and s.start > first_new]
    assert not late, f"{case}: old state observed after the new one had been: {late[:3]}"


# -- the outcome ---------------------------------------------------------------------------------------


def assert_outcome(store: Store, all_visible: bool, case: str = "") -> None:
    """Every entry visible, or none; and nothing of the transaction left behind."""
    expected = NEW if all_visible else OLD
    for rid in PATIENTS:
        version = store.read("Patient", rid)
        assert version is not None, f"{case}: Patient/{rid} is gone"
        assert patient_state(version.json, version.version) == expected, (case, rid, version)
    for oid in OBSERVATIONS:
        assert (store.read("Observation", oid) is not None) == all_visible, (case, oid)
    for rtype, rid, version in (("Patient", PATIENTS[0], 2), ("Patient", PATIENTS[-1], 2),
                                ("Observation", OBSERVATIONS[0], 1), ("Observation", OBSERVATIONS[-1], 1)):
        assert (store.vread(rtype, rid, version) is not None) == all_visible, (case, rtype, rid)
    assert [v.version for v in store.history_page({"t": "Patient", "i": PATIENTS[0]}, 10, None)[0]] == \
        ([2, 1] if all_visible else [1]), case
    assert search_and_history(store) == (expected, ""), case
    # exactly the expected versions in history; no tag, claim or placeholder left; no record but a done one
    kept = {f"Patient/{rid}/1" for rid in PATIENTS}
    if all_visible:
        kept |= {f"Patient/{rid}/2" for rid in PATIENTS} | {f"Observation/{oid}/1" for oid in OBSERVATIONS}
    assert {e["_id"] for e in store.history.find({}, {"_id": 1})} == kept, case
    for name in ("Patient", "Observation", "history"):
        assert store.db[name].count_documents({"tx": {"$exists": True}}) == 0, (case, name)
    assert store.db["Observation"].count_documents({}) == len(OBSERVATIONS) * all_visible, case
    states = [r["state"] for r in store.db[TRANSACTIONS].find()]
    assert states == (["done"] if all_visible else []), (case, states)


def assert_writable(store: Store, all_visible: bool, case: str) -> None:
    """A later transaction and a plain update of the same resources go through at once (no claim or tag
    left to wait for), and history holds exactly the expected versions."""
    store.transaction_timeout = 30.0  # a claim left behind would now block, not be rolled back
    started = time.monotonic()
    again = [Write("Patient", rid, {**new_patient(rid), "gender": "other"}, "PUT") for rid in PATIENTS]
    again += [Write("Observation", oid, {**new_observation(oid), "status": "amended"}, "PUT") for oid in OBSERVATIONS]
    versions = store.commit(again, by=["test/after-recovery"])
    base = 1 if all_visible else 0
    assert [v.version for v in versions] == [base + 2] * len(PATIENTS) + [base + 1] * len(OBSERVATIONS), case
    updated, _ = store.update("Patient", PATIENTS[0], old_patient(PATIENTS[0]))
    assert updated.version == base + 3, case
    assert time.monotonic() - started < 30, f"{case}: writes after recovery waited"
    assert [v.version for v in store.history_page({"t": "Patient", "i": PATIENTS[0]}, 10, None)[0]] == \
        list(range(base + 3, 0, -1)), case
    assert [v.version for v in store.history_page({"t": "Observation", "i": OBSERVATIONS[0]}, 10, None)[0]] == \
        list(range(base + 1, 0, -1)), case
    assert [r["state"] for r in store.db[TRANSACTIONS].find()] == ["done"] * (1 + all_visible), case


# -- the writer killed -----------------------------------------------------------------------------------


def run_case(database: Database, writer: Writer, steps: Steps, when: str, k: int, searcher: bool,
             action: str = "self") -> float:
    """One kill; returns its duration."""
    started = time.monotonic()
    case = f"{action} {when} call {k}/{steps.n} ({steps.calls[k - 1]['collection']} {steps.calls[k - 1]['method']})"
    name = f"faults_{action}_{when}_{k}"
    store = database.store(name)
    seed(store)
    looks = [("reads", read_targets)] + ([("search", search_and_history)] if searcher else [])
    readers = [Reader(n, (lambda f: lambda: f(database.store(name)))(f)).start() for n, f in looks]
    for reader in readers:
        reader.wait_for_looks(started)
    env = {"FAULT_AT": str(k), "FAULT_WHEN": when, "FAULT_ACTION": action}
    if action == "pid":
        assert database.ferret.process is not None
        env["FAULT_PID"] = str(database.ferret.process.pid)
    status, printed = writer.run(database, name, **env)
    crashed = time.monotonic()
    if action == "self":
        assert status == -signal.SIGKILL, f"{case}: the writer was not killed: {status} {printed}"
    else:  # the database died under it: the commit fails, the writer survives
        assert status == 3, f"{case}: {status} {printed}"
        database.kill_and_restart()
    for reader in readers:  # the state the crash left, as readers see it
        reader.wait_for_looks(crashed)
    all_visible = steps.all_visible(when, k)
    store.transaction_timeout = 0.0
    acted = store.recover()
    if not searcher:  # nobody else finishes or rolls back: the recovery found the transaction unfinished
        assert acted == (0 if (k, when) in ((steps.n, "after"),) else 1), f"{case}: recover() acted {acted}"
    recovered = time.monotonic()
    for reader in readers:
        reader.wait_for_looks(recovered)
        reader.halt()
    check_readers(readers, all_visible, case)
    assert_outcome(store, all_visible, case)
    assert_writable(store, all_visible, case)
    database.client.drop_database(name)
    return time.monotonic() - started


def sampled(steps: Steps) -> list[int]:
    """Every step, with FHIR_FAULTS_EXHAUSTIVE=1. By default (a few minutes on a small machine) every
    step up to the first compare-and-swap after the commit and the last three, and every seventh of the
    50 compare-and-swaps between, whose states differ only by how many resources moved."""
    every = range(1, steps.n + 1)
    if os.environ.get("FHIR_FAULTS_EXHAUSTIVE"):
        return list(every)
    return [k for k in every if k <= steps.commit + 1 or k >= steps.n - 2 or (k - steps.commit) % 7 == 0]


def test_the_writer_killed_before_each_write(database: Database, writer: Writer, steps: Steps) -> None:
    """SIGKILL just before the k-th write: the database holds the first k - 1. The search reader (which
    rolls committed transactions forward, as every search does) runs too."""
    for k in sampled(steps):
        run_case(database, writer, steps, "before", k, searcher=True)


def test_the_writer_killed_after_writes(database: Database, writer: Writer, steps: Steps) -> None:
    """SIGKILL once the k-th write returned. Only ``Store.read`` polls, which never writes: ``recover``
    alone has to finish or roll back what the writer left (the state is the one before the (k+1)-th
    write, with another reader)."""
    for k in sampled(steps):
        run_case(database, writer, steps, "after", k, searcher=False)


def test_the_writer_killed_in_the_middle_of_each_bulk_write(database: Database, writer: Writer, steps: Steps) -> None:
    """Half of a bulk write's operations sent, then SIGKILL: claims, tags and the history clean-up
    cut short."""
    assert len(steps.bulk()) >= 4, steps.calls  # claims, the tags of each type, the history clean-up
    for k in steps.bulk():
        run_case(database, writer, steps, "mid", k, searcher=True)


def test_the_database_killed_at_chosen_steps(database: Database, writer: Writer, steps: Steps) -> None:
    """kill -9 of FerretDB at the main steps, the writer carrying on (its commit fails), readers
    polling through the outage; FerretDB started again on the same data, then recovery."""
    c, n = steps.commit, steps.n
    chosen = [("before", 2), ("mid", 2), ("mid", 3), ("before", c), ("after", c), ("before", c + 25),
              ("mid", n - 1), ("before", n)]
    for when, k in chosen:
        run_case(database, writer, steps, when, k, searcher=True, action="pid")



def test_a_transaction_wider_than_100_resources_of_a_type_commits(database: Database) -> None:
    """FerretDB 1.24 hangs an update command of about 100 matching statements, and the database with it
    (transaction.BULK_BATCH): 120 Patient updates tag 120 documents and roll forward 240 history
    entries. A socket timeout turns the hang into a failure."""
    client: MongoClient[Any] = MongoClient(database.uri, tz_aware=True, socketTimeoutMS=30000)
    try:
        store = Store(client["faults_wide"], indexer=index)
        ids = [f"w{n:03d}" for n in range(120)]
        for rid in ids:
            store.update("Patient", rid, old_patient(rid))
        versions = store.commit([Write("Patient", rid, new_patient(rid), "PUT") for rid in ids])
        assert [v.version for v in versions] == [2] * len(ids)
        assert {patient_state(v.json, v.version) for v in (store.read("Patient", rid) for rid in ids) if v} == {NEW}
        assert store.history.count_documents({"tx": {"$exists": True}}) == 0
        client.drop_database("faults_wide")
    finally:
        client.close()
