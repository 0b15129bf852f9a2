"""docs/extending.md, followed literally: its code blocks are written as the files they name and
run here, in this process (fast tier): the toy method's mixing, the toy source's images, the toy
kind's trials through the real CLI entry point; the registries' lazy entry points (a real
distribution on ``sys.path``, found by ``importlib.metadata``) and a broken plug-in's one line.
And (ray tier) the doc's package built and installed with pip into a folder of the test's own (the
project's environment untouched), then, in processes whose path has it, ``raypair validate`` and
``raypair run`` of the toy kind training the toy method on the toy source with the toy model on a
real local Ray, and the same through ``raypair.api``."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from helpers import QUICK, ROOT, mlflow_runs

DOC = ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(?:python|yaml|toml) (\S+)\n(.*?)^```", re.S | re.M)


def doc_files() -> dict[str, str]:
    """Every code block of the doc that names a file: path -> text."""
    return dict(BLOCK.findall(DOC.read_text()))


def write_package(folder: Path) -> Path:
    """The doc's files under ``folder`` (``toy_plugin/`` a package); returns ``folder``."""
    for rel, text in doc_files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / "toy_plugin" / "__init__.py").write_text("")
    return folder


@pytest.fixture
def registries(monkeypatch):
    """raypair's registries as they are now, restored after the test (the toys register into them);
    the RunConfig union rebuilt from them before and after; the toy package forgotten."""
    from raypair.config.methods import CONFIGS
    from raypair.config.run import run_model
    from raypair.data.sources import SOURCES
    from raypair.experiments.kinds import KINDS
    from raypair.methods import METHODS

    for reg in (CONFIGS, METHODS, SOURCES, KINDS):
        reg.plug_in()  # this environment's own plug-ins (none, or whatever is installed) first
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_plugged", True)
    run_model.cache_clear()
    yield
    run_model.cache_clear()
    for name in [m for m in sys.modules if m.split(".")[0] == "toy_plugin"]:
        del sys.modules[name]


@pytest.fixture
def toy(tmp_path, monkeypatch, registries) -> Path:
    """The doc's package, importable (as if installed), each module imported as its entry point would."""
    import importlib

    folder = write_package(tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(folder))
    with warnings.catch_warnings():  # timm: "Overwriting toy_mlp in registry" from the test before
        warnings.simplefilter("ignore", UserWarning)
        for mod in ("flipmix_config", "flipmix", "blobs", "mlp", "repeat"):
            importlib.import_module(f"toy_plugin.{mod}")
    return folder


def test_the_doc_names_every_file_of_the_package():
    assert set(doc_files()) == {"toy_plugin/flipmix_config.py", "toy_plugin/flipmix.py", "toy_plugin/blobs.py",
                                "toy_plugin/mlp.py", "toy_plugin/repeat.py", "toy_plugin/repeat.yaml",
                                "toy_plugin/blobs_run.yaml", "pyproject.toml"}
    eps = re.findall(r'^\[project\.entry-points\."([^"]+)"\]\n(\w+) = "([\w.:]+)"', doc_files()["pyproject.toml"], re.M)
    assert sorted(g for g, _, _ in eps) == ["raypair.kinds", "raypair.methods", "raypair.models", "raypair.sources"]


# ------------------------------------------------------------------------------------ a method
def test_the_toy_method_mixes_each_image_with_the_mirror(toy):
    import torch

    from raypair.config import ConfigError, build_run
    from raypair.methods import METHODS

    with pytest.raises(ConfigError, match=r"^method\.lam: .*less than or equal to 1 \(got 2\)"):
        build_run({"method": {"name": "flipmix", "lam": 2}})
    cfg = build_run({"method": {"name": "flipmix", "lam": 0.8}}).method

    class Info:
        num_classes = 3

    method = METHODS.get("flipmix")(cfg, torch.nn.Identity(), Info())
    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    m = method.mix(x, torch.tensor([0, 2]))
    # by hand: image 0 is 0.8 * 0 + 0.2 * 1, image 1 is 0.8 * 1 + 0.2 * 0; the rows likewise
    assert torch.allclose(m.x[0], torch.full((1, 2, 2), 0.2)) and torch.allclose(m.x[1], torch.full((1, 2, 2), 0.8))
    assert torch.allclose(m.target, torch.tensor([[0.8, 0.0, 0.2], [0.2, 0.0, 0.8]]))


