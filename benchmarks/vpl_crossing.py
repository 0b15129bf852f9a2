"""VPL's regime (P4, methods.md §6.1): the two branches' per-epoch accuracy, to show whether the
transformer overtakes its CNN partner within the run ("in the last y% epochs, the transformer plays
the role of teacher").

Trains one VPL run with the loop directly (no Ray, no MLflow), on the CPU unless the run asks for a
GPU, writes its history (one JSON line per epoch) beside the figure and draws both branches'
``val_acc`` (CNN) and ``val_acc_vit`` (transformer) per epoch, each epoch shaded by its VPL stage;
or draws it from an existing history (a trial's ``history.jsonl``):

    RAYPAIR_DATA=../shared/data python benchmarks/vpl_crossing.py search_spaces/vpl.yaml \\
        --set model.name=tiny_cnn --set epochs=15 --set schedule.warmup_epochs=1 \\
        --set data.train_subset=10000 --set data.test_subset=2000 --set data.val_fraction=0 \\
        --set scale.threads=1 --out docs/vpl_crossing.png
    python benchmarks/vpl_crossing.py --history STORE/vpl/trials/KEY/history.jsonl --out crossing.png

The first is how docs/vpl_crossing.png and .jsonl were made (seed 0; the figure then redrawn from
the .jsonl with ``--history docs/vpl_crossing.jsonl --label "tiny_cnn + vit_cifar_d4, 10k CIFAR-10,
15 epochs"``); the figures are in docs/measured.md. With ``data.val_fraction=0`` the loop evaluates
the test subset each epoch and logs it as ``val_*``.
Prints one line per epoch and the first epoch from which the transformer stays ahead.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

from raypair.config import ConfigError, build_run, parse_override, read_yaml, set_path
from raypair.report.stages import read_history

STAGE_COLORS = {1: "#dbe9f6", 2: "#fdebd0", 3: "#f5d5d5"}
STAGE_NAMES = {1: "stage 1 (CL)", 2: "stage 2 (CL + KL)", 3: "stage 3 (KL)"}


def train(run_file: str, sets: list[str], history_out: Path) -> tuple[list[dict[str, Any]], str]:
    from raypair.experiments.sweep import load_sweep
    from raypair.loop import run_trial

    raw = read_yaml(run_file)
    if "space" in raw or "tune" in raw:
        raw = load_sweep(run_file, check=False).base_raw
    for text in sets:
        raw = set_path(raw, *parse_override(text))
    cfg = build_run(raw)
    if cfg.method.name != "vpl":
        raise ConfigError("method.name", "the crossing plot is VPL's", cfg.method.name)
    history: list[dict[str, Any]] = []
    history_out.write_text("")
    t0 = time.perf_counter()

    def report(metrics: dict, ckpt: object) -> None:
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        with open(history_out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"epoch {row['epoch']:3d}  stage {row.get('stage', 0):.0f}  val_acc cnn {row['val_acc']:.3f}"
              f"  vit {row['val_acc_vit']:.3f}  train cnn {row.get('train_acc_cnn', 0):.3f}"
              f"  vit {row.get('train_acc_vit', 0):.3f}  {row['wall_s']:.0f} s", flush=True)

    run_trial(cfg, report)
    return history, f"{cfg.model.name} + {cfg.method.vit_model}, {cfg.data.name}"


def overtakes(history: list[dict[str, Any]], cnn: str = "val_acc", vit: str = "val_acc_vit") -> Optional[int]:
    """The first epoch from which the transformer's accuracy stays above the CNN's to the end."""
    first = None
    for row in history:
        ahead = float(row[vit]) > float(row[cnn])
        first = (first or int(row["epoch"])) if ahead else None
    return first


def draw(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    seen = set()
    for row in history:
        stage = int(row.get("stage", 2))
        e = int(row["epoch"])
        ax.axvspan(e - 0.5, e + 0.5, color=STAGE_COLORS[stage], lw=0,
                   label=None if stage in seen else STAGE_NAMES[stage])
        seen.add(stage)
    epochs = [int(r["epoch"]) for r in history]
    for key, label, style in (("val_acc", "CNN", "-o"), ("val_acc_vit", "transformer", "-s"),
                              ("val_acc_cnn_ema", "CNN (EMA)", ":"), ("val_acc_vit_ema", "transformer (EMA)", ":")):
        if key in history[0]:
            ax.plot(epochs, [float(r[key]) for r in history], style, label=label, ms=4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="a run YAML or a search space to train")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="override (repeatable)")
    ap.add_argument("--history", help="draw from this history.jsonl instead of training")
    ap.add_argument("--label", help="what the run was, for the title")
    ap.add_argument("--out", required=True, help="the figure (PNG); a trained run's history goes beside it")
    args = ap.parse_args()
    out = Path(args.out)
    if args.history:
        history, what = read_history(args.history), args.history
    elif args.run:
        history, what = train(args.run, args.set, out.with_suffix(".jsonl"))
    else:
        ap.error("give a run file to train or --history FILE")
    first = overtakes(history)
    draw(history, out, f"VPL branches ({args.label or what}): the transformer ahead from epoch {first}")
    print(f"the transformer stays ahead of the CNN from epoch {first}; wrote {out}")


if __name__ == "__main__":
    main()
