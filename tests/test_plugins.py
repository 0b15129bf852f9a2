"""A plug-in package from docs/extending.md (the toy method, source, model and kind, with their entry
points) built and installed with pip into a folder of this test's own (the project's environment
is not touched), then, in processes whose path has it: ``raypair validate`` and ``raypair run`` of
the toy kind training the toy method on the toy source with the toy model on a real local Ray, and
the same through ``raypair.api``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_extending import write_package
from test_ray import mlflow_runs

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


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
