"""Ray Tune's cost per trial: a sweep of N tiny trials through ``raypair tune`` against the same
trainings run one after another in one plain Python process.

    python benchmarks/tune_overhead.py [--trials 16] [--concurrent 1] [--epochs 1] [--subset 128]

Both sides are fresh processes timed from the outside (interpreter start, imports, data included):
the sweep is ``python -m raypair tune SPEC --storage TMP`` (Ray started, MLflow, Optuna, the trial
store); the baseline builds the same N run configs and calls ``loop.run_trial`` N times. Prints
both walls and the per-trial overhead ``(sweep - in-process) / N``, plus the part of the sweep's
wall before its first trial started (Ray start-up, MLflow and Optuna set-up: paid once per sweep).
Needs no files (scikit-learn's digits, a 2-block CNN).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

IN_PROCESS = r"""
import json, sys, time
from raypair.config import build_run
from raypair.loop import run_trial
spec = json.loads(sys.argv[1])
for i in range(spec["trials"]):
    run = build_run({**spec["run"], "seed": i})
    run_trial(run, lambda metrics, folder: None)
"""


def spec(args: argparse.Namespace) -> dict:
    return {
        "name": "overhead",
        "run": {"data": {"name": "digits", "image_size": 16, "val_fraction": 0.2, "pad": 2,
                         "train_subset": args.subset, "test_subset": args.subset // 2},
                "model": {"name": "tiny_cnn"}, "method": {"name": "erm", "aug": "base+"},
                "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                "schedule": {"name": "cosine"}, "epochs": args.epochs, "batch_size": 64,
                "scale": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, **args.scale}},
        "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
        "tune": {"metric": "val_acc", "mode": "max", "num_samples": args.trials,
                 "max_concurrent_trials": args.concurrent, "searcher": {"name": "random", "seed": 0},
                 "scheduler": {"name": "none"}},
    }


def first_start(exp_dir: Path) -> float:
    """The earliest start any trial recorded in the store (epoch seconds), or nan."""
    starts = []
    for f in exp_dir.glob("trials/*/workers.jsonl"):
        for line in f.read_text().splitlines():
            t = json.loads(line).get("time")
            if t:
                starts.append(t)
    return min(starts) if starts else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--concurrent", type=int, default=1, help="max_concurrent_trials of the sweep")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--subset", type=int, default=128, help="training images per trial")
    ap.add_argument("--trainer", default="direct", choices=["direct", "train"])
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    args.scale = {"trainer": args.trainer}
    doc = spec(args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory(prefix="raypair-overhead-") as tmp:
        path = Path(tmp) / "overhead.yaml"
        path.write_text(yaml.safe_dump(doc))
        base = float("nan")
        if not args.skip_baseline:
            t0 = time.time()
            subprocess.run([sys.executable, "-c", IN_PROCESS, json.dumps({"trials": args.trials, "run": doc["run"]})],
                           check=True, env=env, cwd=tmp)
            base = time.time() - t0
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "raypair", "tune", str(path), "--storage", str(Path(tmp) / "runs")],
                             env=env, cwd=tmp, capture_output=True, text=True)
        sweep = time.time() - t0
        if out.returncode != 0:
            sys.exit(f"the sweep failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        lead = first_start(Path(tmp) / "runs" / "overhead") - t0
    n = args.trials
    print(f"{n} trials x {args.epochs} epoch(s), {args.subset} digits images, {args.concurrent} at a time, "
          f"trainer {args.trainer}")
    print(f"in one process      : {base:7.1f} s")
    print(f"raypair tune sweep  : {sweep:7.1f} s (first trial started after {lead:.1f} s)")
    print(f"overhead per trial  : {(sweep - base) / n:7.2f} s   (sweep - in-process) / N")
    print(f"  without the start : {(sweep - lead - (base if base == base else 0)) / n:7.2f} s   "
          "(sweep after the first trial started - in-process) / N")


if __name__ == "__main__":
    main()
