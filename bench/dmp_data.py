"""A generated DMP data set for bench/bench_search.py: per patient a French Patient (INS), encounters,
lab observations (LOINC), conditions (ICD-10), an allergy now and then, medication statements (ATC)
and a document reference, all referring to a pool of Practitioners; about 11 resources per patient.

Everything is deterministic in (seed, patient number), so a pool of processes can generate and load
patients independently. Beside each resource the generator keeps a ``Fact``: what it knows should
match the common searches (patient, code, date range, identifier, encounter), computed from the
values it generated, never from the server's index, so that search results can be checked against it.
"""
from __future__ import annotations

import base64
import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, NamedTuple

from harness import FAMILY, GIVEN_F, GIVEN_M, french_patient

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
FIRST_DAY = date(2019, 1, 1)
SPAN_DAYS = 6 * 365  # encounters from 2019 to 2024
MAX_DATE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

# (LOINC code, display, unit, UCUM code, low, high, decimals, weight)
LAB = [
    ("2345-7", "Glucose [Masse/Volume] Sérum/Plasma", "g/L", "g/L", 0.70, 1.10, 2, 6),
    ("4548-4", "Hémoglobine A1c/Hémoglobine totale Sang", "%", "%", 4.0, 6.0, 1, 3),
    ("2160-0", "Créatinine [Masse/Volume] Sérum/Plasma", "mg/L", "mg/L", 6.0, 12.0, 1, 5),
    ("33914-3", "DFG estimé (MDRD)", "mL/min/1,73m2", "mL/min/{1.73_m2}", 60, 120, 0, 3),
    ("2093-3", "Cholestérol total [Masse/Volume] Sérum/Plasma", "g/L", "g/L", 1.50, 2.00, 2, 4),
    ("2085-9", "Cholestérol HDL [Masse/Volume] Sérum/Plasma", "g/L", "g/L", 0.40, 0.60, 2, 3),
    ("13457-7", "Cholestérol LDL calculé [Masse/Volume] Sérum/Plasma", "g/L", "g/L", 0.80, 1.60, 2, 3),
    ("2571-8", "Triglycérides [Masse/Volume] Sérum/Plasma", "g/L", "g/L", 0.50, 1.50, 2, 3),
    ("718-7", "Hémoglobine [Masse/Volume] Sang", "g/dL", "g/dL", 12.0, 16.0, 1, 5),
    ("6690-2", "Leucocytes [Nombre/Volume] Sang", "G/L", "10*9/L", 4.0, 10.0, 1, 4),
    ("777-3", "Plaquettes [Nombre/Volume] Sang", "G/L", "10*9/L", 150, 400, 0, 4),
    ("2951-2", "Sodium [Moles/Volume] Sérum/Plasma", "mmol/L", "mmol/L", 135, 145, 0, 3),
    ("2823-3", "Potassium [Moles/Volume] Sérum/Plasma", "mmol/L", "mmol/L", 3.5, 5.0, 1, 3),
    ("1742-6", "ALAT [Activité enzymatique/Volume] Sérum/Plasma", "UI/L", "U/L", 7, 40, 0, 2),
    ("1920-8", "ASAT [Activité enzymatique/Volume] Sérum/Plasma", "UI/L", "U/L", 10, 40, 0, 2),
    ("3016-3", "TSH [Unités/Volume] Sérum/Plasma", "mUI/L", "m[IU]/L", 0.40, 4.00, 2, 2),
    ("1988-5", "Protéine C réactive [Masse/Volume] Sérum/Plasma", "mg/L", "mg/L", 0.0, 5.0, 1, 3),
    ("8480-6", "Pression artérielle systolique", "mmHg", "mm[Hg]", 100, 140, 0, 4),
    ("29463-7", "Poids corporel", "kg", "kg", 50, 95, 1, 3),
]
LAB_WEIGHTS = [row[7] for row in LAB]
CONDITIONS = [("E11.9", "Diabète sucré de type 2, sans complication"), ("I10", "Hypertension essentielle"),
              ("E78.0", "Hypercholestérolémie essentielle"), ("J45.9", "Asthme, sans précision"),
              ("F32.9", "Épisode dépressif, sans précision"), ("M54.5", "Lombalgie basse"),
              ("K21.9", "Reflux gastro-œsophagien sans œsophagite"), ("E03.9", "Hypothyroïdie, sans précision"),
              ("N18.3", "Maladie rénale chronique, stade 3"), ("I48.9", "Fibrillation auriculaire")]
