"""The report's statistics against hand-computed intervals, the tables built from them, and the
reading of runs back from a real MLflow store (raypair.tracking.read).

Hand computations (t quantiles from a printed Student t table):
- 93, 94, 95, 96, 97: mean 95, s^2 = (4+1+0+1+4)/4 = 2.5, s/sqrt(5) = sqrt(0.5) = 0.707107,
  t(0.975, 4) = 2.7764, half-width = 1.9632.
- paired: a = 95, 96, 97 and b = 93, 93, 96 on seeds 0, 1, 2: d = 2, 3, 1, mean 2, s = 1,
  t(0.975, 2) = 4.3027, half-width = 4.3027 / sqrt(3) = 2.4841.
- Welch: a = 1, 2, 3 (s^2 = 1), b = 2, 4, 6, 8 (s^2 = 20/3): se^2 = 1/3 + 5/3 = 2,
  df = 2^2 / ((1/3)^2/2 + (5/3)^2/3) = 216/53 = 4.0755.
"""
from __future__ import annotations

import csv
import math

import pytest

from raypair.experiments.ablation import load_ablation
from raypair.report.ablation import ablation_report, ablation_rows
from raypair.report.stats import diff_ci, mean_ci, run_spread, t_quantile
from raypair.tracking.read import Child, Parent

from helpers import DIGITS, ROOT


def test_t_quantiles_match_the_printed_table():
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(1e6) == pytest.approx(1.9600, abs=1e-4)


def test_mean_ci_hand_computed():
    iv = mean_ci([93, 94, 95, 96, 97])
    assert iv.mean == pytest.approx(95.0)
    assert iv.sd == pytest.approx(math.sqrt(2.5))
    assert iv.half == pytest.approx(1.9632, abs=1e-4)
    assert (iv.low, iv.high) == pytest.approx((93.0368, 96.9632), abs=1e-4)
    one = mean_ci([0.5])
    assert one.mean == 0.5 and math.isnan(one.half)  # no interval from one seed


def test_run_spread_is_p3s_quantity_not_the_interval_of_the_mean():
    # 1, 2, 3, 4, 5: sample SD s = sqrt(10 / 4) = 1.5811388; P3's "±" (整合.py: bias = 1.96 * s) = 3.0990321;
    # the t-interval of the mean: t_{0.975,4} = 2.7764451, 2.7764451 * s / sqrt(5) = 1.9632432 (1.24 s)
    vals = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert run_spread(vals) == pytest.approx(3.0990321, abs=1e-6)
    assert mean_ci(vals).half == pytest.approx(1.9632432, abs=1e-6)
    assert 1 - mean_ci(vals).half / run_spread(vals) == pytest.approx(0.3665, abs=1e-4)  # "37 % narrower"
    assert math.isnan(run_spread([7.0]))


def test_paired_difference_hand_computed():
    d = diff_ci({0: 95, 1: 96, 2: 97}, {0: 93, 1: 93, 2: 96})
    assert d.method == "paired t"
    assert d.mean == pytest.approx(2.0)
    assert d.half == pytest.approx(2.4841, abs=1e-4)
    assert not d.excludes_zero()  # [-0.48, 4.48]
    assert diff_ci({0: 3, 1: 4}, {0: 1, 1: 2}).half == 0.0  # identical gaps: no doubt


def test_welch_difference_hand_computed():
    d = diff_ci({0: 1, 1: 2, 2: 3}, {0: 2, 1: 4, 2: 6, 3: 8})
    assert d.method == "Welch t"
    assert d.mean == pytest.approx(-3.0)
    assert d.sd == pytest.approx(math.sqrt(2.0))  # the standard error
    assert d.half == pytest.approx(t_quantile(216 / 53) * math.sqrt(2.0))
    assert 2.7764 > t_quantile(216 / 53) > t_quantile(5)  # df between 4 and 5


def _child(variant: str, seed: int, val_acc: float, status: str = "FINISHED") -> Child:
    return Child(f"{variant} s{seed}", status, {"raypair.variant": variant, "raypair.seed": str(seed)},
                 {"val_acc": val_acc, "train_loss": 1.0 + seed},
                 {"val_acc": {1: val_acc / 2, 2: val_acc}, "train_loss": {1: 2.0, 2: 1.0 + seed}})


@pytest.fixture()
def hand_children() -> list[Child]:
    # base: 93/94/95 %, base+: 95/96/97 %, cutmix: 93/93/96 % plus one failed run that must not count
    vals = {"base": [0.93, 0.94, 0.95], "base+": [0.95, 0.96, 0.97], "cutmix": [0.93, 0.93, 0.96]}
    kids = [_child(v, s, x) for v, xs in vals.items() for s, x in enumerate(xs)]
    return kids + [_child("cutmix", 3, 0.10, status="FAILED")]


