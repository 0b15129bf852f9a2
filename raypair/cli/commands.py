"""The commands. Heavy modules (torch, Ray, MLflow) are imported inside them, and every input is
validated (options, config, search space, model, data, storage, resume state) before Ray starts
(``checks.py``). ``tune``, ``ablate`` and ``train`` load an experiment and hand it to the one runner."""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from raypair.cli.checks import check_data, check_local_resources, file_kind, inside, preflight, preflight_all
from raypair.config import ConfigError


def _load(kind: str, args: argparse.Namespace, path: str) -> Any:
    if kind == "ablation":
        from raypair.experiments.ablation import load_ablation

        return load_ablation(path, args.overrides, quick=getattr(args, "quick", False), seeds=getattr(args, "seeds", None),
                             only=getattr(args, "variants", None), name=getattr(args, "name", None),
                             max_concurrent=getattr(args, "max_concurrent", None))
    from raypair.experiments.sweep import load_sweep

    return load_sweep(path, args.overrides, getattr(args, "num_samples", None), getattr(args, "name", None))


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from raypair.config import load_run, to_plain

    kind = file_kind(args.file, "file", ("run", "space", "ablation"))
    for flag in ("quick", "seeds", "variants"):  # never silently ignored
        if kind != "ablation" and getattr(args, flag) not in (None, False):
            raise ConfigError(f"--{flag}", f"only an ablation file takes it; {args.file} is a {kind} file",
                              getattr(args, flag))
    if kind == "run":
        run = load_run(args.file, args.overrides)
        preflight(run)
        out = to_plain(run)
    else:
        exp = _load(kind, args, args.file)
        preflight_all(exp)
        if kind == "ablation":
            out = exp.plain() | {"pairs": len(exp.pairs())}
        else:
            out = {"name": exp.name, "run": to_plain(exp.base_run),
                   "space": {k: {v.kind: list(v.args)} for k, v in exp.space.items()},
                   "tune": exp.tune.model_dump(mode="json"),
                   "resources_per_trial": exp.base_run.scale.resources().total}
    print(yaml.safe_dump(out, sort_keys=False), end="")
    return 0


# ----------------------------------------------------------------------------- experiments
def _tracker(args: argparse.Namespace, storage: Path, experiment: str) -> Any:
    from raypair.tracking import Tracker, default_uri

    uri = args.tracking_uri or default_uri(storage)
    # a tracking server keeps the artifacts (its proxied mlflow-artifacts: store), so a UI on
    # another host can read them; only a local store puts them under --storage
    local = uri.startswith(("sqlite:", "file:", "/"))
    return Tracker(uri, experiment, artifact_root=str(storage / "mlartifacts") if local else None)


