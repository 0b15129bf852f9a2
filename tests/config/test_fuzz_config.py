"""Fuzzing the config loaders: whatever the bytes of a run, search-space or ablation file, and
whatever a ``--set`` says, only ``ConfigError`` may escape (a result is fine too).

Three kinds of input per loader: raw bytes and YAML-looking text; a valid file with random
fields replaced by random values (numbers at and past every limit, NaN, huge integers, dates,
nested lists and maps, aliases); and random ``--set`` lines. The CI profile runs 150 examples
per test, the same examples every time; ``RAYPAIR_FUZZ_EXAMPLES=2000`` runs more, and with
``RAYPAIR_FUZZ_SEED`` set (to anything) they are drawn afresh at random."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from raypair.config import ConfigError, load_run, parse_override  # noqa: E402
from raypair.experiments.ablation import load_ablation  # noqa: E402
from raypair.experiments.sweep import load_sweep  # noqa: E402

from helpers import DIGITS, QUICK

EXAMPLES = int(os.environ.get("RAYPAIR_FUZZ_EXAMPLES", "150"))
settings.register_profile("raypair", max_examples=EXAMPLES, deadline=None, database=None,  # nothing written here
                          derandomize="RAYPAIR_FUZZ_SEED" not in os.environ,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
FUZZ = settings.get_profile("raypair")

RUN = {"name": "r", "data": {"name": "digits", "image_size": 16}, "model": {"name": "tiny_cnn"},
       "method": {"name": "erm", "aug": "base+"}, "optim": {"name": "sgd", "lr": 0.05}, "epochs": 2, "batch_size": 32}
SPACE = yaml.safe_load(QUICK.read_text())
ABLATION = yaml.safe_load(DIGITS.read_text())
ABLATION.pop("base", None)
ABLATION["run"] = RUN
BASES = {"run": RUN, "space": SPACE, "ablation": ABLATION}
FOLDER = Path(tempfile.mkdtemp(prefix="raypair-fuzz-"))
(FOLDER / "base_run.yaml").write_text(yaml.safe_dump(RUN))

KEYS = ["name", "base", "run", "space", "tune", "data", "model", "method", "optim", "schedule", "scale", "epochs",
        "batch_size", "seed", "lr", "momentum", "alpha", "t1", "t2", "theta_min", "theta_max", "x", "y", "uniform",
        "loguniform", "int", "choice", "grid", "variants", "factors", "seeds", "reference", "quick", "paper",
        "values", "exclude", "metrics", "num_samples", "searcher", "scheduler", "kwargs", "milestones", "workers",
        "pad", "root", "image_size", "val_fraction", "label_smoothing", "aug", "stage_ops", "n_holes", "length"]
PATHS = ["epochs", "seed", "batch_size", "optim.lr", "optim.momentum", "optim.name", "optim.betas", "data.name",
         "data.pad", "data.root", "data.val_fraction", "model.name", "model.kwargs", "method.name", "method.aug",
         "method.alpha", "method.t1", "schedule.milestones", "scale.workers", "scale.gpus_per_worker",
         "tune.num_samples", "tune.metric", "tune.searcher.name", "space.optim.lr", "space.method.t1", "space",
         "name", "diverge.loss_factor", "a..b", "", "epochs.x", "run", "tune"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 2**63, 10**30, 4294967296]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, 1e-300, 1e308, -0.0]),
    st.text(max_size=12), st.sampled_from(KEYS), st.sampled_from(["erm", "cutmix", "pair_training", "vpl", "sgd",
                                                                   "adamw", "base", "base+", "S8", "tiny_cnn", "../x",
                                                                   "2001-13-01", "0000-00-00", "1e-3", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)
YAML_BITS = ["name: q\n", "run:\n", "  epochs: ", "space:\n", "  optim.lr: {uniform: [", "tune: {num_samples: ",
             "variants: {a: {", "factors: {}\n", "&a ", "*a", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "!!int ",
             "!!python/object ", "2001-13-01", ".nan", "1e999", "<<: *a\n", "? ", "'", '"', "\t", "\x00", "é",
             "base: base_run.yaml\n", "base: nope.yaml\n", "seeds: [0, 0]\n", "method: {name: ", "pair_training}",
             "|\n", ">\n", "---\n", "...\n", "%YAML 1.1\n", "#", ",", "0x1F", "1:20:30", "~", "null"]
yaml_text = st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=5), max_size=30).map("".join)


def _load(kind: str, path: Path, overrides: list[str] = ()) -> None:
    try:
        if kind == "run":
            load_run(path, list(overrides))
        elif kind == "space":
            load_sweep(path, list(overrides))
        else:
            load_ablation(path, list(overrides))
    except ConfigError as e:
        assert "\n" not in str(e)


def _write(name: str, data: bytes) -> Path:
    p = FOLDER / name
    p.write_bytes(data)
    return p


def _mutate(base: dict[str, Any], edits: list[tuple[list[str], Any]]) -> dict[str, Any]:
    out = yaml.safe_load(yaml.safe_dump(base))
    for keys, value in edits:
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


edits = st.lists(st.tuples(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3), values), min_size=1, max_size=4)
set_lines = st.one_of(
    st.tuples(st.sampled_from(PATHS), values).map(lambda t: f"{t[0]}={yaml.safe_dump(t[1], default_flow_style=True).strip()}"),
    st.tuples(st.sampled_from(PATHS), st.text(max_size=20)).map(lambda t: f"{t[0]}={t[1]}"),
    st.text(max_size=30))


@pytest.mark.parametrize("kind", ["run", "space", "ablation"])
@FUZZ
@given(data=st.binary(max_size=300) | yaml_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes(kind: str, data: bytes) -> None:
    _load(kind, _write(f"bytes_{kind}.yaml", data))


@pytest.mark.parametrize("kind", ["run", "space", "ablation"])
@FUZZ
@given(changes=edits)
def test_valid_file_with_random_fields(kind: str, changes: list[tuple[list[str], Any]]) -> None:
    text = yaml.safe_dump(_mutate(BASES[kind], changes), allow_unicode=True)
    _load(kind, _write(f"mutated_{kind}.yaml", text.encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("kind", ["run", "space", "ablation"])
@FUZZ
@given(lines=st.lists(set_lines, min_size=1, max_size=3))
def test_random_set_lines(kind: str, lines: list[str]) -> None:
    path = _write(f"set_{kind}.yaml", yaml.safe_dump(BASES[kind]).encode())
    try:
        for line in lines:
            parse_override(line)
    except ConfigError:
        pass
    _load(kind, path, lines)