def test_rows_use_percent_paired_differences_and_the_paper(hand_children):
    ab = load_ablation(DIGITS)
    rows = {(r.metric, r.variant): r for r in ablation_rows(ab, hand_children)}
    base, plus, cut = rows["val_acc", "base"], rows["val_acc", "base+"], rows["val_acc", "cutmix"]
    assert base.ci.mean == pytest.approx(94.0) and base.ci.half == pytest.approx(2.4841, abs=1e-4)
    assert base.reference is None and base.diff is None
    assert plus.reference == "base" and plus.diff.method == "paired t"
    assert plus.diff.mean == pytest.approx(2.0) and plus.diff.half == pytest.approx(0.0, abs=1e-9)
    assert sorted(cut.values) == [0, 1, 2]  # the failed seed 3 is left out
    assert cut.diff.mean == pytest.approx(0.0) and cut.diff.half == pytest.approx(2.4841, abs=1e-4)
    assert plus.paper == (85.5, None) and plus.paper_diff == pytest.approx(5.5)  # paper 85.5 vs 80.0
    assert cut.paper == (84.0, 2.0)
    assert rows["train_loss", "base"].ci.mean == pytest.approx(2.0)  # losses are not scaled


def test_report_files_hold_the_hand_computed_numbers(hand_children, tmp_path):
    ab = load_ablation(DIGITS)
    parent = Parent("p0")
    files = ablation_report(ab, parent, hand_children, tmp_path)
    assert {f.name for f in files} == {"report.md", "report.csv", "bars.png", "curves.png"}
    for png in ("bars.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    # base 93, 94, 95: s = 1, t half 4.3027 / sqrt(3) = 2.48, run spread 1.96 s = 1.96
    assert "| base | 3 | 94.00 ± 2.48 | 94.00 ± 1.96 | reference | 80.00 ± 1.00 | – |" in md
    # cutmix 93, 93, 96: s = sqrt(3), half = 4.3027 * sqrt(3) / sqrt(3), 1.96 s = 3.39; paired d = 0, -1, 1: half 2.4841
    assert "| cutmix | 3 | 94.00 ± 4.30 | 94.00 ± 3.39 | +0.00 [-2.48, +2.48] vs base | 84.00 ± 2.00 | +4.00 |" in md
    assert md.startswith("# digits: base vs base+ vs CutMix (tiny_cnn) — ran: tiny_cnn, digits\n")  # from the runs
    assert "+2.00 [+2.00, +2.00] * vs base" in md  # base+ beats base on every seed by 2 points
    assert "cutmix s3 (FAILED)" in md
    rows = {(r["metric"], r["variant"]): r for r in csv.DictReader(open(tmp_path / "report.csv"))}
    r = rows["val_acc", "cutmix"]
    assert float(r["mean"]) == pytest.approx(94.0) and float(r["ci95_half"]) == pytest.approx(4.30265, abs=1e-5)
    assert float(r["sd196"]) == pytest.approx(1.96 * 3 ** 0.5, abs=1e-4)  # 3.39482
    assert float(r["diff_ci95_high"]) == pytest.approx(2.48414, abs=1e-5)
    assert r["diff_method"] == "paired t" and r["seeds"] == "0 1 2" and float(r["paper_diff"]) == 4.0


def test_factor_layout_pivots_like_the_paper(tmp_path):
    ab = load_ablation(ROOT / "ablations" / "p3_table1_c10.yaml", quick=True)
    kids = [Child(f"{v} s{s}", "FINISHED", {"raypair.variant": v, "raypair.seed": str(s)},
                  {"test_acc": 0.6 + 0.01 * i + 0.001 * s, "val_acc": 0.5}, {"val_acc": {1: 0.5}})
            for i, v in enumerate(ab.variants) for s in ab.seeds]
    files = ablation_report(ab, Parent("p1"), kids, tmp_path)
    md = files[0].read_text()
    assert "| model | base | base+ | cutout | mixup | cutmix |" in md
    # beside the paper's "mean ± 1.96 s" the same quantity: 60.0, 60.1, 60.2: s = 0.1, 1.96 s = 0.196
    assert "| lenet | 60.10 ± 0.20 (63.63 ± 3.15) |" in md
    assert "| lenet/base | 3 | 60.10 ± 0.25 |" in md  # the t-interval of the mean: 4.3027 * 0.1 / sqrt(3)
    assert "vs lenet/base+" in md and "vs lenet/base |" not in md  # P3's gains are over base+
    assert "— ran: lenet_cifar, CIFAR-10 (10000 train images)" in md.splitlines()[0]


# ------------------------------------------------------------------ reading runs back (tracking/read.py)
@pytest.mark.parametrize("value", ["it's", 'say "hi"', "a\\b", "x' OR tags.`k` = 'y", ""])
def test_filter_values_reach_mlflow_unchanged(value):
    from mlflow.utils.search_utils import SearchUtils

    from raypair.tracking.read import tag_equals

    parsed = SearchUtils.parse_search_filter(tag_equals("raypair.kind", value) + " AND tags.`b` = 'c'")
    assert [(p["key"], p["value"]) for p in parsed] == [("raypair.kind", value), ("b", "c")]


@pytest.mark.parametrize("value", ["both ' and \"", "trailing\\"])
def test_filter_values_that_cannot_be_written_are_refused(value):
    from raypair.tracking.read import filter_value

    with pytest.raises(ValueError, match="MLflow filter"):
        filter_value(value)


def test_reader_returns_plain_runs_from_a_real_store(tmp_path):
    from mlflow.tracking import MlflowClient

    from raypair.tracking import default_uri
    from raypair.tracking.read import RunReader

    uri = default_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("it's", artifact_location=(tmp_path / "art").as_uri())
    old = client.create_run(exp, start_time=1000, run_name="old", tags={"raypair.kind": "it's"}).info.run_id
    new = client.create_run(exp, start_time=2000, run_name="new", tags={"raypair.kind": "it's"}).info.run_id
    client.log_param(new, "tune.metric", "val_acc")
    client.log_text(new, "a: 1\n", "sweep.yaml")
    kid = client.create_run(exp, run_name="t0", tags={"mlflow.parentRunId": new}).info.run_id
    for step, v in ((1, 0.5), (2, 0.7)):
        client.log_metric(kid, "val_acc", v, step=step)
    client.set_terminated(kid)
    client.create_run(exp, run_name="t1", tags={"mlflow.parentRunId": old})
    reader = RunReader(uri)
    assert reader.experiment_id("it's") == exp and reader.experiment_id("nope") is None
    parent = reader.newest_parent(exp, ["it's", "sweep"])
    assert parent.run_id == new and parent.kind == "it's" and parent.params == {"tune.metric": "val_acc"}
    assert parent.start_time == 2000
    assert reader.newest_parent(exp, ["ablation"]) is None
    [child] = reader.children(exp, new, ["val_acc", "val_acc"])
    assert (child.name, child.status, child.final) == ("t0", "FINISHED", {"val_acc": 0.7})
    assert child.curves == {"val_acc": {1: 0.5, 2: 0.7}}
    assert reader.artifact_text(new, "sweep.yaml") == "a: 1\n"
    (tmp_path / "report.md").write_text("# r")
    reader.log_files(new, [tmp_path / "report.md"], "report")
    assert [a.path for a in client.list_artifacts(new, "report")] == ["report/report.md"]


def test_sweep_report_shows_every_branch_beside_the_metric(tmp_path):
    """A VPL sweep searched on val_acc_vit: the best-trials table and the CSV also hold the CNN's accuracy."""
    from raypair.report.sweep import sweep_report

    kids = [Child(f"t{i}", "FINISHED", {"raypair.trial_id": f"t{i}", "raypair.search.method.rho": str(rho)},
                  {"val_acc": cnn, "val_acc_cnn": cnn, "val_acc_vit": vit, "val_acc5": 0.99},
                  {"val_acc_vit": {1: vit}}) for i, (rho, cnn, vit) in enumerate([(1.0, 0.61, 0.52), (2.0, 0.58, 0.55)])]
    sweep = {"tune": {"metric": "val_acc_vit", "mode": "max"}, "space": {"method.rho": {"choice": [1.0, 2.0]}}}
    sweep_report(sweep, Parent("p"), kids, tmp_path, top=5)
    md = (tmp_path / "report.md").read_text()
    assert "| rank | trial | epochs | best val_acc_vit | last val_acc_vit | last val_acc | last val_acc_cnn | " in md
    assert "| 1 | t1 | ? | 0.5500 | 0.55 | 0.58 | 0.58 | 2 |" in md
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [(r["trial"], r["last_val_acc_cnn"], r["last_val_acc_vit"]) for r in rows] == [("t0", "0.61", "0.52"),
                                                                                          ("t1", "0.58", "0.55")]


def test_what_ran_names_a_methods_own_networks():
    """VPL builds a transformer beside ``model.name``: the title says both (P4's pairs), each once."""
    from types import SimpleNamespace

    from raypair.config import build_run
    from raypair.report.cells import ran

    vpl = {"name": "vpl", "vit_model": "vit_cifar_d4"}
    runs = {"a": build_run({"model": {"name": "tiny_cnn"}, "method": vpl, "data": {"name": "digits"}}),
            "b": build_run({"model": {"name": "tiny_vit_w48"}, "method": vpl, "data": {"name": "digits"}}),
            "c": build_run({"model": {"name": "tiny_cnn"}, "method": {"name": "erm"}, "data": {"name": "digits"}})}
    assert ran(SimpleNamespace(runs=runs)) == "tiny_cnn, tiny_vit_w48, vit_cifar_d4, digits"
