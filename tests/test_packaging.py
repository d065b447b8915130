"""The wheel installs nothing under a generic top-level name: every import name starts with
``searchkit`` (the repository's indexer/, trainer/ and cli/ are mapped by the build)."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "searchkit"
OUTER = ("searchkit.indexer", "searchkit.trainer", "searchkit.cli")


@pytest.mark.integration
def test_wheel_installs_only_searchkit_names(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("searchkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"searchkit"}
    for package in ("indexer", "trainer", "cli"):
        assert f"searchkit/{package}/__init__.py" in names
    assert any(n.startswith("searchkit/models/searchkit-lite/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "searchkit = searchkit.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_library_never_imports_its_users():
    """searchkit's own modules (encoders, store, index, search, web) import none of
    searchkit.indexer, searchkit.trainer, searchkit.cli, nor the old top-level names."""
    offenders = {}
    for path in CORE.rglob("*.py"):
        bad = {m for m in _imports(path)
               if m.startswith(OUTER) or m.split(".")[0] in ("indexer", "trainer", "cli")}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_no_module_imports_the_old_top_level_names():
    old = {}
    for folder in ("searchkit", "indexer", "trainer", "cli", "tests", "bench", "recipes"):
        for path in (REPO / folder).rglob("*.py"):
            bad = {m for m in _imports(path) if m.split(".")[0] in ("indexer", "trainer", "cli")}
            if bad:
                old[str(path.relative_to(REPO))] = sorted(bad)
    assert old == {}
