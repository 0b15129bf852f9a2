"""docs/extending.md, followed literally: its code blocks are written as the files they name and
run here, in this process (fast tier): the toy method's mixing, the toy source's images, the toy
kind's trials through the real CLI entry point; the registries' lazy entry points (a real
distribution on ``sys.path``, found by ``importlib.metadata``) and a broken plug-in's one line; the
table of kinds; ``raypair.api`` (the same parser and commands: ConfigError, never an exit).
The installed plug-in package, trained on a real Ray through both the CLI and the API, is
tests/test_plugins.py."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
QUICK = ROOT / "search_spaces" / "quickstart.yaml"
ABLATION = ROOT / "tests" / "data" / "ablation_digits.yaml"
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
    assert [(t.key, exp.run_of(t.params).seed) for t in trials] == [("seed0", 0), ("seed1", 1)]
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


# ------------------------------------------------------------------------------ the table of kinds
@pytest.mark.parametrize("raw, kind", [
    ({"variants": {}}, "ablation"), ({"factors": {}, "run": {}}, "ablation"), ({"space": {}}, "space"),
    ({"tune": {}}, "space"), ({"run": {}}, "space"), ({"base": "x.yaml"}, "space"), ({"epochs": 1}, "run"),
    ({}, "run"), ({"kind": "space", "variants": {}}, "space")])
def test_files_are_recognised_by_their_keys(raw, kind):
    from raypair.experiments.kinds import kind_of

    assert kind_of(raw).name == kind


def test_an_unknown_kind_is_one_line(tmp_path, capsys):
    from raypair.cli import main

    (tmp_path / "x.yaml").write_text("kind: nope\nname: x\n")
    assert main(["run", str(tmp_path / "x.yaml")]) == 2
    assert capsys.readouterr().err == ("raypair: error: kind: unknown experiment kind (valid: ablation, run, space) "
                                       "(got 'nope')\n")


def test_each_command_takes_its_kinds(capsys):
    from raypair.cli import main

    assert main(["ablate", str(QUICK)]) == 2
    assert "is a search-space file (space:, run: or tune:), not an ablation file (variants: or factors:); " \
           "use raypair tune" in capsys.readouterr().err
    assert main(["train", str(ABLATION)]) == 2
    err = capsys.readouterr().err
    assert "not a run file or a search-space file (space:, run: or tune:); use raypair ablate" in err


# ------------------------------------------------------------------------------------ the API
def test_the_api_validates_as_the_command_does(capsys):
    from raypair import api
    from raypair.cli import main

    assert main(["validate", str(ABLATION), "--quick"]) == 0
    assert api.validate(ABLATION, quick=True) == yaml.safe_load(capsys.readouterr().out)
    assert api.validate(QUICK, set={"epochs": 3, "optim.momentum": 0.5})["run"]["optim"]["momentum"] == 0.5


@pytest.mark.parametrize("call, line", [
    (lambda api: api.validate(QUICK, seeds=[1]), "--seeds: only an ablation file takes it"),
    (lambda api: api.tune(QUICK, num_samples=0), "--num-samples: must lie in [1, 100000] (got 0)"),
    (lambda api: api.tune(QUICK, bogus=1), "--bogus: unrecognized argument"),
    (lambda api: api.ablate(QUICK), "ablation: is a search-space file"),
    (lambda api: api.status("nothing_here", storage="/nonexistent-raypair"), "name: no experiment of that name"),
])
def test_bad_input_to_the_api_raises_config_error(call, line):
    from raypair import api

    with pytest.raises(api.ConfigError) as err:
        call(api)
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_keywords_become_the_command_line():
    from raypair.api import argv

    assert argv({"num_samples": 4, "quick": True, "resume": False, "name": None, "seeds": [0, 1],
                 "set": {"epochs": 2, "optim.lr": 0.5, "method.name": "cutmix"}}) == [
        "--num-samples", "4", "--quick", "--seeds", "0,1", "--set", "epochs=2", "--set", "optim.lr=0.5",
        "--set", "method.name=cutmix"]
    assert argv({"set": ["epochs=2"]}) == ["--set", "epochs=2"]


def test_rows_become_a_data_frame():
    from raypair.api import Rows

    f = Rows([{"key": "t0", "lr": 0.1, "note": "a"}, {"key": "t1", "lr": 1, "note": 2, "extra": True}]).frame()
    assert list(f.columns) == ["key", "lr", "note", "extra"] and len(f) == 2
    assert f["lr"].tolist() == [0.1, 1.0]  # one numeric column
    assert f["note"].tolist() == ["a", "2"]  # mixed types: as text
    assert f["extra"].tolist() == [None, True]
