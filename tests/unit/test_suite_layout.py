"""The test suite's own rules: shared helpers live in tests/support/, so no module imports a test
module or a conftest (pytest would collect the imported tests twice or under two names, and a
helper's home would depend on which test happened to need it first); test modules sit in a group."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO_ROOT

TESTS = REPO_ROOT / "tests"
GROUPS = {"unit", "api", "clients", "ops", "adversarial"}


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, as dotted names (`from x import y` gives x and x.y; relative
    imports keep their leading dots)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            names += [f"{base}.{alias.name}" if node.module else base + alias.name for alias in node.names]
    return names


def is_test_module(name: str) -> bool:
    last = name.rstrip(".").rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def test_no_module_imports_a_test_module_or_a_conftest() -> None:
    sources = [*TESTS.rglob("*.py"), *(REPO_ROOT / "bench").rglob("*.py")]
    offenders = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in sources
        for name in imported_modules(path)
        if is_test_module(name)
    ]
    assert len(sources) > 40
    assert offenders == []


def test_the_rule_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import tests.api.test_server\n"
        "from tests.api.test_admin import x\n"
        "from tests import conftest\n"
        "from . import test_audit\n"
        "from .conftest import y\n"
        "from tests.support.server import error_info\n"
    )
    found = [name for name in imported_modules(source) if is_test_module(name)]
    assert found == [
        "tests.api.test_server",
        "tests.api.test_admin",
        "tests.conftest",
        ".test_audit",
        ".conftest",
    ]


def test_test_modules_sit_in_a_group_and_helpers_in_support() -> None:
    strays = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in GROUPS
    ]
    assert strays == []
    assert not [p.name for p in TESTS.glob("*.py") if p.name not in {"__init__.py", "conftest.py"}]
