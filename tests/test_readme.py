"""The README's two set-up commands are what CI runs, and the layering rules hold."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_ci_runs_the_readme_commands_verbatim():
    install, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci, install
    assert tests in ci, tests
    assert ci.index(install) < ci.index(tests)
    assert "tune search_spaces/quickstart.yaml" in install


def imports_of(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


def test_dependencies_point_one_way():
    pkg = ROOT / "raypair"
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).as_posix()
        mods = imports_of(path)
        top = {m.split(".")[0] for m in mods}
        if rel not in ("train.py", "tune.py", "ablate.py", "cli.py"):
            assert "ray" not in top, f"{rel} imports Ray"
        if rel not in ("tracking.py", "report.py"):
            assert "mlflow" not in top, f"{rel} imports MLflow"
        if rel.startswith(("ops/", "methods/")) or rel in ("loop.py", "data.py", "sources.py", "models.py",
                                                           "ablation.py", "stats.py", "cifar_nets.py"):
            assert not any(m.startswith(("raypair.train", "raypair.tune", "raypair.tracking", "raypair.cli"))
                           for m in mods), f"{rel} imports an adapter"
        if rel.startswith("ops/"):
            assert not any(m.startswith("raypair.") and not m.startswith("raypair.ops") for m in mods), rel


def test_help_is_fast_and_lazy():
    import subprocess
    import sys

    code = ("import sys, raypair.cli; raypair.cli.parser(); "
            "print(any(m in sys.modules for m in ('torch', 'ray', 'mlflow', 'timm', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
