"""The example DMP, built deterministically as transaction bundles ready to post (``fhir-server load``).

``build(today)`` tells the story of ``examples/cast.py`` as of ``today``: the facilities and professionals
(one transaction), then per patient their record (one transaction: Patient, Coverage, antecedents,
allergies, treatments, results, reimbursements, access settings), their documents (ITI-65 Provide
Document Bundles, one per submitting facility) and what refers to the documents (a last transaction).
Every date is relative to ``today``, so that the story stays current: the document not yet visible
to its patient is three days old, inside INVISIBLE_PATIENT's month. The same ``today`` gives the same
bytes. ``generate(count, seed)`` makes any number of patients of the same shape, for benchmarks, from
bench/dmp_data.py's generator.
"""
from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import cast
from .pdf import pdf
from .resources import (ATC, CONFIDENTIALITY, DOC_TYPES_FR, FINESS, ICD10, ID_NAT_PS, INS, LOINC, PROFESSIONS, RPPS,
                        SNOMED, SPECIALTIES, UCUM, VISIBILITY, Document, Transaction, business_id, by_identifier,
                        coding, provide_bundle)

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> Any:
    """bench/dmp_data.py (the benchmarks' generator and its French code tables): bench/ is a directory
    of scripts importing each other by bare name, not a package, hence the path."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))
    import dmp_data
    return dmp_data


# -- catalogues: code -> display (and what the documents say) --------------------------------------

CONDITIONS = {**dict(_bench().CONDITIONS),
              "E10.9": "Diabète sucré de type 1, sans complication", "G30.9": "Maladie d'Alzheimer, sans précision",
              "G43.9": "Migraine, sans précision", "I25.2": "Infarctus du myocarde, ancien",
              "I50.9": "Insuffisance cardiaque, sans précision", "J44.9": "Bronchopneumopathie chronique obstructive",
              "Z85.3": "Antécédent personnel de tumeur maligne du sein"}
# procedure key -> (SNOMED code, display, years ago, ICD-10 of the condition it treated or None)
PROCEDURES = {
    "appendicectomie": ("80146002", "Appendicectomie", 5, ("K35.8", "Appendicite aiguë")),
    "prothese-hanche": ("52734007", "Prothèse totale de hanche", 6, ("M16.9", "Coxarthrose")),
    "angioplastie": ("41339005", "Angioplastie coronaire avec pose de stent", 3, ("I21.9", "Infarctus aigu du myocarde")),
    "cesarienne": ("11466000", "Césarienne", 2, None),
    "tumorectomie": ("392021009", "Tumorectomie mammaire", 8, ("C50.9", "Tumeur maligne du sein")),
    "coloscopie": ("73761001", "Coloscopie de dépistage", 1, None),
}
MEDICATIONS = {code: (name, dosage, per_day) for code, name, dosage, per_day in _bench().MEDICATIONS} | {
    "A10AE04": ("insuline glargine", "18 unités le soir", 1), "A10AB05": ("insuline asparte", "selon glycémie aux repas", 3),
    "C07AB07": ("bisoprolol", "1 comprimé le matin", 1), "B01AC06": ("acide acétylsalicylique 75 mg", "1 sachet le midi", 1),
    "N06DA02": ("donépézil", "1 comprimé au coucher", 1), "R03BA02": ("budésonide inhalé", "2 bouffées matin et soir", 2),
    "C03CA01": ("furosémide", "1 comprimé le matin", 1)}
ALLERGENS = {code: (display, category) for code, display, category in _bench().ALLERGENS}
LABS = {row[0]: row for row in _bench().LAB}
IMAGING = {  # key -> (title, findings lines)
    "echo-cardiaque": ("Échocardiographie transthoracique", ["Ventricule gauche non dilaté, FEVG 60 %.",
                                                              "Hypertrophie ventriculaire gauche modérée."]),
    "mammographie": ("Mammographie et échographie mammaires bilatérales", [
        "Sein gauche : opacité spiculée de 14 mm du quadrant supéro-externe, classée ACR 5.",
        "Biopsie échoguidée programmée. Résultat à remettre lors de la consultation d'annonce."]),
    "echo-renale": ("Échographie rénale et vésicale", ["Reins de taille réduite, dédifférenciation modérée.",
                                                       "Pas de dilatation des cavités."]),
    "irm-lombaire": ("IRM du rachis lombaire", ["Protrusion discale L4-L5 sans conflit radiculaire."]),
    "mammographie-suivi": ("Mammographie de surveillance", ["Pas d'anomalie suspecte. ACR 2. Contrôle dans un an."]),
    "scanner-thoracique": ("Scanner thoracique sans injection", ["Emphysème centrolobulaire des sommets.",
                                                                 "Pas de nodule suspect."]),
}
LOINC_DOCS = {"vsm": ("60591-5", "Synthèse du dossier médical"), "hospital": ("34112-3", "CR hospitalier (séjour)"),
              "discharge": ("11490-0", "Lettre de liaison à la sortie d'un établissement de soins"),
              "consultation": ("11488-4", "CR ou fiche de consultation ou de visite"),
              "lab": ("11502-2", "CR d'examens biologiques"), "imaging": ("18748-4", "CR d'imagerie médicale")}
REPORT, SUMMARY, PATIENT_DOC = ("10", "Compte rendu"), ("11", "Synthèse"), ("90", "Autres documents déposés par le patient")


# -- dates ----------------------------------------------------------------------------------------

def paris(day: date, hour: int = 10, minute: int = 0) -> str:
    """A local time in France (CET, CEST from April to October: close enough), as a FHIR dateTime."""
    offset = timezone(timedelta(hours=2 if 4 <= day.month <= 10 else 1))
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=offset).isoformat(timespec="seconds")


def french(day: date) -> str:
    return day.strftime("%d/%m/%Y")


# -- the directory: facilities and professionals ----------------------------------------------------

def facility_id(key: str) -> dict[str, str]:
    found = next(f for f in cast.FACILITIES if f.key == key)
    return {"system": FINESS, "value": found.finess}


def professional(key: str) -> cast.Professional:
    return next(p for p in cast.PROFESSIONALS if p.key == key)


def professional_id(key: str) -> dict[str, str]:
    return {"system": ID_NAT_PS, "value": "8" + professional(key).rpps}


def practitioner_ref(key: str) -> dict[str, str]:
    return {**by_identifier("Practitioner", professional_id(key)), "display": professional(key).display}


def organization_ref(key: str) -> dict[str, str]:
    if key == cast.INSURER[0]:
        return {**by_identifier("Organization", business_id("organization/cpam")), "display": cast.INSURER[1]}
    return {**by_identifier("Organization", facility_id(key)),
            "display": next(f.name for f in cast.FACILITIES if f.key == key)}


def directory() -> dict[str, Any]:
    """One transaction: the facilities, the insurer, the professionals and their roles."""
    tx = Transaction()
    for f in cast.FACILITIES:
        tx.add({"resourceType": "Organization", "identifier": [facility_id(f.key)], "active": True,
                "type": [coding("http://terminology.hl7.org/CodeSystem/organization-type", *f.kind)],
                "name": f.name, "address": [{"city": f.city, "postalCode": f.postal, "country": "FRA"}]})
    tx.add({"resourceType": "Organization", "identifier": [business_id("organization/cpam")], "active": True,
            "type": [coding("http://terminology.hl7.org/CodeSystem/organization-type", "pay", "Payer")],
            "name": cast.INSURER[1]})
    for p in cast.PROFESSIONALS:
        practitioner = tx.add({
            "resourceType": "Practitioner",
            "identifier": [professional_id(p.key), {"system": RPPS, "value": p.rpps}],
            "active": True, "gender": p.gender,
            "name": [{"use": "official", "family": p.family, "given": [p.given],
                      **({"prefix": ["Dr"]} if p.profession[0] == "10" else {})}],
            "telecom": [{"system": "email", "value": f"{p.rpps}@exemple.mssante.fr", "use": "work"}]})
        specialty = coding(SPECIALTIES, p.specialty[0], p.specialty[1]) if p.specialty[0] else {"text": p.specialty[1]}
        tx.add({"resourceType": "PractitionerRole", "identifier": [business_id(f"role/{p.key}")], "active": True,
                "practitioner": {"reference": practitioner}, "organization": organization_ref(p.facility),
                "code": [coding(PROFESSIONS, *p.profession)], "specialty": [specialty]})
    return tx.bundle()


# -- one patient's record ---------------------------------------------------------------------------

def nir(p: cast.Patient, birth: date, rng: random.Random) -> str:
    """A well-formed NIR (sex, year, month, department, commune, order, key) for the INS."""
    body = f"{1 if p.gender == 'male' else 2}{birth.year % 100:02d}{birth.month:02d}{p.city[0][:2]}{p.city[2]}" \
           f"{rng.randrange(1, 1000):03d}"
    return f"{body}{97 - int(body) % 97:02d}"


class Record:
    """The bundles of one patient's DMP as of ``today``."""

    def __init__(self, p: cast.Patient, today: date) -> None:
        self.p, self.today = p, today
        self.rng = random.Random(f"example-dmp-{p.key}")
        birth_year = today.year - p.age - (1 if today.timetuple().tm_yday < 200 else 0)
        self.birth = date(birth_year, 1, 1) + timedelta(days=self.rng.randrange(0, 365))
        self.ins = {"system": INS, "value": nir(p, self.birth, self.rng)}
        self.subject = {**by_identifier("Patient", self.ins), "display": f"{p.given} {p.family}"}
        self.record = Transaction()
        self.after = Transaction()  # what refers to the documents
        self.documents: dict[str, list[Document]] = {}  # submitting facility -> its documents
        self.local: str = ""  # the Patient's fullUrl in the record transaction

    def day(self, days_ago: int) -> date:
        return self.today - timedelta(days=days_ago)

    def key(self, *parts: str) -> str:
        return "/".join((self.p.key, *parts))

    def bundles(self) -> list[dict[str, Any]]:
        self._patient()
        self._antecedents()
        self._allergies()
        self._treatments()
        self._results()
        self._reimbursements()
        self._visits()
        self._settings()
        found = [self.record.bundle()]
        for facility, docs in self.documents.items():
            found.append(provide_bundle(self.key("submission", facility), self.subject, docs,
                                        paris(self.today - timedelta(days=min(_age(d, self.today) for d in docs)),
                                              18)))
        if self.after.entries:
            found.append(self.after.bundle())
        return found

    # -- the resources --

    def _patient(self) -> None:
        p = self.p
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"use": "official", "type": coding("https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                                                               "INS-NIR", "NIR définitif"), **self.ins}],
            "active": "closed" not in p.settings,
            "name": [{"use": "official", "family": p.family, "given": [p.given]}],
            "gender": p.gender, "birthDate": self.birth.isoformat(),
            "address": [{"use": "home", "city": p.city[1], "postalCode": p.city[0], "country": "FRA"}],
            "generalPractitioner": [practitioner_ref(p.gp)],
            "communication": [{"language": coding("urn:ietf:bcp:47", "fr-FR", "Français (France)"), "preferred": True}],
        }
        self.local = self.record.add(resource)
        self.record.add({"resourceType": "Coverage", "identifier": [business_id(self.key("coverage"))],
                         "status": "active", "type": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                            "PUBLICPOL", "Assurance maladie obligatoire"),
                         "subscriberId": self.ins["value"], "beneficiary": {"reference": self.local},
                         "payor": [organization_ref("cpam")]})
        if "minor" in p.settings:
            # registered as his legal representative as $register-representative writes it (RoleCode GUARD,
            # active, a period): from his birth to his majority; her token opens his record only so
            majority = date(self.birth.year + 18, self.birth.month, 1) + timedelta(days=self.birth.day - 1)
            self.record.add({"resourceType": "RelatedPerson", "identifier": [business_id(self.key("mother"))],
                             "active": True, "patient": {"reference": self.local},
                             "relationship": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "MTH", "Mère"),
                                              {**coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", "GUARD",
                                                        "guardian"),
                                               "text": "Représentante légale (autorité parentale)"}],
                             "period": {"start": self.birth.isoformat(), "end": majority.isoformat()},
                             "name": [{"family": p.family, "given": ["Camille"]}], "gender": "female",
                             "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"}]})

    def _condition(self, code: str, display: str, onset: date, active: bool, recorder: str) -> None:
        clinical = "active" if active else "resolved"
        self.record.add({
            "resourceType": "Condition", "identifier": [business_id(self.key("condition", code))],
            "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical),
            "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
            "category": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")],
            "code": coding(ICD10, code, display), "subject": {"reference": self.local},
            "onsetDateTime": onset.isoformat(), "recordedDate": paris(onset + timedelta(days=7)),
            "recorder": practitioner_ref(recorder)})

    def _antecedents(self) -> None:
        for n, code in enumerate(self.p.conditions):
            onset = self.day(365 * min(self.p.age - 1, 2 + 3 * n) + self.rng.randrange(0, 300))
            self._condition(code, CONDITIONS[code], onset, True, self.p.gp)
        for name in self.p.history:
            snomed, display, years, treated = PROCEDURES[name]
            when = self.day(365 * years + self.rng.randrange(0, 200))
            if treated:
                self._condition(treated[0], treated[1], when - timedelta(days=2), False, "haddad")
            self.record.add({
                "resourceType": "Procedure", "identifier": [business_id(self.key("procedure", name))],
                "status": "completed", "code": coding(SNOMED, snomed, display), "subject": {"reference": self.local},
                "performedDateTime": paris(when, 9), "performer": [{"actor": organization_ref("chu")}]})

    def _allergies(self) -> None:
        for code in self.p.allergies:
            display, category = ALLERGENS[code]
            self.record.add({
                "resourceType": "AllergyIntolerance", "identifier": [business_id(self.key("allergy", code))],
                "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
                "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                             "confirmed"),
                "type": "allergy", "category": [category], "criticality": "high" if category == "food" else "low",
                "code": coding(SNOMED, code, display), "patient": {"reference": self.local},
                "recordedDate": paris(self.day(900 + self.rng.randrange(0, 900))), "recorder": practitioner_ref(self.p.gp),
                "reaction": [{"manifestation": [coding(SNOMED, "271807003", "Éruption cutanée")], "severity": "moderate"}]})

    def _treatments(self) -> None:
        for code in self.p.medications:
            name, dosage, per_day = MEDICATIONS[code]
            self.record.add({
                "resourceType": "MedicationStatement", "identifier": [business_id(self.key("medication", code))],
                "status": "active", "medicationCodeableConcept": coding(ATC, code, name),
                "subject": {"reference": self.local}, "effectivePeriod": {"start": self.day(400 + self.rng.randrange(0, 700)).isoformat()},
                "dateAsserted": paris(self.day(40)), "informationSource": practitioner_ref(self.p.gp),
                "dosage": [{"text": dosage, "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}}}]})

    def _results(self) -> None:
        """A lab panel: Observations, their DiagnosticReport, and the lab's report as a document."""
        if not self.p.labs:
            return
        taken = self.day(20 + self.rng.randrange(0, 40))
        lines, results = [], []
        for code in self.p.labs:
            row = LABS[code]
            _, display, unit, ucum, low, high, decimals, _ = row
            value = round(self.rng.uniform(low - (high - low) * 0.3, high + (high - low) * 0.3), decimals)
            value = int(value) if decimals == 0 else value
            flag = "L" if value < low else "H" if value > high else "N"
            results.append({"reference": self.record.add({
                "resourceType": "Observation", "identifier": [business_id(self.key("observation", code))],
                "status": "final",
                "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
                "code": coding(LOINC, code, display), "subject": {"reference": self.local},
                "effectiveDateTime": paris(taken, 8), "issued": paris(taken, 17),
                "performer": [practitioner_ref("fontaine")],
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
                "interpretation": [coding("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", flag)],
                "referenceRange": [{"low": {"value": low, "unit": unit, "system": UCUM, "code": ucum},
                                    "high": {"value": high, "unit": unit, "system": UCUM, "code": ucum}}]})})
            lines.append(f"{display} : {value} {unit}   (valeurs usuelles {low} - {high}){'  *' if flag != 'N' else ''}")
        self.record.add({
            "resourceType": "DiagnosticReport", "identifier": [business_id(self.key("lab-report"))],
            "status": "final", "category": [coding("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratoire")],
            "code": coding(LOINC, "11502-2", "Compte rendu d'examens biologiques"), "subject": {"reference": self.local},
            "effectiveDateTime": paris(taken, 8), "issued": paris(taken, 17),
            "performer": [organization_ref("labo")], "resultsInterpreter": [practitioner_ref("fontaine")],
            "result": results, "conclusion": "Résultats validés par le biologiste."})
        self._document("labo", "lab", REPORT, f"Examens biologiques du {french(taken)}", "fontaine", taken,
                       [f"Prélèvement du {french(taken)} à 08h00, prescrit par {professional(self.p.gp).display}.", "",
                        *lines, "", "* valeur hors des valeurs usuelles", "Compte rendu validé par Dr Isabelle FONTAINE."])

    def _reimbursements(self) -> None:
        """What the health insurance paid: a few visits, a lab panel, the pharmacy."""
        claims = [("gp1", self.p.gp, "Consultation de médecine générale (G)", 30.00, 19.00, 60),
                  ("gp2", self.p.gp, "Consultation de médecine générale (G)", 30.00, 19.00, 150)]
        if self.p.specialist:
            claims.append(("spe", self.p.specialist, "Consultation de spécialiste (CS)", 50.00, 33.00, 90))
        if self.p.labs:
            claims.append(("lab", "fontaine", "Actes de biologie médicale (B)", 27.00, 16.20, 30))
        if self.p.medications:
            price = 12.40 * len(self.p.medications)
            claims.append(("pharma", "girard", "Délivrance de médicaments remboursables", price, round(price * .65, 2), 25))
        for key, who, what, paid, refund, days in claims:
            when = self.day(days + self.rng.randrange(0, 10))
            self.record.add({
                "resourceType": "ExplanationOfBenefit", "identifier": [business_id(self.key("eob", key))],
                "status": "active", "type": coding("http://terminology.hl7.org/CodeSystem/claim-type",
                                                   "pharmacy" if key == "pharma" else "professional"),
                "use": "claim", "patient": {"reference": self.local}, "created": paris(when + timedelta(days=3)),
                "insurer": organization_ref("cpam"), "provider": practitioner_ref(who), "outcome": "complete",
                "insurance": [{"focal": True, "coverage": {"reference": self.record.entries[1]["fullUrl"]}}],
                "item": [{"sequence": 1, "productOrService": {"text": what}, "servicedDate": when.isoformat(),
                          "net": {"value": paid, "currency": "EUR"},
                          "adjudication": [{"category": coding("http://terminology.hl7.org/CodeSystem/adjudication",
                                                               "submitted"), "amount": {"value": paid, "currency": "EUR"}},
                                           {"category": coding("http://terminology.hl7.org/CodeSystem/adjudication",
                                                               "benefit"), "amount": {"value": refund, "currency": "EUR"}}]}],
                "total": [{"category": coding("http://terminology.hl7.org/CodeSystem/adjudication", "submitted"),
                           "amount": {"value": paid, "currency": "EUR"}},
                          {"category": coding("http://terminology.hl7.org/CodeSystem/adjudication", "benefit"),
                           "amount": {"value": refund, "currency": "EUR"}}],
                "payment": {"date": (when + timedelta(days=5)).isoformat(), "amount": {"value": refund, "currency": "EUR"}}})

    # -- documents --

    def _document(self, facility: str, kind: str, category: tuple[str, str], title: str, author: str, when: date,
                  lines: list[str], labels: tuple[tuple[str, str], ...] = ((CONFIDENTIALITY, "N"),),
                  doc_type: tuple[str, str, str] | None = None, author_ref: dict[str, str] | None = None) -> None:
        p = self.p
        header = [f"Patient : {p.given} {p.family}, né{'e' if p.gender == 'female' else ''} le {french(self.birth)}",
                  f"INS (NIR) : {self.ins['value']}", ""]
        place = next(f for f in cast.FACILITIES if f.key == facility)
        footer = ["", f"{place.name}, {place.city}, le {french(when)}"]
        data = pdf(title, header + lines + footer)
        doc_type = doc_type or (LOINC, *LOINC_DOCS[kind])
        self.documents.setdefault(facility, []).append(Document(
            key=self.key("document", facility, kind, str(len(self.documents.get(facility, [])))),
            type=doc_type, category=category, title=title, data=data, content_type="application/pdf",
            when=paris(when, 11), author=author_ref or practitioner_ref(author), custodian=organization_ref(facility),
            sector=place.sector, labels=labels))

    def _visits(self) -> None:
        p, gp = self.p, professional(self.p.gp)
        problems = [f"- {CONDITIONS[c]} ({c})" for c in p.conditions] or ["- aucune"]
        past = [f"- {PROCEDURES[h][1]} ({self.today.year - PROCEDURES[h][2]})" for h in p.history] or ["- aucun"]
        allergies = [f"- {ALLERGENS[a][0]}" for a in p.allergies] or ["- aucune allergie connue"]
        treatments = [f"- {MEDICATIONS[m][0]} : {MEDICATIONS[m][1]}" for m in p.medications] or ["- aucun"]
        self._document("msp", "vsm", SUMMARY, "Volet de synthèse médicale", p.gp, self.day(45),
                       [f"Médecin traitant : {gp.display}", "", "Pathologies en cours :", *problems, "",
                        "Antécédents chirurgicaux :", *past, "", "Allergies :", *allergies, "",
                        "Traitements au long cours :", *treatments])
        if p.specialist:
            s = professional(p.specialist)
            self._document(s.facility, "consultation", REPORT, f"Compte rendu de consultation ({s.specialty[1].lower()})", s.key,
                           self.day(90), [f"Adressé{'e' if p.gender == 'female' else ''} par {gp.display} pour avis.",
                                          f"Motif : suivi de {CONDITIONS[p.conditions[0]].lower()}." if p.conditions else "Motif : bilan.",
                                          "Examen clinique sans particularité. Traitement poursuivi.",
                                          f"Prochain rendez-vous dans six mois. {s.display}"])
            self.record.add(_consent(self.key("consent", "permit", s.key), self.local, self.day(90), "permit",
                                     actor=practitioner_ref(s.key)))
        if p.stay:
            admitted, left = self.day(200), self.day(195)
            for kind, title, lines in (
                    ("hospital", "Compte rendu d'hospitalisation", [f"Hospitalisation du {french(admitted)} au {french(left)}",
                                                                    f"Motif : {p.stay}.", "Évolution favorable.",
                                                                    "Sortie à domicile."]),
                    ("discharge", "Lettre de liaison à la sortie", [f"Cher confrère, {gp.display},",
                                                                    f"votre patient{'e' if p.gender == 'female' else ''} est sorti{'e' if p.gender == 'female' else ''} le {french(left)}",
                                                                    f"après une hospitalisation pour {p.stay}.",
                                                                    "Traitement de sortie inchangé. Confraternellement, Dr Karim HADDAD"])):
                self._document("chu", kind, REPORT, title, "haddad", left, lines)
        if p.imaging:
            title, findings = IMAGING[p.imaging]
            hidden = "hidden-result" in p.settings
            when = self.day(3 if hidden else 120)
            labels = ((CONFIDENTIALITY, "N"), (VISIBILITY, "INVISIBLE_PATIENT")) if hidden else ((CONFIDENTIALITY, "N"),)
            self._document("imagerie", "imaging", REPORT, title, "dubois", when,
                           [f"Indication : demandé par {gp.display}.", *findings, "Dr Marc DUBOIS, radiologue"], labels)
        if "masked-psy" in p.settings:
            self._document("chu", "consultation", REPORT, "Consultation de psychiatrie", "perrin", self.day(70),
                           ["Épisode dépressif d'intensité moyenne, amélioration sous traitement.",
                            "Poursuite de la sertraline, psychothérapie hebdomadaire.",
                            "Document masqué aux autres professionnels à la demande de la patiente."],
                           ((CONFIDENTIALITY, "N"), (VISIBILITY, "MASQUE_PS")))
        self._wishes()

    def _wishes(self) -> None:
        """Organ donation and advance directives: the patient's own document (TRE_A05 type), and a Consent
        (scope adr) pointing at it so that the fact is searchable (examples/README.md says why)."""
        wishes = [("donation", "EXPPAT_1", "Volontés et droits du patient", "Déclaration de don d'organes et de tissus",
                   ["Je soussigné(e) souhaite, après ma mort, donner mes organes et tissus",
                    "à des fins de greffe. Mes proches en sont informés."], "Position sur le don d'organes et de tissus",
                   "Code de la santé publique, article L1232-1"),
                  ("directives", "EXPPAT_3", "Directives anticipées", "Mes directives anticipées",
                   ["Si je ne peux plus exprimer ma volonté, je refuse tout acharnement thérapeutique :",
                    "pas de réanimation cardio-pulmonaire, pas de ventilation invasive.",
                    "Je souhaite être soulagé(e) de toute douleur. Personne de confiance : ma fille."],
                   "Directives anticipées", "Code de la santé publique, article L1111-11")]
        for setting, code, type_display, title, lines, category, law in wishes:
            if setting not in self.p.settings:
                continue
            when = self.day(150)
            self._document("msp", setting, PATIENT_DOC, title, self.p.gp, when,
                           [*lines, "", f"Rédigé avec l'aide de {professional(self.p.gp).display}, médecin traitant."],
                           doc_type=(DOC_TYPES_FR, code, type_display),
                           author_ref={**self.subject})
            document = self.documents["msp"][-1]
            self.after.add({
                "resourceType": "Consent", "identifier": [business_id(self.key("consent", setting))],
                "status": "active", "scope": coding("http://terminology.hl7.org/CodeSystem/consentscope", "adr",
                                                    "Advanced Care Directive"),
                "category": [{"text": category}], "patient": self.subject, "dateTime": paris(when, 11),
                "performer": [self.subject], "policyRule": {"text": law},
                "sourceReference": by_identifier("DocumentReference", business_id(document.key)),
                "provision": {"type": "permit" if setting == "donation" else "deny"}})

    def _settings(self) -> None:
        """The access settings, as the server's controls (fhir_server/controls.py) write them."""
        p = self.p
        if "authorises-garnier" in p.settings and p.specialist != "garnier":
            self.record.add(_consent(self.key("consent", "permit", "garnier"), self.local, self.day(100), "permit",
                                     actor=practitioner_ref("garnier")))
        if "blocks-lambert" in p.settings:
            self.record.add(_consent(self.key("consent", "deny", "lambert"), self.local, self.day(20), "deny",
                                     actor=practitioner_ref("lambert")))
        if "refuses-btg" in p.settings:
            self.record.add(_consent(self.key("consent", "deny", "BTG"), self.local, self.day(300), "deny",
                                     purposes=("BTG",)))


def _age(document: Document, today: date) -> int:
    return (today - date.fromisoformat(document.when[:10])).days


def _consent(key: str, patient: str, when: date, kind: str, actor: dict[str, str] | None = None,
             purposes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A patient-privacy Consent of the shape ``POST Patient/{id}/$authorize|$block|$emergency`` writes."""
    provision: dict[str, Any] = {"type": kind}
    if actor:
        provision["actor"] = [{"role": coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"),
                               "reference": actor}]
    if purposes:
        provision["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": c}
                                for c in purposes]
    return {"resourceType": "Consent", "identifier": [business_id(key)], "status": "active",
            "scope": coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
            "category": [coding(LOINC, "59284-0")], "patient": {"reference": patient}, "dateTime": paris(when),
            "performer": [{"reference": patient}],
            "policyRule": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN"), "provision": provision}


# -- the data sets ------------------------------------------------------------------------------------

def build(today: date | None = None) -> list[dict[str, Any]]:
    """The example DMP as transaction bundles, in load order."""
    today = today or date.today()
    return [directory(), *(b for p in cast.PATIENTS for b in Record(p, today).bundles())]


def patient_ins(key: str, today: date | None = None) -> dict[str, str]:
    """The INS of an example patient (the demo finds them by it)."""
    return Record(next(p for p in cast.PATIENTS if p.key == key), today or date.today()).ins


def generate(count: int, seed: int = 1, today: date | None = None) -> Iterator[dict[str, Any]]:
    """``count`` more patients of the same shape, deterministic in ``seed``: bench/dmp_data.py's generator
    picks each one's problems, treatments, allergies and labs; this module writes their records,
    documents and settings. The directory bundle comes first."""
    today = today or date.today()
    yield directory()
    for n in range(count):
        yield from Record(_generated(seed, n), today).bundles()


def _generated(seed: int, n: int) -> cast.Patient:
    bench = _bench()
    import harness  # bench/harness.py: its French names and cities, on the path _bench() set
    rng = random.Random(f"{seed}-example-{n}")
    person = harness.french_patient(rng)
    record, _ = bench.patient_record(seed, n, ["x"])
    codes = {r["resourceType"]: [] for r in record}
    for r in record:
        concept = r.get("code") or r.get("medicationCodeableConcept")
        if concept:
            codes[r["resourceType"]].append(concept["coding"][0]["code"])
    doctors = [p.key for p in cast.PROFESSIONALS if p.specialty[0] == "SM26"]
    specialists = [p.key for p in cast.PROFESSIONALS if p.facility in ("chu", "clinique") and p.key not in ("benali", "haddad")]
    settings = {s for s, chance in (("refuses-btg", 0.1), ("masked-psy", 0.1), ("blocks-lambert", 0.05),
                                    ("donation", 0.2), ("directives", 0.1), ("closed", 0.02)) if rng.random() < chance}
    return cast.Patient(
        key=f"gen-{seed}-{n}", family=person["name"][0]["family"].upper(), given=person["name"][0]["given"][0],
        gender=person["gender"], age=18 + rng.randrange(0, 75), gp=rng.choice(doctors), story="generated",
        conditions=tuple(dict.fromkeys(codes.get("Condition", []))), allergies=tuple(dict.fromkeys(codes.get("AllergyIntolerance", []))),
        medications=tuple(dict.fromkeys(codes.get("MedicationStatement", []))),
        labs=tuple(dict.fromkeys(codes.get("Observation", []))),
        specialist=rng.choice(specialists) if rng.random() < 0.5 else None,
        stay=rng.choice(("pneumopathie", "chute à domicile", "malaise")) if rng.random() < 0.3 else None,
        imaging=rng.choice(sorted(k for k in IMAGING if k != "mammographie")) if rng.random() < 0.3 else None,
        settings=frozenset(settings), city=next(c for c in harness.CITIES if c[0] == person["address"][0]["postalCode"]))
