"""The search oracle: a generated DMP data set and several hundred queries over every parameter type,
modifier and prefix. Each query's answer from the server must equal both the in-memory matcher's
(search/match.py) and an independent brute force written here, straight from the resource JSON.
"""
from __future__ import annotations

import random
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from fhir_server.search.index import entries_of
from fhir_server.search.match import matches as match
from fhir_server.search.parse import parse
from tests.conftest import Fhir

INS, NIA, RPPS = "urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9", "https://rpps.esante.gouv.fr"
LOINC, SNOMED, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
GIVEN = ["Hélène", "Zoé", "François", "Léa", "Noël", "Jean", "Anaïs", "Chloé", "Jérôme", "Maëlle", "Éric", "Inès"]
FAMILY = ["Dupont", "Lefèvre", "Martin", "Bénard", "Gaël-Roux", "Durand", "Müller", "Ó Briain", "Moreau"]
CITIES = ["Lyon", "Saint-Étienne", "Paris", "Besançon", "Nîmes"]
OBS_CODES = ["2345-7", "718-7", "8302-2", "29463-7", "2160-0"]
DOC_TYPES = ["11490-0", "34112-3", "11488-4", "60591-5"]


def fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").lower()


def _random_date(rng: random.Random) -> str:
    day = datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 30000))
    return rng.choice([day.strftime("%Y"), day.strftime("%Y-%m"), day.strftime("%Y-%m-%d")])


def _random_datetime(rng: random.Random) -> str:
    moment = datetime(2018, 1, 1) + timedelta(minutes=rng.randrange(0, 6 * 365 * 24 * 60))
    return rng.choice([moment.strftime("%Y"), moment.strftime("%Y-%m"), moment.strftime("%Y-%m-%d"),
                       moment.strftime("%Y-%m-%dT%H:%M:%S+01:00"), moment.strftime("%Y-%m-%dT%H:%M:%SZ")])


