"""``raypair`` command line: tune, ablate, train, run, report, validate, preview, status, ui, data (the
commands are in ``commands.py``, the checks that run before anything starts in ``checks.py``, the
option types in ``args.py``; this module builds the parser and turns a ConfigError, or a plug-in
that fails to load, into one line and exit 2). ``run`` takes an experiment file of any kind in the
table of kinds (``raypair.experiments.kinds``), plug-ins included.

Heavy modules (torch, Ray, MLflow) are imported inside the commands, so ``--help`` is instant, and
every input is validated (options, config, search space, model, dataset, storage) before Ray
starts or any folder is made. Bad input prints one line,
``raypair: error: <dotted.field or --option>: <what> (got <value>)``, and exits 2.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Optional, Sequence

from raypair.cli import args as A
from raypair.config import ConfigError
from raypair.registry import PluginError


def _common(p: argparse.ArgumentParser, storage: bool = True) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a config field, e.g. --set optim.lr=0.05 (repeatable)")
    if storage:
        _storage(p)
        p.add_argument("--address", type=A.address, default=os.environ.get("RAY_ADDRESS") or None,
                       help="Ray cluster address, or auto (default: $RAY_ADDRESS if set, else a local Ray of its own)")


def _storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", type=A.folder, default=os.environ.get("RAYPAIR_STORAGE", "runs"),
                   help="folder for results, checkpoints and the default MLflow store (default: ./runs)")
    p.add_argument("--tracking-uri", type=A.tracking_uri,
                   help="MLflow tracking URI (default: sqlite:///<storage>/mlflow.db)")


def _experiment(p: argparse.ArgumentParser, what: str, resume: str) -> None:
    """Options of every command that runs an experiment on Ray."""
    _common(p)
    p.add_argument("--name", type=A.name, help=f"override the {what}'s name (its folder under --storage and "
                   "MLflow experiment; letters, digits, '_', '-', '.')")
    p.add_argument("--resume", action="store_true", help=resume)
    p.add_argument("--verbose", action="store_true",
                   help="a line per trial per epoch (default: a line per ended trial and a status block every 10 s "
                        "on a terminal, 60 s in a log)")


def parser() -> argparse.ArgumentParser:
    ap = A.Parser(prog="raypair", description="Tune and ablate image-pair training methods "
                  "on Ray, with Optuna and MLflow.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tune", help="run an Optuna sweep of Ray Train trials (one MLflow child run per trial)")
    t.add_argument("space", help="search-space YAML, e.g. search_spaces/quickstart.yaml")
    _experiment(t, "sweep", "finish an interrupted sweep of the same name")
    t.add_argument("--num-samples", type=A.int_in(1, 100_000), help="override tune.num_samples")
    a = sub.add_parser("ablate", help="run an ablation's variants x seeds (one MLflow child run per pair)")
    a.add_argument("ablation", help="ablation YAML, e.g. ablations/p3_table1_c10.yaml")
    _experiment(a, "ablation", "finish an interrupted ablation: finished pairs are skipped, cut-off ones "
                "continue from their last checkpoint; new seeds are added")
    a.add_argument("--quick", action="store_true", help="the file's quick profile (small, for a CPU)")
    a.add_argument("--seeds", type=A.seeds, help="comma-separated seeds instead of the file's, e.g. 0,1,2")
    a.add_argument("--variants", type=A.names, help="comma-separated subset of the variants")
    a.add_argument("--max-concurrent", type=A.int_in(1, 10_000), help="pairs running at once (default: the file's)")
    r = sub.add_parser("train", help="one run, no search (one trial of the same runner)")
    r.add_argument("run", help="run YAML, or a search-space YAML (trains its base run)")
    _experiment(r, "run", "finish an interrupted run of the same --name")
    g = sub.add_parser("run", help="run an experiment file of any kind (raypair.experiments.kinds, plug-ins included)")
    g.add_argument("file", help="experiment YAML: an ablation, a search space, a run, or a kind: of a plug-in")
    _experiment(g, "experiment", "finish an interrupted experiment of the same name")
    _tools(sub)
    return ap


def _tools(sub: Any) -> None:
    """The commands that start no experiment: report, validate, preview, status, ui, data (in this order)."""
    for add in (_report, _validate, _preview, _status, _ui, _data):
        add(sub)


def _report(sub: Any) -> None:
    rp = sub.add_parser("report", help="tables and figures of an ablation or sweep from MLflow")
    rp.add_argument("experiment", type=A.name, help="MLflow experiment: the ablation's or sweep's name")
    _storage(rp)
    rp.add_argument("--out", type=A.folder, help="output folder (default: <storage>/<experiment>/report)")
    rp.add_argument("--top", type=A.int_in(1, 10_000), default=10,
                    help="sweeps: how many best trials to list (default 10)")
    rp.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")


def _validate(sub: Any) -> None:
    v = sub.add_parser("validate", help="print the resolved config or trial space; starts nothing")
    v.add_argument("file")
    _common(v, storage=False)
    v.add_argument("--quick", action="store_true", help="an ablation: check its quick profile (what ablate --quick runs)")
    v.add_argument("--seeds", type=A.seeds, help="an ablation: comma-separated seeds instead of the file's")
    v.add_argument("--variants", type=A.names, help="an ablation: comma-separated subset of the variants")


def _preview(sub: Any) -> None:
    p = sub.add_parser("preview", help="write a PNG grid of real images after a method's transform")
    p.add_argument("method", help="method name, e.g. cutmix")
    _common(p, storage=False)
    p.add_argument("--out", type=A.out_file, required=True, help="PNG file to write (in an existing folder)")
    p.add_argument("--n", type=A.int_in(1, 256), default=16, help="number of images (default 16)")
    p.add_argument("--epoch", type=A.int_in(0, 9999), help="call the method's epoch hook for this 0-based epoch first")
    p.add_argument("--epochs", type=A.int_in(1, 10000), default=100,
                   help="run length the epoch hook assumes (default 100)")
    p.add_argument("--beta", type=A.fraction, help="previous epoch's train accuracy given to the epoch hook "
                   "(PairTraining's stages); implies --epoch 1 unless --epoch is given")
    p.add_argument("--data", default="cifar10", help="dataset (default cifar10; digits works offline)")


def _status(sub: Any) -> None:
    st = sub.add_parser("status", help="where an experiment stands, from its trial store (no Ray, no MLflow)")
    st.add_argument("name", nargs="?", type=A.name,
                    help="experiment name (default: list every experiment under --storage)")
    st.add_argument("--storage", type=A.folder, default=os.environ.get("RAYPAIR_STORAGE", "runs"))


def _ui(sub: Any) -> None:
    u = sub.add_parser("ui", help="start the MLflow UI on the store of --storage")
    _storage(u)
    u.add_argument("--host", type=A.host, default="127.0.0.1",
                   help="bind address (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=A.int_in(1, 65535), default=5000,
                   help="MLflow UI port; the Optuna dashboard takes the next one")
    u.add_argument("--study", type=A.name, help="the sweep whose Optuna study to show (default: the newest sweep's)")


def _data(sub: Any) -> None:
    d = sub.add_parser("data", help="prepare a seed's dataset from its official archives (or write a stand-in); "
                       "downloads nothing")
    d.add_argument("action", choices=["prepare", "standin"])
    d.add_argument("name", help="cifar100, flowers102, stanford_cars, ilsvrc_mini or imagenet1k (standin: any name)")
    d.add_argument("--from", dest="src", type=A.existing_folder, help="prepare: the folder holding the archives")
    d.add_argument("--out", type=A.folder, help="data root to write <out>/NAME into (default: $RAYPAIR_DATA, else ./data)")
    d.add_argument("--max-size", type=A.int_in(16, 4096), help="re-encode larger images as JPEG, shorter side this")
    d.add_argument("--quality", type=A.int_in(1, 100), default=90, help="JPEG quality of re-encoded images (default 90)")
    d.add_argument("--shard-mb", type=A.int_in(1, 65536), default=256, help="image bytes per Parquet shard (default 256)")
    d.add_argument("--verify", choices=["auto", "md5", "size", "none"], default="auto",
                   help="check the official archives: auto (MD5 up to 8 GiB, size above), md5, size, none")
    d.add_argument("--mini-split", choices=["stratified", "random"], default="stratified",
                   help="ilsvrc_mini: 10k test images drawn per class (default) or over all 50k (an ASSUMPTION)")
    d.add_argument("--split-seed", type=A.int_in(0, 2**32 - 1), default=0, help="ilsvrc_mini: the draw's seed")
    d.add_argument("--classes", type=A.int_in(2, 1000), default=4, help="standin: number of classes (default 4)")
    d.add_argument("--train", type=A.int_in(1, 10_000), default=8, help="standin: train images per class (default 8)")
    d.add_argument("--test", type=A.int_in(1, 10_000), default=4, help="standin: test images per class (default 4)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command in this process and give back the signal handlers it found (a test, a
    notebook). The console script and ``python -m raypair`` go through :func:`entry`."""
    code, old = _command(argv)
    _on_sigterm(old)
    return code


