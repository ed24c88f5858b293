"""The DMP story, played over real HTTP with real tokens against a server holding the example DMP.

    python examples/demo.py --base http://127.0.0.1:8080/fhir [--mongodb-uri URI] [--database fhir]

Each person gets an access token signed with the server's own key, read from the server's database
(as ``fhir-server token`` does): ``--mongodb-uri`` (default ``$FHIR_MONGODB_URI``) and ``--database``
(default ``$FHIR_MONGODB_DATABASE`` or ``fhir``). Load the example DMP first (``fhir-server load
examples``, or ``fhir-server serve --demo``). The demo writes (a new discharge letter, a mask, a
block), so a second run tells the story of a record that has already lived the first.

Steps: a GP reads her patient's record; the hospital feeds a discharge letter (ITI-65); the patient
masks it and blocks a specialist, who then sees nothing; an emergency physician breaks the glass for a
patient who did not refuse it (and not for one who did); the patient reads who accessed her record; a
child's mother, registered as his legal representative, opens his record (a token's claim alone does not).
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import requests

if __package__ in (None, ""):  # run as a script: the checkout's root holds the examples package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import dmp  # noqa: E402
from examples.pdf import pdf  # noqa: E402
from examples.resources import ID_NAT_PS, Document, business_id, provide_bundle  # noqa: E402

FHIR_JSON = "application/fhir+json"
Out = Callable[[str], None]


class DatabaseTokens:
    """Access tokens signed with the server's key from its database (fhir_server/auth/admin.py)."""

    def __init__(self, mongodb_uri: str, database: str, base: str) -> None:
        from pymongo import MongoClient

        from fhir_server.auth.tokens import KeyRing
        from fhir_server.storage import AuthStore

        self.client: MongoClient[Any] = MongoClient(mongodb_uri, tz_aware=True)
        self.keys = KeyRing(AuthStore(self.client[database]))
        self.base = base

    def token(self, scope: str, **claims: Any) -> str:
        from fhir_server.auth.admin import mint_token
        return mint_token(self.keys, self.base, scope, expires=900, **claims)


class Fhir:
    """One person's (or one software's) session with the server."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Bearer {token}", "Accept": FHIR_JSON})

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(f"{self.base}/{path}", timeout=120, **kw)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.http.post(f"{self.base}/{path}".rstrip("/"), json=body, timeout=120,
                              headers={"Content-Type": FHIR_JSON})

    def search(self, query: str) -> list[dict[str, Any]]:
        response = self.get(query)
        response.raise_for_status()
        return [e["resource"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") != "outcome"]


def _text(concept: dict[str, Any]) -> str:
    return concept.get("text") or concept["coding"][0].get("display") or concept["coding"][0]["code"]


def _shorten(items: list[str], width: int) -> str:
    """Items joined, cut at an item's end so that the line stays short."""
    line = ""
    for n, item in enumerate(items):
        candidate = f"{line}, {item}" if line else item
        if len(candidate) > width:
            return f"{line} (+{len(items) - n} more)"
        line = candidate
    return line


def _params(**values: str) -> dict[str, Any]:
    return {"resourceType": "Parameters",
            "parameter": [{"name": name, "valueReference": {"reference": value}} for name, value in values.items()]}