def launch(exp: Any, args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """Validate everything that can be validated, then run ``exp`` on Ray; returns the tracker,
    the records of every trial and the storage folder."""
    from raypair.trials import databases
    from raypair.trials.store import prepare

    storage = args.storage
    exp_dir = inside(storage, exp.name, "--name" if args.name else "name")
    preflight_all(exp)
    check_local_resources(exp, args.address)
    databases.read_state(exp_dir)  # an empty or damaged experiment.json: one line
    known = prepare(exp, exp_dir, args.resume)
    args.tracking_uri = databases.tracking_uri(exp_dir, args.tracking_uri)  # --resume keeps the first one
    tracker = _tracker(args, storage, exp.experiment_name)
    databases.check(exp, exp_dir, known, tracker)  # lost or swapped MLflow / Optuna stores: one line
    from raypair.runner.run import run_experiment

    _, records = run_experiment(exp, exp_dir, tracker, known, resume=args.resume, address=args.address,
                                 verbose=args.verbose)
    return tracker, records, storage


def cmd_tune(args: argparse.Namespace) -> int:
    from raypair.tracking import view_route

    file_kind(args.space, "space", ("space",))
    sweep = _load("space", args, args.space)
    tracker, records, storage = launch(sweep, args)
    code = print_trials(sweep, records)
    print(f"MLflow: {tracker.uri} (experiment {sweep.name!r}); browse: raypair ui --storage {storage}, "
          f"then http://127.0.0.1:5000/{view_route(tracker.experiment_id)}")
    return code


def cmd_ablate(args: argparse.Namespace) -> int:
    from raypair.tracking import view_route

    file_kind(args.ablation, "ablation", ("ablation",))
    ab = _load("ablation", args, args.ablation)
    tracker, records, storage = launch(ab, args)
    tags, _ = ab.summary(records)
    finished, failed = tags["raypair.pairs_finished"], tags["raypair.pairs_failed"]
    print(f"{finished} of {tags['raypair.pairs']} pairs finished, {failed} failed\n"
          f"MLflow: {tracker.uri} (experiment {ab.name!r}; its run table: raypair ui, then "
          f"http://127.0.0.1:5000/{view_route(tracker.experiment_id)})\n"
          f"report: raypair report {ab.name} --storage {storage}")
    return 0 if failed == 0 else 1


def cmd_train(args: argparse.Namespace) -> int:
    from raypair.config import check_name, load_run, to_plain
    from raypair.experiments.single import SingleRun

    if file_kind(args.run, "run", ("run", "space")) == "space":  # a search-space file trains its base run
        from raypair.experiments.sweep import load_sweep

        raw = load_sweep(args.run, args.overrides, check=False).base_raw
    else:
        raw = to_plain(load_run(args.run, args.overrides))
    name = args.name or f"{check_name('name', raw.get('name', 'run'))[:90]}-{uuid.uuid4().hex[:8]}"
    exp = SingleRun(name, raw)
    tracker, records, _ = launch(exp, args)
    rec = records[0]
    shown = {k: round(v, 4) for k, v in (rec.rows[-1] if rec.rows else {}).items()
             if k.startswith(("val_", "test_", "train_")) and isinstance(v, float)}
    print(f"{rec.status} {exp.name}: {shown}\nMLflow: {tracker.uri} (experiment {tracker.experiment!r}, "
          f"parent run {exp.name!r})")
    return 0 if rec.status == "finished" else 1


def print_trials(exp: Any, records: list[Any]) -> int:
    """A line per trial (status, epochs, best value of the metric, its label), the counts, the best
    one. Exit code: 0 when every trial ended well (finished, stopped early or infeasible), 1 when
    some failed or diverged, or when no trial finished an epoch."""
    from raypair.experiments.base import STATUSES, best_record, fmt_value

    metric, mode = exp.metric, exp.mode
    print(f"\n{len(records)} trials of {exp.kind} {exp.name!r}:")
    lines = {}
    for rec in records:
        epochs = int(rec.rows[-1]["epoch"]) if rec.rows else 0
        status = {"finished": "done", "infeasible": "infeas.", "failed": "ERROR"}.get(rec.status, rec.status)
        lines[rec.key] = (f"  {status:9}  epochs={epochs:<3} best {metric}={fmt_value(rec.best(metric, mode)):8}  "
                          f"{exp.describe(_trial(rec)).label}")
        print(lines[rec.key])
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    best = best_record(records, metric, mode)  # among trials that ended well
    if best is None:
        print("raypair: no trial finished an epoch without failing or diverging", file=sys.stderr)
        return 1
    print(f"best {metric} = {best.best(metric, mode):.4f}\n{lines[best.key].strip()}")
    return 1 if counts["failed"] or counts["diverged"] else 0


def _trial(rec: Any) -> Any:
    from raypair.experiments.base import Trial

    return Trial(rec.key, rec.params)



# ------------------------------------------------------------------------- other commands
def cmd_report(args: argparse.Namespace) -> int:
    from raypair.report import report

    storage, uri = _store(args)
    out = args.out or inside(storage, args.experiment, "experiment") / "report"
    files = report(uri, args.experiment, out, top=args.top, log=not args.no_log)
    for f in files:
        print(f"wrote {f}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from raypair.config import build_run, parse_override, set_path

    raw: dict[str, Any] = {"method": {"name": args.method}, "data": {"name": args.data}, "epochs": args.epochs}
    for text in args.overrides:
        raw = set_path(raw, *parse_override(text))
    run = build_run(raw)
    if args.epoch is not None and args.epoch >= run.epochs:
        raise ConfigError("--epoch", f"must be below the run's epochs={run.epochs} (0-based)", args.epoch)
    check_data(run.data)
    from raypair.preview import preview

    stats = None if args.beta is None else {"train_acc": args.beta}
    epoch = args.epoch if args.epoch is not None or stats is None else 1
    out = preview(run, args.out, n=args.n, epoch=epoch, stats=stats)
    print(f"wrote {out}")
    return 0


def _store(args: argparse.Namespace) -> tuple[Path, str]:
    """``--storage`` as an absolute path and the tracking URI: ``--tracking-uri``, or the store there."""
    from raypair.tracking import default_uri

    storage = args.storage
    if not args.tracking_uri and not (storage / "mlflow.db").is_file():
        raise ConfigError("--storage", f"no MLflow store at {storage / 'mlflow.db'}; run raypair tune or ablate first",
                          str(storage))
    return storage, args.tracking_uri or default_uri(storage)


def cmd_ui(args: argparse.Namespace) -> int:
    from raypair.cli.ui import serve

    storage, uri = _store(args)
    return serve(uri, storage, args)


def cmd_status(args: argparse.Namespace) -> int:
    from raypair.cli.status import cmd_status as status

    return status(args)
