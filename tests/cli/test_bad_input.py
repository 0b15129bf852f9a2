"""Every bad input is refused in one line: exit 2, exactly one line on stderr naming the dotted
field (or option) and showing the value, no traceback, no Ray, no folder made (neither --storage
nor anything in the working folder). The table runs in-process (fast); the same table runs once
more in a fresh process with a fresh HOME and TMPDIR, which checks that Ray was never imported
and left no session folder; a few cases run as the real ``python -m raypair`` command. Valid edge
cases that must be accepted are at the end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from raypair.cli import main

from helpers import DIGITS, QUICK, ROOT

RUN = {"name": "r", "data": {"name": "digits", "image_size": 16}, "model": {"name": "tiny_cnn"},
       "method": {"name": "erm"}, "epochs": 2, "batch_size": 32}
PT = {"name": "pair_training", "stage_ops": "S8"}


@dataclass
class Case:
    id: str
    argv: list[str]  # {w} is the world folder (files below), {s} the --storage folder
    field: str
    value: Optional[str]  # shown in the line (None: the message names what was wrong)


def quick(**changes: Any) -> dict[str, Any]:
    d = yaml.safe_load(QUICK.read_text())
    for k, v in changes.items():
        d[k] = v
    return d


def quick_run(**run: Any) -> dict[str, Any]:
    d = quick()
    d["run"] = {**d["run"], **run}
    return d


# ------------------------------------------------------------------------------------ the world
TEXT_FILES: dict[str, str | bytes] = {
    "non_utf8.yaml": b"name: q\nrun: {epochs: 2}\n# \xff\xfe caf\xe9\n",
    "bad_date.yaml": QUICK.read_text().replace("  epochs: 8", "  epochs: 8\n  seed: 2001-13-01"),
    "good_date.yaml": QUICK.read_text().replace("  epochs: 8", "  epochs: 2001-01-01"),
    "deep_list.yaml": "name: q\nrun: " + "[" * 3000 + "]" * 3000 + "\n",
    "deep_map.yaml": "name: q\nrun: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    "bomb.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")),
    "cycle.yaml": "name: q\nrun: &r {data: *r}\n",
    "dup.yaml": "name: q\nname: r\nrun: {}\n",
    "list.yaml": "- 1\n- 2\n",
    "syntax.yaml": "name: q\nrun:\n  epochs: [1, 2\n",
    "bad_tag.yaml": "name: q\nrun: {epochs: !!int abc}\n",
    "bare_tag.yaml": "!!int",  # found by the fuzzer: PyYAML's int constructor raises IndexError
    "long_int.yaml": "epochs: " + "9" * 5000 + "\n",
    "py_tag.yaml": "name: !!python/object/apply:os.system [echo hi]\n",
    "huge.yaml": "a: " + "x" * (1 << 20) + "\n",
    "empty.yaml": "",
}
YAML_FILES: dict[str, Any] = {
    "run.yaml": RUN,
    "run_bad_name.yaml": {**RUN, "name": "../escape"},
    "space_no_space.yaml": {"name": "q", "run": RUN},
    "space_run_not_map.yaml": {"name": "q", "run": 5, "space": {}},
    "space_space_list.yaml": {"name": "q", "run": RUN, "space": [1]},
    "space_base_missing.yaml": {"name": "q", "base": "nope.yaml", "space": {"optim.lr": {"uniform": [0.01, 0.1]}}},
    "space_base_dir.yaml": {"name": "q", "base": ".", "space": {"optim.lr": {"uniform": [0.01, 0.1]}}},
    "space_base_chain.yaml": {"name": "q", "base": "space_base_missing.yaml", "space": {}},
    "space_base_ablation.yaml": {"name": "q", "base": "ab.yaml", "space": {}},
    "space_name_escape.yaml": quick(name="../../x"),
    "space_name_abs.yaml": quick(name="/etc"),
    "space_name_quote.yaml": quick(name="it's"),
    "theta_wrong_bound.yaml": quick_run(method=PT, model={"name": "tiny_cnn"}) | {
        "space": {"method.theta_max": {"uniform": [0.2, 1.4]}}},
    "theta_never.yaml": quick_run(method=PT) | {"space": {"method.theta_max": {"uniform": [0.1, 0.2]}}},
    "pad_base.yaml": quick_run(method={"name": "erm", "aug": "base"}) | {"space": {"data.pad": {"int": [2, 6]}}},
    "drop_kwargs.yaml": quick_run(model={"name": "tiny_cnn", "kwargs": {"drop_rate": 0.1}}) | {
        "space": {"model.drop_rate": {"uniform": [0.0, 0.5]}}},
    "eval_bs.yaml": quick(space={"eval_batch_size": {"choice": [256, 512]}}),
    "ckpt_every.yaml": quick(space={"checkpoint_every": {"int": [1, 3]}}),
    "cutout_len.yaml": quick_run(method={"name": "cutout", "n_holes": 0}) | {
        "space": {"method.length": {"int": [4, 16]}}},
    "inf_bound.yaml": quick(space={"optim.lr": {"uniform": [0.01, float("inf")]}}),
    "empty_choice.yaml": quick(space={"optim.lr": {"choice": []}}),
    "ab.yaml": {"name": "ab", "run": RUN, "variants": {"a": {"optim.lr": 0.01}, "b": {"optim.lr": 0.02}},
                "seeds": [0]},
    "ab_no_factors.yaml": {"name": "ab", "run": RUN, "factors": {}},
    "ab_no_variants.yaml": {"name": "ab", "run": RUN, "variants": {}},
    "ab_exclude_all.yaml": {"name": "ab", "run": RUN, "variants": {"a": {"optim.lr": 0.01}}, "exclude": ["a"]},
    "ab_quick_empty.yaml": {"name": "ab", "run": RUN, "variants": {"a": {"optim.lr": 0.01}},
                            "quick": {"variants": []}},
    "ab_name_escape.yaml": {"name": "../ab", "run": RUN, "variants": {"a": {"optim.lr": 0.01}}},
    "ab_eval_bs.yaml": {"name": "ab", "run": RUN, "variants": {"a": {}, "b": {"eval_batch_size": 64}}},
    "ab_pad_base.yaml": {"name": "ab", "run": {**RUN, "method": {"name": "erm", "aug": "base"}},
                         "variants": {"a": {}, "b": {"data.pad": 2}}},
    "ab_seed_neg.yaml": {"name": "ab", "run": RUN, "variants": {"a": {}}, "seeds": [-1]},
}


def _parquet(path: Path, blobs: list[bytes], labels: list[Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    img = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(blobs)])
    pq.write_table(pa.table({"img": img, "label": pa.array(labels)}), path)


def _jpeg(seed: int) -> bytes:
    import torch
    from torchvision.io import encode_jpeg

    x = torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return encode_jpeg(x).numpy().tobytes()


def make_data(root: Path) -> None:
    good = [_jpeg(i) for i in range(4)]
    (root / "bad_parquet").mkdir(parents=True)
    (root / "bad_parquet" / "train.parquet").write_bytes(b"PAR1 not really a parquet file")
    _parquet(root / "bad_parquet" / "test.parquet", good, [0, 1, 0, 1])
    (root / "truncated").mkdir()
    _parquet(root / "truncated" / "train.parquet", good[:3] + [good[3][:40]], [0, 1, 0, 1])
    _parquet(root / "truncated" / "test.parquet", good, [0, 1, 0, 1])
    (root / "text_labels").mkdir()
    _parquet(root / "text_labels" / "train.parquet", good, ["a", "b", "a", "b"])
    _parquet(root / "text_labels" / "test.parquet", good, ["a", "b", "a", "b"])
    for name, bad in (("empty_class", "empty"), ("corrupt_jpg", "corrupt")):
        for split in ("train", "test"):
            for c in ("cat", "dog"):
                d = root / name / split / c
                d.mkdir(parents=True)
                if not (bad == "empty" and split == "train" and c == "dog"):
                    for i in range(2):
                        (d / f"{i}.jpg").write_bytes(good[i])
        if bad == "corrupt":
            (root / name / "train" / "dog" / "1.jpg").write_bytes(good[1][:50])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("world")
    for name, text in TEXT_FILES.items():
        (w / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for name, data in YAML_FILES.items():
        (w / name).write_text(yaml.safe_dump(data, sort_keys=False))
    (w / "a_file").write_text("x")
    (w / "storage_empty").mkdir()
    (w / "storage_mlflow").mkdir()
    (w / "storage_mlflow" / "mlflow.db").write_text("")  # ui looks for the store's file before anything else
    (w / "storage_file_name").mkdir()
    (w / "storage_file_name" / "quickstart").write_text("x")
    (w / "elsewhere").mkdir()
    (w / "storage_link").mkdir()
    (w / "storage_link" / "link").symlink_to(w / "elsewhere")
    make_data(w / "data")
    return w


# ------------------------------------------------------------------------------------ the table
def V(*argv: str) -> list[str]:
    return ["validate", *argv]


def T(*argv: str, space: str = str(QUICK)) -> list[str]:
    return ["tune", space, "--storage", "{s}", *argv]


def D(name: str, *extra: str) -> list[str]:
    """validate a digits run file whose data is ``data/<name>`` of the world."""
    return V("{w}/run.yaml", "--set", "data.root={w}/data", "--set", f"data.name={name}", *extra)


FILE_CASES = [
    Case("missing file", V("{w}/nope.yaml"), "file", "nope.yaml"),
    Case("tune missing file", ["tune", "{w}/nope.yaml", "--storage", "{s}"], "space", "nope.yaml"),
    Case("ablate missing file", ["ablate", "{w}/nope.yaml", "--storage", "{s}"], "ablation", "nope.yaml"),
    Case("train missing file", ["train", "{w}/nope.yaml", "--storage", "{s}"], "run", "nope.yaml"),
    Case("folder as file", V("{w}"), "file", "is a folder"),
    Case("non-utf8 bytes", V("{w}/non_utf8.yaml"), "file", "0xff"),
    Case("invalid date", V("{w}/bad_date.yaml"), "seed", "2001-13-01"),
    Case("date for a number", V("{w}/good_date.yaml"), "epochs", "2001-01-01"),
    Case("deep list", V("{w}/deep_list.yaml"), "file", "nested"),
    Case("deep map", V("{w}/deep_map.yaml"), "file", "nested"),
    Case("alias bomb", V("{w}/bomb.yaml"), "file", "expands"),
    Case("recursive alias", V("{w}/cycle.yaml"), "file", "contains it"),
    Case("duplicate key", V("{w}/dup.yaml"), "file", "duplicate key 'name'"),
    Case("top level list", V("{w}/list.yaml"), "file", "list"),
    Case("syntax error", V("{w}/syntax.yaml"), "file", "syntax.yaml"),
    Case("bad explicit tag", V("{w}/bad_tag.yaml"), "file", "abc"),
    Case("bare int tag", V("{w}/bare_tag.yaml"), "file", "IndexError"),
    Case("5000-digit integer", V("{w}/long_int.yaml"), "file", "digits"),
    Case("python tag", V("{w}/py_tag.yaml"), "file", "python/object"),
    Case("huge file", V("{w}/huge.yaml"), "file", "huge.yaml"),
    Case("file name too long", V("{w}/" + "x" * 300 + ".yaml"), "file", "xxxx"),
    Case("empty run file", V("{w}/empty.yaml"), "method", None),
    Case("base missing", V("{w}/space_base_missing.yaml"), "base", "nope.yaml"),
    Case("base is a folder", V("{w}/space_base_dir.yaml"), "base", "is a folder"),
    Case("base of a base", V("{w}/space_base_chain.yaml"), "base", "nope.yaml"),
    Case("base is an ablation", V("{w}/space_base_ablation.yaml"), "base", "ab.yaml"),
    Case("tune a space without space", T(space="{w}/space_no_space.yaml"), "space", "{}"),
    Case("tune a run file", T(space="{w}/run.yaml"), "space", "run.yaml"),
    Case("ablate a space file", ["ablate", str(QUICK), "--storage", "{s}"], "ablation", "quickstart.yaml"),
    Case("train an ablation", ["train", "{w}/ab.yaml", "--storage", "{s}"], "run", "ab.yaml"),
    Case("run not a mapping", V("{w}/space_run_not_map.yaml"), "run", "5"),
    Case("space not a mapping", V("{w}/space_space_list.yaml"), "space", "[1]"),
]

SET_CASES = [
    Case("set date", V(str(QUICK), "--set", "batch_size=0000-00-00"), "batch_size", "0000-00-00"),
    Case("set nan", V(str(QUICK), "--set", "optim.lr=.nan"), "optim.lr", "nan"),
    Case("set inf", V(str(QUICK), "--set", "optim.momentum=.inf"), "optim.momentum", "inf"),
    Case("set empty key", V(str(QUICK), "--set", "a..b=1"), "--set", "a..b"),
    Case("set into a value", V(str(QUICK), "--set", "epochs.x=1"), "epochs", "8"),
    Case("set no value", V(str(QUICK), "--set", "novalue"), "--set", "novalue"),
    Case("set no path", V(str(QUICK), "--set", "=5"), "--set", "=5"),
    Case("validate a space --quick", V(str(QUICK), "--quick"), "--quick", "True"),
    Case("validate a space --seeds", V(str(QUICK), "--seeds", "0,1"), "--seeds", "[0, 1]"),
    Case("set bad yaml", V(str(QUICK), "--set", "optim.lr=[1"), "optim.lr", "[1"),
    Case("set space itself", V(str(QUICK), "--set", "space=1"), "--set", "space=1"),
    Case("set unknown key", V(str(QUICK), "--set", "optim.lrr=0.1"), "optim.lrr", None),
    Case("key with a newline", V(str(QUICK), "--set", 'optim={"a\\nb": 1}'), "optim.a\\nb", None),  # fuzzer
    Case("set wrong type", V(str(QUICK), "--set", "optim.lr=fast"), "optim.lr", "fast"),
    Case("set method name", V(str(QUICK), "--set", "method.name=nosuch"), "method.name", "nosuch"),
    Case("set model name", V(str(QUICK), "--set", "model.name=resnet_nosuch"), "model.name", "resnet_nosuch"),
    Case("data name traversal", V(str(QUICK), "--set", "data.name=../etc"), "data.name", "../etc"),
    Case("data name too long", V(str(QUICK), "--set", "data.name=" + "d" * 300), "data.name", "ddd"),
    Case("data root ~user", V(str(QUICK), "--set", "data.name=cifar10", "--set", "data.root=~nosuchuser/x"),
         "data.root", "~nosuchuser/x"),
    Case("data root too long", V(str(QUICK), "--set", "data.name=cifar10", "--set", "data.root=/tmp/" + "r" * 300),
         "data.root", "rrr"),
    Case("data source", V(str(QUICK), "--set", "data.source=hf"), "data.source", "hf"),
    Case("model kwargs unknown", V(str(QUICK), "--set", "model.kwargs={nosuch: 1}"), "model.kwargs", "nosuch"),
    Case("model kwargs reserved", V(str(QUICK), "--set", "model.kwargs={num_classes: 3}"),
         "model.kwargs.num_classes", "num_classes"),
    Case("model kwargs pretrained", V(str(QUICK), "--set", "model.kwargs={pretrained: true}"),
         "model.kwargs.pretrained", "pretrained"),
    Case("seed negative", V(str(QUICK), "--set", "seed=-1"), "seed", "-1"),
    Case("seed huge", V(str(QUICK), "--set", "seed=99999999999"), "seed", "99999999999"),
    Case("split seed", V(str(QUICK), "--set", "data.split_seed=-3"), "data.split_seed", "-3"),
    Case("batch size huge", V(str(QUICK), "--set", "batch_size=100000"), "batch_size", "100000"),
    Case("eval batch zero", V(str(QUICK), "--set", "eval_batch_size=0"), "eval_batch_size", "0"),
    Case("checkpoint every zero", V(str(QUICK), "--set", "checkpoint_every=0"), "checkpoint_every", "0"),
    Case("epochs zero", V(str(QUICK), "--set", "epochs=0"), "epochs", "0"),
    Case("epochs huge", V(str(QUICK), "--set", "epochs=10001"), "epochs", "10001"),
    Case("val fraction", V(str(QUICK), "--set", "data.val_fraction=1.5"), "data.val_fraction", "1.5"),
    Case("pad", V(str(QUICK), "--set", "data.pad=100"), "data.pad", "100"),
    Case("image size", V(str(QUICK), "--set", "data.image_size=4"), "data.image_size", "4"),
    Case("train subset zero", V(str(QUICK), "--set", "data.train_subset=0"), "data.train_subset", "0"),
    Case("train subset too large", V(str(QUICK), "--set", "data.train_subset=100000"), "data.train_subset",
         "100000"),
    Case("val fraction empties a class", V(str(QUICK), "--set", "data.val_fraction=0.999"), "data.val_fraction",
         "0.999"),
    Case("momentum", V(str(QUICK), "--set", "optim.momentum=1.5"), "optim.momentum", "1.5"),
    Case("weight decay", V(str(QUICK), "--set", "optim.weight_decay=2"), "optim.weight_decay", "2"),
    Case("lr huge", V(str(QUICK), "--set", "optim.lr=11"), "optim.lr", "11"),
    Case("optimizer", V(str(QUICK), "--set", "optim.name=lamb"), "optim.name", "lamb"),
    Case("betas", V(str(QUICK), "--set", "space.optim.momentum=null", "--set", "optim.betas=[1.5, 0.9]"),
         "optim.betas", "1.5"),
    Case("nesterov without momentum", V(str(QUICK), "--set", "optim.momentum=0"), "optim.nesterov", "momentum=0"),
    Case("milestones order", V(str(QUICK), "--set", "schedule.name=multistep", "--set",
                               "schedule.milestones=[3, 2]"), "schedule.milestones", "[3"),
    Case("milestones negative", V(str(QUICK), "--set", "schedule.milestones=[-1]"), "schedule.milestones", "-1"),
    Case("milestone fractions", V(str(QUICK), "--set", "schedule.milestone_unit=fraction", "--set",
                                  "schedule.milestones=[0.5, 2]"), "schedule.milestones", "2"),
    Case("gamma", V(str(QUICK), "--set", "schedule.gamma=0"), "schedule.gamma", "0"),
    Case("schedule name", V(str(QUICK), "--set", "schedule.name=step"), "schedule.name", "step"),
    Case("cosine floor above the lr", V(str(QUICK), "--set", "schedule.min_lr=5.0"), "schedule.min_lr", "5.0"),
    Case("warmup longer than run", V(str(QUICK), "--set", "schedule.warmup_epochs=100"), "schedule.warmup_epochs",
         "100"),
    Case("workers split batch", V(str(QUICK), "--set", "scale.workers=3"), "batch_size", "scale.workers=3"),
    Case("workers zero", V(str(QUICK), "--set", "scale.workers=0"), "scale.workers", "0"),
    Case("gpus", V(str(QUICK), "--set", "scale.gpus_per_worker=9"), "scale.gpus_per_worker", "9"),
    Case("direct with workers", V(str(QUICK), "--set", "scale.trainer=direct", "--set", "scale.workers=2"),
         "scale.trainer", "workers=2"),
    Case("cpus per worker", V(str(QUICK), "--set", "scale.cpus_per_worker=0"), "scale.cpus_per_worker", "0"),
    Case("loss factor", V(str(QUICK), "--set", "diverge.loss_factor=1"), "diverge.loss_factor", "1"),
    Case("chance margin", V(str(QUICK), "--set", "diverge.chance_margin=1"), "diverge.chance_margin", "1"),
    Case("tune metric", V(str(QUICK), "--set", "tune.metric=accuracy"), "tune.metric", "accuracy"),
    Case("tune test metric with asha", V(str(QUICK), "--set", "tune.metric=test_acc"), "tune.metric", "test_acc"),
    Case("max_t", V(str(QUICK), "--set", "tune.scheduler.max_t=100"), "tune.scheduler.max_t", "100"),
    Case("grace period", V(str(QUICK), "--set", "tune.scheduler.grace_period=100"), "tune.scheduler.grace_period",
         "100"),
    Case("searcher", V(str(QUICK), "--set", "tune.searcher.name=grid"), "tune.searcher.name", "grid"),
    Case("max failures", V(str(QUICK), "--set", "tune.max_failures=-1"), "tune.max_failures", "-1"),
    Case("reduction factor", V(str(QUICK), "--set", "tune.scheduler.reduction_factor=1"),
         "tune.scheduler.reduction_factor", "1"),
    Case("num samples zero", V(str(QUICK), "--set", "tune.num_samples=0"), "tune.num_samples", "0"),
    Case("num samples huge", V(str(QUICK), "--set", "tune.num_samples=1000000000000"), "tune.num_samples",
         "1000000000000"),
]

SPACE_CASES = [
    Case("space unknown path", V(str(QUICK), "--set", "space.optim.nosuch={uniform: [0.1, 0.2]}"),
         "space.optim.nosuch", None),
    Case("space inactive knob", V(str(QUICK), "--set", "space.method.alpha={uniform: [0.1, 0.2]}"),
         "space.method.alpha", None),
    Case("space bound out of range", V(str(QUICK), "--set", "space.optim.momentum={uniform: [0.5, 1.5]}"),
         "space.optim.momentum", "1.5"),
    Case("space theta wrong bound", V("{w}/theta_wrong_bound.yaml"), "space.method.theta_max", "1.4"),
    Case("space theta never feasible", V("{w}/theta_never.yaml"), "space.method.theta_max", "0.1"),
    Case("space pad under base", V("{w}/pad_base.yaml"), "space.data.pad", "aug: base+"),
    Case("space drop rate under kwargs", V("{w}/drop_kwargs.yaml"), "space.model.drop_rate", "kwargs.drop_rate"),
    Case("space eval batch size", V("{w}/eval_bs.yaml"), "space.eval_batch_size", "changes no result"),
    Case("space checkpoint every", V("{w}/ckpt_every.yaml"), "space.checkpoint_every", "changes no result"),
    Case("space cutout length without holes", V("{w}/cutout_len.yaml"), "space.method.length", "not read"),
    Case("space low > high", V(str(QUICK), "--set", "space.optim.lr={uniform: [0.2, 0.1]}"), "space.optim.lr",
         "[0.2, 0.1]"),
    Case("space loguniform zero", V(str(QUICK), "--set", "space.optim.lr={loguniform: [0.0, 0.1]}"),
         "space.optim.lr", "[0.0, 0.1]"),
    Case("space unknown kind", V(str(QUICK), "--set", "space.optim.lr={gaussian: [0.0, 0.1]}"),
         "space.optim.lr.gaussian", None),
    Case("space grid with optuna", V(str(QUICK), "--set", "space.optim.lr={grid: [0.1, 0.2]}"), "space.optim.lr",
         "grid"),
    Case("space and set", V(str(QUICK), "--set", "optim.lr=0.1"), "space.optim.lr", "--set"),
    Case("space infinite bound", V("{w}/inf_bound.yaml"), "space.optim.lr.uniform.1", "inf"),
    Case("space empty choice", V("{w}/empty_choice.yaml"), "space.optim.lr", "choice"),
    Case("space name escapes", V("{w}/space_name_escape.yaml"), "name", "../../x"),
    Case("space name absolute", V("{w}/space_name_abs.yaml"), "name", "/etc"),
    Case("space name quote", V("{w}/space_name_quote.yaml"), "name", "it's"),
]

ABLATION_CASES = [
    Case("factors empty", V("{w}/ab_no_factors.yaml"), "factors", "{}"),
    Case("variants empty", V("{w}/ab_no_variants.yaml"), "variants", "{}"),
    Case("exclude all", V("{w}/ab_exclude_all.yaml"), "exclude", "['a']"),
    Case("quick variants empty", V("{w}/ab_quick_empty.yaml"), "quick.variants", "[]"),
    Case("ablation name escapes", V("{w}/ab_name_escape.yaml"), "name", "../ab"),
    Case("ablation variant eval batch", V("{w}/ab_eval_bs.yaml"), "variants.b.eval_batch_size", "no result"),
    Case("ablation variant pad under base", V("{w}/ab_pad_base.yaml"), "variants.b.data.pad", "base+"),
    Case("ablation negative seed", V("{w}/ab_seed_neg.yaml"), "seeds.0", "-1"),
    Case("seeds repeated", ["ablate", str(DIGITS), "--storage", "{s}", "--seeds", "0,0"], "--seeds", "0,0"),
    Case("seeds text", ["ablate", str(DIGITS), "--storage", "{s}", "--seeds", "a,b"], "--seeds", "a,b"),
    Case("seeds negative", ["ablate", str(DIGITS), "--storage", "{s}", "--seeds", "-1"], "--seeds", "-1"),
    Case("variants empty list", ["ablate", str(DIGITS), "--storage", "{s}", "--variants", ","], "--variants",
         "','"),
    Case("variants unknown", ["ablate", str(DIGITS), "--storage", "{s}", "--variants", "nope"], "--variants",
         "nope"),
    Case("max concurrent zero", ["ablate", str(DIGITS), "--storage", "{s}", "--max-concurrent", "0"],
         "--max-concurrent", "0"),
    Case("quick without profile", ["ablate", "{w}/ab.yaml", "--storage", "{s}", "--quick"], "--quick", "ab.yaml"),
    Case("ablate name escapes", ["ablate", "{w}/ab.yaml", "--storage", "{s}", "--name", "../abl"], "--name", "../abl"),
    Case("ablate name deep escape", ["ablate", "{w}/ab.yaml", "--storage", "{s}", "--name", "../../../../etc"],
         "--name", "../../../../etc"),
]

CLI_CASES = [
    Case("tune name escapes", T("--name", "../x"), "--name", "../x"),
    Case("tune name absolute", T("--name", "/etc"), "--name", "/etc"),
    Case("tune name quote", T("--name", "it's"), "--name", "it's"),
    Case("tune name empty", T("--name", ""), "--name", "''"),
    Case("tune name too long", T("--name", "n" * 101), "--name", "nnn"),
    Case("experiment folder is a file", ["tune", str(QUICK), "--storage", "{w}/storage_file_name"], "name",
         "quickstart"),
    Case("name is a link out of storage", ["tune", str(QUICK), "--storage", "{w}/storage_link", "--name", "link"],
         "--name", "elsewhere"),
    Case("train name escapes", ["train", "{w}/run.yaml", "--storage", "{s}", "--name", "a/b"], "--name", "a/b"),
    Case("train run name escapes", ["train", "{w}/run_bad_name.yaml", "--storage", "{s}"], "name", "../escape"),
    Case("--num-samples huge", T("--num-samples", "1000000000000"), "--num-samples", "1000000000000"),
    Case("--num-samples text", T("--num-samples", "x"), "--num-samples", "x"),
    Case("--num-samples zero", T("--num-samples", "0"), "--num-samples", "0"),
    Case("storage is a file", ["tune", str(QUICK), "--storage", "{w}/a_file"], "--storage", "a_file"),
    Case("storage under a file", ["tune", str(QUICK), "--storage", "{w}/a_file/sub"], "--storage", "a_file"),
    Case("storage an s3 URI", ["tune", str(QUICK), "--storage", "s3://bucket/runs"], "--storage", "s3://bucket/runs"),
    Case("storage a gs URI", ["ablate", str(DIGITS), "--storage", "gs://b/r"], "--storage", "gs://b/r"),
    Case("status bad name", ["status", "../x", "--storage", "{w}/storage_empty"], "name", "../x"),
    Case("status unknown name", ["status", "nope", "--storage", "{w}/storage_empty"], "name", "nope"),
    Case("ui unknown study", ["ui", "--storage", "{w}/storage_mlflow", "--study", "nope"], "--study", "nope"),
    Case("storage empty", ["tune", str(QUICK), "--storage", ""], "--storage", "''"),
    Case("storage quote", ["tune", str(QUICK), "--storage", "{s}'x"], "--storage", "'x"),
    Case("storage newline", ["tune", str(QUICK), "--storage", "{s}\nx"], "--storage", "\\n"),
    Case("storage name too long", ["tune", str(QUICK), "--storage", "{s}/" + "s" * 300], "--storage", "sss"),
    Case("tracking uri scheme", T("--tracking-uri", "nosuch://x"), "--tracking-uri", "nosuch://x"),
    Case("tracking uri folder", T("--tracking-uri", "sqlite:///{w}/nodir/m.db"), "--tracking-uri", "nodir"),
    Case("tracking uri port", T("--tracking-uri", "http://host:99999"), "--tracking-uri", "99999"),
    Case("tracking uri memory", T("--tracking-uri", "sqlite://"), "--tracking-uri", "sqlite://"),
    Case("address", T("--address", "not an address"), "--address", "not an address"),
    Case("address port", T("--address", "host:0"), "--address", "host:0"),
    Case("resume nothing", T("--resume"), "--resume", "quickstart"),
    Case("too many cpus", T("--set", "scale.cpus_per_worker=1000"), "scale", "1000"),
    Case("unknown option", T("--bogus"), "--bogus", "--bogus"),
    Case("option without value", T("--name"), "--name", None),
    Case("no file", ["tune"], "space", None),
    Case("no command", [], "command", None),
    Case("unknown command", ["nosuch"], "command", "nosuch"),
    Case("validate with storage", V(str(QUICK), "--storage", "{s}"), "--storage", "--storage"),
    Case("report top zero", ["report", "x", "--storage", "{w}/storage_empty", "--top", "0"], "--top", "0"),
    Case("report no store", ["report", "x", "--storage", "{w}/storage_empty"], "--storage", "storage_empty"),
    Case("report escapes", ["report", "../../etc", "--storage", "{w}/storage_empty"], "experiment", "../../etc"),
    Case("report out is a file", ["report", "x", "--storage", "{w}/storage_empty", "--out", "{w}/a_file"], "--out",
         "a_file"),
    Case("preview out folder missing", ["preview", "cutmix", "--data", "digits", "--out", "{w}/nodir/x.png"], "--out",
         "nodir"),
    Case("preview out is a folder", ["preview", "cutmix", "--data", "digits", "--out", "{w}"], "--out", "is a folder"),
    Case("preview out missing", ["preview", "cutmix", "--data", "digits"], "--out", None),
    Case("preview n", ["preview", "cutmix", "--data", "digits", "--out", "{w}/p.png", "--n", "0"], "--n", "0"),
    Case("preview beta", ["preview", "pair_training", "--data", "digits", "--out", "{w}/p.png", "--beta", "1.5"],
         "--beta", "1.5"),
    Case("preview beta nan", ["preview", "pair_training", "--data", "digits", "--out", "{w}/p.png", "--beta", "nan"],
         "--beta", "nan"),
    Case("preview epoch negative", ["preview", "cutmix", "--data", "digits", "--out", "{w}/p.png", "--epoch", "-1"],
         "--epoch", "-1"),
    Case("preview epoch past run", ["preview", "cutmix", "--data", "digits", "--out", "{w}/p.png", "--epoch", "200"],
         "--epoch", "200"),
    Case("preview epochs zero", ["preview", "cutmix", "--data", "digits", "--out", "{w}/p.png", "--epochs", "0"],
         "--epochs", "0"),
    Case("preview method", ["preview", "nosuch", "--data", "digits", "--out", "{w}/p.png"], "method.name", "nosuch"),
    Case("preview data", ["preview", "cutmix", "--data", "nosuch", "--out", "{w}/p.png"], "data.name", "nosuch"),
    Case("preview set", ["preview", "cutmix", "--data", "digits", "--out", "{w}/p.png", "--set", "method.alpha=-1"],
         "method.alpha", "-1"),
    Case("ui port high", ["ui", "--storage", "{w}/storage_empty", "--port", "99999"], "--port", "99999"),
    Case("ui port zero", ["ui", "--storage", "{w}/storage_empty", "--port", "0"], "--port", "0"),
    Case("ui port text", ["ui", "--storage", "{w}/storage_empty", "--port", "http"], "--port", "http"),
    Case("ui host", ["ui", "--storage", "{w}/storage_empty", "--host", "bad host!"], "--host", "bad host!"),
    Case("ui no store", ["ui", "--storage", "{w}/storage_empty"], "--storage", "storage_empty"),
    Case("ui storage file", ["ui", "--storage", "{w}/a_file"], "--storage", "a_file"),
    Case("ui tracking uri", ["ui", "--tracking-uri", "ftp://x"], "--tracking-uri", "ftp://x"),
]

DATA_CASES = [
    Case("corrupt parquet", D("bad_parquet"), "data.name", "bad_parquet/train.parquet"),
    Case("truncated jpeg in parquet", D("truncated"), "data.name", "truncated/train.parquet row 3"),
    Case("text labels", D("text_labels"), "data.name", "text_labels/train.parquet"),
    Case("empty class folder", D("empty_class"), "data.name", "'dog'"),
    Case("corrupt jpg file", D("corrupt_jpg"), "data.name", "corrupt_jpg/train/dog/1.jpg"),
    Case("missing dataset", D("nosuch"), "data.name", "nosuch"),
    Case("tune on corrupt data", T("--set", "data.root={w}/data", "--set", "data.name=truncated", "--set",
                                   "data.image_size=null"), "data.name", "row 3"),
]


def _bounds(field: Any) -> tuple[Optional[float], bool, Optional[float], bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
        if getattr(m, "lt", None) is not None:
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def method_cases() -> list[Case]:
    """Every range-checked and every Literal knob of every method, just outside its range."""
    from raypair.methods import METHODS

    out = []
    for name in METHODS.names():
        for knob, field in METHODS.get(name).Config.model_fields.items():
            if knob == "name":
                continue
            ann = field.annotation
            bad: list[Any] = []
            lo, lo_open, hi, hi_open = _bounds(field)
            step = 1 if ann is int or int in typing.get_args(ann) else 0.5
            if lo is not None:
                bad.append(lo if lo_open else lo - step)
            if hi is not None:
                bad.append(hi if hi_open else hi + step)
            if typing.get_origin(ann) is typing.Literal:
                bad.append("nosuch")
            for v in bad:
                out.append(Case(f"{name}.{knob}={v}", V("{w}/run.yaml", "--set", f"method.name={name}", "--set",
                                                          f"method.{knob}={v}"), f"method.{knob}", str(v)))
    return out


CROSS_CASES = [
    Case("t2 <= t1", V("{w}/run.yaml", "--set", "method={name: pair_training, t1: 0.6, t2: 0.5}"), "method.t2",
         "0.5"),
    Case("a_max < a_min", V("{w}/run.yaml", "--set", "method={name: pair_training, a_min: 0.5, a_max: 0.2}"),
         "method.a_max", "0.2"),
    Case("theta_max < theta_min", V("{w}/run.yaml", "--set", "method={name: pair_training, theta_min: 0.5, "
                                    "theta_max: 0.2}"), "method.theta_max", "0.2"),
    Case("omega convex", V("{w}/run.yaml", "--set", "method={name: pair_training, omega_convex: true, omega: 2}"),
         "method.omega", "2"),
    Case("stage ops", V("{w}/run.yaml", "--set", "method={name: pair_training, stage_ops: S99}"),
         "method.stage_ops", "S99"),
    Case("sample pairing never on", V("{w}/run.yaml", "--set", "method={name: sample_pairing, warmup_frac: 0.9, "
                                      "final_off_frac: 0.2}"), "method.final_off_frac", "0.2"),
    Case("vpl x + y", V("{w}/run.yaml", "--set", "method={name: vpl, x: 70, y: 40}"), "method.y", "y=40"),
    Case("vpl distill without teacher", V("{w}/run.yaml", "--set", "method={name: vpl, mode: distill}"),
         "method.teacher_checkpoint", "None"),
    Case("vpl vit model", V("{w}/run.yaml", "--set", "method={name: vpl, vit_model: nosuch_vit}"),
         "method.vit_model", "nosuch_vit"),
    Case("mixup ft epochs", V("{w}/run.yaml", "--set", "method={name: mixup, ft_epochs: 1001}"), "method.ft_epochs",
         "1001"),
    Case("mixup_c ft epochs", V("{w}/run.yaml", "--set", "method={name: mixup_c, ft_epochs: -1}"), "method.ft_epochs",
         "-1"),
    Case("method key of another method", V("{w}/run.yaml", "--set", "method.alpha=0.5"), "method.alpha", None),
]

CASES = FILE_CASES + SET_CASES + SPACE_CASES + ABLATION_CASES + CLI_CASES + DATA_CASES + CROSS_CASES + method_cases()


def fill(argv: list[str], world: Path, storage: Path) -> list[str]:
    return [a.replace("{w}", str(world)).replace("{s}", str(storage)) for a in argv]


def check_line(case: Case, code: Any, err: str, world: Path, storage: Path) -> None:
    lines = err.splitlines()
    assert code == 2, (case.id, code, err)
    assert len(lines) == 1, (case.id, err)
    line = lines[0]
    assert "Traceback" not in err and line.startswith(f"raypair: error: {case.field}: "), (case.id, line)
    if case.value is not None:
        want = case.value.replace("{w}", str(world)).replace("{s}", str(storage))
        assert want in line, (case.id, want, line)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(case: Case, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("RAYPAIR_DATA", str(world / "data"))
    storage = tmp_path / "runs"
    before = sorted(p.name for p in world.iterdir())
    code = main(fill(case.argv, world, storage))
    err = capsys.readouterr().err
    check_line(case, code, err, world, storage)
    assert not storage.exists() and not list(cwd.iterdir()), f"{case.id}: a folder was made"
    assert sorted(p.name for p in world.iterdir()) == before
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 120 and len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------- in fresh processes
_DRIVER = """
import contextlib, io, json, os, sys
from raypair.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except BaseException as e:
            code = repr(e)
    out.append([code, err.getvalue()])
