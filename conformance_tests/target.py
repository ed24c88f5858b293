"""The server under test: the one named by ``--base-url``, or else this project's own server, started for
the session. ``start_own_server`` is the only place where the suite knows about this implementation:
every test talks to ``base_url`` over HTTP and reads nothing else."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = "application/fhir+json"


@dataclass
class Target:
    base_url: str
    token: str | None
    capability: dict[str, Any] = field(default_factory=dict)
    stop: Callable[[], None] | None = None
    log: Path | None = None  # our own server's log, shown when something breaks


def fetch_capability(base_url: str, token: str | None) -> dict[str, Any]:
    """``GET [base]/metadata`` (http.html#capabilities). Sent with the token when there is one: a server
    may or may not protect it."""
    headers = {"Accept": FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = requests.get(f"{base_url}/metadata", headers=headers, timeout=60)
    response.raise_for_status()
    capability: dict[str, Any] = response.json()
    if capability.get("resourceType") != "CapabilityStatement":
        raise RuntimeError(f"{base_url}/metadata did not answer a CapabilityStatement: {response.text[:300]}")
    return capability


def connect(base_url: str, token: str | None) -> Target:
    base = base_url.rstrip("/")
    return Target(base, token, fetch_capability(base, token))


def start_own_server(timeout: float = 120.0) -> Target:
    """A FerretDB and ``fhir-server serve`` on free loopback ports, in a temporary directory, and an
    operator's token from ``fhir-server token`` (run in the project root so that it is this checkout)."""
    from fhir_server.storage.ferretdb import FerretDB, free_port

    data = Path(tempfile.mkdtemp(prefix="fhir-conformance-"))
    ferret = FerretDB(data / "ferretdb").start()
    port = free_port()
    env = {**os.environ, "FHIR_MONGODB_URI": ferret.uri, "FHIR_MONGODB_DATABASE": "conformance",
           "FHIR_HOST": "127.0.0.1", "FHIR_PORT": str(port), "FHIR_LOG_LEVEL": "warning"}
    env.pop("FHIR_BASE_URL", None)
    log = data / "server.log"
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve"], cwd=ROOT, env=env,
                                  stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        ferret.stop()
        shutil.rmtree(data, ignore_errors=True)

    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited ({server.returncode}): {log.read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/metadata", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer {base}/metadata within {timeout:.0f}s")
            time.sleep(0.2)
        minted = subprocess.run([sys.executable, "-m", "fhir_server.cli", "token", "--scope", "system/*.cruds",
                                 "--expires", "7200", "--operator"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        if minted.returncode != 0 or not minted.stdout.strip():
            raise RuntimeError(f"fhir-server token failed: {minted.stderr[-2000:]}")
        token = minted.stdout.strip().splitlines()[-1]
        return Target(base, token, fetch_capability(base, token), stop, log)
    except BaseException:
        stop()
        raise
