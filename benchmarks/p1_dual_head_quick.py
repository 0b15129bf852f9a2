"""P1 §5.2-§5.4 on a CPU: the variants of ``ablations/p1_dual_head.yaml``'s quick profile (LeNet with a
6-channel stem and two heads, 5,000 CIFAR-10 images, 10 epochs), one seed each, driven through the
loop directly (no Ray, no MLflow). Prints each head's train and two-image test accuracy:

    RAYPAIR_DATA=../shared/data python benchmarks/p1_dual_head_quick.py --seeds 0 1

How the dual-head figures of docs/measured.md were made.
"""
from __future__ import annotations

import argparse
import time

from raypair.experiments.ablation import load_ablation
from raypair.loop import run_trial

FILE = "ablations/p1_dual_head.yaml"
KEYS = ("train_acc_head1", "train_acc_head2", "test_acc_head1", "test_acc_head2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["half", "lam_x", "lam_l", "lam_xl", "random_label"])
    args = ap.parse_args()
    for seed in args.seeds:
        for v in args.variants:
            ab = load_ablation(FILE, quick=True, only=[v])
            t = time.time()
            m = run_trial(ab.trial_run({"variant": v, "seed": seed}), lambda *a, **k: None)
            cells = "  ".join(f"{k} {100 * m[k]:.1f}" for k in KEYS)
            print(f"{v:13s} seed {seed}  {time.time() - t:4.0f} s  {cells}", flush=True)


if __name__ == "__main__":
    main()