# ------------------------------------------------------------------------------------ a source
def test_the_toy_source_serves_its_blobs(toy):
    from raypair.config import DataConfig
    from raypair.data import load_splits, resolve

    assert resolve(DataConfig(name="blobs")).kind == "blobs"  # found by data.source: auto
    s = load_splits(DataConfig(name="blobs", source="blobs"))
    assert s.info.num_classes == 4 and s.info.image_shape == (3, 8, 8)
    assert s.info.classes == ("k0", "k1", "k2", "k3")
    x, y = s.train_x, s.train_y
    assert len(y) == 4 * 64
    for k in range(4):  # class k is a grey of 40 k + 20, noise within +-8
        assert abs(x[y == k].float().mean().item() - (40 * k + 20)) < 1.0
        assert (x[y == k].int() - (40 * k + 20)).abs().max().item() <= 8


# ----------------------------------------------------------------------------- an experiment kind
def test_the_toy_kind_is_validated_and_refused_by_the_other_commands(toy, capsys):
    from raypair.cli import main
    from raypair.experiments.kinds import KINDS

    path = toy / "toy_plugin" / "repeat.yaml"
    assert main(["validate", str(path), "--set", "epochs=3"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["name"] == "blobs-repeat" and out["run"]["epochs"] == 3
    assert out["run"]["method"] == {"name": "flipmix", "aug": "base+", "lam": 0.8}
    exp = KINDS.get("repeat").load(path, type("Opts", (), {"overrides": [], "name": None})())
    trials = []
    proposer = exp.proposer(toy, {})
    while (t := proposer.propose()) is not None:
        trials.append(t)
    assert [(t.key, exp.trial_run(t.params).seed) for t in trials] == [("seed0", 0), ("seed1", 1)]
    assert main(["tune", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raypair: error: space: is a repeat file (kind: repeat), not a search-space file (space:, "
                          "run: or tune:); use raypair run (got '") and "\n" not in err
    assert main(["validate", str(path), "--set", "method.lam=0"]) == 2  # the base run's own checks
    assert capsys.readouterr().err.startswith("raypair: error: method.lam: ")


def _distribution(folder: Path, entry_points: str) -> None:
    """A real installed distribution's metadata (what pip writes), with these entry points."""
    info = folder / "toy_eps-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-eps\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_a_kind_from_an_entry_point_is_loaded_only_when_asked(tmp_path, monkeypatch, registries, capsys):
    from raypair.cli import main, parser
    from raypair.experiments.kinds import KINDS

    folder = write_package(tmp_path)
    _distribution(folder, "[raypair.kinds]\nrepeat = toy_plugin.repeat:RepeatKind\n"
                          "[raypair.methods]\nflipmix = toy_plugin.flipmix_config:FlipMixConfig\n"
                          "[raypair.sources]\nblobs = toy_plugin.blobs:Blobs\n"
                          "[raypair.models]\ntoy_mlp = toy_plugin.mlp:toy_mlp\n")
    monkeypatch.syspath_prepend(str(folder))
    from raypair.config.methods import CONFIGS
    from raypair.config.model_names import MODEL_PLUGINS
    from raypair.data.sources import SOURCES

    for reg in (KINDS, CONFIGS, SOURCES, MODEL_PLUGINS):
        monkeypatch.setattr(reg, "_plugged", False)
    parser().parse_args(["validate", "x.yaml"])
    assert "toy_plugin" not in sys.modules  # --help and parsing load no plug-in
    assert "repeat" in KINDS.names() and "toy_plugin.repeat" in sys.modules
    assert main(["validate", str(folder / "toy_plugin" / "repeat.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["model"]["name"] == "toy_mlp"
    assert {"toy_plugin.flipmix_config", "toy_plugin.blobs"} <= set(sys.modules)
    # (timm's registry is global: a test before may have put toy_mlp there; tests/test_plugins.py
    # sees the model loaded by its entry point in a fresh process)
    assert "toy_mlp" in MODEL_PLUGINS and "toy_plugin.mlp" in sys.modules
    assert "toy_plugin.flipmix" not in sys.modules  # the torch code waits for a trial


def test_a_broken_plug_in_is_one_line_naming_it(tmp_path, monkeypatch, registries, capsys):
    from raypair.cli import main
    from raypair.experiments.kinds import KINDS

    _distribution(tmp_path, "[raypair.kinds]\nbroken = toy_missing.kind:Nope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(KINDS, "_plugged", False)
    assert main(["validate", str(QUICK)]) == 2
    err = capsys.readouterr().err
    assert err == ("raypair: error: plug-in broken = toy_missing.kind:Nope (entry point group raypair.kinds) failed "
                   "to load: ModuleNotFoundError: No module named 'toy_missing'\n")


# ------------------------------------------------------------------ the package, installed
@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The package installed (offline, no dependency fetched) into ``site``; an environment with it."""
    tmp = tmp_path_factory.mktemp("plugin")
    pkg, site = write_package(tmp / "pkg"), tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, timeout=300, capture_output=True)
    assert (site / "toy_plugin" / "flipmix.py").is_file()
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return pkg, os.environ | {"PYTHONPATH": path.rstrip(os.pathsep)}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.ray
def test_the_installed_plug_ins_run_through_the_cli_and_the_api(plugin_env, tmp_path):
    pkg, env = plugin_env
    exp_file, storage = pkg / "toy_plugin" / "repeat.yaml", tmp_path / "runs"
    lazy = _run(env, "-c", "import sys, raypair.cli; raypair.cli.parser(); "
                "print(sorted(m for m in sys.modules if m.split('.')[0] in ('toy_plugin', 'torch', 'ray')))")
    assert lazy.returncode == 0 and lazy.stdout.strip() == "[]", lazy.stderr

    checked = _run(env, "-m", "raypair", "validate", str(exp_file))
    assert checked.returncode == 0, checked.stderr
    run = yaml.safe_load(checked.stdout)["run"]
    assert (run["method"]["name"], run["data"]["name"], run["model"]["name"]) == ("flipmix", "blobs", "toy_mlp")

    done = _run(env, "-m", "raypair", "run", str(exp_file), "--storage", str(storage))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 trials of repeat 'blobs-repeat':" in done.stdout and "2 finished" in done.stdout
    _, parents, children = mlflow_runs(storage, "blobs-repeat")
    assert len(parents) == 1 and parents[0].data.tags["raypair.kind"] == "repeat"
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    assert {(c.data.params["method.name"], c.data.params["method.lam"], c.data.params["model.name"])
            for c in children} == {("flipmix", "0.8", "toy_mlp")}

    code = ("import json, sys; from raypair import api; "
            "rows = api.run(sys.argv[1], storage=sys.argv[2], name='blobs-api'); "
            "print(json.dumps([rows, api.status('blobs-api', storage=sys.argv[2])]))")
    api = _run(env, "-c", code, str(exp_file), str(storage))
    assert api.returncode == 0, api.stderr[-3000:]
    rows, status = json.loads(api.stdout.strip().splitlines()[-1])
    assert sorted((r["key"], r["status"], r["seed"], r["epochs"]) for r in rows) == [
        ("seed0", "finished", 0, 1), ("seed1", "finished", 1, 1)]
    assert all(0.0 <= r["val_acc"] <= 1.0 for r in rows)
    assert sorted(r["key"] for r in status) == ["seed0", "seed1"]
    _, _, children = mlflow_runs(storage, "blobs-api")
    assert len(children) == 2 and {c.data.params["data.name"] for c in children} == {"blobs"}
