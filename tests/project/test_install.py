"""Install honesty: every package the code imports is declared (not merely pulled in by another
package), the test extra brings what the tiers and the README's mutation command need, and every
declared package has a tested pin in constraints.txt.

"Declared" is read from the installed distribution's metadata (what ``pip install -e '.[test]'`` put
there from pyproject.toml), and the import-to-distribution map from the environment itself
(``importlib.metadata.packages_distributions``), so neither side comes from a list kept here.
"""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from helpers import ROOT


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """extra ('' for the core dependencies) -> normalised distribution names."""
    out: dict[str, set[str]] = {}
    for req in metadata.requires("raypair") or []:
        name = _norm(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        out.setdefault(extra.group(1) if extra else "", set()).add(name)
    return out


def tops_of(path: Path) -> set[str]:
    """The top-level modules ``path`` imports (absolute imports)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        out |= {name.split(".")[0] for name in names}
    return out


def imported_top_levels(folder: Path) -> dict[str, str]:
    """Top-level module -> the first file importing it (absolute imports, stdlib and local left out)."""
    local = {p.stem for p in folder.glob("*.py")} | {"raypair"}
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for top in sorted(tops_of(path)):
            if top not in sys.stdlib_module_names and top not in local:
                out.setdefault(top, str(path.relative_to(ROOT)))
    return out


def _undeclared(folder: str, allowed: set[str]) -> list[str]:
    dists = metadata.packages_distributions()
    bad = []
    for top, where in imported_top_levels(ROOT / folder).items():
        owners = {_norm(d) for d in dists.get(top, [])}
        if not owners & allowed:
            bad.append(f"{top} (imported by {where}; installed by {sorted(owners) or 'nothing'})")
    return bad


def test_the_package_imports_only_its_declared_dependencies():
    """The core dependencies, and the dashboard extra in the one module that serves it (``raypair
    ui`` starts that module only when the extra is installed)."""
    d = declared()
    assert not _undeclared("raypair", d[""] | d["dashboard"])
    users = {str(p.relative_to(ROOT)) for p in (ROOT / "raypair").rglob("*.py") if "optuna_dashboard" in tops_of(p)}
    assert users == {"raypair/cli/dashboard.py"}, users


def test_the_benchmarks_import_only_declared_dependencies():
    assert not _undeclared("benchmarks", declared()[""])


def test_the_tests_import_only_the_dependencies_and_the_test_extra():
    d = declared()
    assert not _undeclared("tests", d[""] | d["test"])


def test_the_test_extra_brings_the_tiers_and_the_mutation_run():
    test = declared()["test"]
    assert {"pytest", "pytest-timeout", "hypothesis", "mutmut", "psutil", "optuna-dashboard"} <= test


def test_every_declared_package_has_a_tested_pin():
    pins = {_norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", (ROOT / "constraints.txt").read_text(), re.M)}
    names = set().union(*declared().values())
    assert names - pins == set(), f"declared but not pinned in constraints.txt: {sorted(names - pins)}"
