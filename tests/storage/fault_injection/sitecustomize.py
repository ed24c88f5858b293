"""Fault injection for tests/storage/test_transaction_faults.py, loaded by every Python process that
has this directory first on its PYTHONPATH (the writer child, or the whole gunicorn server). Nothing
in fhir_server knows about it: it wraps pymongo's Collection write methods.

Counting starts at the first write to ``transactions`` (a transaction's commit record), so start-up
work (indexes, signing key, recovery) is not counted, and only writes to the collections in
``FAULT_COLLECTIONS`` count (not the audit trail). Per counted call ``k`` (1-based):

- ``FAULT_LOG``: append ``{"k", "collection", "method", "ops", "states"}`` as a JSON line (to count
  the steps of a clean commit);
- ``FAULT_DELAY``: sleep that long first (readers get to see every intermediate state);
- ``FAULT_AT`` = k and ``FAULT_WHEN``: ``before`` the call, ``after`` it returned, or ``mid``: only the
  first half of its operations are sent (a bulk write cut short), then the fault;
- ``FAULT_ACTION``: ``self`` (SIGKILL this process), ``group`` (SIGKILL its process group: the
  gunicorn master and every worker) or ``pid`` (SIGKILL ``FAULT_PID``, the database, and carry on).

``FAULT_INJECTION=1`` installs the wrappers with nothing configured yet: a process that forks writers
(tx_writer.py ``--serve``) sets the variables in each child and calls ``configure()``.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

_ENV = os.environ
_config: dict = {}


def configure() -> None:
    """Read the FAULT_* variables (again), and start counting from zero."""
    _config.update(collections=set(_ENV.get("FAULT_COLLECTIONS", "transactions,history,Patient,Observation")
                                   .split(",")), at=int(_ENV.get("FAULT_AT", "0")),
                   when=_ENV.get("FAULT_WHEN", "before"), action=_ENV.get("FAULT_ACTION", "self"),
                   delay=float(_ENV.get("FAULT_DELAY", "0")), log=_ENV.get("FAULT_LOG"), armed=False, k=0)


configure()
if _ENV.get("FAULT_LOG") or _ENV.get("FAULT_AT") or _ENV.get("FAULT_INJECTION"):
    import pymongo.collection

    _lock = threading.Lock()

    def _fault() -> None:
        if _config["action"] == "pid":
            os.kill(int(_ENV["FAULT_PID"]), signal.SIGKILL)
            return
        if _config["action"] == "group":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    def _states(method: str, args: tuple, kwargs: dict) -> list[str]:
        """The ``state`` a write to ``transactions`` sets (to find the commit point in the log)."""
        found = []
        for arg in list(args) + list(kwargs.values()):
            if isinstance(arg, dict):
                for part in (arg, arg.get("$set") or {}):
                    if isinstance(part, dict) and isinstance(part.get("state"), str):
                        found.append(part["state"])
        return found

    def _wrap(method: str):  # noqa: ANN202
        original = getattr(pymongo.collection.Collection, method)

        def write(self, *args, **kwargs):  # noqa: ANN001, ANN202
            name = self.name
            with _lock:
                if name == "transactions" and method == "insert_one":
                    _config["armed"] = True
                counted = _config["armed"] and name in _config["collections"]
                if counted:
                    _config["k"] += 1
                    k = _config["k"]
            if not counted:
                return original(self, *args, **kwargs)
            ops = args[0] if method in ("insert_many", "bulk_write") else [None]
            ops = list(ops)
            if _config["log"]:
                with open(_config["log"], "a") as out:
                    out.write(json.dumps({"k": k, "collection": name, "method": method, "ops": len(ops),
                                          "states": _states(method, args[1:] if method != "insert_one" else args,
                                                            kwargs)}) + "\n")
            if _config["delay"]:
                time.sleep(_config["delay"])
            if k != _config["at"]:
                return original(self, *args, **kwargs)
            if _config["when"] == "before":
                _fault()
                return original(self, *args, **kwargs)
            if _config["when"] == "mid":
                if len(ops) < 2:
                    raise RuntimeError(f"FAULT_WHEN=mid at call {k}: {method} has a single operation")
                original(self, ops[: len(ops) // 2], *args[1:], **kwargs)
                _fault()
                return original(self, ops[len(ops) // 2:], *args[1:], **kwargs)
            result = original(self, *args, **kwargs)
            _fault()
            return result

        write.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(pymongo.collection.Collection, method, write)

    for _method in ("insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
                    "delete_many", "bulk_write", "find_one_and_update", "find_one_and_replace",
                    "find_one_and_delete"):
        _wrap(_method)
