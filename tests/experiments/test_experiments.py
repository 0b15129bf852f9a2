"""The experiment interface without Ray: proposers (a seeded list, an Optuna study that survives a
killed driver), the records, the ablation's pairs and the divergence rules (the trial store and the
checks ``--resume`` makes before Ray starts: tests/trials/test_store.py)."""
from __future__ import annotations

from pathlib import Path

from raypair.experiments.ablation import load_ablation
from raypair.experiments.base import Record
from raypair.experiments.proposers import OptunaProposer, random_points
from raypair.experiments.sweep import load_sweep

from helpers import DIGITS, QUICK


def test_random_points_are_the_same_on_every_resume_and_cover_the_grid():
    sweep = load_sweep(QUICK, ["tune.searcher.name=random",
                               "space.optim.nesterov={grid: [true, false]}"], num_samples=3)
    a = random_points(sweep.space, 3, seed=0)
    assert a == random_points(sweep.space, 3, seed=0) and a != random_points(sweep.space, 3, seed=1)
    assert len(a) == 6 and [p["optim.nesterov"] for p in a] == [True, False] * 3
    assert len({p["optim.lr"] for p in a}) == 6  # random paths drawn afresh for every point
    assert all(0.005 <= p["optim.lr"] <= 0.5 for p in a)
    assert random_points(sweep.space, 4, seed=0)[:6] == a[:4] + random_points(sweep.space, 4, seed=0)[4:6]


def test_optuna_study_is_settled_from_the_store_after_a_kill(tmp_path):
    """A driver killed after asking: one trial ended (its store says so) but Optuna never heard;
    one never ended. The next start tells the first and proposes the second again, same params."""
    from optuna.trial import TrialState

    sweep = load_sweep(QUICK, num_samples=4)
    first = OptunaProposer(sweep, tmp_path / "optuna.db", {})
    t0, t1 = first.propose(), first.propose()
    assert (t0.key, t1.key) == ("t0000", "t0001")
    ended = Record("t0000", t0.params, history=[{"epoch": 1, "val_acc": 0.5}], end={"status": "finished"})
    again = OptunaProposer(sweep, tmp_path / "optuna.db", {"t0000": ended})
    states = [t.state for t in again.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING] and again.study.trials[0].value == 0.5
    t = again.propose()
    assert t.key == "t0001" and t.params == t1.params  # continued, not asked afresh
    assert [again.propose().key, again.propose().key, again.propose()] == ["t0002", "t0003", None]
    again.tell("t0001", None, "diverged")
    assert again.study.trials[1].state == TrialState.FAIL
    assert again.study.trials[1].user_attrs == {"raypair.status": "diverged"}


def test_choices_that_optuna_cannot_store_round_trip_by_index(tmp_path):
    sweep = load_sweep(QUICK, ["space.optim.betas={choice: [[0.9, 0.99], [0.8, 0.9]]}", "optim.name=adamw",
                               "space.optim.momentum=null"], num_samples=2, check=False)
    p = OptunaProposer(sweep, tmp_path / "optuna.db", {})
    assert p.propose().params["optim.betas"] in ([0.9, 0.99], [0.8, 0.9])


def test_records_of_failed_and_infeasible_trials_tell_the_searcher_nothing():
    for status in ("failed", "infeasible"):
        assert Record("k", {}, history=[{"epoch": 1, "val_acc": 0.5}], end={"status": status}).final("val_acc") is None
    assert Record("k", {}, end={"status": "finished"}).final("val_acc") is None  # no epoch at all


def test_ablation_counts_only_finished_pairs_as_done():
    ab = load_ablation(DIGITS, seeds=[0, 1])
    done = {k: Record(k, {}, end={"status": s}) for k, s in
            [("base__s0", "finished"), ("base__s1", "failed"), ("cutmix__s0", "stopped")]}
    todo = ab.proposer(Path("."), done)
    keys = []
    while (t := todo.propose()) is not None:
        keys.append(t.key)
    assert keys == ["base__s1", "baseplus__s0", "baseplus__s1", "cutmix__s0", "cutmix__s1"]
    tags, _ = ab.summary([Record("base__s0", {}, end={"status": "finished"})])
    assert tags["raypair.pairs"] == 6 and tags["raypair.pairs_finished"] == 1 and tags["raypair.pairs_failed"] == 5


