"""raypair.api: the CLI's own parser and commands as functions (ConfigError, never an exit),
keywords as options, rows and DataFrames; and (ray tier) a sweep tuned, reported and looked at
through it on a real local Ray, against what the trial store and MLflow hold."""
from __future__ import annotations

import pytest
import yaml

from helpers import DIGITS, QUICK, mlflow_runs


# ------------------------------------------------------------------------------------ the API
def test_the_api_validates_as_the_command_does(capsys):
    from raypair import api
    from raypair.cli import main

    assert main(["validate", str(DIGITS), "--quick"]) == 0
    assert api.validate(DIGITS, quick=True) == yaml.safe_load(capsys.readouterr().out)
    assert api.validate(QUICK, set={"epochs": 3, "optim.momentum": 0.5})["run"]["optim"]["momentum"] == 0.5


@pytest.mark.parametrize("call, line", [
    (lambda api: api.validate(QUICK, seeds=[1]), "--seeds: only an ablation file or a seeds-until-decided ablation file takes it"),
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


@pytest.mark.ray
def test_the_api_tunes_and_reports_as_the_cli_does(local_ray, tmp_path):
    from raypair import api

    storage = str(tmp_path / "runs")
    rows = api.tune(QUICK, storage=storage, name="api-sweep", num_samples=2,
                    set={"epochs": 1, "tune.searcher.name": "random", "tune.scheduler.name": "none"})
    assert sorted(r["key"] for r in rows) == ["t0000", "t0001"] and {r["status"] for r in rows} == {"finished"}
    assert all(0.005 <= r["optim.lr"] <= 0.5 and r["epochs"] == 1 for r in rows)  # the space's bounds
    _, parents, children = mlflow_runs(tmp_path / "runs", "api-sweep")
    assert len(parents) == 1 and len(children) == 2

    table = api.report("api-sweep", storage=storage, top=2)  # report.csv's rows, as the command writes it
    assert (tmp_path / "runs" / "api-sweep" / "report" / "report.md").is_file()
    # (the table's numbers are written to 6 significant digits)
    assert sorted(float(r["best_val_acc"]) for r in table) == pytest.approx(sorted(r["val_acc"] for r in rows), rel=1e-5)
    assert sorted(float(r["optim.lr"]) for r in table) == pytest.approx(sorted(r["optim.lr"] for r in rows), rel=1e-5)
    frame = api.status("api-sweep", storage=storage, frame=True)
    assert sorted(frame["key"]) == ["t0000", "t0001"] and list(frame["status"]) == ["finished"] * 2