MEDICATIONS = [("A10BA02", "metformine", "1 comprimé matin et soir", 2), ("C09AA05", "ramipril", "1 comprimé le matin", 1),
               ("C10AA05", "atorvastatine", "1 comprimé le soir", 1),
               ("R03AC02", "salbutamol", "2 bouffées si besoin", 1), ("N06AB06", "sertraline", "1 comprimé le matin", 1),
               ("H03AA01", "lévothyroxine sodique", "1 comprimé à jeun", 1),
               ("B01AF01", "rivaroxaban", "1 comprimé au cours du repas", 1),
               ("A02BC01", "oméprazole", "1 gélule le matin", 1), ("N02BE01", "paracétamol", "1 g jusqu'à 3 fois par jour", 3)]
ALLERGENS = [("373270004", "Pénicilline et dérivés", "medication"), ("387207008", "Ibuprofène", "medication"),
             ("91935009", "Arachide", "food"), ("300916003", "Latex", "environment"),
             ("387458008", "Acide acétylsalicylique", "medication")]
DOCUMENT_TYPES = [("11488-4", "Compte rendu de consultation"), ("18842-5", "Lettre de liaison à la sortie"),
                  ("11502-2", "Compte rendu d'examens biologiques"), ("18748-4", "Compte rendu d'imagerie médicale"),
                  ("57833-6", "Prescription de médicaments")]
ENCOUNTER_TYPES = [("11429006", "Consultation"), ("185389009", "Visite de suivi"), ("50849002", "Consultation d'urgence")]
SPECIALTIES = [("SM26", "Qualifié en médecine générale"), ("SM04", "Cardiologie et maladies vasculaires"),
               ("SM15", "Endocrinologie et métabolisme"), ("SM38", "Néphrologie"), ("SM44", "Pneumologie")]


class Fact(NamedTuple):
    """What the generator knows of one resource: the values the benchmarked searches look at."""

    type: str
    id: str
    patient: str | None  # the Patient id it belongs to
    code: str | None  # "system|code" of its code (Observation, Condition, ...) or type (Encounter, ...)
    lo: datetime | None  # its date parameter as the UTC range [lo, hi)
    hi: datetime | None
    identifier: str | None  # "system|value" of its (first) identifier
    encounter: str | None  # the Encounter id it refers to


# the date parameter and the code-like parameter of each type, as the searches name them
DATE_PARAM = {"Observation": "date", "Condition": "onset-date", "AllergyIntolerance": "date",
              "MedicationStatement": "effective", "Encounter": "date", "DocumentReference": "date",
              "Patient": "birthdate"}
CODE_PARAM = {"Observation": "code", "Condition": "code", "AllergyIntolerance": "code",
              "MedicationStatement": "code", "Encounter": "type", "DocumentReference": "type"}


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def paris(day: date, seconds: int) -> datetime:
    """A local time in France (CET in winter, CEST from April to October: close enough)."""
    offset = timedelta(hours=2 if 4 <= day.month <= 10 else 1)
    return datetime(day.year, day.month, day.day, tzinfo=timezone(offset)) + timedelta(seconds=seconds)


