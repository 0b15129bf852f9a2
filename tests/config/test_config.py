"""Config, search spaces and the CLI's bad-input contract: one line naming the dotted field, exit 2,
nothing started."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raypair.cli import main
from raypair.config import ConfigError, load_run, parse_override, run_model, set_path
from raypair.experiments.sweep import load_sweep

from helpers import QUICK, ROOT


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def quick_with(tmp_path: Path, **changes) -> Path:
    d = yaml.safe_load(QUICK.read_text())
    d.update(changes)
    return write(tmp_path, d)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override, field, value", [
    ("method.name=nosuch", "method.name", "nosuch"),
    ("model.name=resnet_nosuch", "model.name", "resnet_nosuch"),
    ("data.name=nosuch_dataset", "data.name", "nosuch_dataset"),
    ("data.source=nosuch", "data.source", "nosuch"),
    ("optim.lrr=0.1", "optim.lrr", None),
    ("optim.lr=fast", "optim.lr", "fast"),
    ("optim.lr=-1", "optim.lr", "-1"),
    ("data.val_fraction=1.5", "data.val_fraction", "1.5"),
    ("schedule.milestones=[3,2]", "schedule.milestones", None),
    ("tune.num_samples=0", "tune.num_samples", "0"),
    ("scale.workers=3", "batch_size", None),
])
def test_bad_override_is_one_line_exit_2(tmp_path, capsys, override, field, value):
    storage = tmp_path / "runs"
    code, err = run_cli(capsys, "tune", str(QUICK), "--set", override, "--storage", str(storage))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"raypair: error: {field}:"), err
    if value is not None:
        assert value in lines[0]
    assert not storage.exists(), "nothing may start on bad input"


def test_ray_not_started_on_bad_input(tmp_path, capsys):
    import ray

    code, err = run_cli(capsys, "tune", str(QUICK), "--set", "optim.lr=0", "--storage", str(tmp_path / "runs"))
    assert code == 2 and err == "raypair: error: optim.lr: Input should be greater than 0 (got 0)\n", err
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("space, field", [
    ({"optim.nosuch": {"uniform": [0.1, 0.2]}}, "space.optim.nosuch"),
    ({"method.alpha": {"uniform": [0.1, 0.2]}}, "space.method.alpha"),  # erm reads no alpha
    ({"optim.momentum": {"uniform": [0.5, 1.5]}}, "space.optim.momentum"),  # bound out of range
    ({"optim.betas": {"choice": [[0.9, 0.99]]}}, "space.optim.betas"),  # sgd reads no betas
    ({"schedule.gamma": {"uniform": [0.1, 0.5]}}, "space.schedule.gamma"),  # cosine reads no gamma
    ({"optim.lr": {"uniform": [0.2, 0.1]}}, "space.optim.lr"),
    ({"optim.lr": {"loguniform": [0.0, 0.1]}}, "space.optim.lr"),
    ({"optim.lr": {"gaussian": [0.0, 0.1]}}, "space.optim.lr.gaussian"),
    ({"optim.lr": {"grid": [0.1, 0.2]}}, "space.optim.lr"),  # optuna does not grid
])
def test_bad_space(tmp_path, capsys, space, field):
    code, err = run_cli(capsys, "validate", str(quick_with(tmp_path, space=space)))
    assert code == 2
    assert err.startswith(f"raypair: error: {field}:"), err


def test_searched_and_fixed_is_an_error(capsys):
    code, err = run_cli(capsys, "validate", str(QUICK), "--set", "optim.lr=0.1")
    assert code == 2 and "space.optim.lr" in err


def test_unknown_top_level_key(tmp_path, capsys):
    code, err = run_cli(capsys, "validate", str(quick_with(tmp_path, tunes={})))
    assert code == 2 and err.startswith("raypair: error: tunes: unknown key")


def test_wrong_type(tmp_path, capsys):
    d = yaml.safe_load(QUICK.read_text())
    d["run"]["epochs"] = "many"
    code, err = run_cli(capsys, "validate", str(write(tmp_path, d)))
    assert code == 2 and err.startswith("raypair: error: epochs:") and "'many'" in err


def test_missing_file(tmp_path, capsys):
    code, err = run_cli(capsys, "tune", str(tmp_path / "nope.yaml"))
    assert code == 2 and err.startswith("raypair: error: space: no such file") and "nope.yaml" in err
    assert len(err.strip().splitlines()) == 1


def test_yaml_syntax_error_names_line(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nrun:\n  epochs: [1, 2\n")
    code, err = run_cli(capsys, "validate", str(p))
    assert code == 2 and err.startswith("raypair: error: file:") and "bad.yaml: line " in err
    assert "YAML syntax error" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_dataset_says_where_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path / "empty"))
    code, err = run_cli(capsys, "validate", str(QUICK), "--set", "data.name=cifar10")
    assert code == 2 and err.startswith("raypair: error: data.name:")
    assert "RAYPAIR_DATA" in err and str(tmp_path / "empty") in err


def test_data_source_is_checked_against_the_registered_sources(capsys):
    code, err = run_cli(capsys, "validate", str(QUICK), "--set", "data.source=hf")
    assert code == 2
    assert err.strip() == ("raypair: error: data.source: unknown data source "
                           "(valid: auto, cifar, imagefolder, parquet, sklearn, webdataset) (got 'hf')")


@pytest.mark.slow
def test_exit_code_in_a_real_process(tmp_path):
    out = subprocess.run([sys.executable, "-m", "raypair", "validate", str(QUICK), "--set", "epochs=-3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "raypair: error: epochs: Input should be greater than or equal to 1 (got -3)"


def test_validate_prints_resolved_space(capsys):
    assert main(["validate", str(QUICK)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["space"]["optim.lr"] == {"loguniform": [0.005, 0.5]}
    assert out["run"]["method"] == {"name": "erm", "aug": "base+", "label_smoothing": 0.0}
    assert out["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.0}


def test_every_search_space_validates():
    paths = sorted((ROOT / "search_spaces").glob("*.yaml"))
    assert QUICK in paths and len(paths) >= 2, paths  # the loop below checks something
    for path in paths:
        sweep = load_sweep(path)
        assert sweep.space, path
        assert sweep.tune.num_samples >= 1


def test_trial_run_applies_params():
    sweep = load_sweep(QUICK)
    run = sweep.trial_run({"optim.lr": 0.123, "method.label_smoothing": 0.05})
    assert run.optim.lr == 0.123 and run.method.label_smoothing == 0.05
    assert sweep.base_run.optim.lr == 0.05  # the base is untouched


def test_overrides_parse_yaml_values():
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=true") == ("a", True)
    with pytest.raises(ConfigError, match="--set"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="^optim.lr: is not a section"):
        set_path({"optim": {"lr": 0.1}}, "optim.lr.x", 1)


def test_run_file_with_overrides(tmp_path):
    p = write(tmp_path, {"model": {"name": "tiny_cnn"}, "method": {"name": "erm"}, "epochs": 2})
    run = load_run(p, ["optim.name=adamw", "optim.lr=0.001"])
    assert run.optim.name == "adamw" and run.optim.lr == 0.001 and run.epochs == 2
    assert run.optim.inactive() == {"momentum", "nesterov"}


def test_set_can_narrow_or_drop_a_searched_knob(tmp_path):
    sweep = load_sweep(QUICK, ["space.optim.lr={uniform: [0.01, 0.02]}", "space.method.label_smoothing=null"])
    assert sweep.space["optim.lr"].uniform == (0.01, 0.02)
    assert "method.label_smoothing" not in sweep.space and "optim.weight_decay" in sweep.space
    with pytest.raises(ConfigError, match="^space.optim.lr:"):
        load_sweep(QUICK, ["space.optim.lr={uniform: [0.02, 0.01]}"])


def test_int_space_is_integer(tmp_path):
    p = quick_with(tmp_path, space={"epochs": {"int": [2, 5]}}, tune={"scheduler": {"name": "none"}})
    sweep = load_sweep(p)
    assert sweep.space["epochs"].int == (2, 5)
    with pytest.raises(ConfigError, match="^space.epochs.int"):
        load_sweep(quick_with(tmp_path, space={"epochs": {"int": [2.5, 5]}}))


def test_a_run_field_a_method_overrides_cannot_be_swept(tmp_path):
    """VPL's per-branch learning rates replace optim.lr: sweeping optim.lr would change nothing."""
    p = quick_with(tmp_path, run={"method": {"name": "vpl"}, "model": {"name": "tiny_cnn"},
                                  "optim": {"name": "adamw", "lr": 0.001}},
                   space={"optim.lr": {"loguniform": [1e-4, 1e-2]}})
    with pytest.raises(ConfigError, match="^space.optim.lr: is not read"):
        load_sweep(p)


