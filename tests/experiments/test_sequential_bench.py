"""benchmarks/sequential.py's core at a small study count: A/A declares a difference in at most alpha
of studies (per comparison and family-wise, within 3 binomial standard errors), its vectorised rule
is raypair.experiments.sequential.decide study by study, and its fixed design is scipy's paired t."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from scipy import stats

from helpers import ROOT
from raypair.experiments.seqconfig import SequentialConfig, comparison_name
from raypair.experiments.sequential import STATES, decide

SCRIPT = ROOT / "benchmarks" / "sequential.py"
SPEC = importlib.util.spec_from_file_location("seq_bench", SCRIPT)
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

PAIRS = (("v0", "ref"), ("v1", "ref"), ("v2", "ref"))
CFG = SequentialConfig(0.5, 0.05, 3, 20, 2, PAIRS)
COUNT = 3000


@pytest.mark.parametrize("model", ["normal", "resample"])
def test_aa_declares_a_difference_in_at_most_alpha_of_studies(model):
    sigma = bench.pooled(bench.paired_sds(bench.ROOT / "docs" / "ablation_p3_table1_c10_quick" / "report.csv"))
    noise = bench.normal_noise(sigma) if model == "normal" else \
        bench.resample_noise(sigma, bench.run_residuals())
    x = bench.studies(np.zeros(3), noise, CFG.max_seeds, COUNT, np.random.default_rng(11))
    state, used = bench.sequential(x, CFG)
    diff = state < 2
    tol = 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / COUNT)
    assert diff.any(0).mean() <= CFG.alpha + tol
    assert diff.mean() <= CFG.alpha / 2 + tol  # Holm over 3: each comparison well under alpha
    assert used.min() >= CFG.min_seeds and used.max() <= CFG.max_seeds


def test_the_vectorised_rule_is_decide_study_by_study():
    rng = np.random.default_rng(5)
    x = bench.studies(np.array([0.0, 0.5, 1.5]), bench.normal_noise(0.74), CFG.max_seeds, 60, rng)
    state, used = bench.sequential(x, CFG)
    for s in range(x.shape[1]):
        diffs = {comparison_name(*p): x[c, s, :used[c, s]] for c, p in enumerate(PAIRS)}
        got = decide(diffs, CFG)
        assert [STATES.index(got[comparison_name(*p)].state) for p in PAIRS] == list(state[:, s])
    assert len(set(state.ravel())) >= 3  # the sample holds several outcomes, not one


def test_the_fixed_design_is_scipys_paired_t_test():
    cfg = SequentialConfig(0.5, 0.05, 3, 12, 2, (("v", "ref"),))
    x = bench.studies(np.array([0.4]), bench.normal_noise(0.74), 12, 400, np.random.default_rng(2))
    res = stats.ttest_1samp(x[0], 0.0, axis=-1)
    expect = np.where(res.pvalue < cfg.alpha, np.where(res.statistic > 0, 0, 1), -1)
    got = bench.fixed(x, cfg, 12)[0]
    assert np.array_equal(np.where(got < 2, got, -1), expect)


def test_the_noise_models_have_the_paired_sd_they_claim():
    x = bench.studies(np.zeros(1), bench.resample_noise(0.74, bench.run_residuals()), 50, 4000,
                      np.random.default_rng(0))
    assert x.std() == pytest.approx(0.74, rel=0.02)  # 200,000 draws: the sd's SE is about 0.2 %


def test_sigma_is_read_back_from_the_report_intervals():
    # docs/ablation_p3_table1_c10_quick: lenet/cutmix vs base+, n = 3, diff 95 % CI [-7.2866, -2.7934]
    sds = bench.paired_sds(bench.ROOT / "docs" / "ablation_p3_table1_c10_quick" / "report.csv")
    assert sds[-1] == pytest.approx((-2.7934 + 7.2866) / 2 * math.sqrt(3) / 4.302653, rel=1e-5)


def test_the_resampled_atoms_are_the_csvs_values_centred_per_variant(tmp_path):
    f = tmp_path / "v.csv"
    f.write_text("variant,seed,val_acc\na,0,0.5\na,1,0.7\nb,0,0.2\nb,1,0.2\nb,2,0.5\n")
    res = np.array([-0.1, 0.1, -0.1, -0.1, 0.2])  # a's mean 0.6, b's 0.3
    got = bench.run_residuals(f)
    assert np.allclose(got, res / np.sqrt(np.mean(res * res)))
    real = bench.run_residuals()
    assert real.size >= 60 and np.mean(real * real) == pytest.approx(1.0)


def test_walds_bound_is_the_closed_form_and_a_simulated_sprt_spends_just_above_it():
    """The floor printed beside the table: by hand at power 0.9 (ln 36, ln(0.1 / 0.975)), and against
    Wald's SPRT of 0 vs delta simulated with small steps (little overshoot): the SPRT, optimal at
    delta, spends at least the bound and within 10 % of it."""
    d = 0.9 * math.log(0.9 / 0.025) + 0.1 * math.log(0.1 / 0.975)
    assert bench.wald_bound(0.9, 0.5, 1.0, 0.05) == pytest.approx(2 * d / 0.25, rel=1e-12)
    assert bench.fixed_z_n(0.9, 0.5, 1.0, 0.05) == pytest.approx((1.959964 + 1.281552) ** 2 / 0.25, rel=1e-6)
    delta, a, p = 0.25, 0.025, 0.9
    hi, lo = math.log(p / a), math.log((1 - p) / (1 - a))
    x = np.random.default_rng(3).normal(delta, 1.0, (4000, 1500))
    llr = np.cumsum(delta * x - delta * delta / 2, axis=1)
    out = (llr >= hi) | (llr <= lo)
    assert out.any(1).all()
    stop = out.argmax(1)
    power = (llr[np.arange(x.shape[0]), stop] >= hi).mean()
    asn = (stop + 1).mean()
    bound = bench.wald_bound(power, delta, 1.0, 2 * a)
    assert bound <= asn <= 1.1 * bound
    assert bound / bench.fixed_z_n(power, delta, 1.0, 2 * a) > 0.5  # at this power no test halves the seeds
