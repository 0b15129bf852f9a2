"""The table of experiment kinds (raypair/experiments/kinds.py): how a file is recognised, which
command takes it, the one-line errors; and a new kind, defined in this file and nowhere else,
registered in the table and run through the real CLI entry point (``raypair run``) and
``raypair.api`` on a real local Ray into a real MLflow store (ray tier): no line of the CLI or the
runner knows it."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from helpers import DIGITS, QUICK, mlflow_runs


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
    assert capsys.readouterr().err == ("raypair: error: kind: unknown experiment kind (valid: ablation, run, sequential, space) "
                                       "(got 'nope')\n")


def test_each_command_takes_its_kinds(capsys):
    from raypair.cli import main

    assert main(["ablate", str(QUICK)]) == 2
    assert "is a search-space file (space:, run: or tune:), not an ablation file (variants: or factors:) or a " \
           "seeds-until-decided ablation file (sequential:); use raypair tune" in capsys.readouterr().err
    assert main(["train", str(DIGITS)]) == 2
    err = capsys.readouterr().err
    assert "not a run file or a search-space file (space:, run: or tune:); use raypair ablate" in err


# ---------------------------------------------------------------- a kind of this file, on Ray
def _grid_kind():
    """kind: grid -- the quickstart's base run at each value of one knob, every value one trial."""
    from raypair.config import build_run, set_path
    from raypair.experiments.base import Described, Experiment, ListProposer, Trial
    from raypair.experiments.kinds import Kind
    from raypair.experiments.sweep import load_sweep

    @dataclass
    class GridExperiment(Experiment):
        kind = "grid"
        name: str
        base_raw: dict
        knob: str
        values: list
        metric: str = "val_acc"
        mode: str = "max"
        max_concurrent: int = 2

        def trial_run(self, params: dict[str, Any]):
            return build_run(set_path(self.base_raw, self.knob, params["value"]))

        def planned_trials(self) -> int:
            return len(self.values)

        def proposer(self, exp_dir, known):
            trials = [Trial(f"v{i}", {"value": v}) for i, v in enumerate(self.values)]
            return ListProposer(trials, self.done_keys(known))

        def describe(self, trial):
            return Described(f"{self.knob}={trial.params['value']}", f"{self.knob}={trial.params['value']}",
                             {"raypair.grid_value": str(trial.params["value"])})

        def parent(self):
            return {"raypair.kind": "grid"}, {"knob": self.knob}, {"knob": self.knob, "values": self.values}

        def view_keys(self):
            return [("tags", "raypair.grid_value")]

    class GridKind(Kind):
        name, words = "grid", "a grid file (kind: grid)"

        def load(self, path, opts):
            raw = yaml.safe_load(open(path))
            run = load_sweep(QUICK, ["epochs=1", *opts.overrides], check=False).base_raw
            for v in raw["values"]:
                build_run(set_path(run, raw["knob"], v))  # every point checked before anything starts
            return GridExperiment(getattr(opts, "name", None) or raw["name"], run, raw["knob"], raw["values"])

    return GridKind()


@pytest.fixture
def grid_file(tmp_path, monkeypatch):
    import ray

    from raypair.experiments.kinds import KINDS

    KINDS.plug_in()
    monkeypatch.setattr(KINDS, "_items", dict(KINDS._items))
    KINDS.register("grid")(_grid_kind())
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    path = tmp_path / "grid.yaml"
    path.write_text("kind: grid\nname: lr-grid\nknob: optim.lr\nvalues: [0.01, 0.2]\n")
    return path


@pytest.mark.ray
def test_a_kind_defined_here_runs_through_the_cli_and_the_api(local_ray, grid_file, tmp_path, capsys):
    from raypair import api
    from raypair.cli import main

    storage = tmp_path / "runs"
    assert main(["run", str(grid_file), "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "2 trials of grid 'lr-grid':" in out and "2 finished" in out
    assert "optim.lr=0.01" in out and "optim.lr=0.2" in out
    client, parents, children = mlflow_runs(storage, "lr-grid")
    assert len(parents) == 1 and parents[0].data.tags["raypair.kind"] == "grid"
    assert sorted(c.data.params["optim.lr"] for c in children) == ["0.01", "0.2"]
    assert sorted(c.data.tags["raypair.grid_value"] for c in children) == ["0.01", "0.2"]
    assert all(c.data.params["epochs"] == "1" for c in children)
    # the run table's saved view shows the column the kind named (Experiment.view_keys), best first
    exp_id = parents[0].info.experiment_id
    view = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.raypair"])
    assert view["name"] == "grid lr-grid: trials by val_acc"
    assert json.loads(view["state"])["selectedColumns"] == ["tags.`raypair.grid_value`", "metrics.`val_acc`"]
    assert f"#/experiments/{exp_id}/runs?viewStateShareKey=raypair" in out

    rows = api.status("lr-grid", storage=str(storage))  # the trial store, as raypair status reads it
    assert sorted((r["key"], r["status"], r["value"], r["epochs"]) for r in rows) == [
        ("v0", "finished", 0.01, 1), ("v1", "finished", 0.2, 1)]
    assert main(["validate", str(grid_file), "--set", "batch_size=32"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["batch_size"] == 32

    frame = api.run(grid_file, storage=str(storage), name="lr-grid-api", set={"batch_size": 32}, frame=True)
    assert sorted(frame["value"]) == [0.01, 0.2] and set(frame["status"]) == {"finished"}
    assert {"val_acc", "train_loss"} <= set(frame.columns)
    _, parents, children = mlflow_runs(storage, "lr-grid-api")
    assert len(children) == 2 and {c.data.params["batch_size"] for c in children} == {"32"}
