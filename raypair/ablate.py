"""Ray adapter for ablations: every (variant, seed) pair is one Ray Tune trial, run by the same
trial body as a sweep's (the loop in the trial process, or under a Ray Train ``TorchTrainer``
when it has several workers or a GPU), with per-pair resources, a concurrency cap and one MLflow
child run per pair under one parent run per ablation.

Resuming is decided by MLflow, not by Tune's experiment state: a pair whose run is FINISHED with
all its epochs is skipped, the others run again. Each pair keeps its latest checkpoint and its
reported epochs in ``<exp>/pairs/<pair>/``, so a pair cut off mid-run continues from its last
checkpoint and its MLflow run gets every epoch exactly once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.tune.experiment import Trial

from raypair.ablation import STATE_FILE, Ablation, config_hash, finished_pairs, pair_key
from raypair.config import flatten, to_plain
from raypair.tracking import Tracker
from raypair.tune import MlflowTrials, Progress, fit_concurrency, trial_resources

HISTORY = "history.jsonl"


def slug(variant: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.replace("+", "plus").replace("/", "__")) + f"__s{seed}"


# ------------------------------------------------------------------------- per-pair store
class PairStore:
    """``<folder>/state.pt`` (the latest checkpoint) and ``history.jsonl`` (one line per epoch)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._last: Optional[int] = None  # last recorded epoch, read from the file once

    def history(self) -> list[dict[str, Any]]:
        f = self.folder / HISTORY
        if not f.exists():
            return []
        rows = []
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut off by a kill
                break
        return rows

    def append(self, metrics: dict[str, Any]) -> None:
        if self._last is None:
            rows = self.history()
            self._last = int(rows[-1]["epoch"]) if rows else 0
        if self._last >= int(metrics["epoch"]):
            return
        clean = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        with open(self.folder / HISTORY, "a") as f:
            f.write(json.dumps(clean) + "\n")
        self._last = int(metrics["epoch"])

    def save_state(self, ckpt_folder: Optional[Path]) -> None:
        from raypair.loop import CKPT_FILE

        if ckpt_folder is not None:
            tmp = self.folder / (CKPT_FILE + ".tmp")
            shutil.copyfile(Path(ckpt_folder) / CKPT_FILE, tmp)
            os.replace(tmp, self.folder / CKPT_FILE)  # never a half-written checkpoint

    def state(self) -> Optional[dict[str, Any]]:
        from raypair.loop import CKPT_FILE, load_checkpoint

        return load_checkpoint(self.folder) if (self.folder / CKPT_FILE).exists() else None


def pair_fn(config: dict[str, Any], ablation: Ablation, exp_dir: str) -> None:
    """Trial body: one (variant, seed) pair, resumed from its store when it has one."""
    variant, seed = config["pair"]["variant"], int(config["pair"]["seed"])
    cfg = ablation.pair_run(variant, seed)
    store = PairStore(Path(exp_dir) / "pairs" / slug(variant, seed))
    for row in store.history():  # epochs a cut-off attempt reported; MLflow keeps each step once
        tune.report(row)
    if cfg.scale.uses_train():
        from ray.tune.integration.ray_train import TuneReportCallback

        from raypair import train

        train.fit(cfg, name=slug(variant, seed), storage=Path(exp_dir) / "train",
                  callbacks=[HistoryCallback(store), TuneReportCallback()])
        return
    from raypair.loop import run_trial

    def report(metrics: dict[str, float], folder: Optional[Path]) -> None:
        store.save_state(folder)
        store.append(metrics)
        tune.report(metrics)

    run_trial(cfg, report, resume=store.state())


class HistoryCallback(UserCallback):
    """Train controller side: rank 0's metrics into the pair's history (Train keeps the checkpoints)."""

    def __init__(self, store: PairStore) -> None:
        self.store = store

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics and metrics[0]:
            self.store.append(metrics[0])


