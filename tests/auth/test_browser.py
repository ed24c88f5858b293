"""A SMART app in a real browser: SMART Health IT's JavaScript ``fhirclient`` library in headless
Chromium, driven by Playwright (tests/browser/smart_launch.mjs, Node and ``playwright-core`` with
Debian's Chromium). The app is served from another origin (a second loopback port), so discovery, the
token exchange and the FHIR reads are cross-origin requests that need the server's CORS headers.

A required check: missing Chromium, Node or the npm packages fail the test (``scripts/test`` installs
them), they never skip it."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.auth.conftest import Smart
from tests.auth.test_clients import _heart_rate, _patient

BROWSER = Path(__file__).resolve().parent.parent / "browser"
CHROMIUM = os.environ.get("FHIR_TEST_CHROMIUM", "/usr/bin/chromium")
SCOPE = "openid fhirUser launch/patient patient/*.rs"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """The app's own origin: tests/browser served over HTTP on another loopback port."""
    missing = [what for what, ok in (
        (f"Chromium at {CHROMIUM} (apt-get install chromium)", Path(CHROMIUM).exists()),
        ("node (apt-get install nodejs)", shutil.which("node") is not None),
        ("tests/browser/node_modules (npm ci in tests/browser)",
         (BROWSER / "node_modules" / "playwright-core").is_dir()
         and (BROWSER / "node_modules" / "fhirclient" / "build" / "fhir-client.js").is_file()),
    ) if not ok]
    if missing:
        pytest.fail("the browser test needs " + ", ".join(missing) + "; scripts/test installs them")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(BROWSER)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _launch(smart: Smart, origin: str, username: str, scope: str = SCOPE, **extra: str) -> dict[str, Any]:
    client_id = smart.app(f"{origin}/index.html", scope, name="browser app")
    launch = f"{origin}/launch.html?{urlencode({'iss': smart.server.base, 'clientId': client_id, 'scope': scope})}"
    config = {"launchUrl": launch, "username": username, "password": "s3cret-pass", "chromium": CHROMIUM,
              "timeoutMs": 30000, **extra}
    run = subprocess.run(["node", str(BROWSER / "smart_launch.mjs"), json.dumps(config)], cwd=BROWSER,
                         capture_output=True, text=True, timeout=150)
    lines = run.stdout.strip().splitlines()
    assert lines, f"the driver printed nothing (exit {run.returncode}): {run.stderr[-3000:]}"
    outcome: dict[str, Any] = json.loads(lines[-1])
    assert run.returncode == 0 and outcome["ok"], json.dumps(outcome, indent=1, ensure_ascii=False)[:6000]
    outcome["client_id"] = client_id
    return outcome


def test_js_fhirclient_standalone_launch_in_chromium(smart: Smart, app_origin: str) -> None:
    writer = smart.server.client()
    patient = _patient(writer, "Fournier", "Élodie", "1979-02-14")
    mine = [_heart_rate(writer, patient["id"], bpm, f"2024-04-0{day}T08:00:00+02:00")
            for day, bpm in ((1, 64), (2, 70))]
    stranger = _patient(writer, "Mercier", "Julie", "1988-08-08")
    _heart_rate(writer, stranger["id"], 101, "2024-04-01T08:00:00+02:00")
    user = smart.user("patient", f"Patient/{patient['id']}", name="Élodie Fournier")

    outcome = _launch(smart, app_origin, user)

    assert outcome["name"] == "Élodie Fournier"
    result = outcome["result"]
    assert result["patientId"] == patient["id"] and result["patient"]["birthDate"] == "1979-02-14"
    assert result["userId"] == f"Patient/{patient['id']}" and result["needPatientBanner"] is True
    assert set(result["scope"].split()) == set(SCOPE.split())
    # the app's own search, narrowed by the server to the patient in context
    assert [(o["id"], o["value"]) for o in result["observations"]] == [(o["id"], o["valueQuantity"]["value"])
                                                                       for o in mine]
    # what the library sent: aud and a PKCE S256 challenge; the verifier at the token endpoint, cross-origin
    authorize = outcome["authorize"]
    assert authorize["aud"] == smart.server.base and authorize["client_id"] == outcome["client_id"]
    assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
    assert authorize["redirect_uri"] == f"{app_origin}/index.html"
    token = outcome["token"]
    assert token["origin"] == app_origin and token["form"]["grant_type"] == "authorization_code"
    assert token["status"] == 200 and token["allowOrigin"] in ("*", app_origin)
    assert len(token["form"]["code_verifier"]) >= 43
    # no script error, no request refused (a CORS or CSP refusal is logged as a console error)
    assert not outcome["pageErrors"] and not [m for m in outcome["console"] if m.startswith("error")], outcome


def test_js_fhirclient_practitioner_picks_the_patient_in_chromium(smart: Smart, app_origin: str) -> None:
    writer = smart.server.client()
    patient = _patient(writer, "Perrin", "Agathe", "1995-12-01")
    # the DMP opens a record to its treating physician (consent rules): make Dr Girard hers
    patient = {**patient, "generalPractitioner": [{"reference": "Practitioner/browser-gp"}]}
    assert writer.put(f"Patient/{patient['id']}", patient).status_code == 200
    user = smart.user("practitioner", "Practitioner/browser-gp", name="Dr Paul Girard", rpps="10001234567")
    scope = "openid fhirUser launch/patient user/*.rs"

    outcome = _launch(smart, app_origin, user, scope, patient=patient["id"], locale="en-GB")

    assert outcome["name"] == "Agathe Perrin"
    assert outcome["result"]["patientId"] == patient["id"]
    assert outcome["result"]["userId"] == "Practitioner/browser-gp"
