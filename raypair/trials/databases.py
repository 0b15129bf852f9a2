"""Before Ray starts on ``--resume``: the experiment's records still belong together.

``<exp>/experiment.json`` names the MLflow parent run and the tracking URI the experiment was
started with; ``--resume`` reuses that URI (another ``--tracking-uri`` is refused), and the MLflow
store must still hold the parent run. A sweep's Optuna study (``<exp>/optuna.db``) must hold at
least every trial the trial store recorded: a lost or swapped study would propose trial keys
again with new params and credit an old result to them. Each mismatch is one line naming the
file or option, and nothing has started. An empty or damaged ``experiment.json`` is one line too.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Optional

from raypair.config import ConfigError

STATE_FILE = "experiment.json"  # the trial store's name for it (raypair.trials.store.STATE_FILE)


def read_state(exp_dir: Path) -> Optional[dict[str, Any]]:
    """``experiment.json``'s content, None if there is none; one line if it is empty or damaged."""
    path = Path(exp_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(STATE_FILE, f"{path} is empty or damaged ({type(e).__name__}); it names the "
                          "experiment's MLflow run: restore it from a backup, or use --name NEW", str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("parent_run_id"), str) or not doc["parent_run_id"]:
        raise ConfigError(STATE_FILE, f"{path} is damaged (no parent_run_id); restore it from a backup, or use "
                          "--name NEW", str(path))
    return doc


def kept_uri(uri: str, exp_dir: Path) -> Optional[str]:
    """What ``experiment.json`` keeps of the tracking URI: None for the store under ``--storage``
    (it moves with the folder), the URI itself for any other store."""
    from raypair.tracking import default_uri

    return None if uri == default_uri(Path(exp_dir).parent) else uri


def tracking_uri(exp_dir: Path, given: Optional[str]) -> Optional[str]:
    """The tracking URI to use: the one the experiment started with on a resume (None: the store
    under ``--storage``, wherever the folder is now)."""
    from raypair.tracking import default_uri

    state = read_state(exp_dir)
    if state is None or "tracking_uri" not in state:
        return given
    kept = state["tracking_uri"]
    recorded = kept or default_uri(Path(exp_dir).parent)
    if given and given != recorded:
        raise ConfigError("--tracking-uri", f"{Path(exp_dir).name} records its runs in {recorded}; --resume "
                          "keeps that store (leave --tracking-uri out)", given)
    return kept or given


def check(exp: Any, exp_dir: Path, known: dict[str, Any], tracker: Any) -> None:
    """The trial store, ``experiment.json``, the MLflow store and the Optuna study agree."""
    state = read_state(exp_dir)
    if state is None:
        if known:
            raise ConfigError(STATE_FILE, f"{Path(exp_dir) / STATE_FILE} is missing but {len(known)} trials are "
                              "recorded: restore it from a backup, or use --name NEW", str(exp_dir))
        return
    store = tracker.store_path()
    if store is not None and not store.is_file():
        raise ConfigError("--tracking-uri", f"the MLflow store {store} is missing (lost or moved); it holds the "
                          f"runs of {exp.name!r}: restore it, or use --name NEW", tracker.uri)
    if not tracker.run_exists(state["parent_run_id"]):
        raise ConfigError("--tracking-uri", f"the MLflow store {tracker.uri} holds no run {state['parent_run_id']} "
                          f"of {exp.name!r} (another or a new store): restore it, or use --name NEW", tracker.uri)
    _check_study(exp, Path(exp_dir), known)


def _check_study(exp: Any, exp_dir: Path, known: dict[str, Any]) -> None:
    searcher = getattr(getattr(exp, "tune", None), "searcher", None)
    if getattr(searcher, "name", None) != "optuna" or not known:
        return
    db = exp_dir / "optuna.db"
    if not db.is_file():
        raise ConfigError("optuna.db", f"{db} is missing (lost or moved) but {len(known)} trials are recorded: "
                          "a new study would propose their keys again; restore it, or use --name NEW", str(db))
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            row = con.execute("SELECT COUNT(*) FROM trials t JOIN studies s ON t.study_id = s.study_id "
                              "WHERE s.study_name = ?", (exp.name,)).fetchone()
    except sqlite3.Error as e:
        raise ConfigError("optuna.db", f"{db} is not an Optuna study ({e})", str(db)) from None
    if row[0] < len(known):
        raise ConfigError("optuna.db", f"{db} holds {row[0]} trials of study {exp.name!r}, the trial store "
                          f"{len(known)}: another or an older study; restore it, or use --name NEW", str(db))
