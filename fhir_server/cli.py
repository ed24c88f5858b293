"""The ``fhir-server`` command.

    fhir-server serve [--host H] [--port P] [--workers N] [--demo]   run under gunicorn (--demo: load the
                                                                     example DMP once the server is ready)
    fhir-server db indexes                                  create the indexes and exit
    fhir-server db reindex [TYPE ...]                       recompute the search columns (all types by default)
    fhir-server load [--base URL] [--token T] examples      post the example DMP (examples/) through the API
    fhir-server load ... generated --patients N --seed S    or N generated patients of the same shape

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


def serve(config: Config, demo: bool = False) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .auth.tokens import KeyRing
    from .storage import AuthStore, connect

    # Workers must share the cursor- and session-signing secret; the indexes and a token signing key
    # exist before any worker serves.
    os.environ.setdefault("FHIR_SECRET", config.secret)
    store = connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes)
    store.ensure_indexes()
    KeyRing(AuthStore(store.db)).signing_key()
    os.environ["FHIR_MONGODB_URI"] = config.mongodb_uri
    if demo:
        _load_when_ready(config, admin_token(config, store.db, _base(config)))

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
    serve_cmd.add_argument("--demo", action="store_true", help="load the example DMP once the server is ready")
    db_cmd = commands.add_parser("db", help="database maintenance")
    db_cmd.add_argument("action", choices=["indexes", "reindex"])
    db_cmd.add_argument("types", nargs="*", help="reindex: the resource types (default: all)")
    _auth_commands(commands)
    _load_command(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = Config.load(**{k: getattr(args, k, None) for k in ("host", "port", "workers")})
    if args.command == "serve" and config.auth == "off" and not _loopback(config.host):
        sys.exit(f"FHIR_AUTH=off is for local development only: refusing to listen on {config.host}, "
                 "which is not a loopback address")
    if args.command == "load":
        sys.exit(_load(config, args))
    with database(config) as config:
        if args.command == "serve":
            if config.auth == "off":
                print("WARNING: FHIR_AUTH=off: no access control at all; local development only", flush=True)
            serve(config, demo=args.demo)
        elif args.command == "db":
            from .storage import connect
            store = connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes)
            if args.action == "reindex":
                print(f"{store.reindex(args.types)} resources re-indexed")
            else:
                store.ensure_indexes()
                print("indexes in place")
        else:
            _auth_command(config, args)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _auth_commands(commands: Any) -> None:
    clients = commands.add_parser("clients", help="register and list SMART client applications")
    clients_actions = clients.add_subparsers(dest="action", required=True)
    add = clients_actions.add_parser("add", help="register a client; prints its id on the last line")
    add.add_argument("--name", required=True)
    kind = add.add_mutually_exclusive_group()
    kind.add_argument("--public", dest="kind", action="store_const", const="public")
    kind.add_argument("--confidential", dest="kind", action="store_const", const="confidential")
    add.add_argument("--redirect-uri", action="append", default=[])
    add.add_argument("--jwks-file", help="public keys (JWKS) for private_key_jwt: backend services")
    add.add_argument("--scope", default="openid fhirUser launch launch/patient offline_access online_access "
                     "patient/*.cruds user/*.cruds")
    add.add_argument("--operator", action="store_true", help="a backend service that administers the server")
    clients_actions.add_parser("list")
    users = commands.add_parser("users", help="local users (development and tests)")
    users_actions = users.add_subparsers(dest="action", required=True)
    user = users_actions.add_parser("add")
    user.add_argument("--username", required=True)
    user.add_argument("--password", required=True)
    user.add_argument("--kind", required=True, choices=["patient", "representative", "practitioner"])
    user.add_argument("--fhir-user", required=True, help="Patient/1, Practitioner/2, RelatedPerson/3")
    for option in ("--name", "--patient", "--rpps", "--profession", "--organization"):
        user.add_argument(option)
    users_actions.add_parser("list")
    token = commands.add_parser("token", help="print an access token signed with the server's key")
    token.add_argument("--scope", required=True)
    token.add_argument("--fhir-user")
    token.add_argument("--patient")
    token.add_argument("--purpose", default="TREAT", choices=["TREAT", "BTG", "ETREAT"])
    token.add_argument("--client", default="fhir-server-cli")
    token.add_argument("--expires", type=int, default=300)
    token.add_argument("--operator", action="store_true",
                       help="a system token that bypasses consent (administration, migration, conformance runs; audited)")
    keys = commands.add_parser("keys", help="the token signing keys")
    keys.add_argument("action", choices=["rotate", "list"])


def _auth_command(config: Config, args: argparse.Namespace) -> None:
    from .auth import admin
    from .auth.tokens import KeyRing
    from .storage import AuthStore, connect

    store = AuthStore(connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes).db)
    if args.command == "clients" and args.action == "add":
        jwks = admin.load_jwks(args.jwks_file) if args.jwks_file else None
        kind = args.kind or ("asymmetric" if jwks else "public")
        if jwks and kind != "asymmetric":
            sys.exit("--jwks-file registers an asymmetric client: leave out --public / --confidential")
        client_id, secret = admin.add_client(store, args.name, kind, args.redirect_uri, args.scope, jwks, args.operator)
        if secret:
            print(f"client secret (shown once): {secret}")
        print(client_id)
    elif args.command in ("clients", "users") and args.action == "list":
        for doc in store.all(args.command):
            doc.pop("password", None)
            doc.pop("secret_hash", None)
            print(doc)
    elif args.command == "users":
        admin.add_user(store, args.username, args.password, args.kind, args.fhir_user, args.name, args.patient,
                       args.rpps, args.profession, args.organization)
        print(args.username)
    elif args.command == "token":
        issuer = _base(config)
        print(admin.mint_token(KeyRing(store), issuer, args.scope, args.fhir_user, args.patient, args.purpose,
                               args.client, args.expires, operator=args.operator))
    elif args.command == "keys":
        ring = KeyRing(store)
        if args.action == "rotate":
            print(ring.rotate())
        else:
            for key in ring.jwks()["keys"]:
                print(key["kid"])


# -- loading the example DMP (examples/) ------------------------------------------------------------

def _base(config: Config) -> str:
    """The FHIR base as this host reaches it (a token's audience must be the base it is used on)."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    return (config.base_url or f"http://{host}:{config.port}/fhir").rstrip("/")


def admin_token(config: Config, db: Any, base: str, expires: int = 3600) -> str:
    """An operator's token, signed with the server's key from its database, as ``fhir-server token``
    prints: loading writes every patient's data, Consents included, which only an operator may."""
    from .auth import admin
    from .auth.tokens import KeyRing
    from .storage import AuthStore

    return admin.mint_token(KeyRing(AuthStore(db)), base, "system/*.cruds", client_id="fhir-server-load",
                            expires=expires, operator=True)


def _load_when_ready(config: Config, token: str) -> None:
    """``serve --demo``: a separate process waits for the server, then loads the example DMP through the
    API (a thread in gunicorn's master would be forked into every worker)."""
    import subprocess

    argv = [sys.executable, "-m", "fhir_server.cli", "load", "--base", _base(config), "--token", token,
            "--wait", "120", "examples"]
    subprocess.Popen(argv, cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "FHIR_AUTH": config.auth})


