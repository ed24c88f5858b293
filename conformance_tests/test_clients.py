"""Real FHIR clients that nobody here wrote, each running the same scripted EHR session against the
server under test (clients/: HAPI FHIR's generic client from Java, fhir-kit-client from Node, fhirpy
from Python): read the CapabilityStatement, create a Patient with an INS, find it by that identifier,
submit a document (an ITI-65 transaction with a DocumentReference and its Binary), read both back,
update the Patient with If-Match, refuse a stale update, read its history.

Each client is built or installed here once (``mvn package``, ``npm ci``), skipped while a stamp of its
inputs says it is up to date; a build that fails fails its test with the tool's output. Each client
prints a JSON summary of its session; the test checks it, then checks on the server, through its own
HTTP requests, that what the client says it did is there."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import requests

from .support import assert_status

CLIENTS = Path(__file__).resolve().parent / "clients"
JAVA = CLIENTS / "java"
NODE = CLIENTS / "node"
PYTHON = CLIENTS / "python"
STEPS = ["metadata", "create-patient", "search-patient", "submit-documents", "read-documents",
         "update-patient", "patient-history"]
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
BUILD_TIMEOUT = 900  # a cold Maven build downloads HAPI FHIR and its dependencies (~100 MB)
SESSION_TIMEOUT = 300


def digest(files: Iterable[Path], root: Path) -> str:
    """What a build depends on: the files' paths and contents."""
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def run_tool(command: list[str], cwd: Path, what: str, timeout: float) -> None:
    """Runs a build or install step; its failure fails the test with the tool's output."""
    if shutil.which(command[0]) is None:
        pytest.fail(f"{what}: {command[0]} is not installed (not on PATH)")
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{what}: {' '.join(command)} did not finish in {timeout} s\n{error.stdout or ''}{error.stderr or ''}")
    if done.returncode != 0:
        pytest.fail(f"{what}: {' '.join(command)} exited {done.returncode}\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def up_to_date(stamp: Path, want: str, build: Callable[[], None], outputs: Iterable[Path]) -> float:
    """Builds unless ``stamp`` holds ``want`` and every output exists; returns the seconds it took."""
    if stamp.is_file() and stamp.read_text().strip() == want and all(p.exists() for p in outputs):
        return 0.0
    started = time.monotonic()
    build()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want + "\n")
    return time.monotonic() - started


def build_java() -> tuple[list[str], float]:
    jar = JAVA / "target" / "ehr-session.jar"
    want = digest([JAVA / "pom.xml", *(p for p in (JAVA / "src").rglob("*") if p.is_file())], JAVA)
    seconds = up_to_date(JAVA / "target" / ".build.sha256", want,
                         lambda: run_tool(["mvn", "-B", "-q", "package"], JAVA, "building the HAPI client", BUILD_TIMEOUT),
                         [jar])
    if shutil.which("java") is None:
        pytest.fail("java is not installed (not on PATH)")
    return ["java", "-jar", str(jar)], seconds


def build_node() -> tuple[list[str], float]:
    # npm ci empties node_modules, stamp included: a half-done install is never taken as done
    want = digest([NODE / "package.json", NODE / "package-lock.json", NODE / ".npmrc"], NODE)
    seconds = up_to_date(NODE / "node_modules" / ".lock.sha256", want,
                         lambda: run_tool(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], NODE,
                                          "installing fhir-kit-client", BUILD_TIMEOUT),
                         [NODE / "node_modules" / "fhir-kit-client" / "package.json"])
    return ["node", str(NODE / "ehr_session.mjs")], seconds


def build_python() -> tuple[list[str], float]:
    # fhirpy is one of the project's test dependencies (setup.cfg), installed with the others
    done = subprocess.run([sys.executable, "-c", "import fhirpy"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"fhirpy is not installed in {sys.executable}: {done.stderr[-2000:]}")
    return [sys.executable, str(PYTHON / "ehr_session.py")], 0.0


def run_session(command: list[str], base_url: str, token: str | None) -> tuple[dict[str, Any], float, str]:
    """The client's summary, the seconds its session took, and its output (for failure messages)."""
    args = [*command, "--base-url", base_url, *(["--token", token] if token else [])]
    started = time.monotonic()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=SESSION_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the session did not finish in {SESSION_TIMEOUT} s\n{error.stdout or ''}{error.stderr or ''}")
    seconds = time.monotonic() - started
    output = f"exit {done.returncode}\nstdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"the client's session failed:\n{output}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"the client printed no summary:\n{output}"
    try:
        summary = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"the client's last line is not a JSON summary:\n{output}")
    return summary, seconds, output


def check_summary(summary: dict[str, Any], output: str) -> None:
    """What the client says it saw."""
    assert summary.get("steps") == STEPS, output
    assert summary.get("fhirVersion", "").startswith("4.0"), output
    assert summary.get("searchMatches") == 1, output
    assert summary.get("transaction") and all(str(s).startswith("201") for s in summary["transaction"]), output
    assert summary.get("versionAfterUpdate") == "2", output
    assert summary.get("staleUpdateStatus") in (409, 412), output
    assert summary.get("history") == ["2", "1"], output
    assert isinstance(summary.get("binaryBytes"), int) and summary["binaryBytes"] > 0, output


def check_server(http: requests.Session, base_url: str, summary: dict[str, Any], output: str) -> None:
    """What the server holds after the session, read with requests of our own."""
    patient_id, doc_id, binary_id = summary["patient"], summary["documentReference"], summary["binary"]
    response = http.get(f"{base_url}/Patient/{patient_id}")
    assert_status(response, 200)
    patient = response.json()
    assert patient["meta"]["versionId"] == "2", output
    assert {"system": INS_NIR, "value": summary["ins"], "use": "official"} in [
        {k: i.get(k) for k in ("system", "value", "use")} for i in patient.get("identifier", [])], patient
    response = http.get(f"{base_url}/DocumentReference/{doc_id}")
    assert_status(response, 200)
    document = response.json()
    assert document["subject"]["reference"].endswith(f"Patient/{patient_id}"), document
    assert document["content"][0]["attachment"]["url"].endswith(f"Binary/{binary_id}"), document
    response = http.get(f"{base_url}/Binary/{binary_id}")
    assert_status(response, 200)
    assert len(base64.b64decode(response.json().get("data", ""))) == summary["binaryBytes"], response.text[:500]


CLIENT_BUILDS = {"hapi-java": build_java, "fhir-kit-client-node": build_node, "fhirpy-python": build_python}


@pytest.mark.parametrize("client", list(CLIENT_BUILDS))
def test_ehr_session(client: str, base_url: str, token: str | None, http: requests.Session) -> None:
    command, build_seconds = CLIENT_BUILDS[client]()
    summary, session_seconds, output = run_session(command, base_url, token)
    print(f"{client}: build {build_seconds:.1f} s, session {session_seconds:.1f} s\n{output}")  # pytest -rP shows it
    check_summary(summary, output)
    check_server(http, base_url, summary, output)
    for quirk in summary.get("quirks") or ():
        # what the client had to do differently to get through: an interoperability issue of the server's
        warnings.warn(f"{summary['client']}: {quirk}", stacklevel=1)
