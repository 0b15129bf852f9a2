"""Ablation files: every file under ablations/ validates (full and quick profiles), and bad input
is refused with one line naming the dotted field, exit code 2, before anything starts."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raypair.experiments.ablation import load_ablation, parse_paper_number
from raypair.cli import main
from raypair.config import ConfigError

from helpers import DIGITS, ROOT

FILES = sorted((ROOT / "ablations").glob("*.yaml"))


def test_there_is_an_ablation_file_per_paper_table():
    names = {f.stem for f in FILES}
    assert {"p3_table1_c10", "p3_table1_c100", "p3_cutmix_prob", "bc_table", "bc_student", "p1_mixup_xlc",
            "pairtraining_components", "pairtraining_omega", "vpl_gradient_flow", "vpl_stages",
            "vpl_branch_pairs"} <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_ablation_file_validates(path, quick):
    from raypair.models import check_model_name

    ab = load_ablation(path, quick=quick)
    assert ab.variants and ab.seeds and ab.title
    assert len(ab.runs) == len(ab.variants)  # every variant's run was built and checked
    for run in ab.runs.values():
        check_model_name(run.model.name)
    if ab.paper is not None:
        assert ab.paper.source
    if quick:  # small enough for a CPU
        for run in ab.runs.values():
            assert run.epochs <= 30 and (run.data.train_subset or 10**9) <= 10000 or run.data.name == "digits"
        assert len(ab.pairs()) <= 36
    refs = 0
    for v, variant in ab.variants.items():  # every variant compares with something, or is the reference
        is_ref = {**variant.levels, **ab.reference} == variant.levels
        ref = ab.reference_of(v)
        refs += is_ref
        if is_ref:
            assert ref is None, (v, ref)
        else:  # the same levels with the reference factor's level swapped, run in this profile too
            want = {**variant.levels, **ab.reference}
            assert ref is not None and ab.variants[ref].levels == want, f"{path.name}: {v} has no reference ({want})"
    assert refs >= 1, f"{path.name}: no variant is the reference {ab.reference}"


def test_paper_numbers_parse():
    assert parse_paper_number("95.90±0.28") == (95.9, 0.28)
    assert parse_paper_number("-0.29") == (-0.29, None)
    assert parse_paper_number(70.01) == (70.01, None)
    assert parse_paper_number("1.5 +- 0.5") == (1.5, 0.5)
    with pytest.raises(ConfigError):
        parse_paper_number("about 95")


def test_paper_numbers_need_the_papers_protocol(tmp_path):
    """A paper's number sits beside a model trained on the whole training set and tested at the
    end; a validation hold-out (from the file, a variant, --set or the quick profile) is refused in
    one line naming the field, and allowed where the file quotes no number (a tuning-style sweep)."""
    msg = r"^data.val_fraction: must be 0 in an ablation that quotes paper numbers .* \(got 0.2\)$"
    with pytest.raises(ConfigError, match=msg):
        load_ablation(DIGITS, ["data.val_fraction=0.2"])
    with pytest.raises(ConfigError, match=msg):
        load_ablation(_write(tmp_path, _set("quick/set", {"data.val_fraction": 0.2})), quick=True)
    with pytest.raises(ConfigError, match=r"\(variant 'cutmix'\)"):
        load_ablation(_write(tmp_path, _set("variants/cutmix", {"data.val_fraction": 0.2})))
    held = load_ablation(_write(tmp_path, _set("paper/values", {})), ["data.val_fraction=0.2"])
    assert all(run.data.val_fraction == 0.2 for run in held.runs.values())
    for path in FILES:  # every shipped file that quotes a number trains on all of train
        ab = load_ablation(path)
        if ab.paper is not None and ab.paper.values:
            assert all(run.data.val_fraction == 0 for run in ab.runs.values()), path.name


def test_factor_levels_combine_and_reference_is_per_row():
    ab = load_ablation(ROOT / "ablations" / "p3_table1_c10.yaml")
    assert len(ab.variants) == 20 and len(ab.pairs()) == 100
    v = ab.variants["vgg/cutmix"]
    assert v.levels == {"model": "vgg", "aug": "cutmix"}
    run = ab.trial_run({"variant": "vgg/cutmix", "seed": 3})
    assert (run.model.name, run.method.name, run.method.cutmix_prob, run.seed) == ("vgg16_cifar", "cutmix", 1.0, 3)
    # P3 states its gains over base+ (pad-crop-flip): the reference is base+, not base
    assert ab.reference_of("vgg/cutmix") == "vgg/base+" and ab.reference_of("vgg/base+") is None
    assert ab.paper_value("vgg/cutmix", "test_acc") == (93.26, 0.43)


def test_quick_profile_and_cli_subsets():
    ab = load_ablation(DIGITS, quick=True)
    assert ab.name == "digits_aug-quick" and list(ab.variants) == ["base", "cutmix"] and ab.seeds == [0, 1]
    assert ab.runs["base"].epochs == 2
    ab = load_ablation(DIGITS, overrides=["epochs=5"], seeds=[7], only=["base+"])
    assert ab.pairs() == [("base+", 7)] and ab.trial_run({"variant": "base+", "seed": 7}).epochs == 5
    ab = load_ablation(DIGITS, quick=True, only=["base+"])  # --variants replaces the quick subset
    assert ab.pairs() == [("base+", 0), ("base+", 1)] and ab.trial_run({"variant": "base+", "seed": 0}).epochs == 2


def _write(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(DIGITS.read_text())
    change(raw)
    p = tmp_path / "ab.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _set(key, value):
    def change(raw):
        node = raw
        *path, last = key.split("/")
        for k in path:
            node = node[k]
        node[last] = value
    return change


BAD = [
    (_set("variants/base+", {"optim.lrr": 0.1}), "variants.base+.optim.lrr: unknown key"),
    (_set("variants/cutmix", {"method": {"name": "cutmix", "cutmix_prob": 1.5}}),
     "variants.cutmix.method.cutmix_prob: "),
    (_set("variants/base+", {"optim.betas": [0.8, 0.99]}), "variants.base+.optim.betas: is not read"),
    (_set("variants/base+", {"method.aug": "base"}), "variants.base+: trains the same run as variant 'base'"),
    (_set("variants/base+", {"seed": 3}), "variants.base+.seed: seeds come from seeds:"),
    (_set("variants/baseplus", {"optim.lr": 0.01}),
     "variants.baseplus: its trial keys (baseplus__s0, ...) are those of variant 'base+' too; rename one"),
    (_set("variants/BASE", {"optim.lr": 0.01}), "variants.base: its trial keys (base__s0, ...) are those of variant 'BASE'"),
    (_set("reference", "nope"), "reference: no such variant"),
    (_set("paper/values/nope", 1.0), "paper.values.nope: no such variant"),
    (_set("paper/values/base", "about 80"), "paper.values.base: expected a number or 'mean±ci' (got 'about 80')"),
    (_set("factors", {"a": {"x": {}}}), "give exactly one of variants: or factors:"),
    (_set("exclude", ["nope"]), "exclude: no such variant"),
    (_set("seeds", [0, 0]), "seeds: repeated seed"),
    (_set("metrics", ["accuracy"]), "metrics: not a metric that methods cutmix, erm report (e.g. test_acc, train_loss, val_acc) (got 'accuracy')"),
    (_set("variants/base+", {"model.name": "resnet_nope"}), "variants.base+.model.name: "),
    (_set("run/data/name", "cifar10"), "data"),  # RAYPAIR_DATA points to an empty folder
    (_set("tyop", 1), "tyop: unknown key"),
    (_set("run/data/val_fraction", 0.2), "data.val_fraction: must be 0 in an ablation that quotes paper numbers"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_ablation_input_exits_2_before_anything_starts(tmp_path, capsys, monkeypatch, change, message):
    monkeypatch.setenv("RAYPAIR_DATA", str(tmp_path / "empty"))
    storage = tmp_path / "runs"
    code = main(["ablate", str(_write(tmp_path, change)), "--storage", str(storage)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("raypair: error: ") and message in err, err
    assert not storage.exists()


@pytest.mark.parametrize("argv,message", [
    (["--quick", "--variants", "base,nope"], "--variants: no such variant (have: base, base+, cutmix) (got 'nope')"),
    (["--resume"], "--resume: no ablation to resume"),
    (["--max-concurrent", "0"], "--max-concurrent: must lie in [1, 10000] (got 0)"),
    (["--set", "epochs=0"], "epochs: "),
])
def test_bad_ablate_arguments(tmp_path, capsys, argv, message):
    code = main(["ablate", str(DIGITS), "--storage", str(tmp_path / "runs"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "runs").exists()


def test_validate_prints_the_resolved_ablation(capsys):
    assert main(["validate", str(DIGITS)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["pairs"] == 9 and set(out["variants"]) == {"base", "base+", "cutmix"}
    assert out["variants"]["cutmix"]["overrides"]["method"]["name"] == "cutmix"


def test_validate_checks_what_ablate_would_run(capsys):
    """--seeds / --variants (and --quick) select the same pairs in validate as in ablate."""
    assert main(["validate", str(DIGITS), "--seeds", "3,4", "--variants", "base,cutmix"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["pairs"] == 4 and set(out["variants"]) == {"base", "cutmix"} and out["seeds"] == [3, 4]
    assert main(["validate", str(DIGITS), "--quick"]) == 0  # quick: base and cutmix, seeds 0 and 1
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["pairs"] == 4 and set(out["variants"]) == {"base", "cutmix"} and out["seeds"] == [0, 1]


def test_report_refuses_an_unknown_experiment(tmp_path, capsys):
    assert main(["report", "nope", "--storage", str(tmp_path)]) == 2
    assert "no MLflow store" in capsys.readouterr().err


@pytest.mark.parametrize("path", [f for f in FILES if not f.name.startswith("vpl_")], ids=lambda p: p.name)
def test_a_report_title_names_what_ran_not_the_papers_model(path):
    """A title says which paper table a file reproduces; the model and data come from the runs (the
    report's heading appends them), so a quick profile on LeNet / CIFAR-10 cannot be titled ResNet-18,
    CIFAR-100. (The VPL files are written by the VPL regime work.)"""
    from raypair.experiments.ablation import from_plain
    from raypair.report.cells import heading

    for quick in (False, True):
        ab = load_ablation(path, quick=quick)
        assert not any(w in ab.title for w in ("ResNet", "LeNet", "DenseNet", "VGG", "ConvNet", "ViT")), ab.title
        models = {run.model.name for run in ab.runs.values()}
        assert all(m in heading(ab) for m in models) and heading(ab).startswith(ab.title + " — ran: ")
        assert heading(from_plain(ab.plain())) == heading(ab)  # as the report reads it back from MLflow
