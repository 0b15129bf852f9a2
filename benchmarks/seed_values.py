"""Real per-seed results for the sequential benchmark's resample model: each variant of an
ablation file trained once per seed through raypair's own loop (no Ray: the numbers a trial would
report), the final metric written one row per (variant, seed) to a CSV.

    python benchmarks/seed_values.py tests/data/sequential_digits.yaml --seeds 24 \
        --out benchmarks/data/seed_values_digits.csv

Seeds are paired across variants as in an ablation (same seed: same initial weights, data order
and split), so each variant's run minus the reference's at one seed is a real paired difference.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--variants", default="", help="comma-separated (default: every variant of the file)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from raypair.config import read_yaml
    from raypair.experiments.ablation import load_ablation
    from raypair.loop import run_trial

    raw = read_yaml(args.file)
    raw.pop("sequential", None)  # a seeds-until-decided file: here every seed runs
    exp = load_ablation(args.file, seeds=list(range(args.seeds)), raw=raw)
    variants = args.variants.split(",") if args.variants else list(exp.variants)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with args.out.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["variant", "seed", exp.metric])
        for seed in range(args.seeds):
            for v in variants:
                final = run_trial(exp.trial_run({"variant": v, "seed": seed}), lambda m, ckpt=None: None)
                out.writerow([v, seed, f"{final[exp.metric]:.6f}"])
                fh.flush()
    print(f"{args.seeds} seeds x {len(variants)} variants in {time.time() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