# ------------------------------------------------------------------------------- MLflow
class PairTrials(MlflowTrials):
    """One MLflow child run per (variant, seed), found again by that pair on a resume."""

    def __init__(self, tracker: Tracker, parent: str, ablation: Ablation) -> None:
        super().__init__(tracker, parent, sweep=None)  # type: ignore[arg-type]
        self.ablation = ablation

    def describe(self, trial: Trial) -> dict[str, Any]:
        variant, seed = _pair(trial)
        run = self.ablation.pair_run(variant, seed)
        levels = self.ablation.variants[variant].levels
        return {"key": pair_key(self.parent, variant, seed), "name": f"{variant} s{seed}", "plain": to_plain(run),
                "epochs": run.epochs,
                "tags": {"raypair.kind": "ablation_run", "raypair.variant": variant, "raypair.seed": str(seed),
                         "raypair.method": run.method.name, "raypair.config_hash": config_hash(run)}
                | {f"raypair.level.{f}": lv for f, lv in levels.items()}}


# ------------------------------------------------------------------------------- the run
def run_ablation(ab: Ablation, exp_dir: Path, tracker: Tracker, resume: bool,
                 done: Optional[set[tuple[str, int]]] = None) -> dict[str, Any]:
    """Run the pairs not finished yet (``done``: already looked up by the caller); returns counts
    and the parent run id."""
    parent, created = tracker.open_parent(exp_dir / STATE_FILE, f"ablation/{exp_dir}", ab.name,
                                          {"raypair.kind": "ablation", "raypair.title": ab.title}, resume)
    if created:
        tracker.log_params(parent, {"seeds": ab.seeds, "variants": list(ab.variants), "metrics": ab.metrics,
                                    "quick": ab.quick} | {f"run.{k}": v for k, v in flatten(ab.run_raw).items()})
    tracker.log_yaml(parent, ab.plain(), "ablation.yaml")  # again on a resume: seeds may have been added
    if done is None:
        done = finished_pairs(tracker, parent, ab) if resume else set()
    todo = [p for p in ab.pairs() if p not in done]
    print(f"ablation {ab.name!r}: {len(ab.pairs())} (variant, seed) pairs, {len(done)} finished earlier "
          f"and skipped, {len(todo)} to run", flush=True)
    if todo:
        _tune(ab, exp_dir, tracker, parent, todo)
    done = finished_pairs(tracker, parent, ab)
    failed = len(ab.pairs()) - len(done)
    tracker.set_tags(parent, {"raypair.pairs": len(ab.pairs()), "raypair.pairs_finished": len(done),
                              "raypair.pairs_failed": failed})
    tracker.end(parent, "FINISHED" if not failed else "FAILED")
    return {"parent": parent, "pairs": len(ab.pairs()), "finished": len(done), "failed": failed}


def _tune(ab: Ablation, exp_dir: Path, tracker: Tracker, parent: str, todo: list[tuple[str, int]]) -> None:
    resources = {v: trial_resources(ab.runs[v]) for v, _ in todo}
    biggest = max((ab.runs[v].scale.resources() for v, _ in todo), key=lambda r: (r["gpu"], r["cpu"]))
    attempt = 1 + sum(1 for _ in exp_dir.glob("tune-*"))
    trainable = tune.with_resources(tune.with_parameters(pair_fn, ablation=ab, exp_dir=str(exp_dir)),
                                    lambda config: resources[config["pair"]["variant"]])
    tuner = tune.Tuner(
        trainable, param_space={"pair": tune.grid_search([{"variant": v, "seed": s} for v, s in todo])},
        tune_config=tune.TuneConfig(max_concurrent_trials=fit_concurrency(ab.max_concurrent, biggest)),
        run_config=tune.RunConfig(
            name=f"tune-{attempt}", storage_path=str(exp_dir), verbose=0,
            callbacks=[PairTrials(tracker, parent, ab), Progress(ab.metrics[0], _label)],
            failure_config=tune.FailureConfig(max_failures=0)),
    )
    tuner.fit()


def _pair(trial: Trial) -> tuple[str, int]:
    return trial.config["pair"]["variant"], int(trial.config["pair"]["seed"])


def _label(trial: Trial) -> str:
    variant, seed = _pair(trial)
    return f"{variant} seed {seed}"
