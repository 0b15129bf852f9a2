"""PairTraining's stage timeline: when beta (last epoch's clean train top-1) crosses t1 and t2.

Trains one run with the loop directly (no Ray, no MLflow), on the CPU unless the run asks for a
GPU, writes its history (one JSON line per epoch) and draws the figure of
``raypair.report.stages.stage_timeline``; or draws it from an existing history (a trial's
``<storage>/<experiment>/trials/<key>/history.jsonl``):

    RAYPAIR_DATA=../shared/data python benchmarks/stage_timeline.py search_spaces/pair_variants.yaml \\
        --set model.name=lenet_cifar --set optim.lr=0.05 --set schedule.name=cosine --set method.t1=0.2 \\
        --set method.t2=0.4 --set epochs=20 --set data.train_subset=5000 --set data.test_subset=2000 \\
        --set data.val_fraction=0 --set scale.threads=1 --out docs/pair_training_stages.png
    python benchmarks/stage_timeline.py --history STORE/omega/trials/KEY/history.jsonl --t1 0.25 --t2 0.75 \\
        --out stages.png

The first is how docs/pair_training_stages.png and .jsonl were made (S8 with aug base+: the
components ablation's quick profile, seed 0; 71 s wall, 31 CPU-seconds on a shared 2-core CPU; the
figure was then redrawn from the .jsonl with ``--history ... --t1 0.2 --t2 0.4 --label "S8, base+,
LeNet, 5k CIFAR-10"``). LeNet's clean train top-1 on base+ images stays below 0.5 in 20 epochs, so
the run uses that profile's lowered thresholds 0.2 / 0.4; at P0's 0.25 / 0.75 it never reaches D-Mix.

The run file may be a run YAML or a search space (its ``run:``). Prints one line per epoch and the
epochs at which beta first reached t1 and t2.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from raypair.config import ConfigError, build_run, parse_override, read_yaml, set_path
from raypair.report.stages import crossings, read_history, stage_timeline


def train(run_file: str, sets: list[str], history_out: Path) -> tuple[list[dict], float, float, str]:
    from raypair.experiments.sweep import load_sweep
    from raypair.loop import run_trial

    raw = read_yaml(run_file)
    if "space" in raw or "tune" in raw:
        raw = load_sweep(run_file, check=False).base_raw
    for text in sets:
        raw = set_path(raw, *parse_override(text))
    cfg = build_run(raw)
    if cfg.method.name != "pair_training":
        raise ConfigError("method.name", "the stage timeline is PairTraining's", cfg.method.name)
    history: list[dict] = []
    history_out.write_text("")
    t0 = time.perf_counter()

    def report(metrics: dict, ckpt: object) -> None:
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        with open(history_out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"epoch {row['epoch']:3d}  beta {row['beta']:.3f}  stage {row['stage']:.0f}  alpha {row['alpha']:.2f}"
              f"  pair {row['pair']:.2f}  train_acc {row['train_acc']:.3f}  val_acc {row['val_acc']:.3f}"
              f"  {row['wall_s']:.0f} s", flush=True)

    run_trial(cfg, report)
    return history, cfg.method.t1, cfg.method.t2, f"{cfg.model.name}, {cfg.data.name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="a run YAML or a search space to train")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="override (repeatable)")
    ap.add_argument("--history", help="draw from this history.jsonl instead of training")
    ap.add_argument("--t1", type=float, default=0.25)
    ap.add_argument("--t2", type=float, default=0.75)
    ap.add_argument("--label", help="what the run was, for the title (default: model, data or the history's path)")
    ap.add_argument("--out", required=True, help="the figure (PNG); a trained run's history goes beside it")
    args = ap.parse_args()
    out = Path(args.out)
    if args.history:
        history, t1, t2, what = read_history(args.history), args.t1, args.t2, args.history
    elif args.run:
        history, t1, t2, what = train(args.run, args.set, out.with_suffix(".jsonl"))
    else:
        ap.error("give a run file to train or --history FILE")
    what = args.label or what
    cross = crossings(history, t1, t2)
    stage_timeline(history, t1, t2, out, title=f"PairTraining stage timeline ({what}): beta >= t1={t1:g} from "
                                                f"epoch {cross['t1']}, >= t2={t2:g} from epoch {cross['t2']}")
    print(f"beta first >= t1={t1:g} in epoch {cross['t1']}, >= t2={t2:g} in epoch {cross['t2']}; wrote {out}")


if __name__ == "__main__":
    main()
