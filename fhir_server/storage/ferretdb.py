"""A local FerretDB 1.24 (SQLite backend) for development, tests and the default run.

Built once from the Go module proxy into a per-user cache, then started on a loopback port with its
data under a directory of ours. Production uses MongoDB through ``FHIR_MONGODB_URI`` and starts nothing.

The build applies small changes (``PATCHES``) to FerretDB. Unpatched, its SQLite backend looks
documents up by ``_id`` with the path ``->'$._id'`` while its ``_id`` index is on ``->"_id"``, so SQLite
cannot use the index and every lookup scans the whole table (97 ms instead of 4 ms for 1,500 documents
of 20 KB, measured here); and it pushes ``_id`` down only when the filter has no other key (FerretDB's
open issue 3235), so a compare-and-swap ``{_id, v}`` scans in Go. FerretDB re-applies the full
filter to whatever the backend returns, so pushing ``_id`` down more often changes no result. And an
update command of 100 statements or more (a transaction's roll-forward, storage/transaction.py) hung the
whole server: see the third patch.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

FERRETDB_VERSION = "v1.24.2"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
# (file, text, replacement): the text must be found, or the build stops.
PATCHES = (
    ("internal/backends/sqlite/metadata/metadata.go",
     "IDColumn = DefaultColumn + \"->'$._id'\"", "IDColumn = DefaultColumn + \"->'_id'\""),
    ("internal/backends/sqlite/collection.go",  # in Query and in Explain
     "if params.Filter.Len() == 1 {", "if params.Filter != nil && params.Filter.Len() >= 1 {"),
    # an update command kept each statement's query open until the whole command ended (a `defer` in
    # its loop): the 100th statement waited forever for one of the SQLite pool's 100 connections, and
    # every client with it. Close each statement's query once it is done.
    ("internal/handler/msg_update.go", "\t\tcloser := iterator.NewMultiCloser()\n\t\tdefer closer.Close()\n",
     "\t\tcloser := iterator.NewMultiCloser()\n"),
    ("internal/handler/msg_update.go", "\t\tresult, err := common.UpdateDocument(ctx, c, \"update\", iter, &u)\n",
     "\t\tresult, err := common.UpdateDocument(ctx, c, \"update\", iter, &u)\n\t\tcloser.Close()\n"),
)
BUILD = "p2"  # bump when PATCHES change, so that an older build is not reused


def _binary_path() -> Path:
    configured = os.environ.get("FHIR_FERRETDB_BIN")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "fhir-server" / f"ferretdb-{FERRETDB_VERSION}-{BUILD}"


def ensure_binary() -> Path:
    """Return the FerretDB binary, building it with Go the first time (a minute or two)."""
    binary = _binary_path()
    if binary.exists():
        return binary
    go = shutil.which("go") or "/usr/local/go/bin/go"
    print(f"building FerretDB {FERRETDB_VERSION} with Go (first run only) ...", flush=True)
    download = subprocess.run([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
                              check=True, capture_output=True, text=True)
    source = Path(json.loads(download.stdout)["Dir"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "ferretdb"
        shutil.copytree(source, work)
        for path in work.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        # The module ships without the version file `go generate` would write; the binary refuses
        # to start without it.
        (work / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        for name, text, replacement in PATCHES:
            path = work / name
            source_text = path.read_text()
            if source_text.count(text) < 1:
                raise RuntimeError(f"FerretDB patch does not apply to {name}: {text!r}")
            path.write_text(source_text.replace(text, replacement))
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go, "build", "-o", str(partial), "./cmd/ferretdb"], cwd=work, check=True)
        partial.rename(binary)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FerretDB:
    """One FerretDB process on 127.0.0.1, its SQLite files under ``data_dir``."""

    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> FerretDB:
        binary = ensure_binary()
        sqlite_dir = self.data_dir / "sqlite"
        sqlite_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "ferretdb.log", "ab")
        self.process = subprocess.Popen(
            [str(binary), "--handler=sqlite", f"--sqlite-url=file:{sqlite_dir}/",
             f"--state-dir={self.data_dir}", f"--listen-addr=127.0.0.1:{self.port}",
             "--debug-addr=-", "--telemetry=disable", "--log-level=warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FerretDB exited with {self.process.returncode}; see {self.data_dir}/ferretdb.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"FerretDB did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        # gunicorn workers are forks of the process that started FerretDB and unwind its stack when
        # they exit: only the starting process may stop it.
        if os.getpid() != self._owner:
            return
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