def test_method_cross_check_names_the_method_field(capsys):
    code, err = run_cli(capsys, "validate", str(QUICK), "--set", "method.name=vpl", "--set", "method.x=70",
                        "--set", "method.y=40", "--set", "space.method.label_smoothing=null")
    assert code == 2 and err.startswith("raypair: error: method.y: x + y must be <= 100"), err


def test_main_command_without_data_is_the_one_line_data_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path / "nodata"))
    code, err = run_cli(capsys, "tune", str(ROOT / "search_spaces" / "omega.yaml"), "--storage", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("raypair: error: data.name: dataset not found") and "RAYPAIR_DATA" in err
    assert not (tmp_path / "r").exists()


def test_the_loader_leaves_the_crop_to_a_method_that_crops_the_original_itself():
    """PairTraining's RF is a crop of the original (P0): under rf_of original on the cifar pipeline the
    training loader hands over un-augmented images; otherwise it crops as aug says."""
    from raypair.config import loader_aug

    def method(**m):
        return run_model().model_validate({"method": m}).method

    pt = {"name": "pair_training"}
    assert loader_aug(method(**pt), "cifar") == (False, None)
    assert loader_aug(method(**pt), "imagenet") == (True, None)  # RRC stays the loader's
    assert loader_aug(method(**pt, rf_of="x_z"), "cifar") == (True, None)
    assert loader_aug(method(**pt, stage_ops="cutout"), "cifar") == (True, None)  # no op crops
    assert loader_aug(method(name="erm", aug="base+aa_cifar10"), "cifar") == (True, "cifar10")