print(json.dumps({"results": out, "ray_imported": "ray" in sys.modules}))
"""


def _fresh_env(tmp_path: Path, world: Path) -> dict[str, str]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "RAYPAIR_DATA": str(world / "data"),
            "RAYPAIR_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_whole_table_in_a_fresh_process_never_imports_ray(world: Path, tmp_path: Path) -> None:
    """One fresh process runs every case: none imports Ray, no Ray session folder appears in its
    TMPDIR, nothing lands in its HOME or working folder, and --storage is never made."""
    env = _fresh_env(tmp_path, world)
    cwd, storage = tmp_path / "cwd", tmp_path / "runs"
    cwd.mkdir()
    argvs = [fill(c.argv, world, storage) for c in CASES]
    proc = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(argvs), capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, (code, err) in zip(CASES, out["results"]):
        check_line(case, code, err, world, storage)
    assert out["ray_imported"] is False
    assert not list((tmp_path / "tmp").glob("ray*")) and not list(cwd.iterdir()) and not storage.exists()
    assert not list((tmp_path / "home").iterdir())


REAL = ["--seeds repeated", "ui port high", "storage is a file", "non-utf8 bytes", "tune name escapes",
        "truncated jpeg in parquet"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", REAL)
def test_the_real_command(case_id: str, world: Path, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id.replace("--seeds", "seeds"))
    storage = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "raypair", *fill(case.argv, world, storage)], capture_output=True,
                          text=True, env=_fresh_env(tmp_path, world), cwd=tmp_path, timeout=300)
    check_line(case, proc.returncode, proc.stderr, world, storage)
    assert proc.stdout == "" and not storage.exists()


# --------------------------------------------------------------------- nothing outside --storage
def test_no_name_writes_outside_storage(tmp_path: Path) -> None:
    from raypair.cli.checks import inside
    from raypair.config import ConfigError

    storage = tmp_path / "runs"
    storage.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (storage / "link").symlink_to(tmp_path / "elsewhere")
    for bad in ["../x", "/etc", "../../../../etc", "a/b", "..", ".", "", "it's", "x" * 101, "link", "a\\b", "-x"]:
        with pytest.raises(ConfigError):
            inside(storage, bad)
    assert inside(storage, "ok-name_1.2") == storage.resolve() / "ok-name_1.2"


# ------------------------------------------------------------------------ valid edge cases
GOOD = [
    ("joint theta space", {"method.theta_min": {"uniform": [0.1, 0.7]}, "method.theta_max": {"uniform": [0.7, 0.9]}}),
    ("overlapping stages", {"method.t1": {"uniform": [0.1, 0.6]}, "method.t2": {"uniform": [0.5, 0.9]}}),
    ("theta max above the base min", {"method.theta_max": {"uniform": [0.3, 1.0]}}),
]


@pytest.mark.parametrize("label, space", GOOD, ids=[g[0] for g in GOOD])
def test_valid_spaces_are_accepted(label: str, space: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(quick_run(method=PT) | {"space": space}))
    assert main(["validate", str(p)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["--set", "name=2001-01-01"],  # a date-like text in a text field stays text
    ["--set", "space.optim.lr=null", "--set", "optim.lr=1e-3"],
    ["--set", "seed=4294967295"],
    ["--set", "method.name=cutout", "--set", "method.n_holes=0", "--set", "space.method.label_smoothing=null"],
    ["--set", "space.optim.momentum={grid: [0.0, 0.9]}", "--set", "space.optim.nesterov={grid: [true, false]}",
     "--set", "tune.searcher.name=random"],  # momentum 0 with nesterov is one infeasible point: fine
])
def test_valid_inputs_are_accepted(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(QUICK), *argv]) == 0, capsys.readouterr().err


def test_unicode_and_anchors_are_fine(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A unicode comment, an anchor with its alias and a merge key (``<<: *``) in a real file: the
    values they carry reach the resolved run."""
    text = QUICK.read_text().replace("tune:", "# θ_min ≤ θ_max, ω\ntune:")
    text = text.replace("pad: 2}", "pad: &p 3}").replace("warmup_epochs: 1}", "warmup_epochs: *p}")
    text = text.replace("  model: {name: tiny_cnn}", "  model: &m {name: tiny_cnn, drop_rate: 0.25}")
    text = text.replace("  optim: {name: sgd,", "  optim: {<<: {name: sgd, lr: 0.07},")
    assert text.count("*p") == 1 and "&m" in text and "<<:" in text and "θ_min" in text  # the edits landed
    p = tmp_path / "u.yaml"
    p.write_text(text, encoding="utf-8")
    assert main(["validate", str(p)]) == 0, capsys.readouterr().err
    run = yaml.safe_load(capsys.readouterr().out)["run"]
    assert run["data"]["pad"] == 3 and run["schedule"]["warmup_epochs"] == 3  # the alias carries the anchor's value
    assert run["model"]["drop_rate"] == 0.25
    assert run["optim"]["name"] == "sgd" and run["optim"]["lr"] == 0.05  # merged; the mapping's own key wins


def test_stderr_is_one_line_for_a_long_value(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", str(QUICK), "--set", "optim.lr=" + "9" * 5000]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 600


@pytest.mark.parametrize("weights, says", [("nope.pth", "no such file"),
                                           ("cnn.pth", "does not fit tiny_vit: key cls_token")])
def test_vpl_vit_weights_that_do_not_fit_are_one_line_before_anything_starts(tmp_path, capsys, weights, says):
    import torch

    from raypair.config import ModelConfig
    from raypair.models import build_model

    torch.save(build_model(ModelConfig(name="tiny_cnn"), 10, 3, image_size=(16, 16)).state_dict(), tmp_path / "cnn.pth")
    run = {**RUN, "method": {"name": "vpl", "vit_model": "tiny_vit", "vit_weights": str(tmp_path / weights)}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(run))
    assert main(["validate", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"raypair: error: method.vit_weights: {says}"), err