def entry() -> None:
    """The process's own run of a command: once the command's outcome is decided, a signal during
    the interpreter's teardown (Ray's and MLflow's exit hooks take a while) ends the process at
    once with that outcome's exit code, the Ray it started killed with it, instead of leaving the
    default handler to end it as killed (exit -15 / 143)."""
    code, _ = _command(sys.argv[1:])
    from raypair.runner.stop import exit_at_next_signal

    exit_at_next_signal(code)
    sys.exit(code)


def _command(argv: Optional[Sequence[str]]) -> tuple[int, Any]:
    """(exit code, the SIGTERM handler this replaced)."""
    from raypair.trials.faults import EXIT_CODE, StorageFault

    old = None
    try:
        args = parser().parse_args(argv)
        from raypair.cli import commands

        old = _on_sigterm(_interrupt)  # before the runner's own handler: the same stop as Ctrl-C
        return getattr(commands, f"cmd_{args.command}")(args), old
    except SystemExit as e:  # --help
        return (e.code if isinstance(e.code, int) else 2), old
    except (ConfigError, PluginError) as e:  # a bad option or input; a plug-in that does not load
        print(f"raypair: error: {e}", file=sys.stderr)
        return 2, old
    except StorageFault as e:
        print(f"raypair: paused: {e}", file=sys.stderr)
        return EXIT_CODE, old
    except KeyboardInterrupt as e:
        print(f"raypair: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
        return 130, old


def _on_sigterm(handler: Any) -> Any:
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a test): leave it
        return None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}; --resume continues")


if __name__ == "__main__":  # pragma: no cover
    entry()
