"""Every method trains one epoch (SamplePairing two: its warm-up takes the first) through ``raypair
train`` (Ray Train) and through a 2-trial ``raypair tune`` of its search space, and lands in MLflow
with its own params and per-epoch logs. The images are scikit-learn's digits at CIFAR's 32 px (real
scans that ship with a declared dependency), so every method runs under Ray on any machine, with or
without the shared CIFAR-10; the CIFAR-10 files themselves are read by tests/data/test_data.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import ray

from helpers import ROOT

pytestmark = pytest.mark.ray

SMALL = ["data.name=digits", "data.image_size=32", "data.train_subset=160", "data.test_subset=64", "epochs=1",
         "batch_size=32", "model.name=tiny_cnn"]
# method -> (search space, extra overrides for a 1-epoch run, a method-specific param, a logged metric)
CASES = {
    "erm": ("erm_cifar10.yaml", [], "method.label_smoothing", None),
    "cutout": ("cutout.yaml", [], "method.length", None),
    "mixup": ("mixup.yaml", [], "method.r_x", "top2"),
    "cutmix": ("cutmix.yaml", [], "method.cutmix_prob", None),
    # 2 epochs: at 1 epoch SP's warm-up (half the run, rounded up) covers it and SP never mixes
    "sample_pairing": ("sample_pairing.yaml", ["epochs=2"], "method.pairing", "sp_on"),
    "bc": ("bc.yaml", ["space.method.variant=null", "space.method.label_mode=null", "tune.num_samples=1"],
           "method.variant", None),  # the r_low grid alone: 2 trials
    "mixup_c": ("mixup_c.yaml", ["method.ft_epochs=0", "space.method.ft_epochs=null", "space.method.ft_lr=null"],
                "method.heads", None),
    "vpl": ("vpl.yaml", ["schedule.warmup_epochs=0"], "method.tau", "loss_cl"),
    "pair_training": ("omega.yaml", [], "method.omega", "beta"),
}


def test_every_method_has_a_case():
    from raypair.methods import METHODS

    assert sorted(CASES) == METHODS.names()


@pytest.mark.parametrize("method", sorted(CASES))
def test_method_trains_through_train_and_tune(local_ray, tmp_path, capsys, method):
    from mlflow.tracking import MlflowClient

    from raypair.cli import main

    space, extra, param, metric = CASES[method]
    sets = [a for kv in SMALL + extra for a in ("--set", kv)]
    train_sets = [a for kv in SMALL + [e for e in extra if not e.startswith(("space.", "tune."))]
                  for a in ("--set", kv)]
    path = str(ROOT / "search_spaces" / space)
    assert main(["train", path, "--storage", str(tmp_path), "--set", "scale.trainer=train", *train_sets]) == 0, \
        capsys.readouterr().err
    samples = [] if "tune.num_samples=1" in extra else ["--num-samples", "2"]
    assert main(["tune", path, "--storage", str(tmp_path), *samples, "--set", "tune.scheduler.name=none",
                 *sets]) == 0, capsys.readouterr().err
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep_name = yaml.safe_load(Path(path).read_text())["name"]
    for exp_name, n_runs in (("train", 2), (sweep_name, 3)):  # a parent run and its trials
        exp = client.get_experiment_by_name(exp_name)
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == n_runs
        for run in runs:
            if "mlflow.parentRunId" not in run.data.tags:
                assert run.data.tags["raypair.kind"] in ("run", "sweep")
                continue
            assert run.info.status == "FINISHED"
            assert run.data.params["method.name"] == method and param in run.data.params
            hist = client.get_metric_history(run.info.run_id, "val_acc")
            epochs = 2 if "epochs=2" in extra else 1
            assert [m.step for m in hist] == list(range(1, epochs + 1))
            if metric:
                assert metric in run.data.metrics
            if method == "sample_pairing":  # SP mixed in one of the 2 epochs: the warm-up (default 0.5
                # of 2 epochs: epoch 0) off, then on; a searched warm-up under 0.25 rounds to 0: on, then off
                sp = [m.value for m in client.get_metric_history(run.info.run_id, "sp_on")]
                assert sorted(sp) == [0.0, 1.0]
                if exp_name == "train":
                    assert sp == [0.0, 1.0]
