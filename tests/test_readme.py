"""The README's two set-up commands are what CI runs, and the layering rules hold."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:3]]


def test_ci_runs_the_readme_commands_verbatim():
    """Install + quickstart, the fast tier, the slow tiers: each README command is a line of
    .ci/run (a pytest line may be wrapped by the exit-5 check), in that order."""
    install, fast, slow = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    at = [next((i for i, line in enumerate(ci) if line == cmd or line.endswith(" " + cmd)), None)
          for cmd in (install, fast, slow)]
    assert None not in at, dict(zip((install, fast, slow), at))
    assert at == sorted(at)
    assert "tune search_spaces/quickstart.yaml" in install
    assert fast == ".venv/bin/pytest -q"  # the fast tier is the default run
    assert "slow or ray" in slow and "not soak" in slow


def test_every_test_is_in_exactly_one_tier_and_ci_runs_all_but_soak():
    """The default -m (pyproject addopts) and CI's slow command cover every collected test once; the
    tiers are the markers declared (and only those, --strict-markers)."""
    import tomllib

    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in ini["addopts"]
    fast = ini["addopts"][ini["addopts"].index("-m") + 1]
    slow = readme_commands()[2].split("-m ", 1)[1].strip().strip('"')
    declared = {m.split(":")[0] for m in ini["markers"]}
    assert declared == {"slow", "ray", "soak", "gpu"}
    for marks in [set(), {"slow"}, {"ray"}, {"soak"}, {"ray", "soak"}, {"slow", "ray"}, {"gpu"}, {"gpu", "slow"}]:
        env = {m: m in marks for m in declared}
        in_fast, in_slow = eval(fast, {}, env), eval(slow, {}, env)  # noqa: S307 - our own marker expressions
        assert not (in_fast and in_slow), marks
        assert in_fast or in_slow or "soak" in marks, marks


def imports_of(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
    return mods


# layer folder -> the raypair layers it may import (a layer may always import itself)
LAYERS = {
    "ops": set(),
    "config": set(),  # data.source is checked where the data is resolved (data/sources)
    "models": {"config"},
    "methods": {"ops", "config", "models", "registry"},
    "data": {"ops", "config", "registry"},
    "loop": {"ops", "methods", "models", "data", "config"},
    "preview": {"ops", "methods", "models", "data", "config"},
    "experiments": {"config", "registry"},
    "tracking": {"config"},
    "report": {"config", "experiments", "tracking"},
    # Ray-free: the trial store reads and writes the loop's checkpoint file (lazily, in the trial's
    # process); the Book writes MLflow through tracking
    "trials": {"config", "experiments", "tracking", "loop"},
    "runner": {"config", "experiments", "trials", "tracking", "loop", "data", "models"},
    "cli": {"config", "experiments", "trials", "runner", "tracking", "report", "data", "models", "preview"},
}


def test_dependencies_point_one_way():
    """Ray only in raypair/runner/, MLflow only in raypair/tracking/, no exceptions; and each layer
    imports only the layers below it."""
    pkg = ROOT / "raypair"
    seen = set()
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg)
        layer = rel.parts[0].removesuffix(".py")
        if layer in ("__init__", "__main__", "registry"):
            continue
        seen.add(layer)
        mods = imports_of(path)
        top = {m.split(".")[0] for m in mods}
        assert "ray" not in top or layer == "runner", f"{rel} imports Ray"
        assert "mlflow" not in top or layer == "tracking", f"{rel} imports MLflow"
        used = {m.split(".")[1] for m in mods if m.startswith("raypair.")}
        assert used - {layer} <= LAYERS[layer] | {"registry"}, f"{rel} imports {sorted(used - LAYERS[layer] - {layer})}"
    assert seen == set(LAYERS), seen ^ set(LAYERS)


def import_graph() -> dict[str, set[str]]:
    """raypair's modules and the raypair modules each imports, at module level or inside a function
    or ``if TYPE_CHECKING:`` alike (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    pkg = ROOT / "raypair"
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in paths}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]) if node.level else ""
                mod = ".".join(p for p in (base, node.module or "") if p)
                for a in node.names:
                    out |= {f"{mod}.{a.name}"} if f"{mod}.{a.name}" in paths else {mod} & set(paths)
        graph[name] = out - {name}
    return graph


def test_no_import_cycle():
    """No module of raypair imports, through any chain of imports, itself."""
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(mod: str, path: list[str]) -> list[str]:
        state[mod] = 1
        for dep in sorted(graph[mod]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [mod, dep] if dep in path else [mod, dep]
            if dep not in state and (found := cycle_from(dep, path + [mod])):
                return found
        state[mod] = 2
        return []

    for mod in sorted(graph):
        if mod not in state:
            found = cycle_from(mod, [])
            assert not found, " -> ".join(found)


def test_no_module_over_300_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in (ROOT / "raypair").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


@pytest.mark.slow
def test_help_is_fast_and_lazy():
    import subprocess
    import sys

    code = ("import sys, raypair.cli; raypair.cli.parser(); "
            "print(any(m in sys.modules for m in ('torch', 'ray', 'mlflow', 'timm', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