def stamp(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def practitioners(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}-practitioners")
    found = []
    for n in range(count):
        female = rng.random() < 0.5
        specialty = SPECIALTIES[0] if rng.random() < 0.6 else rng.choice(SPECIALTIES[1:])
        family, given = rng.choice(FAMILY), rng.choice(GIVEN_F if female else GIVEN_M)
        rpps = f"1{rng.randrange(10**10):010d}"
        found.append({
            "resourceType": "Practitioner", "id": new_id(rng),
            "identifier": [{"use": "official",
                            "type": {"coding": [{"system": "http://interopsante.org/fhir/CodeSystem/fr-v2-0203",
                                                 "code": "RPPS"}]},
                            "system": RPPS_SYSTEM, "value": rpps}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr"]}],
            "telecom": [{"system": "phone", "value": f"+33 1 {rng.randrange(10**8):08d}", "use": "work"},
                        {"system": "email", "value": f"{rpps}@medecin.mssante.fr", "use": "work"}],
            "gender": "female" if female else "male",
            "qualification": [{"code": {"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale",
                                                    "code": specialty[0], "display": specialty[1]}]}}],
        })
    return found


def _ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


def _quantity(rng: random.Random, row: tuple[Any, ...]) -> tuple[dict[str, Any], str]:
    code, display, unit, ucum, low, high, decimals, _ = row
    spread = (high - low) * 0.35
    value = round(rng.uniform(low - spread, high + spread), decimals)
    value = int(value) if decimals == 0 else value
    flag = "L" if value < low else "H" if value > high else "N"
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}, flag


def _observation(rng: random.Random, row: tuple[Any, ...], pid: str, effective: datetime, doctor: str,
                 eid: str | None) -> tuple[dict[str, Any], Fact]:
    """A lab result (or vital sign) of ``row`` (see LAB) for Patient ``pid``, from Encounter ``eid`` if any."""
    quantity, flag = _quantity(rng, row)
    oid = new_id(rng)
    low, high = row[4], row[5]
    observation = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs" if row[0] in ("8480-6", "29463-7") else "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": row[0], "display": row[1]}], "text": row[1]},
        "subject": _ref("Patient", pid), **({"encounter": _ref("Encounter", eid)} if eid else {}),
        "effectiveDateTime": stamp(effective),
        "issued": (effective + timedelta(hours=rng.randrange(2, 30))).astimezone(UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "performer": [_ref("Practitioner", doctor)],
        "valueQuantity": quantity,
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                        "code": flag}]}],
        "referenceRange": [{"low": {"value": low, "unit": row[2], "system": UCUM, "code": row[3]},
                            "high": {"value": high, "unit": row[2], "system": UCUM, "code": row[3]}}],
    }
    lo = effective.astimezone(UTC)
    return observation, Fact("Observation", oid, pid, f"{LOINC}|{row[0]}", lo, lo + timedelta(seconds=1), None, eid)


