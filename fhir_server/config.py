"""Configuration: defaults, then ``FHIR_*`` environment variables, then explicit overrides.

Every setting is documented in the README's configuration table.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields, replace
from typing import Any


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    # Empty: start a local FerretDB under data_dir (see storage/ferretdb.py).
    mongodb_uri: str = ""
    mongodb_database: str = "fhir"
    data_dir: str = "./var"
    # Public base URL of the FHIR endpoint; derived from the request when empty.
    base_url: str = ""
    workers: int = 2
    threads: int = 4
    max_body_bytes: int = 64 * 1024 * 1024
    # Nesting deeper than any real resource is refused before validation recurses into it.
    max_json_depth: int = 100
    default_count: int = 50
    max_count: int = 1000
    # Bundles (https://hl7.org/fhir/R4/http.html#transaction): entries per batch or transaction, and the
    # seconds a transaction may stay pending before recovery rolls it back (storage/transaction.py).
    max_bundle_entries: int = 1000
    transaction_timeout_seconds: int = 30
    transaction_sweep_seconds: int = 30
    # The largest document (a Binary's bytes, or a DocumentReference's inline attachment) taken.
    max_document_bytes: int = 20 * 1024 * 1024
    # ITI-67: a person's DocumentReference search names the patient (patient, subject, patient.identifier).
    documents_search_needs_patient: bool = True
    # DELETE [type]?criteria matching several resources: delete them all, or refuse with 412.
    conditional_delete_multiple: bool = False
    # Signs paging cursors; random per process when unset (set it when running several workers).
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    # Resources above this size are stored zlib-compressed: documents stay under MongoDB's 16 MB, and
    # large conformance resources cost far less to store and to scan (FerretDB scans).
    compress_above_bytes: int = 8 * 1024
    log_level: str = "INFO"
    # "on": every /fhir request needs a SMART access token. "off": local development only, and the
    # server then refuses to listen on anything but loopback.
    auth: str = "on"
    # DMP access rules (DMP.md "Who may see what"); see consent/engine.py
    consent_treating_physician_sees_masked: bool = False  # rule 4
    consent_block_beats_emergency: bool = True  # rule 2
    consent_hidden_from_patient_days: int = 30  # rule 5
    consent_allow_hidden_and_masked: bool = False  # rule 5
    # Off only to prove, in tests, that the per-resource checks alone leak nothing (slow: every
    # candidate is read and checked, counts included).
    consent_narrowing: bool = True
    # Every access is recorded as an AuditEvent before it is answered; off only for benchmarks.
    audit: bool = True
    # Sign-in delegated to an external OpenID Connect provider (FranceConnect, Pro Santé Connect)
    # when oidc_issuer is set; local users (fhir-server users add) sign in with a password regardless.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_name: str = "Pro Santé Connect"
    oidc_scope: str = "openid"
    oidc_rpps_claim: str = "SubjectNameID"  # the claim holding the professional's RPPS number

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Defaults, then FHIR_<NAME> environment variables, then ``overrides``."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"FHIR_{f.name.upper()}")
            if raw is None:
                continue
            if f.type == "int":
                values[f.name] = int(raw)
            elif f.type == "bool":
                values[f.name] = _env_bool(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)
