"""Host memory of concurrent CIFAR-10 trials: K trials of one sweep at once against 1, read from
``/proc/<pid>/smaps_rollup`` of each trial process (its pid from the trial store's
``workers.jsonl``) every 0.5 s while they run.

    RAYPAIR_DATA=../shared/data python benchmarks/shared_data.py [--trials 1 4] [--val-fraction 0.1]

Each sweep is ``raypair tune`` with K trials, K at a time (0.5 CPU each), 1 epoch of the tiny CNN
on all of CIFAR-10's training split (the hold-out taken out): the data, not the model, is what is
measured. The decode cache is warmed first (its own folder, emptied of shared splits before each
sweep, so the first trials also write them), so no trial decodes JPEGs. Prints, per K, the
largest sum over the trial processes of RSS (counts shared pages in full in every process), PSS
(shared pages divided among the processes that map them) and USS (private pages only).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"Rss": "rss", "Pss": "pss", "Private_Clean": "uss", "Private_Dirty": "uss"}


def rollup(pid: int) -> dict[str, float]:
    out = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in FIELDS:
                out[FIELDS[key]] += int(rest.split()[0]) / 1024  # kB -> MiB
    except (OSError, ValueError):
        return {}
    return out


def pids(exp: Path) -> list[int]:
    found = []
    for f in exp.glob("trials/*/workers.jsonl"):
        try:
            found += [json.loads(line)["pid"] for line in f.read_text().splitlines()]
        except (OSError, ValueError, KeyError):
            pass
    return found


def sweep(k: int, args: argparse.Namespace, cache: Path, env: dict[str, str]) -> dict[str, float]:
    for sub in cache.glob("*/split-*"):
        shutil.rmtree(sub)
    doc = {"name": "mem", "run": {
        "data": {"name": "cifar10", "val_fraction": args.val_fraction}, "model": {"name": "tiny_cnn"},
        "method": {"name": "erm", "aug": "base+"}, "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "cosine"}, "epochs": 1, "batch_size": 512,
        "scale": {"workers": 1, "cpus_per_worker": 0.5, "gpus_per_worker": 0, "trainer": "direct", "threads": 1}},
        "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
        "tune": {"num_samples": k, "max_concurrent_trials": k, "searcher": {"name": "random", "seed": 0},
                 "scheduler": {"name": "none"}}}
    with tempfile.TemporaryDirectory(prefix="raypair-mem-") as tmp:
        spec = Path(tmp) / "mem.yaml"
        spec.write_text(yaml.safe_dump(doc))
        proc = subprocess.Popen([sys.executable, "-m", "raypair", "tune", str(spec), "--storage", f"{tmp}/runs"],
                                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "alive": 0}
        while proc.poll() is None:
            rolls = [r for r in (rollup(p) for p in pids(Path(tmp) / "runs" / "mem")) if r]
            if len(rolls) == k:  # only moments when all K trials run
                for key in ("rss", "pss", "uss"):
                    best[key] = max(best[key], sum(r[key] for r in rolls))
                best["alive"] = k
            time.sleep(0.5)
        if proc.returncode != 0:
            sys.exit(f"the sweep of {k} failed ({proc.returncode})")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--val-fraction", type=float, default=0.1)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="raypair-memcache-"))
    env = {**os.environ, "RAYPAIR_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        subprocess.run([sys.executable, "-c", "from raypair.config import DataConfig; from raypair.data import "
                        "load_splits; load_splits(DataConfig(name='cifar10'))"], env=env, check=True)
        rows = {k: sweep(k, args, cache, env) for k in args.trials}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"CIFAR-10, val_fraction {args.val_fraction}: largest sum over the trial processes, MiB")
    print("trials |    RSS |    PSS |    USS | PSS / trial")
    for k, r in rows.items():
        print(f"{k:6d} | {r['rss']:6.0f} | {r['pss']:6.0f} | {r['uss']:6.0f} | {r['pss'] / k:6.0f}")
    if len(rows) > 1:
        lo, hi = min(rows), max(rows)
        print(f"{hi} trials / {lo}: RSS {rows[hi]['rss'] / rows[lo]['rss']:.2f}x, PSS "
              f"{rows[hi]['pss'] / rows[lo]['pss']:.2f}x, USS {rows[hi]['uss'] / rows[lo]['uss']:.2f}x")


if __name__ == "__main__":
    main()