def patient_record(seed: int, number: int, doctors: list[str]) -> tuple[list[dict[str, Any]], list[Fact]]:
    """The resources of patient ``number`` and the facts about them."""
    rng = random.Random(f"{seed}-patient-{number}")
    resources: list[dict[str, Any]] = []
    facts: list[Fact] = []
    pid = new_id(rng)
    patient = {"resourceType": "Patient", "id": pid, **{k: v for k, v in french_patient(rng).items()
                                                         if k != "resourceType"}}
    gp = rng.choice(doctors)
    patient["generalPractitioner"] = [_ref("Practitioner", gp)]
    ins = patient["identifier"][0]["value"]
    birth = date.fromisoformat(patient["birthDate"])
    resources.append(patient)
    birth_lo = datetime(birth.year, birth.month, birth.day, tzinfo=UTC)
    facts.append(Fact("Patient", pid, pid, None, birth_lo, birth_lo + timedelta(days=1), f"{INS_SYSTEM}|{ins}", None))
    subject = _ref("Patient", pid)

    encounters = []
    for _ in range(rng.choice((1, 1, 2, 2, 3))):
        day = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS))
        start = paris(day, rng.randrange(8 * 3600, 17 * 3600))
        end = start + timedelta(minutes=rng.choice((15, 20, 30, 45)))
        eid, doctor = new_id(rng), (gp if rng.random() < 0.6 else rng.choice(doctors))
        kind = ENCOUNTER_TYPES[0] if rng.random() < 0.7 else rng.choice(ENCOUNTER_TYPES[1:])
        resources.append({
            "resourceType": "Encounter", "id": eid, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                      "display": "ambulatory"},
            "type": [{"coding": [{"system": SNOMED, "code": kind[0], "display": kind[1]}]}],
            "subject": subject,
            "participant": [{"type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                   "code": "PPRF", "display": "primary performer"}]}],
                             "individual": _ref("Practitioner", doctor)}],
            "period": {"start": stamp(start), "end": stamp(end)},
            "reasonCode": [{"text": rng.choice(("Suivi de maladie chronique", "Bilan annuel", "Renouvellement",
                                                "Douleur", "Fièvre"))}],
        })
        encounters.append((eid, day, start, doctor))
        facts.append(Fact("Encounter", eid, pid, f"{SNOMED}|{kind[0]}", start.astimezone(UTC),
                          end.astimezone(UTC) + timedelta(seconds=1), None, None))

    for _ in range(rng.choice((2, 3, 4, 4, 5, 6))):  # lab results, a few days after an encounter
        eid, day, start, doctor = rng.choice(encounters)
        row = rng.choices(LAB, LAB_WEIGHTS)[0]
        effective = start + timedelta(days=rng.randrange(0, 4), seconds=rng.randrange(0, 3600))
        observation, fact = _observation(rng, row, pid, effective, doctor, eid)
        resources.append(observation)
        facts.append(fact)

    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        code, display = rng.choice(CONDITIONS)
        eid, day, start, doctor = rng.choice(encounters)
        onset = FIRST_DAY - timedelta(days=rng.randrange(0, 3650))
        cid = new_id(rng)
        resources.append({
            "resourceType": "Condition", "id": cid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                               "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": ICD10, "code": code, "display": display}], "text": display},
            "subject": subject, "encounter": _ref("Encounter", eid),
            "onsetDateTime": onset.isoformat(), "recordedDate": stamp(start),
            "recorder": _ref("Practitioner", doctor),
        })
        lo = datetime(onset.year, onset.month, onset.day, tzinfo=UTC)
        facts.append(Fact("Condition", cid, pid, f"{ICD10}|{code}", lo, lo + timedelta(days=1), None, eid))

    if rng.random() < 0.4:
        code, display, category = rng.choice(ALLERGENS)
        eid, day, start, doctor = rng.choice(encounters)
        aid = new_id(rng)
        resources.append({
            "resourceType": "AllergyIntolerance", "id": aid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                                               "code": "confirmed"}]},
            "type": "allergy", "category": [category], "criticality": rng.choice(("low", "high")),
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
            "patient": subject, "encounter": _ref("Encounter", eid), "recordedDate": stamp(start),
            "recorder": _ref("Practitioner", doctor),
            "reaction": [{"manifestation": [{"coding": [{"system": SNOMED, "code": "271807003",
                                                         "display": "Éruption cutanée"}]}],
                          "severity": rng.choice(("mild", "moderate", "severe"))}],
        })
        lo = start.astimezone(UTC)
        facts.append(Fact("AllergyIntolerance", aid, pid, f"{SNOMED}|{code}", lo, lo + timedelta(seconds=1), None, None))

    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        code, name, dosage, per_day = rng.choice(MEDICATIONS)
        eid, day, start, doctor = rng.choice(encounters)
        mid = new_id(rng)
        resources.append({
            "resourceType": "MedicationStatement", "id": mid, "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": ATC, "code": code, "display": name}], "text": name},
            "subject": subject, "context": _ref("Encounter", eid),
            "effectivePeriod": {"start": day.isoformat()}, "dateAsserted": stamp(start),
            "informationSource": _ref("Practitioner", doctor),
            "dosage": [{"text": dosage, "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                        "route": {"coding": [{"system": "http://standardterms.edqm.eu", "code": "20053000",
                                              "display": "Voie orale"}]}}],
        })
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        facts.append(Fact("MedicationStatement", mid, pid, f"{ATC}|{code}", lo, MAX_DATE, None, eid))

    eid, day, start, doctor = rng.choice(encounters)
    code, display = rng.choice(DOCUMENT_TYPES)
    did = new_id(rng)
    created = (start + timedelta(hours=rng.randrange(1, 48))).astimezone(UTC)
    oid_value = f"1.2.250.1.213.1.1.9.{rng.randrange(10**12)}"
    resources.append({
        "resourceType": "DocumentReference", "id": did,
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{oid_value}"},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{did}"}],
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "category": [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10",
                                  "display": "Comptes rendus"}]}],
        "subject": subject,
        "date": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "author": [_ref("Practitioner", doctor)],
        "description": display,
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}],
        "content": [{"attachment": {"contentType": "application/pdf", "language": "fr-FR",
                                    "url": f"https://dmp.example.fr/documents/{did}.pdf",
                                    "size": rng.randrange(20_000, 900_000),
                                    "hash": base64.b64encode(rng.randbytes(20)).decode(), "title": f"{display} du {day.strftime('%d/%m/%Y')}",
                                    "creation": stamp(start)},
                     "format": {"system": "urn:oid:1.3.6.1.4.1.19376.1.2.3", "code": "urn:ihe:iti:xds-sd:pdf:2008",
                                "display": "PDF embarqué dans CDA (XDS-SD)"}}],
        "context": {"encounter": [_ref("Encounter", eid)], "period": {"start": stamp(start)},
                    "practiceSetting": {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.9", "code": "ETABLISSEMENT",
                                                    "display": "Établissement de santé"}]}},
    })
    facts.append(Fact("DocumentReference", did, pid, f"{LOINC}|{code}", created, created + timedelta(milliseconds=1),
                      f"urn:ietf:rfc:3986|urn:oid:{oid_value}", eid))
    return resources, facts


