"""The Markdown summary of a conformance run: pass / fail / skip per area (an area is a test module),
the failures, the skip reasons (grouped: many tests skip for one reason), and the validator's warnings
when conformance_tests/test_validation.py exposes a list ``WARNINGS``. Written at the session's end,
next to the JUnit XML that pytest's own ``--junitxml`` writes."""
from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

OUTCOMES = ("passed", "failed", "skipped", "xfailed")


class ConformanceReport:
    def __init__(self, path: Path, suite_dir: Path) -> None:
        self.path, self.suite_dir = path, suite_dir
        self.outcomes: dict[str, tuple[str, str, str]] = {}  # nodeid -> (area, outcome, detail)
        self.started = time.monotonic()

    def _area(self, report: pytest.TestReport) -> str | None:
        path = Path(str(report.fspath)).resolve()
        if path.parent != self.suite_dir:
            return None  # a test of another suite in the same session
        return path.stem.removeprefix("test_")

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        area = self._area(report)
        if area is None:
            return
        if report.skipped:
            if hasattr(report, "wasxfail"):
                outcome, detail = "xfailed", str(report.wasxfail)
            else:
                longrepr: Any = report.longrepr
                detail = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
                outcome = "skipped"
            detail = detail.removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            outcome = "failed"
            detail = (f"{report.when}: " if report.when != "call" else "") + \
                str(crash.message if crash else report.longreprtext).strip()
        elif report.when == "call":
            outcome, detail = "passed", ""
        else:
            return
        previous = self.outcomes.get(report.nodeid)
        if previous is None or previous[1] == "passed" or outcome == "failed":
            self.outcomes[report.nodeid] = (area, outcome, detail)  # a teardown error fails a passed test

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.outcomes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.markdown(session.config))

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.outcomes:
            terminalreporter.write_line(f"conformance summary: {self.path}")

    def markdown(self, config: pytest.Config) -> str:
        per_area: dict[str, Counter[str]] = defaultdict(Counter)
        for area, outcome, _ in self.outcomes.values():
            per_area[area][outcome] += 1
        base = config.getoption("base_url") or "this project's server, started for the run"
        lines = ["# FHIR conformance summary", "",
                 f"Server: {base}. Duration: {time.monotonic() - self.started:.0f} s. "
                 "Full results: the JUnit XML (`--junitxml`).", "",
                 "| area | passed | failed | skipped | xfailed |", "| --- | ---: | ---: | ---: | ---: |"]
        total: Counter[str] = Counter()
        for area in sorted(per_area):
            total.update(per_area[area])
            lines.append(f"| {area} | " + " | ".join(str(per_area[area][o]) for o in OUTCOMES) + " |")
        lines.append("| **total** | " + " | ".join(f"**{total[o]}**" for o in OUTCOMES) + " |")
        failures = [(node, detail) for node, (_, outcome, detail) in self.outcomes.items() if outcome == "failed"]
        lines += ["", f"## Failures ({len(failures)})", ""]
        lines += [f"- `{node}`: {_one_line(detail)}" for node, detail in failures] or ["None."]
        xfails = [(node, detail) for node, (_, outcome, detail) in self.outcomes.items() if outcome == "xfailed"]
        if xfails:
            lines += ["", f"## Expected failures: known deviations ({len(xfails)})", ""]
            lines += [f"- `{node}`: {_one_line(detail)}" for node, detail in xfails]
        reasons: dict[str, list[str]] = defaultdict(list)
        for node, (_, outcome, detail) in self.outcomes.items():
            if outcome == "skipped":
                reasons[_one_line(detail)].append(node)
        lines += ["", f"## Skipped ({sum(map(len, reasons.values()))}), by reason", ""]
        for reason, nodes in sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            example = nodes[0].split("::", 1)[-1]
            lines.append(f"- {len(nodes)} × {reason} (e.g. `{example}`)")
        if not reasons:
            lines.append("None.")
        lines += _validation_warnings()
        return "\n".join(lines) + "\n"


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + " …"


def _validation_warnings(shown: int = 10) -> list[str]:
    """The validator's warnings, when test_validation.py ran and keeps them in ``WARNINGS``."""
    module = next((m for name, m in list(sys.modules.items())
                   if name.split(".")[-1] == "test_validation" and "conformance_tests" in str(getattr(m, "__file__", ""))),
                  None)
    warnings = getattr(module, "WARNINGS", None)
    if not isinstance(warnings, list):
        return []
    lines = ["", f"## Validator warnings ({len(warnings)})", ""]
    lines += [f"- {_one_line(str(w), 300)}" for w in warnings[:shown]]
    if len(warnings) > shown:
        lines.append(f"- … and {len(warnings) - shown} more")
    return lines
