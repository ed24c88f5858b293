"""The DMP rules on writes (DMP.md rules 3, 5, 9, 10 and 11). Feeding a record needs no authorisation
(rule 3: even a blocked professional may add documents); what these rules refuse, they refuse with
the right status. A representative writes to a record only while registered as its patient's legal
representative, and that registration (a RelatedPerson's) is changed only by whoever may change the
patient's Consents. Pure: no IO."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..context import Identity
from ..errors import Conflict, Forbidden, Unprocessable
from .engine import HIDDEN_FROM_PATIENT, MASKED, PatientFacts, Settings, labels, representative, represents
from .model import is_privacy_consent, provision


def check_write(who: Identity, action: str, rtype: str, new: dict[str, Any] | None, old: dict[str, Any] | None,
                facts: dict[str, PatientFacts], settings: Settings, allow_hidden_and_masked: bool = False,
                now: datetime | None = None) -> None:
    """Raise when the DMP rules refuse this create, update or delete (``action``)."""
    if who.kind == "development" or (who.kind == "system" and who.operator):
        return
    if who.kind == "representative":
        for patient, record in facts.items():
            if not represents(who, record, now or datetime.now(UTC)):
                raise Forbidden(f"{who.fhir_user} is not a registered legal representative of Patient/{patient}")
    own = who.kind in ("patient", "representative")  # a representative past the check above is registered
    for patient, record in facts.items():
        reopening = rtype == "Patient" and own and who.patient == patient
        if not record.open and not reopening:
            raise Conflict(f"the DMP of Patient/{patient} is closed: it takes no new data (rule 9)")
    if rtype == "DocumentReference" and new is not None and {HIDDEN_FROM_PATIENT, MASKED} <= labels(new) \
            and not allow_hidden_and_masked:
        raise Unprocessable("a document cannot be both INVISIBLE_PATIENT and MASQUE_PS (rule 5)")
    if rtype == "Consent" and any(is_privacy_consent(r) for r in (new, old) if r):
        _check_consent(who, action, new, old)
    if rtype == "RelatedPerson" and representative(new) != representative(old):
        _check_registration(who, new, old)
    if rtype == "DocumentReference" and action == "delete" and old is not None:
        authors = {a.get("reference") for a in old.get("author") or () if isinstance(a, dict)}
        if who.fhir_user not in authors:
            raise Forbidden("only a document's author may delete it (rule 11)")


def _check_consent(who: Identity, action: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
    """Rule 10: the patient or their representative decides; a professional who informed the patient
    may record a plain authorisation, never a block or an emergency setting."""
    patients = {((r.get("patient") or {}).get("reference") or "") for r in (new, old) if r}
    if who.kind in ("patient", "representative"):
        if patients != {f"Patient/{who.patient}"}:
            raise Forbidden("a patient's Consents are changed by that patient or their representative (rule 10)")
        return
    if who.kind == "practitioner" and action == "create" and new is not None and isinstance(new.get("provision"), dict):
        root = provision(new["provision"])
        if root.type == "permit" and not (root.purposes or root.labels or root.about_data or root.exceptions):
            return
    raise Forbidden("only the patient or their representative may change this Consent; a professional may "
                    "record a plain authorisation (rule 10)")


def _check_registration(who: Identity, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
    """Rule 10 for the registration of a legal representative (engine.LEGAL_REPRESENTATIVE): it opens the
    whole record, so the patient or a registered representative changes it, never a professional
    (operators: ``Patient/{id}/$register-representative``)."""
    patients = {((r.get("patient") or {}).get("reference") or "") for r in (new, old) if r}
    if who.kind in ("patient", "representative") and patients == {f"Patient/{who.patient}"}:
        return
    raise Forbidden("a legal representative is registered or revoked by the patient, a registered representative "
                    "or an operator (Patient/{id}/$register-representative, rule 10)")
