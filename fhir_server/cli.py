"""The ``fhir-server`` command.

    fhir-server serve [--host H] [--port P] [--workers N]   run under gunicorn
    fhir-server db indexes                                  create the indexes and exit

Without ``FHIR_MONGODB_URI`` the server starts a local FerretDB (data under ``FHIR_DATA_DIR``) and stops
it when it stops.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import Config

log = logging.getLogger("fhir_server")


@contextmanager
def database(config: Config) -> Iterator[Config]:
    """Yield ``config`` with a database URI: the configured one, or a local FerretDB started here."""
    if config.mongodb_uri:
        yield config
        return
    from .storage.ferretdb import FerretDB

    data_dir = Path(config.data_dir) / "ferretdb"
    data_dir.mkdir(parents=True, exist_ok=True)
    _stop_stale(data_dir / "ferretdb.pid")
    ferret = FerretDB(data_dir).start()
    (data_dir / "ferretdb.pid").write_text(str(ferret.process.pid if ferret.process else ""))
    log.warning("started FerretDB on %s (data in %s)", ferret.uri, data_dir)
    try:
        yield Config.load(**{**config.__dict__, "mongodb_uri": ferret.uri})
    finally:
        ferret.stop()
        (data_dir / "ferretdb.pid").unlink(missing_ok=True)


def _stop_stale(pid_file: Path) -> None:
    """A FerretDB left by a server that was killed outright still holds the data: stop it first."""
    try:
        pid = int(pid_file.read_text())
        if "ferretdb" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        return  # no pid file, or its process is gone: nothing stale


def serve(config: Config) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .storage import connect

    # Workers must share the cursor-signing secret, and the indexes exist before any worker serves.
    os.environ.setdefault("FHIR_SECRET", config.secret)
    connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes).ensure_indexes()
    os.environ["FHIR_MONGODB_URI"] = config.mongodb_uri

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": f"{config.host}:{config.port}", "workers": config.workers, "threads": config.threads,
                "worker_class": "gthread", "timeout": 120, "graceful_timeout": 10, "keepalive": 5,
                "limit_request_line": 8190, "loglevel": config.log_level.lower(),
            }
            # gunicorn 24+ opens a control socket at one fixed per-user path: several servers on one
            # host (tests, benchmarks) would fight over it, and nothing here uses it.
            if "control_socket_disable" in self.cfg.settings:
                settings["control_socket_disable"] = True
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(Config.load())

    print(f"FHIR server on http://{config.host}:{config.port}/fhir", flush=True)
    Application().run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server", description="FHIR R4 server for the DMP")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server under gunicorn")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=int)
    serve_cmd.add_argument("--workers", type=int)
    db_cmd = commands.add_parser("db", help="database maintenance")
    db_cmd.add_argument("action", choices=["indexes"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = Config.load(**{k: getattr(args, k, None) for k in ("host", "port", "workers")})
    with database(config) as config:
        if args.command == "serve":
            serve(config)
        elif args.action == "indexes":
            from .storage import connect
            connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes).ensure_indexes()
            print("indexes in place")


if __name__ == "__main__":
    main(sys.argv[1:])
