"""A new kind of experiment, defined in this file and nowhere else, registered in the table of kinds
and run through the real CLI entry point (``raypair run``) and ``raypair.api`` on a real local Ray
into a real MLflow store: no line of the CLI or the runner knows it."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from test_ray import QUICK, local_ray, mlflow_runs  # noqa: F401 - the isolated local Ray of the ray tier

pytestmark = pytest.mark.ray


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
        run_raw: dict
        knob: str
        values: list
        metric: str = "val_acc"
        mode: str = "max"
        max_concurrent: int = 2

        def run_of(self, params: dict[str, Any]):
            return build_run(set_path(self.run_raw, self.knob, params["value"]))

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
            run = load_sweep(QUICK, ["epochs=1", *opts.overrides], check=False).run_raw
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


def test_a_kind_defined_here_runs_through_the_cli_and_the_api(local_ray, grid_file, tmp_path, capsys):  # noqa: F811
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


def test_the_api_tunes_and_reports_as_the_cli_does(local_ray, tmp_path):  # noqa: F811
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
