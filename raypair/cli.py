"""``raypair`` command line: tune, ablate, report, train, validate, preview, ui.

Heavy modules (torch, Ray, MLflow) are imported inside the commands, so ``--help`` is instant, and
every input is validated (config, search space, model name, dataset location) before Ray starts.
Bad input prints one line, ``raypair: error: <dotted.field>: <what> (got <value>)``, and exits 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from raypair.config import ConfigError


def _common(p: argparse.ArgumentParser, storage: bool = True) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.05 (repeatable)")
    if storage:
        p.add_argument("--storage", default=os.environ.get("RAYPAIR_STORAGE", "runs"),
                       help="folder for results, checkpoints and the default MLflow store (default: ./runs)")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<storage>/mlflow.db)")
        p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="raypair", description="Tune and ablate image-pair training methods "
                                 "on Ray, with Optuna and MLflow.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tune", help="run an Optuna sweep of Ray Train trials (one MLflow child run per trial)")
    t.add_argument("space", help="search-space YAML, e.g. search_spaces/quickstart.yaml")
    _common(t)
    t.add_argument("--num-samples", type=int, help="override tune.num_samples")
    t.add_argument("--name", help="override the sweep's name (its folder under --storage)")
    t.add_argument("--resume", action="store_true", help="finish an interrupted sweep of the same name")
    a = sub.add_parser("ablate", help="run an ablation's variants x seeds (one MLflow child run per pair)")
    a.add_argument("ablation", help="ablation YAML, e.g. ablations/p3_table1_c10.yaml")
    _common(a)
    a.add_argument("--quick", action="store_true", help="the file's quick profile (small, for a CPU)")
    a.add_argument("--seeds", type=_int_list, help="comma-separated seeds instead of the file's, e.g. 0,1,2")
    a.add_argument("--variants", type=_str_list, help="comma-separated subset of the variants")
    a.add_argument("--max-concurrent", type=int, help="pairs running at once (default: the file's)")
    a.add_argument("--name", help="override the ablation's name (its folder and MLflow experiment)")
    a.add_argument("--resume", action="store_true", help="finish an interrupted ablation: finished pairs are "
                   "skipped, cut-off ones continue from their last checkpoint; new seeds are added")
    rp = sub.add_parser("report", help="tables and figures of an ablation or sweep from MLflow")
    rp.add_argument("experiment", help="MLflow experiment: the ablation's or sweep's name")
    rp.add_argument("--storage", default=os.environ.get("RAYPAIR_STORAGE", "runs"))
    rp.add_argument("--tracking-uri", help="any MLflow tracking URI (default: sqlite:///<storage>/mlflow.db)")
    rp.add_argument("--out", help="output folder (default: <storage>/<experiment>/report)")
    rp.add_argument("--top", type=int, default=10, help="sweeps: how many best trials to list (default 10)")
    rp.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    r = sub.add_parser("train", help="one run under Ray Train, no Tune")
    r.add_argument("run", help="run YAML, or a search-space YAML (trains its base run)")
    _common(r)
    v = sub.add_parser("validate", help="print the resolved config or trial space; starts nothing")
    v.add_argument("file")
    _common(v, storage=False)
    p = sub.add_parser("preview", help="write a PNG grid of real images after a method's transform")
    p.add_argument("method", help="method name, e.g. cutmix")
    _common(p, storage=False)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--epoch", type=int, help="call the method's epoch hook for this 0-based epoch first")
    p.add_argument("--epochs", type=int, default=100, help="run length the epoch hook assumes (default 100)")
    p.add_argument("--beta", type=float, help="previous epoch's train accuracy given to the epoch hook "
                   "(PairTraining's stages); implies --epoch 1 unless --epoch is given")
    p.add_argument("--data", default="cifar10", help="dataset (default cifar10; digits works offline)")
    u = sub.add_parser("ui", help="start the MLflow UI on the store of --storage")
    u.add_argument("--storage", default=os.environ.get("RAYPAIR_STORAGE", "runs"))
    u.add_argument("--tracking-uri")
    u.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, default=5000)
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        commands = {"tune": cmd_tune, "ablate": cmd_ablate, "report": cmd_report, "train": cmd_train,
                    "validate": cmd_validate, "preview": cmd_preview, "ui": cmd_ui}
        return commands[args.command](args)
    except ConfigError as e:
        print(f"raypair: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raypair: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- validation
def preflight(run: Any) -> None:
    """Checks that need the model registry or the file system, still before any compute."""
    from raypair.data import resolve
    from raypair.models import check_model_name

    check_model_name(run.model.name)
    resolve(run.data)


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers, got {text!r}")
    return out


def _str_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _kind(path: str) -> str:
    from raypair.config import read_yaml

    raw = read_yaml(path)
    if "variants" in raw or "factors" in raw:
        return "ablation"
    return "space" if "space" in raw or "tune" in raw else "run"


def _is_space(path: str) -> bool:
    return _kind(path) == "space"


def preflight_ablation(ab: Any) -> None:
    """Every variant's model and data, before anything starts."""
    seen: set[str] = set()
    for name, run in ab.runs.items():
        key = repr((run.model.name, run.data))
        if key not in seen:
            seen.add(key)
            try:
                preflight(run)
            except ConfigError as e:
                raise ConfigError(f"variants.{name}.{e.field}", e.message, e.value) from None


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from raypair.config import load_run, to_plain

    kind = _kind(args.file)
    if kind == "ablation":
        from raypair.ablation import load_ablation

        ab = load_ablation(args.file, args.overrides)
        preflight_ablation(ab)
        out = ab.plain() | {"pairs": len(ab.pairs())}
    elif kind == "space":
        from raypair.space import load_sweep

        sweep = load_sweep(args.file, args.overrides)
        preflight(sweep.run)
        out = {"name": sweep.name, "run": to_plain(sweep.run),
               "space": {k: {v.kind: list(v.args)} for k, v in sweep.space.items()},
               "tune": sweep.tune.model_dump(mode="json"), "resources_per_trial": sweep.resources_per_trial()}
    else:
        run = load_run(args.file, args.overrides)
        preflight(run)
        out = to_plain(run)
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