def test_divergence_rules_are_exact():
    from raypair.config import DivergenceConfig
    from raypair.loop import divergence

    rule = DivergenceConfig(loss_factor=1000.0, chance_after=3, chance_margin=0.125)  # 4 classes: chance 0.25
    row = {"epoch": 2, "train_loss": 2000.0, "val_acc": 0.12}
    assert divergence(rule, 2.0, row, 4) is None  # 2000 = 1000 x 2: not above; epoch 2: no chance rule yet
    assert "exceeds 1000 x epoch 1's 2" in divergence(rule, 2.0, row | {"train_loss": 2000.5}, 4)
    assert divergence(rule, 2.0, row | {"train_loss": 2e11}, 4).startswith("train_loss 2e+11 at epoch 2")
    assert divergence(rule, 2.0, row | {"epoch": 3, "val_acc": 0.37}, 4).startswith("val_acc 0.3700 at epoch 3")
    assert divergence(rule, 2.0, row | {"epoch": 3, "val_acc": 0.375}, 4) is None  # 1/4 + 0.125: not below
    assert divergence(DivergenceConfig(loss_factor=None), 2.0, row | {"train_loss": 1e30}, 4) is None
    assert divergence(rule, float("nan"), row | {"train_loss": 1e30}, 4) is None  # no first epoch (old checkpoint)


def test_a_divergence_inside_ray_train_is_found_in_the_worker_errors():
    from raypair.loop import TrialDiverged
    from raypair.runner.trial import diverged

    class WorkerGroupError(RuntimeError):
        def __init__(self, failures):
            super().__init__("a worker failed")
            self.worker_failures = failures

    assert diverged(WorkerGroupError({0: ValueError("x"), 1: TrialDiverged("loss 1e9")})) == "loss 1e9"
    try:
        try:
            raise TrialDiverged("nan")
        except TrialDiverged as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert diverged(outer) == "nan"
    assert diverged(WorkerGroupError({0: ValueError("x")})) is None


def test_the_best_trial_is_one_that_ended_well():
    """A diverged or failed trial's early epochs are not a result: the best is picked among
    finished and stopped trials only (None if there are none)."""
    from raypair.experiments.base import best_record

    rows = lambda *accs: [{"epoch": i + 1, "val_acc": a} for i, a in enumerate(accs)]  # noqa: E731
    recs = [Record("t0", {}, None, rows(0.9), {"status": "diverged"}),
            Record("t1", {}, None, rows(0.5, 0.6), {"status": "finished"}),
            Record("t2", {}, None, rows(0.7), {"status": "stopped", "epochs": 1}),
            Record("t3", {}, None, rows(0.95), {"status": "failed"}),
            Record("t4", {}, None, rows(0.99))]  # still running
    assert best_record(recs, "val_acc", "max").key == "t2"
    assert best_record(recs, "val_acc", "min").key == "t1"
    assert best_record(recs[:1] + recs[3:], "val_acc", "max") is None


def test_asha_rung_before_a_vpl_stage_is_refused_naming_the_point():
    """P4's stage 3 (KL only) starts at E - round(y% E); x = y tied. 20 epochs, x in {0, 20}: at x = y = 20
    stage 3 starts after 20 - 4 = 16 epochs, in epoch 17 (by hand), so ASHA's first rung must be >= 17."""
    import pytest

    from raypair.config import ConfigError

    vpl = Path(__file__).parents[2] / "search_spaces" / "vpl.yaml"
    sets = ["data.name=digits", "epochs=20", "space.method.x={choice: [0, 20]}", "space.method.tau=null"]
    with pytest.raises(ConfigError, match=r"first rung \(epoch 16\).*method.x=20.* starts in epoch 17") as err:
        load_sweep(vpl, [*sets, "tune.scheduler.grace_period=16"])
    assert err.value.field == "tune.scheduler.grace_period" and err.value.value == 16
    load_sweep(vpl, [*sets, "tune.scheduler.grace_period=17"])
    load_sweep(vpl, [*sets, "tune.scheduler.grace_period=2", "tune.scheduler.name=none"])
    load_sweep(vpl, [*sets, "tune.scheduler.grace_period=2", "method.mode=dml", "space.method.x=null",
                     "space.method.rho={choice: [1.0, 2.0]}"])  # DML has no stages
    # untied: 3 % of 20 epochs = 0.6 rounds to 1 epoch of stage 3, starting in epoch 20 (1 %, 2 %: 0 epochs)
    with pytest.raises(ConfigError, match=r"method.y=3 it starts in epoch 20"):
        load_sweep(vpl, [*sets, "space.method.y={int: [0, 5]}", "tune.scheduler.grace_period=19"])
