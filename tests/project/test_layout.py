"""The tests mirror the package, and no test helper is written twice.

Every test file sits in tests/<layer>/, a layer being a package or module of raypair/ (or
tests/project/ for what spans the project: README, install, tiers, benchmarks, the mutation-kill
suites); the shared builders are tests/helpers.py and the shared fixtures tests/conftest.py, and
no two modules define a helper (a function, a class or a module constant) of the same name and
the same body, so copies cannot come back.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from helpers import ROOT

TESTS = ROOT / "tests"
SHARED = {"helpers.py", "conftest.py"}  # the only Python files in tests/ itself


def layers() -> set[str]:
    pkg = ROOT / "raypair"
    found = {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    found |= {p.stem for p in pkg.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return found | {"project"}


def python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def test_every_test_file_is_in_the_folder_of_a_layer():
    known = layers()
    misplaced = []
    for path in python_files():
        rel = path.relative_to(TESTS)
        if len(rel.parts) == 1:
            ok = rel.name in SHARED
        else:
            ok = len(rel.parts) == 2 and rel.parts[0] in known and rel.name.startswith("test_")
        if not ok:
            misplaced.append(rel.as_posix())
    assert not misplaced, f"not in tests/<layer>/test_*.py (layers: {sorted(known)}): {misplaced}"
    assert {p.parent.name for p in TESTS.glob("*/test_*.py")} >= {"ops", "methods", "runner", "project"}


def test_test_file_names_are_unique():
    """pytest imports each test file by its name (its folder on sys.path, no __init__.py): two of one
    name would collide."""
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.glob("*/test_*.py"):
        seen[path.name].append(path.parent.name)
    assert not {n: f for n, f in seen.items() if len(f) > 1}


def test_no_test_module_imports_another():
    """What two test modules share lives in tests/helpers.py or tests/conftest.py."""
    bad = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(TESTS)}: {n}" for n in names if n.split(".")[0].startswith(("test_", "conftest"))]
    assert not bad, bad


def definitions(path: Path) -> dict[str, str]:
    """Top-level helper name -> its body (the AST, docstring and positions left out); tests, and
    ``pytestmark`` (a tier marker every module of a tier states), left out."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not node.name.startswith("test_"):
                body = node.body[1:] if ast.get_docstring(node) is not None else node.body
                out[node.name] = ast.dump(ast.Module(body=body, type_ignores=[]))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id != "pytestmark":
                    out[target.id] = ast.dump(node.value)
    return out


def copies(paths: list[Path], base: Path = TESTS) -> list[str]:
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        for name, body in definitions(path).items():
            where[name, body].append(path.relative_to(base).as_posix())
    return [f"{name} in {files}" for (name, _), files in sorted(where.items()) if len(files) > 1]


def test_no_helper_is_written_twice():
    assert not copies(python_files())
    shared = set(definitions(TESTS / "helpers.py"))
    again = {p.relative_to(TESTS).as_posix(): sorted(shared & set(definitions(p)))
             for p in python_files() if p.name != "helpers.py"}
    assert not {k: v for k, v in again.items() if v}, "defined again beside tests/helpers.py"


def test_the_copy_check_sees_a_copy(tmp_path):
    """The check bites: the same helper in two files is found, a same-named one with another body is not."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('def make(seed):\n    """One."""\n    return seed + 1\n\nINFO = dict(n=10)\n')
    b.write_text('def make(seed):\n    return seed + 1\n\nINFO = dict(n=10)\npytestmark = 1\n')
    c.write_text('def make(seed):\n    return seed + 2\n\npytestmark = 1\n')
    assert copies([a, b, c], tmp_path) == ["INFO in ['a.py', 'b.py']", "make in ['a.py', 'b.py']"]
    assert copies([a, c], tmp_path) == []