class Story:
    def __init__(self, base: str, tokens: DatabaseTokens, out: Out) -> None:
        self.base, self.tokens, self.out = base, tokens, out
        self.directory = Fhir(base, tokens.token("system/*.rs", operator=True, client_id="demo-directory"))
        self.outcome: dict[str, Any] = {}

    def patient(self, key: str) -> str:
        ins = dmp.patient_ins(key)
        [found] = self.directory.search(f"Patient?identifier={ins['system']}|{ins['value']}")
        return str(found["id"])

    def practitioner(self, key: str, purpose: str = "TREAT") -> tuple[str, Fhir]:
        who = dmp.professional(key)
        [found] = self.directory.search(f"Practitioner?identifier={ID_NAT_PS}|8{who.rpps}")
        token = self.tokens.token("user/*.rs", fhir_user=f"Practitioner/{found['id']}", purpose=purpose,
                                  rpps=who.rpps, profession=who.profession[0], client_id="demo-ehr")
        return str(found["id"]), Fhir(self.base, token)

    def person(self, patient_id: str) -> Fhir:
        return Fhir(self.base, self.tokens.token("patient/*.rs", fhir_user=f"Patient/{patient_id}", client_id="demo-app"))

    def say(self, line: str = "") -> None:
        self.out(line)

    # -- the steps --

    def gp_reads(self, jeanne: str) -> None:
        _, gp = self.practitioner("morel")
        self.say("1. Dr Claire MOREL, GP, opens the record of her patient Jeanne DUPONT")
        seen: Counter[str] = Counter()
        for rtype, label, show in (
                ("Condition", "problems", lambda r: _text(r["code"])),
                ("AllergyIntolerance", "allergies", lambda r: _text(r["code"])),
                ("MedicationStatement", "treatments", lambda r: _text(r["medicationCodeableConcept"])),
                ("DocumentReference", "documents", lambda r: r["content"][0]["attachment"]["title"])):
            found = gp.search(f"{rtype}?patient={jeanne}&_count=100")
            seen[rtype] = len(found)
            self.say(f"   {label:<11} {len(found):>2}: " + _shorten(sorted(map(show, found)), 80))
        self.outcome["gp_sees"] = seen

    def hospital_feeds(self, jeanne: str) -> str:
        self.say("2. The CHU Lyon-Confluence's software sends Jeanne's discharge letter (ITI-65)")
        ehr = Fhir(self.base, self.tokens.token("system/*.cruds", client_id="chu-lyon-confluence-dpi"))
        today = date.today()
        letter = Document(
            key=f"demo/{uuid.uuid4()}", type=(dmp.LOINC, *dmp.LOINC_DOCS["discharge"]), category=dmp.REPORT,
            title="Lettre de liaison à la sortie (cardiologie)", content_type="application/pdf",
            data=pdf("Lettre de liaison à la sortie", [
                "Patiente : Jeanne DUPONT", "Hospitalisée en cardiologie pour une poussée hypertensive.",
                "Traitement de sortie : ramipril 10 mg, metformine, atorvastatine.",
                "Contrôle tensionnel par le médecin traitant sous huit jours. Dr Karim HADDAD"]),
            when=dmp.paris(today, 9), author=dmp.practitioner_ref("haddad"), custodian=dmp.organization_ref("chu"),
            sector=("SA01", "Établissement public de santé"))
        response = ehr.post("", provide_bundle(letter.key, {"reference": f"Patient/{jeanne}"}, [letter],
                                               dmp.paris(today, 9, 5)))
        statuses = [e["response"]["status"] for e in response.json().get("entry", [])] if response.ok else []
        self.outcome["letter_created"] = response.status_code == 200 and all(s.startswith("201") for s in statuses)
        document = next(e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]
                        if e["response"]["location"].startswith("DocumentReference/")) if response.ok else ""
        self.say(f"   HTTP {response.status_code}: {', '.join(statuses)} -> {document}")
        _, gp = self.practitioner("morel")
        found = [d for d in gp.search(f"DocumentReference?patient={jeanne}") if f"DocumentReference/{d['id']}" == document]
        self.outcome["gp_sees_letter"] = bool(found)
        if found:
            raw = gp.get(found[0]["content"][0]["attachment"]["url"], headers={"Accept": "application/pdf"})
            self.say(f"   Dr MOREL finds it and opens it (ITI-68): {raw.status_code}, {raw.headers.get('Content-Type')}, "
                     f"{len(raw.content)} bytes")
        return document

    def patient_masks_and_blocks(self, jeanne: str, letter: str) -> None:
        me = self.person(jeanne)
        roux_id, roux = self.practitioner("roux")
        self.outcome["specialist_before_block"] = len(roux.search(f"DocumentReference?patient={jeanne}"))
        self.say(f"   (Dr Antoine ROUX, endocrinologist she authorised, sees "
                 f"{self.outcome['specialist_before_block']} of her documents)")
        self.say("3. Jeanne, in her Mon espace santé app, masks the letter and blocks Dr ROUX")
        masked = me.post(f"Patient/{jeanne}/$mask", _params(document=letter))
        blocked = me.post(f"Patient/{jeanne}/$block", _params(practitioner=f"Practitioner/{roux_id}"))
        self.say(f"   $mask: HTTP {masked.status_code}; $block: HTTP {blocked.status_code}")
        _, gp = self.practitioner("morel")
        self.outcome["gp_sees_letter_after_mask"] = any(
            f"DocumentReference/{d['id']}" == letter for d in gp.search(f"DocumentReference?patient={jeanne}"))
        self.outcome["patient_sees_letter"] = any(
            f"DocumentReference/{d['id']}" == letter for d in me.search(f"DocumentReference?patient={jeanne}"))
        self.say(f"   Dr MOREL sees the letter: {'yes' if self.outcome['gp_sees_letter_after_mask'] else 'no'}; "
                 f"Jeanne sees it: {'yes' if self.outcome['patient_sees_letter'] else 'no'}")
        self.say("4. Dr ROUX opens Jeanne's record again")
        self.outcome["specialist_after_block"] = sum(
            len(roux.search(f"{t}?patient={jeanne}")) for t in ("DocumentReference", "Condition", "MedicationStatement"))
        self.outcome["specialist_reads_patient"] = roux.get(f"Patient/{jeanne}").status_code
        self.say(f"   documents, problems, treatments: {self.outcome['specialist_after_block']}; "
                 f"GET Patient/{jeanne[:8]}...: HTTP {self.outcome['specialist_reads_patient']}")

    def emergency(self, robert: str, gerard: str) -> None:
        self.say("5. At the emergency department, Dr Nadia BENALI treats Robert PETIT, unconscious")
        _, usual = self.practitioner("benali")
        self.say(f"   without break-the-glass: HTTP {usual.get(f'Patient/{robert}').status_code}")
        _, btg = self.practitioner("benali", purpose="BTG")
        response = btg.get(f"Patient/{robert}/$everything?_count=200")
        entries = [e["resource"] for e in response.json().get("entry", [])] if response.ok else []
        self.outcome["btg_sees"] = len(entries)
        self.outcome["btg_header"] = response.headers.get("X-Emergency-Access")
        self.say(f"   break-the-glass (purpose BTG): HTTP {response.status_code}, {len(entries)} resources, "
                 f"X-Emergency-Access: {self.outcome['btg_header']}")
        for rtype, label, key in (("AllergyIntolerance", "allergies", "code"),
                                  ("MedicationStatement", "treatments", "medicationCodeableConcept"),
                                  ("Condition", "problems", "code")):
            shown = sorted(_text(r[key]) for r in entries if r["resourceType"] == rtype)
            self.say(f"   {label:<11} {_shorten(shown, 85)}")
        refused = btg.get(f"Patient/{gerard}/$everything")
        self.outcome["btg_refused_sees"] = len(refused.json().get("entry", [])) if refused.ok else 0
        self.say(f"   Gérard BERNARD refused break-the-glass: HTTP {refused.status_code}, "
                 f"{self.outcome['btg_refused_sees']} resources")

    def access_history(self, jeanne: str) -> None:
        self.say("6. Jeanne reads who accessed her record ($access-history, newest first)")
        response = self.person(jeanne).get(f"Patient/{jeanne}/$access-history?_count=200")
        response.raise_for_status()
        rows = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in row["part"]}
                for row in response.json()["parameter"] if row["name"] == "access"]
        self.outcome["history_who"] = [str(r.get("who")) for r in rows]
        self.outcome["history_outcomes"] = {str(r.get("outcome")) for r in rows}
        grouped: dict[tuple[str, str, str], list[str]] = {}
        for r in rows:  # newest first: the first time seen is the last access
            who = "Jeanne herself" if str(r.get("who")) == f"Patient/{jeanne}" else str(r.get("who"))
            result = "refused" if r.get("outcome") != "0" else "ok"
            grouped.setdefault((who, str(r.get("mode")), result), []).append(str(r.get("when")))
        for (who, mode, result), when in list(grouped.items())[:10]:
            self.say(f"   {who[:34]:<34} {mode:<6} {result:<8} {len(when):>3} time(s), last {when[0][:16]}")

    def representative(self, lucas: str) -> None:
        self.say("7. Camille MOREAU opens the record of her son Lucas, 12, as his legal representative")
        mother = business_id("lucas/mother")
        [camille] = self.directory.search(f"RelatedPerson?identifier={mother['system']}|{mother['value']}")
        period = camille.get("period", {})
        me = Fhir(self.base, self.tokens.token("patient/*.rs", fhir_user=f"RelatedPerson/{camille['id']}",
                                               patient=lucas, client_id="demo-app"))
        self.outcome["representative_sees"] = len(me.search(f"DocumentReference?patient={lucas}"))
        self.say(f"   registered in his record ({period.get('start')} to {period.get('end')}, his majority): "
                 f"{self.outcome['representative_sees']} documents")
        claim = Fhir(self.base, self.tokens.token("patient/*.rs", fhir_user="RelatedPerson/not-registered",
                                                  patient=lucas, client_id="demo-app"))
        self.outcome["claim_alone_reads_patient"] = claim.get(f"Patient/{lucas}").status_code
        self.say(f"   a token that only claims to represent him: HTTP {self.outcome['claim_alone_reads_patient']}")


def play(base: str, tokens: DatabaseTokens, out: Out = print) -> dict[str, Any]:
    """Play the story; returns what each step observed (the test checks it)."""
    story = Story(base, tokens, out)
    jeanne, robert, gerard = story.patient("jeanne"), story.patient("robert"), story.patient("gerard")
    story.gp_reads(jeanne)
    letter = story.hospital_feeds(jeanne)
    story.patient_masks_and_blocks(jeanne, letter)
    story.emergency(robert, gerard)
    story.access_history(jeanne)
    story.representative(story.patient("lucas"))
    return story.outcome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8080/fhir")
    parser.add_argument("--mongodb-uri", default=os.environ.get("FHIR_MONGODB_URI"))
    parser.add_argument("--database", default=os.environ.get("FHIR_MONGODB_DATABASE", "fhir"))
    args = parser.parse_args(argv)
    if not args.mongodb_uri:
        sys.exit("the tokens are minted from the server's database: pass --mongodb-uri or set FHIR_MONGODB_URI")
    play(args.base.rstrip("/"), DatabaseTokens(args.mongodb_uri, args.database, args.base.rstrip("/")))


if __name__ == "__main__":
    main()
