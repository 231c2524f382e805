"""The package's layout rules, read from the imports themselves (not by convention).

context -> capture -> entry -> store -> surfaces (web, cli, export, demo); integrity
beside the store. Every import counts, those inside functions and under
TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "whodid"
SURFACES = ("whodid.web", "whodid.cli", "whodid.export", "whodid.demo", "whodid.stream")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """``whodid.store.drivers.sqlite`` -> ``whodid.store``; top-level modules are their own."""
    parts = module.split(".")
    return ".".join(parts[:2])


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in ``module``, relative ones resolved."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def whodid_imports(module: str) -> set[str]:
    targets = set()
    for target, names in imports(module):
        if target == "whodid":
            targets |= {f"whodid.{n}" for n in names if f"whodid.{n}" in MODULES} or {"whodid"}
        elif target.startswith("whodid."):
            targets.add(target)
    return targets


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_modules_are_found():
    assert {"whodid.context", "whodid.capture.orm", "whodid.store.writer"} <= set(MODULES)


def test_context_imports_no_other_whodid_module():
    assert whodid_imports("whodid.context") == set()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "whodid.capture")))
def test_capture_never_imports_the_surfaces(module):
    assert [t for t in whodid_imports(module) if under(t, *SURFACES)] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "whodid.store")))
def test_store_never_imports_capture_the_surfaces_or_the_auditor(module):
    banned = ("whodid.capture", "whodid.auditor", "whodid.integrity", *SURFACES)
    assert [t for t in whodid_imports(module) if under(t, *banned)] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if under(m, "whodid.entry")))
def test_entry_imports_only_entry(module):
    assert [t for t in whodid_imports(module) if not under(t, "whodid.entry")] == []


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if under(m, "whodid.web", "whodid.cli", "whodid.demo"))
)
def test_web_cli_and_demo_reach_the_database_only_through_the_auditor(module):
    text = MODULES[module].read_text()
    assert re.findall(r"\bauditor\._\w+|\._bind\(", text) == []
    # No table of their own to select from: the schema is the store's business.
    assert [t for t, n in imports(module) if t == "whodid.store.schema" and "entries" in n] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_private_name_of_another_package(module):
    offenders = []
    for target, names in imports(module):
        if not target.startswith("whodid"):
            continue
        if package_of(target) == package_of(module):
            continue
        offenders += [f"{target}.{n}" for n in names if n.startswith("_")]
    assert offenders == []