def generate(tag: str, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    meta = {"tag": [{"system": "urn:oracle", "code": tag}]}
    out: list[dict[str, Any]] = []
    doctors = [f"{tag}-dr{i}" for i in range(6)]
    for i, rid in enumerate(doctors):
        out.append({"resourceType": "Practitioner", "id": rid, "meta": meta,
                    "identifier": [{"system": RPPS, "value": f"1000000{i:04d}"}],
                    "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}]})
    for p in range(40):
        pid = f"{tag}-p{p}"
        patient: dict[str, Any] = {"resourceType": "Patient", "id": pid, "meta": meta,
                                   "name": [{"family": rng.choice(FAMILY), "given": rng.sample(GIVEN, rng.randint(1, 2))}],
                                   "identifier": [{"system": INS, "value": f"{rng.randint(1, 2)}{p:012d}"}]}
        if rng.random() < 0.4:
            patient["identifier"].append({"system": NIA, "value": f"NIA{p}"})
        if rng.random() < 0.8:
            patient["gender"] = rng.choice(["male", "female", "other"])
        if rng.random() < 0.9:
            patient["birthDate"] = _random_date(rng)
        if rng.random() < 0.5:
            patient["active"] = rng.random() < 0.7
        if rng.random() < 0.7:
            patient["address"] = [{"city": rng.choice(CITIES)}]
        if rng.random() < 0.8:
            patient["generalPractitioner"] = [{"reference": f"Practitioner/{rng.choice(doctors)}"}]
        out.append(patient)
        for o in range(rng.randint(2, 6)):
            obs: dict[str, Any] = {"resourceType": "Observation", "id": f"{pid}-o{o}", "meta": meta,
                                   "status": rng.choice(["final", "amended", "preliminary"]),
                                   "code": {"coding": [{"system": LOINC, "code": rng.choice(OBS_CODES)}]},
                                   "subject": {"reference": f"Patient/{pid}"}}
            if rng.random() < 0.85:
                value = Decimal(rng.randint(1, 2000)) / Decimal(rng.choice([1, 10, 100]))
                obs["valueQuantity"] = {"value": value, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}
            if rng.random() < 0.8:
                obs["effectiveDateTime"] = _random_datetime(rng)
            elif rng.random() < 0.5:
                start = _random_datetime(rng)
                obs["effectivePeriod"] = {"start": start} if rng.random() < 0.5 else {"start": start, "end": "2025"}
            if rng.random() < 0.6:
                obs["performer"] = [{"reference": f"Practitioner/{rng.choice(doctors)}"}]
            out.append(obs)
        if rng.random() < 0.7:
            out.append({"resourceType": "Condition", "id": f"{pid}-c", "meta": meta, "subject": {"reference": f"Patient/{pid}"},
                        "code": {"coding": [{"system": SNOMED, "code": rng.choice(["38341003", "44054006", "195967001"])}]},
                        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                       "code": rng.choice(["active", "resolved"])}]},
                        "onsetDateTime": _random_datetime(rng)})
        if rng.random() < 0.7:
            doc: dict[str, Any] = {"resourceType": "DocumentReference", "id": f"{pid}-d", "meta": meta, "status": "current",
                                   "type": {"coding": [{"system": LOINC, "code": rng.choice(DOC_TYPES)}]},
                                   "subject": {"reference": f"Patient/{pid}"}, "date": "2023-04-05T10:00:00+02:00",
                                   "author": [{"reference": f"Practitioner/{rng.choice(doctors)}"}],
                                   "content": [{"attachment": {"contentType": "application/pdf", "url": f"Binary/{pid}"}}]}
            if rng.random() < 0.3:
                doc["securityLabel"] = [{"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]}]
            out.append(doc)
    return out


# -- the independent brute force ---------------------------------------------------------------------------


def period(value: str) -> tuple[datetime, datetime]:
    """A date/dateTime string as [start, end): written again here on purpose (not search/dates.py)."""
    if "T" in value:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment, moment + timedelta(seconds=1)
    parts = [int(p) for p in value.split("-")]
    if len(parts) == 1:
        return datetime(parts[0], 1, 1, tzinfo=UTC), datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
    if len(parts) == 2:
        y, m = parts
        return datetime(y, m, 1, tzinfo=UTC), datetime(y + m // 12, m % 12 + 1, 1, tzinfo=UTC)
    start = datetime(*parts, tzinfo=UTC)
    return start, start + timedelta(days=1)


def date_ok(lo: datetime, hi: datetime, prefix: str, query: str) -> bool:
    s, e = period(query)
    inside = s <= lo and hi <= e
    return {"eq": inside, "ne": not inside, "gt": hi > e, "lt": lo < s, "ge": hi > e or inside,
            "le": lo < s or inside, "sa": lo >= e, "eb": hi <= s}[prefix]


def number_ok(value: Decimal, prefix: str, query: str) -> bool:
    q = Decimal(query)
    half = Decimal(5) * Decimal(10) ** (q.as_tuple().exponent - 1)  # type: ignore[operator]
    return {"eq": q - half <= value < q + half, "ne": not q - half <= value < q + half, "gt": value > q,
            "lt": value < q, "ge": value >= q, "le": value <= q, "sa": value > q, "eb": value < q}[prefix]


def effective(obs: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    if "effectiveDateTime" in obs:
        return [period(obs["effectiveDateTime"])]
    if "effectivePeriod" in obs:
        p = obs["effectivePeriod"]
        return [(period(p["start"])[0], period(p["end"])[1] if "end" in p else datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))]
    return []


def names(patient: dict[str, Any]) -> list[str]:
    return [s for n in patient.get("name", []) for s in [n.get("family"), *n.get("given", [])] if s]


Brute = Callable[[dict[str, Any]], bool]


def build_queries(data: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, list[tuple[str, str]], Brute]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in data:
        by_type.setdefault(r["resourceType"], []).append(r)
    patients, observations = by_type["Patient"], by_type["Observation"]
    queries: list[tuple[str, list[tuple[str, str]], Brute]] = []

    def add(rtype: str, params: list[tuple[str, str]], brute: Brute) -> None:
        queries.append((rtype, params, brute))

    for word in {w for p in patients for w in names(p)}:
        for text in (word[:3], fold(word)[:4].upper(), word):
            add("Patient", [("name", text)], lambda r, t=text: any(fold(n).startswith(fold(t)) for n in names(r)))
        add("Patient", [("name:exact", word)], lambda r, w=word: w in names(r))
        add("Patient", [("name:contains", fold(word)[1:4])], lambda r, t=fold(word)[1:4]: any(t in fold(n) for n in names(r)))
    for gender in ("male", "female", "other"):
        add("Patient", [("gender", gender)], lambda r, g=gender: r.get("gender") == g)
        add("Patient", [("gender:not", gender)], lambda r, g=gender: r.get("gender") != g)
    for missing in ("true", "false"):
        for code, key in (("gender", "gender"), ("birthdate", "birthDate"), ("active", "active")):
            add("Patient", [(f"{code}:missing", missing)], lambda r, k=key, m=missing: (k not in r) == (m == "true"))
    dates = [p["birthDate"] for p in patients if "birthDate" in p]
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        for value in rng.sample(dates, 6) + ["1970", "1985-06"]:
            add("Patient", [("birthdate", prefix + value)],
                lambda r, p=prefix, v=value: "birthDate" in r and date_ok(*period(r["birthDate"]), p, v))
    for patient in rng.sample(patients, 8):
        for ident in patient["identifier"]:
            system, value = ident["system"], ident["value"]
            add("Patient", [("identifier", f"{system}|{value}")],
                lambda r, s=system, v=value: any(i["system"] == s and i["value"] == v for i in r.get("identifier", [])))
            add("Patient", [("identifier", value)], lambda r, v=value: any(i["value"] == v for i in r.get("identifier", [])))
    add("Patient", [("identifier", f"{NIA}|")], lambda r: any(i["system"] == NIA for i in r.get("identifier", [])))
    # system| is a prefix match on the stored system|code keys (compile.key_filter), negated too
    add("Patient", [("identifier:not", f"{NIA}|")], lambda r: all(i["system"] != NIA for i in r.get("identifier", [])))
    add("Patient", [("identifier", f"{NIA}|,{RPPS}|")],
        lambda r: any(i["system"] in (NIA, RPPS) for i in r.get("identifier", [])))
    for city in CITIES:
        add("Patient", [("address-city", city[:4])],
            lambda r, c=city[:4]: any(fold(a.get("city", "")).startswith(fold(c)) for a in r.get("address", [])))
    for doctor in by_type["Practitioner"]:
        ref = f"Practitioner/{doctor['id']}"
        add("Patient", [("general-practitioner", ref)],
            lambda r, x=ref: any(g["reference"] == x for g in r.get("generalPractitioner", [])))
        add("Observation", [("performer", doctor["id"])],
            lambda r, x=ref: any(g["reference"] == x for g in r.get("performer", [])))
        add("DocumentReference", [("author", ref)], lambda r, x=ref: any(a["reference"] == x for a in r["author"]))
        family = doctor["name"][0]["family"]
        add("Patient", [("general-practitioner:Practitioner.name", family)],
            lambda r, f=family: any(fold(d["name"][0]["family"]).startswith(fold(f)) and
                                    f"Practitioner/{d['id']}" in [g["reference"] for g in r.get("generalPractitioner", [])]
                                    for d in by_type["Practitioner"]))
    for code in OBS_CODES:
        add("Observation", [("code", code)], lambda r, c=code: r["code"]["coding"][0]["code"] == c)
        add("Observation", [("code", f"{LOINC}|{code}")], lambda r, c=code: r["code"]["coding"][0]["code"] == c)
        add("Observation", [("code:not", code)], lambda r, c=code: r["code"]["coding"][0]["code"] != c)
        add("Patient", [("_has:Observation:subject:code", code)],
            lambda r, c=code: any(o["subject"]["reference"] == f"Patient/{r['id']}" and o["code"]["coding"][0]["code"] == c
                                  for o in observations))
    add("Observation", [("code", ",".join(OBS_CODES[:2]))], lambda r: r["code"]["coding"][0]["code"] in OBS_CODES[:2])
    values = [str(o["valueQuantity"]["value"]) for o in observations if "valueQuantity" in o]
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        for value in rng.sample(values, 4) + ["10", "5.5"]:
            add("Observation", [("value-quantity", prefix + value)],
                lambda r, p=prefix, v=value: "valueQuantity" in r and number_ok(Decimal(str(r["valueQuantity"]["value"])), p, v))
        value = rng.choice(values)
        add("Observation", [("value-quantity", f"{prefix}{value}|{UCUM}|mmol/L")],
            lambda r, p=prefix, v=value: "valueQuantity" in r and number_ok(Decimal(str(r["valueQuantity"]["value"])), p, v))
        for when in ("2020", "2021-03", "2022-07-14", "2019-05-05T10:00:00+01:00"):
            add("Observation", [("date", prefix + when)],
                lambda r, p=prefix, w=when: any(date_ok(lo, hi, p, w) for lo, hi in effective(r)))
    for code in OBS_CODES[:3]:
        add("Observation", [("code-value-quantity", f"{code}$gt100")],
            lambda r, c=code: r["code"]["coding"][0]["code"] == c and "valueQuantity" in r and r["valueQuantity"]["value"] > 100)
    for patient in rng.sample(patients, 10):
        pid = patient["id"]
        add("Observation", [("subject", f"Patient/{pid}")], lambda r, x=pid: r["subject"]["reference"] == f"Patient/{x}")
        add("Observation", [("patient", pid), ("code", OBS_CODES[0])],
            lambda r, x=pid: r["subject"]["reference"] == f"Patient/{x}" and r["code"]["coding"][0]["code"] == OBS_CODES[0])
        add("Condition", [("subject", f"Patient/{pid}")], lambda r, x=pid: r["subject"]["reference"] == f"Patient/{x}")
        add("Patient", [("_id", pid)], lambda r, x=pid: r["id"] == x)
    for word in rng.sample(sorted({w for p in patients for w in names(p)}), 5):
        add("Observation", [("subject:Patient.name", word)],
            lambda r, w=word: any(p["id"] == r["subject"]["reference"].split("/")[1] and any(fold(n).startswith(fold(w)) for n in names(p))
                                  for p in patients))
    for status in ("active", "resolved"):
        add("Condition", [("clinical-status", status)], lambda r, s=status: r["clinicalStatus"]["coding"][0]["code"] == s)
    for prefix in ("ge", "lt"):
        add("Condition", [("onset-date", f"{prefix}2021")], lambda r, p=prefix: date_ok(*period(r["onsetDateTime"]), p, "2021"))
    for kind in DOC_TYPES:
        add("DocumentReference", [("type", f"{LOINC}|{kind}")], lambda r, k=kind: r["type"]["coding"][0]["code"] == k)
    add("DocumentReference", [("security-label", "MASQUE_PS")], lambda r: "securityLabel" in r)
    add("DocumentReference", [("security-label:not", "MASQUE_PS")], lambda r: "securityLabel" not in r)
    add("DocumentReference", [("date", "2023-04-05")], lambda r: True)
    add("DocumentReference", [("date", "2023-04-04")], lambda r: False)
    add("Patient", [("birthdate", "ge1960"), ("birthdate", "lt1990")],
        lambda r: "birthDate" in r and date_ok(*period(r["birthDate"]), "ge", "1960") and date_ok(*period(r["birthDate"]), "lt", "1990"))
    return queries


@pytest.fixture(scope="module")
def dataset(fhir: Fhir) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    tag = uuid.uuid4().hex[:8]
    stored: dict[str, dict[str, dict[str, Any]]] = {}
    for resource in generate(tag):
        body = {k: (float(v) if isinstance(v, Decimal) else v) for k, v in resource.items()}
        if "valueQuantity" in body:
            body["valueQuantity"] = {**body["valueQuantity"], "value": float(body["valueQuantity"]["value"])}
        response = fhir.put(f"{resource['resourceType']}/{resource['id']}", body)
        assert response.status_code in (200, 201), response.text
        stored.setdefault(resource["resourceType"], {})[resource["id"]] = response.json()
    return tag, stored


def test_server_matcher_and_brute_force_agree(fhir: Fhir, dataset: tuple[str, dict[str, dict[str, dict[str, Any]]]]) -> None:
    tag, stored = dataset
    entries = {(r["resourceType"], r["id"]): entries_of(r) for rs in stored.values() for r in rs.values()}

    def matches(query: Any, resource: dict[str, Any], lookup: Any) -> bool:
        return match(query, resource, lookup=lookup, entries=entries[resource["resourceType"], resource["id"]])

    queries = build_queries([r for rs in stored.values() for r in rs.values()], random.Random(11))
    assert len(queries) >= 300, len(queries)

    def lookup_for(rtype: str) -> Callable[[str, Any], set[str]]:
        def lookup(target: str, clause: Any) -> set[str]:
            if target == "_has":
                referring, ref_code, inner = clause.has
                query = parse((referring,), [], default_count=10, max_count=10)
                found = {r["id"] for r in stored.get(referring, {}).values()
                         if matches(query.__class__(query.types, ((referring, (inner,)),)), r, lookup=lookup_for(referring))}
                return {rid for rid, r in stored[rtype].items()
                        if any(s.get("reference") == f"{rtype}/{rid}" for s in _references(stored[referring], found, ref_code))}
            query = parse((target,), [], default_count=10, max_count=10)
            scoped = query.__class__(query.types, ((target, (clause,)),))
            return {r["id"] for r in stored.get(target, {}).values() if matches(scoped, r, lookup=lookup_for(target))}
        return lookup

    disagreements = []
    non_empty = 0
    for rtype, params, brute in queries:
        response = fhir.get(rtype, params=[("_tag", f"urn:oracle|{tag}"), *params, ("_count", "1000")])
        assert response.status_code == 200, (params, response.text)
        server = {e["resource"]["id"] for e in response.json().get("entry", [])}
        query = parse((rtype,), params, default_count=1000, max_count=1000)
        by_matcher = {rid for rid, r in stored[rtype].items() if matches(query, r, lookup=lookup_for(rtype))}
        by_brute = {rid for rid, r in stored[rtype].items() if brute(r)}
        non_empty += bool(server)
        if not server == by_matcher == by_brute:
            disagreements.append((rtype, params, sorted(server ^ by_brute)[:5], sorted(by_matcher ^ by_brute)[:5]))
    assert not disagreements, f"{len(disagreements)} of {len(queries)} queries disagree: {disagreements[:10]}"
    assert non_empty > len(queries) // 2


def _references(referring: dict[str, dict[str, Any]], ids: set[str], code: str) -> list[dict[str, Any]]:
    field = {"subject": "subject", "patient": "subject"}[code]
    return [referring[i][field] for i in ids]
