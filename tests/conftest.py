"""Shared fixtures: one real FerretDB for the session and a real server (gunicorn, real HTTP) on it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pymongo import MongoClient

from fhir_server.storage.ferretdb import FerretDB, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / ".cache" / "spec" / "examples" / "package"
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="session")
def ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDB]:
    server = FerretDB(tmp_path_factory.mktemp("ferretdb")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo(ferretdb: FerretDB) -> Iterator[MongoClient[Any]]:
    client: MongoClient[Any] = MongoClient(ferretdb.uri, tz_aware=True)
    yield client
    client.close()


class LiveServer:
    """``fhir-server serve`` in a subprocess, reached over HTTP on 127.0.0.1."""

    def __init__(self, mongodb_uri: str, database: str, log_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.database = database
        self.env = {**os.environ, "FHIR_MONGODB_URI": mongodb_uri, "FHIR_MONGODB_DATABASE": database,
                    "FHIR_PORT": str(self.port), "FHIR_WORKERS": "2", "FHIR_THREADS": "4",
                    "FHIR_LOG_LEVEL": "warning", **env}
        self.log_path = log_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LiveServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "serve"], env=self.env,
                                        stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def token(self, scope: str = "system/*.cruds", **claims: Any) -> str:
        """An access token for this server, signed with its key (as ``fhir-server token`` prints).
        Without a user, an operator's (consent does not apply: tests of storage and search)."""
        from fhir_server.auth.admin import mint_token
        from fhir_server.auth.tokens import KeyRing
        from fhir_server.storage import AuthStore

        with MongoClient(self.env["FHIR_MONGODB_URI"], tz_aware=True) as client:
            claims.setdefault("expires", 3600)
            claims.setdefault("operator", "fhir_user" not in claims and "kind" not in claims)
            return mint_token(KeyRing(AuthStore(client[self.database])), self.base, scope, **claims)

    def client(self, scope: str = "system/*.cruds", **claims: Any) -> Fhir:
        return Fhir(self.base, self.token(scope, **claims))

    def kill(self, sig: int = 15) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)


class Fhir:
    """A small FHIR REST client over requests, relative to the base URL."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        if path.startswith("http"):
            return path
        if path.startswith("?"):
            return self.base + path
        return f"{self.base}/{path.lstrip('/')}" if path else self.base

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if body is not None and not isinstance(body, (bytes, str)):
            kwargs["json"] = body
            headers.setdefault("Content-Type", FHIR_JSON)
        elif body is not None:
            kwargs["data"] = body
            headers.setdefault("Content-Type", FHIR_JSON)
        return self.http.request(method, self.url(path), headers=headers, timeout=300, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)


def own_server(ferretdb: FerretDB, tmp_path_factory: pytest.TempPathFactory, database: str,
               **env: str) -> Iterator[LiveServer]:
    """A server on a database of its own, for a module's fixture (``yield from own_server(...)``)."""
    live = LiveServer(ferretdb.uri, database, tmp_path_factory.mktemp(database), **env).start()
    yield live
    live.kill()


@pytest.fixture(scope="session")
def server(ferretdb: FerretDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(ferretdb.uri, "fhir_test", tmp_path_factory.mktemp("logs")).start()
    yield live
    live.kill()


@pytest.fixture(scope="session")
def fhir(server: LiveServer) -> Fhir:
    return server.client()


@pytest.fixture(scope="session")
def db(mongo: MongoClient[Any], server: LiveServer) -> Any:
    return mongo[server.database]


# the server's own bookkeeping, which its background sweep and locks change at any time
BOOKKEEPING = {"transactions", "markers", "generations"}


def snapshot(db: Any) -> dict[str, int]:
    """Document counts of every collection of data: proof that a refused request stored nothing."""
    return {name: db[name].count_documents({}) for name in db.list_collection_names() if name not in BOOKKEEPING}


def assert_outcome(response: requests.Response, status: int, *codes: str) -> dict[str, Any]:
    """The response has ``status`` and an OperationOutcome (with one of ``codes`` if given)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"], outcome
    if codes:
        assert {i["code"] for i in outcome["issue"]} & set(codes), outcome
    return outcome