# ------------------------------------------------------------------------------------ ray
def start_ray(address: Optional[str]) -> None:
    import ray

    import raypair

    if address:
        # ship this raypair to the cluster so every node runs the same code as the driver
        ray.init(address=address, runtime_env={"py_modules": [str(Path(raypair.__file__).parent)]})
    else:
        # the dashboard process also serves the state API that Ray Train needs to clean up a
        # trial stopped early by ASHA; it listens on 127.0.0.1 only
        if not ray.is_initialized():
            ray.init(include_dashboard=True, dashboard_host="127.0.0.1",
                     logging_level="warning", logging_config=ray.LoggingConfig(log_level="WARNING"))


def _tracker(args: argparse.Namespace, storage: Path, experiment: str) -> Any:
    from raypair.tracking import Tracker, default_uri

    return Tracker(args.tracking_uri or default_uri(storage), experiment, artifact_root=str(storage / "mlartifacts"))


def _pin(run_raw: dict[str, Any], run: Any) -> dict[str, Any]:
    """Settle what the driver's surroundings decide, before trials start elsewhere: the data root
    and cache as absolute paths (trials run in their own folders, so a relative RAYPAIR_DATA would
    point nowhere there), and ``gpus_per_worker: auto`` as 1 on a cluster with GPUs, else 0. The
    pinned values are what MLflow records."""
    import ray

    from raypair.config import set_path
    from raypair.sources import cache_dir, data_root

    run_raw = set_path(run_raw, "data.root", str(data_root(run.data)))
    run_raw = set_path(run_raw, "data.cache_dir", str(cache_dir(run.data)))
    if run.scale.gpus_per_worker == "auto":
        run_raw = set_path(run_raw, "scale.gpus_per_worker", 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0)
    return run_raw


