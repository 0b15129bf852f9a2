"""The commands. Heavy modules (torch, Ray, MLflow) are imported inside them, and every input is
validated (options, config, search space, model, data, storage, resume state) before Ray starts
(``checks.py``). ``tune``, ``ablate``, ``train`` and ``run`` load an experiment through the table of
kinds (``raypair.experiments.kinds``) and hand it to the one runner; what each prints at the end is
the experiment's ``outcome``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from raypair.cli.checks import check_data, check_local_resources, file_kind, inside, preflight_all
from raypair.config import ConfigError


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(resolved(args), sort_keys=False), end="")
    return 0


def resolved(args: argparse.Namespace) -> dict[str, Any]:
    """What ``raypair validate`` prints: the file's experiment, resolved and checked."""
    kind = file_kind(args.file, "file", "validate")
    for flag in ("quick", "seeds", "variants"):  # never silently ignored
        if flag not in kind.options and getattr(args, flag) not in (None, False):
            from raypair.experiments.kinds import KINDS

            takers = " or ".join(k.article for k in map(KINDS.get, KINDS.names()) if flag in k.options)
            raise ConfigError(f"--{flag}", f"only {takers} takes it; {args.file} is a {kind.name} file",
                              getattr(args, flag))
    exp = kind.load(args.file, args)
    preflight_all(exp)
    out = exp.resolved()
    base = getattr(exp, "base_run", None)
    if base is not None:  # which data path its trials take, and why (raypair/data/mode.py)
        from raypair.data.mode import decide

        out["data_mode"] = dict(zip(("mode", "why"), decide(base.data)))
    return out


# ----------------------------------------------------------------------------- experiments
def _tracker(args: argparse.Namespace, storage: Path, experiment: str) -> Any:
    from raypair.tracking import Tracker, default_uri

    uri = args.tracking_uri or default_uri(storage)
    # a tracking server keeps the artifacts (its proxied mlflow-artifacts: store), so a UI on
    # another host can read them; only a local store puts them under --storage
    local = uri.startswith(("sqlite:", "file:", "/"))
    return Tracker(uri, experiment, artifact_root=str(storage / "mlartifacts") if local else None)


def launch(exp: Any, args: argparse.Namespace) -> tuple[list[Any], Any]:
    """Validate everything that can be validated, then run ``exp`` on Ray; returns the records of
    every trial and where the results are (an ``experiments.outcome.Where``)."""
    from raypair.experiments.outcome import Where
    from raypair.trials import databases
    from raypair.trials.store import prepare
    from raypair.tracking import view_route

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
    return records, Where(tracker.uri, tracker.experiment, view_route(tracker.experiment_id), storage)


# the file each experiment command runs, and the field its errors name
FILE_OF = {"tune": "space", "ablate": "ablation", "train": "run", "run": "file"}


def experiment(args: argparse.Namespace) -> Any:
    """The experiment an experiment command runs, loaded through the table of kinds: ``raypair run``
    takes a file of any kind, the others their own kinds; ``train`` trains a file's base run."""
    field = FILE_OF[args.command]
    path = getattr(args, field)
    kind = file_kind(path, field, args.command)
    if args.command != "train":
        return kind.load(path, args)
    from raypair.experiments.kinds import single_run

    return single_run(kind.base_raw(path, args.overrides), args.name)


def execute(args: argparse.Namespace) -> tuple[Any, list[Any], Any]:
    """Load and run the experiment of an experiment command: (experiment, records, outcome). The CLI
    prints the outcome; ``raypair.api`` returns the records as rows."""
    exp = experiment(args)
    records, where = launch(exp, args)
    return exp, records, exp.outcome(records, where)


def cmd_run(args: argparse.Namespace) -> int:
    _, _, out = execute(args)
    print(out.text)
    if out.error:
        print(out.error, file=sys.stderr)
    return out.code


cmd_tune = cmd_ablate = cmd_train = cmd_run


# ------------------------------------------------------------------------- other commands
def report_files(args: argparse.Namespace) -> list[Path]:
    """Write the report of ``raypair report``; the files written."""
    from raypair.report import report

    storage, uri = _store(args)
    out = args.out or inside(storage, args.experiment, "experiment") / "report"
    return report(uri, args.experiment, out, top=args.top, log=not args.no_log)


def cmd_report(args: argparse.Namespace) -> int:
    for f in report_files(args):
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


def cmd_data(args: argparse.Namespace) -> int:
    from raypair.cli.data import cmd_data as data

    return data(args)
