"""House rules that a reviewer would otherwise have to remember (ARCHITECTURE.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fhir_server"
PURE = ("search", "consent", "resources")
PURE_FILES = ("auth/scopes.py", "auth/access.py", "audit/balp.py")  # what a token allows; AuditEvent builders


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", [p for d in PURE for p in sorted((PACKAGE / d).rglob("*.py"))]
                         + [PACKAGE / f for f in PURE_FILES], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_modules_do_no_io(path: Path) -> None:
    """Rule 1: search/, consent/, resources/ (and the pure parts of auth/ and audit/) never import
    flask, pymongo or the storage layer."""
    assert not _imports(path) & {"flask", "werkzeug", "pymongo", "bson", "storage", "http"}


def test_only_storage_imports_pymongo() -> None:
    for path in PACKAGE.rglob("*.py"):
        if "storage" in path.parts:
            continue
        assert "pymongo" not in _imports(path), path
