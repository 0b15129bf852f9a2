"""The README's three set-up commands are what CI runs; the README stays short, in its order, and
its links, commands, paths and layer map are true; the layering rules hold."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import ROOT


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
    "api": {"cli", "config", "experiments"},  # the commands as Python functions
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


README_SECTIONS = ["What raypair is", "Quickstart", "How a trial flows", "Commands", "Files", "Data",
                   "Scale", "Troubleshooting", "Documentation"]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_at_most_300_lines():
    """Measurements, mechanism notes and long tables live in docs/, linked from the README."""
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 300, n


def test_readme_sections_come_in_reading_order():
    """What it is, the quickstart, how a trial flows (with the glossary), then the reference parts."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    assert re.findall(r"^## (.+)$", text, flags=re.M) == README_SECTIONS
    assert "### Glossary" in text.split("## Commands")[0].split("## How a trial flows")[1]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_every_relative_link_points_to_a_file_that_exists():
    """In README.md and docs/*.md: each relative link's file exists, and a #anchor names a heading."""
    bad = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                bad.append(f"{doc.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                bad.append(f"{doc.name}: {target} (no such heading)")
    assert not bad, bad


def code_of(path: Path) -> list[str]:
    """The code a Markdown file shows: each line of its fenced blocks, and each inline code span."""
    text = path.read_text()
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    indented = re.findall(r"^    (\S.*)$", rest, flags=re.M)
    return [line for b in blocks for line in b.splitlines()] + indented + re.findall(r"`([^`\n]+)`", rest)


def test_every_raypair_command_shown_is_real():
    """Each ``raypair CMD`` in the code of the README and docs/ is a subcommand of the real parser,
    and each ``--option`` after it (up to the next shell separator) is one of that subcommand's."""
    import raypair.cli

    commands = next(a for a in raypair.cli.parser()._actions if a.dest == "command").choices
    shown, bad = set(), []
    for doc in DOCS:
        for code in code_of(doc):
            # raypair as a command: a line's first word, after "$ ", "&& ", "-m ", a path or VAR=value
            for m in re.finditer(r"(?:^|\$ |&& |-m |/|=\S* )raypair ([a-z][a-z_-]*)(.*)", code.strip()):
                cmd, tail = m.group(1), re.split(r"\||&&|;|#|\)", m.group(2))[0]
                shown.add(cmd)
                if cmd not in commands:
                    bad.append(f"{doc.name}: raypair {cmd}")
                    continue
                for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", tail):
                    if opt not in commands[cmd]._option_string_actions:
                        bad.append(f"{doc.name}: raypair {cmd} {opt}")
    assert not bad, bad
    assert set(commands) <= shown, set(commands) - shown  # the README's table names every command


def test_paths_the_docs_name_exist():
    """A repository path in code (``raypair/...``, ``tests/...``, ``ablations/*.yaml``) exists; a test
    file named alone (``test_cluster.py::test_x``) exists somewhere under tests/, with that test."""
    tests = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    bad = []
    for doc in DOCS:
        if doc.name == "extending.md":
            continue  # a how-to: it names the files you are about to write
        for code in code_of(doc):
            for path in re.findall(r"^((?:raypair|tests|benchmarks|search_spaces|ablations|docs)/[\w./*-]*)$", code):
                if not list(ROOT.glob(path.rstrip("/"))):
                    bad.append(f"{doc.name}: {path}")
            for name, test in re.findall(r"^(test_\w+\.py)(?:::(\w+))?$", code):
                if name not in tests or (test and f"def {test}(" not in tests[name].read_text()):
                    bad.append(f"{doc.name}: {name}::{test}")
    assert not bad, bad


def test_the_layer_map_in_the_docs_is_the_enforced_one():
    """docs/architecture.md's table says, for every layer, exactly what LAYERS allows (registry
    aside: every layer may import it, and the page says so)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The layer map")[1].split("\n## ")[0]
    doc = {}
    for row in re.findall(r"^\| `(\w+)` \| ([^|]*) \|", table, flags=re.M):
        doc[row[0]] = set(re.findall(r"`(\w+)`", row[1]))
    # a layer the table names that the package does not have (yet) is not compared
    shown = {layer: names & set(LAYERS) for layer, names in doc.items()}
    wrong = {layer: (sorted(shown.get(layer, {"(no row)"})), sorted(allowed - {"registry"}))
             for layer, allowed in LAYERS.items() if shown.get(layer) != allowed - {"registry"}}
    assert not wrong, wrong
    assert "every layer may import it" in re.sub(r"\s+", " ", text)


@pytest.mark.slow
def test_help_is_fast_and_lazy():
    import subprocess
    import sys

    code = ("import sys, raypair.cli; raypair.cli.parser(); "
            "print(any(m in sys.modules for m in ('torch', 'ray', 'mlflow', 'timm', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_no_function_over_40_lines_and_one_over_30_says_why():
    """A function's length is its lines from ``def`` to its last, docstring included (the AST's
    ``end_lineno - lineno + 1``); one over 30 lines holds a ``# over 30 lines: <why>`` comment."""
    bad = []
    for path in (ROOT / "raypair").rglob("*.py"):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n, where = node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT).as_posix()}:{node.name}"
            says_why = any("# over 30 lines:" in ln for ln in lines[node.lineno - 1:node.end_lineno])
            if n > 40:
                bad.append(f"{where}: {n} lines, over 40")
            elif n > 30 and not says_why:
                bad.append(f"{where}: {n} lines, no '# over 30 lines: <why>' comment")
    assert not bad, "\n".join(sorted(bad))