def cmd_tune(args: argparse.Namespace) -> int:
    from raypair.config import build_run
    from raypair.space import load_sweep

    sweep = load_sweep(args.space, args.overrides, args.num_samples, args.name)
    preflight(sweep.run)
    storage = Path(args.storage).resolve()
    exp_dir = storage / sweep.name
    if args.resume and not (exp_dir / "tune").exists():
        raise ConfigError("--resume", f"no sweep to resume in {exp_dir}", sweep.name)
    if not args.resume and exp_dir.exists():
        raise ConfigError("name", f"{exp_dir} holds an earlier sweep: pass --resume to finish it, "
                          "or --name NEW for a new one", sweep.name)
    start_ray(args.address)
    from raypair import tune

    sweep.run_raw = _pin(sweep.run_raw, sweep.run)
    sweep.run = build_run(sweep.run_raw)
    tracker = _tracker(args, storage, sweep.name)
    grid = tune.run_sweep(sweep, exp_dir, tracker, args.resume)
    return print_summary(grid, sweep, tracker, storage)


def cmd_ablate(args: argparse.Namespace) -> int:
    from raypair.ablation import load_ablation

    ab = load_ablation(args.ablation, args.overrides, quick=args.quick, seeds=args.seeds, only=args.variants,
                       name=args.name)
    if args.max_concurrent is not None:
        if args.max_concurrent < 1:
            raise ConfigError("--max-concurrent", "must be >= 1", args.max_concurrent)
        ab.max_concurrent = args.max_concurrent
    preflight_ablation(ab)
    storage = Path(args.storage).resolve()
    exp_dir = storage / ab.name
    from raypair.ablation import STATE_FILE, finished_pairs

    if args.resume and not (exp_dir / STATE_FILE).exists():
        raise ConfigError("--resume", f"no ablation to resume in {exp_dir}", ab.name)
    if not args.resume and exp_dir.exists():
        raise ConfigError("name", f"{exp_dir} holds an earlier ablation: pass --resume to finish it, "
                          "or --name NEW for a new one", ab.name)
    tracker = _tracker(args, storage, ab.name)
    done = None
    if args.resume:  # a pair that finished under another config is refused before Ray starts
        import json

        done = finished_pairs(tracker, json.loads((exp_dir / STATE_FILE).read_text())["parent_run_id"], ab)
    start_ray(args.address)
    from raypair import ablate
    from raypair.config import build_run

    ab.run_raw = _pin(ab.run_raw, build_run(ab.run_raw))
    ab.runs = {v: ab.pair_run(v, ab.seeds[0]) for v in ab.variants}
    out = ablate.run_ablation(ab, exp_dir, tracker, args.resume, done)
    print(f"{out['finished']} of {out['pairs']} pairs finished, {out['failed']} failed\n"
          f"MLflow: {tracker.uri} (experiment {ab.name!r}, parent run {out['parent']})\n"
          f"report: raypair report {ab.name} --storage {storage}")
    return 0 if out["failed"] == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    from raypair.report import report

    storage, uri = _store(args)
    if args.top < 1:
        raise ConfigError("--top", "must be >= 1", args.top)
    out = Path(args.out) if args.out else storage / args.experiment / "report"
    files = report(uri, args.experiment, out, top=args.top, log=not args.no_log)
    for f in files:
        print(f"wrote {f}")
    return 0