def _load_command(commands: Any) -> None:
    load = commands.add_parser("load", help="post a data set through the API as idempotent transactions")
    load.add_argument("dataset", choices=["examples", "generated"],
                      help="examples: the example DMP (examples/README.md); generated: --patients more like it")
    load.add_argument("--base", help="the FHIR base URL (default: this server's)")
    load.add_argument("--token", help="an access token (default: an operator's, minted from the database)")
    load.add_argument("--wait", type=float, default=0, help="wait this long for the server to be ready")
    load.add_argument("--patients", type=int, default=100)
    load.add_argument("--seed", type=int, default=1)


def _load(config: Config, args: argparse.Namespace) -> str | None:
    root = str(Path(__file__).resolve().parent.parent)  # examples/ lives beside the package, in the checkout
    if root not in sys.path:
        sys.path.insert(0, root)
    from examples import dmp
    from examples.load import LoadError, load, wait_ready

    base = (args.base or _base(config)).rstrip("/")
    token = args.token
    if not token and config.auth != "off":
        if not config.mongodb_uri:
            return "load needs --token, or FHIR_MONGODB_URI (the server's database) to mint an operator's token"
        from .storage import connect
        token = admin_token(config, connect(config.mongodb_uri, config.mongodb_database, config.compress_above_bytes).db,
                            base)
    bundles = dmp.build() if args.dataset == "examples" else dmp.generate(args.patients, args.seed)
    try:
        if args.wait:
            wait_ready(base, args.wait)
        counts = load(base, token or "", bundles, progress=lambda line: print(line, flush=True))
    except LoadError as error:
        return f"load failed: {error}"
    print(f"{args.dataset} loaded into {base}: {counts['created']} resources created, "
          f"{counts['found']} already there", flush=True)
    return None


if __name__ == "__main__":
    main(sys.argv[1:])
