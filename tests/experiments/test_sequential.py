"""raypair.experiments.sequential: the spending function and boundaries against published values and
scipy computed another way, the decision rule on exact cases (decisive, equivalent, open, worse),
Holm's order, the seeds it asks for, and every bad setting as a one-line ConfigError."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from raypair.config import ConfigError
from raypair.experiments.seqconfig import SequentialConfig, comparison_name, sequential_config
from raypair.experiments.sequential import decide, next_seeds, paired_differences
from raypair.experiments.spending import side_spent, t_bounds, z_bounds

ALPHA = 0.05
UNIT = np.array([-1.5, -0.5, 0.5, 1.5])  # four residuals with sample sd sqrt(5/3)


def with_t(t_stat: float, n: int) -> np.ndarray:
    """n paired differences whose one-sample t statistic is exactly ``t_stat``."""
    e = np.resize(UNIT, n) - np.resize(UNIT, n).mean()
    e /= e.std(ddof=1)
    return t_stat / math.sqrt(n) + e


def cfg_of(pairs=(("a", "ref"),), **kw) -> SequentialConfig:
    return SequentialConfig(**{"delta": 0.5, "alpha": ALPHA, "min_seeds": 6, "max_seeds": 6, "batch": 1,
                               "comparisons": pairs, **kw})


@pytest.mark.parametrize("t", [0.1, 0.25, 0.5, 0.8, 1.0])
def test_spending_is_lan_demets_obrien_fleming_per_side(t):
    expected = 2 * (1 - stats.norm.cdf(stats.norm.ppf(1 - ALPHA / 4) / math.sqrt(t)))
    assert side_spent(ALPHA, t) == pytest.approx(expected, rel=1e-9)
    assert side_spent(ALPHA, 1.0) == pytest.approx(ALPHA / 2, rel=1e-12)


def test_five_equal_looks_match_the_published_obrien_fleming_boundaries():
    # Lan-DeMets O'Brien-Fleming spending, alpha = 0.025 a side, 5 equally spaced looks (gsDesign sfLDOF, ldbounds)
    published = [4.877, 3.357, 2.680, 2.290, 2.031]
    assert z_bounds(ALPHA, (0.2, 0.4, 0.6, 0.8, 1.0)) == pytest.approx(published, abs=1.5e-3)


def test_two_looks_match_a_bivariate_normal_solution():
    c1 = stats.norm.isf(side_spent(ALPHA, 0.5))  # a side spends side_spent(0.5) at the first look
    bvn = stats.multivariate_normal([0, 0], [[1, math.sqrt(0.5)], [math.sqrt(0.5), 1]])

    def inside(c2):  # P(|Z1| < c1, |Z2| < c2) by inclusion-exclusion of the bivariate normal cdf
        f = lambda a, b: bvn.cdf([a, b])  # noqa: E731
        return f(c1, c2) - f(-c1, c2) - f(c1, -c2) + f(-c1, -c2)

    c2 = optimize.brentq(lambda c: (1 - inside(c)) - ALPHA, 1.5, 3.0, xtol=1e-9)
    ours = z_bounds(ALPHA, (0.5, 1.0))
    assert ours[0] == pytest.approx(c1, abs=1e-9)
    assert ours[1] == pytest.approx(c2, abs=2e-4)


def test_one_look_is_the_fixed_paired_t_test():
    assert t_bounds(ALPHA, (10,))[0] == pytest.approx(stats.t.isf(ALPHA / 2, 9), rel=1e-9)


def test_a_look_that_spends_nothing_never_decides():
    bounds = t_bounds(ALPHA, (2, 40, 80))  # df 1 at a 2.5 % information fraction: nominal level ~1e-35
    assert bounds[0] == np.inf or bounds[0] > 1e10
    out = decide({"a vs ref": [5.0, 5.1]}, cfg_of(min_seeds=2, max_seeds=80, batch=38))
    assert out["a vs ref"].state == "open"


@pytest.mark.parametrize("t_stat,state", [(1.001, "better"), (0.999, "open"), (-1.001, "worse")])
def test_a_single_look_decides_exactly_at_the_t_quantile(t_stat, state):
    crit = stats.t.isf(ALPHA / 2, 5)
    d = with_t(t_stat * crit, 6) * 3.0  # scaling keeps t
    out = decide({"a vs ref": d}, cfg_of(delta=0.01))["a vs ref"]
    assert out.state == state
    assert out.n == 6 and out.look == 1 and out.level == ALPHA
    half = crit * d.std(ddof=1) / math.sqrt(6)
    assert (out.low, out.high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)


def test_decided_at_the_first_look_past_the_published_boundary():
    cfg = cfg_of(min_seeds=4, max_seeds=20, batch=4)  # looks at 4, 8, 12, 16, 20 seeds: fractions 0.2 .. 1
    z2 = 3.357  # published second-look boundary; its nominal level read off t with 7 df
    b1, b2 = (stats.t.isf(stats.norm.sf(z), n - 1) for z, n in ((4.877, 4), (z2, 8)))
    d = np.concatenate([with_t(0.9 * b1, 4), with_t(0.9 * b1, 4)])  # ...and past b2 at 8 seeds:
    assert abs(d.mean()) / (d.std(ddof=1) / math.sqrt(8)) > b2 * 1.01
    out = decide({"a vs ref": np.concatenate([d, np.zeros(12)])}, cfg)["a vs ref"]
    assert (out.state, out.look, out.n) == ("better", 2, 8)


@pytest.mark.parametrize("shrink,state", [(0.99, "equivalent"), (1.01, "open")])
def test_equivalence_is_two_one_sided_tests_within_delta(shrink, state):
    n, delta = 6, 0.5
    crit = stats.t.isf(ALPHA, n - 1)  # TOST at alpha: the 1 - 2 alpha interval inside (-delta, delta)
    e = with_t(0.0, n)
    d = 0.1 + e * shrink * (delta - 0.1) / crit * math.sqrt(n)
    out = decide({"a vs ref": d}, cfg_of(delta=delta))["a vs ref"]
    assert out.state == state
    if state == "equivalent":  # the interval shown is the 1 - 2 alpha one that lies inside +-delta
        assert out.level == 2 * ALPHA and -delta < out.low < out.high < delta


def holm_case(t_a: float, t_b: float, t_c: float) -> dict[str, str]:
    pairs = (("a", "ref"), ("b", "ref"), ("c", "ref"))
    diffs = {comparison_name(v, "ref"): with_t(t, 6) for v, t in zip("abc", (t_a, t_b, t_c))}
    return {k[0]: v.state for k, v in decide(diffs, cfg_of(pairs, delta=1e-3)).items()}


def t_at(level: float, above: bool) -> float:
    return stats.t.isf(level / 2, 5) * (1.01 if above else 0.99)


def test_holm_steps_down_alpha_over_3_then_2_then_1():
    assert holm_case(t_at(ALPHA / 3, True), t_at(ALPHA / 2, True), t_at(ALPHA, True)) == \
        {"a": "better", "b": "better", "c": "better"}


def test_holm_stops_at_the_first_comparison_that_misses_its_level():
    # c would pass alone at alpha, but b misses alpha / 2 at the second step: both stay open
    assert holm_case(t_at(ALPHA / 3, True), t_at(ALPHA / 2, False), t_at(ALPHA / 2, False)) == \
        {"a": "better", "b": "open", "c": "open"}
    # nothing passes alpha / 3: nothing is decided, though each would pass alone
    assert holm_case(*[t_at(ALPHA / 3, False)] * 3) == {"a": "open", "b": "open", "c": "open"}


def test_decisions_are_recomputed_identically_and_a_decided_one_stays():
    cfg = cfg_of(min_seeds=3, max_seeds=20, batch=2)
    d = np.random.default_rng(3).normal(2.0, 0.5, 20)
    first = decide({"a vs ref": d[:9]}, cfg)
    assert first == decide({"a vs ref": list(d[:9])}, cfg)
    assert first["a vs ref"].state == "better"
    assert decide({"a vs ref": d}, cfg)["a vs ref"] == first["a vs ref"]


def test_next_seeds_only_for_open_comparisons_to_the_next_look_never_past_max():
    cfg = cfg_of((("a", "ref"), ("b", "ref")), min_seeds=3, max_seeds=8, batch=2)  # looks 3, 5, 7, 8
    none = decide({}, cfg)
    assert next_seeds(none, {}, cfg) == {"a": 3, "b": 3, "ref": 3}
    open_a = {"a vs ref": none["a vs ref"], "b vs ref": none["b vs ref"].__class__("better", 1, 0.5, 2, 3, 1)}
    assert next_seeds(open_a, {"a": 3, "b": 3, "ref": 3}, cfg) == {"a": 2, "ref": 2}
    assert next_seeds(open_a, {"a": 7, "b": 3, "ref": 7}, cfg) == {"a": 1, "ref": 1}
    assert next_seeds(open_a, {"a": 8, "b": 3, "ref": 8}, cfg) == {}


@pytest.mark.parametrize("raw,field", [
    ({"delta": 0}, "sequential.delta"), ({"delta": -1}, "sequential.delta"),
    ({"delta": float("nan")}, "sequential.delta"), ({"delta": 1, "alpha": 0}, "sequential.alpha"),
    ({"delta": 1, "alpha": 0.5}, "sequential.alpha"), ({"delta": 1, "min_seeds": 1}, "sequential.min_seeds"),
    ({"delta": 1, "min_seeds": 6, "max_seeds": 5}, "sequential.max_seeds"),
    ({"delta": 1, "batch": 0}, "sequential.batch"),
    ({"delta": 1, "batch": 2.5}, "sequential.batch"), ({"delta": 1, "max_seeds": 500, "batch": 1}, "sequential.batch"),
    ({"delta": 1, "comparisons": [["a", "nope"]]}, "sequential.comparisons[0]"),
    ({"delta": 1, "comparisons": [["a", "a"]]}, "sequential.comparisons[0]"),
    ({"delta": 1, "comparisons": [["a", "ref"], ["ref", "a"]]}, "sequential.comparisons[1]"),
    ({"delta": 1, "comparisons": []}, "sequential.comparisons"), ({"alpha": 0.1}, "sequential.delta"),
    ({"delta": 1, "seeds": 3}, "sequential.seeds"),
])
def test_bad_settings_are_one_line_errors_naming_the_field(raw, field):
    with pytest.raises(ConfigError) as err:
        sequential_config(raw, ["a", "b", "ref"], "ref")
    assert err.value.field == field
    assert "\n" not in str(err.value) and str(err.value).startswith(field)


def test_default_comparisons_are_each_variant_against_the_reference():
    assert sequential_config({"delta": 1}, ["a", "ref", "b"], "ref").comparisons == (("a", "ref"), ("b", "ref"))
    assert sequential_config({"delta": 1, "max_seeds": 10, "batch": 3}, ["a", "ref"], "ref").looks == (3, 6, 9, 10)


def test_bad_differences_are_errors_naming_the_comparison():
    with pytest.raises(ConfigError, match=r"^sequential.diffs.a vs ref: .*not a finite"):
        decide({"a vs ref": [1.0, float("nan"), 2.0]}, cfg_of())
    with pytest.raises(ConfigError, match="^sequential.comparisons: no comparison named 'x vs ref'"):
        decide({"x vs ref": [1.0, 2.0]}, cfg_of())


def test_differences_pair_by_seed_over_the_seeds_both_arms_have():
    finals = {"a": {2: 3.0, 0: 1.0, 1: 2.0}, "ref": {0: 0.5, 2: 1.0, 3: 9.0}}
    assert paired_differences(finals, cfg_of()) == {"a vs ref": [0.5, 2.0]}
