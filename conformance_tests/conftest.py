"""The conformance suite's session: the server under test, the fixtures every module uses, the tests
generated from the CapabilityStatement, and the report.

``pytest conformance_tests --base-url http://host:port/fhir [--token T]`` tests any FHIR R4 server;
without ``--base-url`` the project's own server is started for the session (target.py).
The tests are generated at collection from what the server's CapabilityStatement advertises, so the
server is reached (or started) while collecting."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from . import recording, support
from .data import Instances
from .known_deviations import OWN_SERVER
from .report import ConformanceReport
from .target import Target, connect, start_own_server

HERE = Path(__file__).resolve().parent
TARGET = pytest.StashKey[Target]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "FHIR conformance suite (conformance_tests/)")
    group.addoption("--base-url", help="the FHIR base URL of the server under test (default: start this "
                                       "project's own server for the session)")
    group.addoption("--token", help="a bearer token sent with every request to --base-url")
    group.addoption("--report", help="where to write the Markdown summary (default .cache/conformance/summary.md)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "should: tests a SHOULD (not a SHALL) of the specification; a server "
                                       "may differ and stay conformant (deselect with -m 'not should')")
    config.addinivalue_line("markers", "interaction(*codes): generate the test for every resource type whose "
                                       "CapabilityStatement entry advertises these interactions")
    out = config.rootpath / ".cache" / "conformance"
    if config.option.xmlpath is None and not hasattr(config, "workerinput"):
        out.mkdir(parents=True, exist_ok=True)
        config.option.xmlpath = str(out / "junit.xml")  # read by pytest's junitxml plugin, configured next
    report = Path(config.getoption("report") or out / "summary.md")
    config.pluginmanager.register(ConformanceReport(report, HERE), "conformance-report")


def target(config: pytest.Config) -> Target:
    """The server under test, reached (or started) once, on first need."""
    if TARGET not in config.stash:
        base_url = config.getoption("base_url")
        if base_url:
            found = connect(base_url, config.getoption("token"))
        else:
            found = start_own_server()
            if found.stop:
                config.add_cleanup(found.stop)
        config.stash[TARGET] = found
    return config.stash[TARGET]


# -- tests generated from the CapabilityStatement -----------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if not {"rtype", "search_param", "operation"} & set(names):
        return
    capability = target(metafunc.config).capability
    if "rtype" in names:
        marker = metafunc.definition.get_closest_marker("interaction")
        codes = marker.args if marker else ()
        metafunc.parametrize("rtype", support.types_with(capability, *codes))
    if "search_param" in names:
        params = [(rtype, sp["name"], sp.get("type", ""), sp.get("definition"))
                  for rtype in support.types_with(capability, "search-type")
                  for sp in support.resource_entry(capability, rtype).get("searchParam") or ()]
        metafunc.parametrize("search_param", params, ids=[f"{p[0]}-{p[1]}" for p in params])
    if "operation" in names:
        ops = [(entry["type"], op.get("name", ""), op.get("definition", ""))
               for entry in support.resources(capability) for op in entry.get("operation") or ()]
        ops += [(None, op.get("name", ""), op.get("definition", ""))
                for op in support.server_rest(capability).get("operation") or ()]
        metafunc.parametrize("operation", ops, ids=[f"{t or 'system'}-{n}" for t, n, _ in ops])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """test_validation.py validates every resource the others recorded: it runs last. Against our own
    server, its known deviations are strict xfails."""
    last = [item for item in items if item.path.name == "test_validation.py" and item.path.parent == HERE]
    items[:] = [item for item in items if item not in last] + last
    if config.getoption("base_url"):
        return
    for item in items:
        if item.path.parent == HERE:
            reason = OWN_SERVER.get(f"{item.path.name}::{item.name}")
            if reason:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"known deviation of this server: {reason}"))


# -- fixtures -----------------------------------------------------------------------------------------

class _Session(requests.Session):
    """Every request with a timeout (requests has none by default)."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return super().request(method, url, *args, **kwargs)


def _record(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Keeps every FHIR resource the server returned, for test_validation.py."""
    if "json" not in response.headers.get("Content-Type", ""):
        return
    body = support.json_body(response)
    if isinstance(body, dict) and isinstance(body.get("resourceType"), str):
        recording.record(f"{response.request.method} {response.request.url}", body)


@pytest.fixture(scope="session")
def base_url(request: pytest.FixtureRequest) -> str:
    return target(request.config).base_url


@pytest.fixture(scope="session")
def token(request: pytest.FixtureRequest) -> str | None:
    return target(request.config).token


@pytest.fixture(scope="session")
def capability(request: pytest.FixtureRequest) -> dict[str, Any]:
    return target(request.config).capability


@pytest.fixture(scope="session")
def http(token: str | None) -> Iterator[requests.Session]:
    """A session that asks for FHIR JSON, sends the token, and records every resource returned."""
    session = _Session()
    session.headers["Accept"] = support.FHIR_JSON
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    session.hooks["response"].append(_record)
    yield session
    session.close()


@pytest.fixture(scope="session")
def instances(http: requests.Session, base_url: str, capability: dict[str, Any]) -> Instances:
    return Instances(http, base_url, set(support.types_with(capability, "create")))