def print_summary(grid: Any, sweep: Any, tracker: Any, storage: Path) -> int:
    metric, mode = sweep.tune.metric, sweep.tune.mode
    rows = []
    for r in grid:
        m = r.metrics or {}
        hist = r.metrics_dataframe
        best = None
        if hist is not None and metric in hist and hist[metric].notna().any():
            best = float(hist[metric].max() if mode == "max" else hist[metric].min())
        params = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(sweep.params(r.config).items()))
        status = "ERROR" if r.error else "infeas." if "infeasible" in m else \
            "stopped" if m.get("epoch", 0) < sweep.run.epochs else "done"
        rows.append((best, f"  {m.get('trial_id', '?'):>12}  {status:7}  epochs={int(m.get('epoch', 0)):<3} "
                           f"{metric}={_fmt(best)}  {params}"))
    print(f"\n{len(rows)} trials of sweep {sweep.name!r}:")
    for _, line in rows:
        print(line)
    scored = [(b, line) for b, line in rows if b is not None]
    if not scored:
        print("raypair: no trial finished an epoch", file=sys.stderr)
        return 1
    best_val, line = (max if mode == "max" else min)(scored, key=lambda t: t[0])
    print(f"best {metric} = {best_val:.4f}\n{line.strip()}")
    print(f"MLflow: {tracker.uri} (experiment {tracker.experiment!r}); browse: raypair ui --storage {storage}")
    return 0


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def cmd_train(args: argparse.Namespace) -> int:
    from raypair.config import build_run, flatten, load_run, to_plain

    if _is_space(args.run):  # a search-space file trains its base run
        from raypair.space import load_sweep

        run = load_sweep(args.run, args.overrides, check=False).run
    else:
        run = load_run(args.run, args.overrides)
    preflight(run)
    storage = Path(args.storage).resolve()
    start_ray(args.address)
    from raypair import train

    run = build_run(_pin(to_plain(run), run))
    tracker = _tracker(args, storage, "train")
    plain = to_plain(run)
    run_name = f"{run.name}-{uuid.uuid4().hex[:8]}"
    run_id, _ = tracker.start(run_name, run_name, tags={"raypair.kind": "train", "raypair.method": run.method.name})
    tracker.log_params(run_id, flatten(plain))
    tracker.log_yaml(run_id, plain, "config.yaml")
    try:
        metrics = train.fit(run, run_name, storage / "train", callbacks=[train.MlflowReport(tracker, run_id)])
    except Exception:
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id, "FINISHED")
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val_", "test_", "train_"))}
    print(f"finished {run_name}: {shown}\nMLflow: {tracker.uri} (run {run_id})")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from raypair.config import build_run, parse_override, set_path

    if args.n < 1:
        raise ConfigError("--n", "must be >= 1", args.n)
    raw: dict[str, Any] = {"method": {"name": args.method}, "data": {"name": args.data}, "epochs": args.epochs}
    for text in args.overrides:
        raw = set_path(raw, *parse_override(text))
    run = build_run(raw)
    from raypair.data import resolve

    resolve(run.data)
    from raypair.preview import preview

    if args.beta is not None and not 0.0 <= args.beta <= 1.0:
        raise ConfigError("--beta", "must lie in [0, 1]", args.beta)
    stats = None if args.beta is None else {"train_acc": args.beta}
    epoch = args.epoch if args.epoch is not None or stats is None else 1
    out = preview(run, Path(args.out), n=args.n, epoch=epoch, stats=stats)
    print(f"wrote {out}")
    return 0


def _store(args: argparse.Namespace) -> tuple[Path, str]:
    """``--storage`` as an absolute path and the tracking URI: ``--tracking-uri``, or the store there."""
    from raypair.tracking import default_uri

    storage = Path(args.storage).resolve()
    if not args.tracking_uri and not (storage / "mlflow.db").exists():
        raise ConfigError("--storage", f"no MLflow store at {storage / 'mlflow.db'}; run raypair tune or ablate first",
                          str(storage))
    return storage, args.tracking_uri or default_uri(storage)


def cmd_ui(args: argparse.Namespace) -> int:
    _, uri = _store(args)
    # the UI only browses runs: no job-runner processes (10 processes and 2.5 GB less, measured)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
            "--port", str(args.port)]
    print(f"MLflow UI on http://{args.host}:{args.port} for {uri}", flush=True)
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