def patient_history(seed: int, number: int, doctors: list[str], size: int) -> tuple[list[dict[str, Any]], list[Fact]]:
    """``patient_record(seed, number, doctors)`` topped up to ``size`` resources with town lab results:
    panels of 4 to 10 tests on one morning, prescribed by the GP most of the time, no Encounter (a
    chronic patient's years of follow-up, which is what makes a DMP record long). The panels come from
    a random stream of their own, so the record itself is exactly ``patient_record``'s."""
    resources, facts = patient_record(seed, number, doctors)
    patient = resources[0]
    pid, gp = patient["id"], patient["generalPractitioner"][0]["reference"].split("/", 1)[1]
    rng = random.Random(f"{seed}-patient-{number}-labs")
    while len(resources) < size:
        day = FIRST_DAY + timedelta(days=rng.randrange(SPAN_DAYS))
        taken = paris(day, rng.randrange(7 * 3600, 10 * 3600))
        doctor = gp if rng.random() < 0.8 else rng.choice(doctors)
        for row in rng.sample(LAB, min(rng.randint(4, 10), size - len(resources))):
            observation, fact = _observation(rng, row, pid, taken, doctor, None)
            resources.append(observation)
            facts.append(fact)
    return resources, facts


def transaction_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A FHIR transaction Bundle creating ``resources`` (which carry ids, as the generator makes them):
    one ``POST <type>`` entry each, under the fullUrl ``urn:uuid:<its id>`` and without the id (the
    server assigns one); every reference to another entry is written as that entry's fullUrl, so the
    server must resolve them. References outside the bundle (Practitioners) are left as they are."""
    local = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{r['id']}" for r in resources}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("reference")
            return {k: (local.get(ref, ref) if k == "reference" else rewrite(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"fullUrl": local[f"{r['resourceType']}/{r['id']}"],
                       "resource": rewrite({k: v for k, v in r.items() if k != "id"}),
                       "request": {"method": "POST", "url": r["resourceType"]}} for r in resources]}
