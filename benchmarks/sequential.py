"""Seeds until decided, measured: thousands of simulated ablation studies per effect size, decided by
raypair.experiments.sequential's rule (group-sequential paired t, O'Brien-Fleming-type spending,
Holm across comparisons) and by the fixed design (one paired t-test at the max seeds, same alpha,
Holm), vectorised over studies with numpy.

Noise per run (the seed-shared part cancels in a paired difference and is left out):
- normal: N(0, sigma_d^2 / 2) per run, so a paired difference has sd sigma_d; sigma_d is pooled from
  the paired 95% intervals of docs/ablation_p3_table1_c10_quick/report.csv (sd_d = half * sqrt(n) /
  t_{0.975, n-1}; the reports keep no per-seed values);
- resample: real per-seed finals of raypair's own loop, benchmarks/data/seed_values_digits.csv
  (digits, 3 variants x 24 paired seeds, made by benchmarks/seed_values.py), centred per variant,
  drawn with replacement with a Gaussian kernel (smoothed bootstrap, Silverman's bandwidth) and
  scaled to the same sigma_d: the shape of real seed noise (its tails, its skew), the P3 scale.

    python benchmarks/sequential.py --studies 40000 --seed 0
    python benchmarks/sequential.py --studies 40000 --seed 0 --max-seeds 24 --batch 3 --fixed-seeds 20

prints a Markdown table: (a) A/A, one comparison and a family of 3 sharing a reference; (b) power at
delta; (c) mean seeds against the fixed design's, with the max seeds and with the sequential design's
measured power, and beside it the least any test could spend at that power and alpha (Wald's
information bound, sigma known: a floor no design gets under); (d) effects 0, delta/2, delta, 2 delta,
4 delta.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from raypair.experiments.seqconfig import SequentialConfig  # noqa: E402
from raypair.experiments.spending import t_bounds  # noqa: E402

STATES = ("better", "worse", "equivalent", "open")


def paired_sds(path: Path) -> list[float]:
    """sd of the paired differences behind each paired-t interval of a report.csv."""
    out = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("diff_method") == "paired t" and row.get("metric", "test_acc") == "test_acc":
                n, half = int(row["n"]), (float(row["diff_ci95_high"]) - float(row["diff_ci95_low"])) / 2
                out.append(half * np.sqrt(n) / stats.t.isf(0.025, n - 1))
    return out


def pooled(sds: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(sds))))


ATOMS = ROOT / "benchmarks" / "data" / "seed_values_digits.csv"


def run_residuals(path: Path = ATOMS) -> np.ndarray:
    """Per-run residuals of real per-seed finals (a CSV of variant, seed, metric rows, as
    benchmarks/seed_values.py writes): each variant's finals minus its mean, scaled to variance 1."""
    finals: dict[str, dict[int, float]] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            finals.setdefault(row["variant"], {})[int(row["seed"])] = float(list(row.values())[2])
    res = np.concatenate([np.array(list(v.values())) - np.mean(list(v.values())) for v in finals.values()])
    return res / np.sqrt(np.mean(res * res))  # the atoms' own variance 1: the scale is sigma_d's alone


def normal_noise(sigma_d: float):
    return lambda rng, shape: rng.normal(0.0, sigma_d / np.sqrt(2), shape)


def resample_noise(sigma_d: float, atoms: np.ndarray):
    h = 1.06 * atoms.size ** -0.2  # Silverman's rule for unit-variance atoms

    def draw(rng, shape):
        x = rng.choice(atoms, size=shape) + h * rng.standard_normal(shape)
        return x * sigma_d / np.sqrt(2 * (1 + h * h))
    return draw


def studies(effects: np.ndarray, noise, n: int, count: int, rng) -> np.ndarray:
    """Paired differences (comparison, study, seed): variant runs minus the shared reference's."""
    ref = noise(rng, (1, count, n))
    return effects[:, None, None] + noise(rng, (effects.size, count, n)) - ref


def holm(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down per study: ``first[r, c, s]`` the first look comparison c's claim holds at the
    r-th Holm level (alpha / (m - r)); ``last[c, s]`` the last look it has. Rejected, and the level index."""
    m, count = last.shape
    rej, lev, cols = np.zeros((m, count), bool), np.zeros((m, count), int), np.arange(count)
    for _ in range(m):
        r = np.minimum(rej.sum(0), m - 1)  # all rejected: nothing new anyway
        new = (first[r, :, cols].T <= last) & ~rej
        if not new.any():
            break
        lev, rej = np.where(new, r[None, :], lev), rej | new
    return rej, lev


def first_looks(x: np.ndarray, plan: tuple[int, ...], levels: list[float], crit, delta: float):
    """First look (len(plan): none) of each claim at each level: difference (with its sign) and equivalence."""
    n = np.array(plan)
    mean, sq = np.cumsum(x, -1)[..., n - 1] / n, np.cumsum(x * x, -1)[..., n - 1]
    se = np.sqrt(np.maximum(sq - n * mean * mean, 0) / (n - 1) / n)
    fd, sign, fe = [], [], []
    for a in levels:
        hd, he = (np.where(np.isinf(b), np.inf, b * se) for b in (crit(a), crit(2 * a)))
        hit = np.abs(mean) > hd
        fd.append(np.where(hit.any(-1), hit.argmax(-1), len(plan)))
        sign.append(np.take_along_axis(mean, np.minimum(fd[-1], len(plan) - 1)[..., None], -1)[..., 0] > 0)
        ok = (mean - he > -delta) & (mean + he < delta)
        fe.append(np.where(ok.any(-1), ok.argmax(-1), len(plan)))
    return np.array(fd), np.array(sign), np.array(fe)


def states(fd, sign, fe, last) -> np.ndarray:
    """0 better, 1 worse, 2 equivalent, 3 open, per (comparison, study)."""
    rd, ld = holm(fd, last)
    re_, _ = holm(fe, last)
    up = np.take_along_axis(sign, ld[None], 0)[0]
    return np.where(rd, np.where(up, 0, 1), np.where(re_, 2, 3))


def sequential(x: np.ndarray, cfg: SequentialConfig) -> tuple[np.ndarray, np.ndarray]:
    """States and seeds used per (comparison, study): after each look the decided comparisons stop."""
    plan, m = cfg.looks, x.shape[0]
    levels = [cfg.alpha / (m - r) for r in range(m)]
    fd, sign, fe = first_looks(x, plan, levels, lambda a: t_bounds(a, plan), cfg.delta)
    frozen = np.full(x.shape[:2], -1)
    for k in range(len(plan)):
        last = np.where(frozen >= 0, frozen, k)
        decided = states(fd, sign, fe, last) < 3
        frozen = np.where((frozen < 0) & decided, k, frozen)
    last = np.where(frozen >= 0, frozen, len(plan) - 1)
    return states(fd, sign, fe, last), np.array(plan)[last]


def fixed(x: np.ndarray, cfg: SequentialConfig, n: int) -> np.ndarray:
    """States of the fixed design: one paired t-test (and TOST) at ``n`` seeds, Holm across comparisons."""
    m = x.shape[0]
    levels = [cfg.alpha / (m - r) for r in range(m)]
    fd, sign, fe = first_looks(x[..., :n], (n,), levels, lambda a: np.array([stats.t.isf(a / 2, n - 1)]), cfg.delta)
    return states(fd, sign, fe, np.zeros(x.shape[:2], int))


def fixed_power_n(power: float, effect: float, sigma_d: float, alpha: float, most: int = 400) -> int:
    """Smallest n whose fixed paired t-test (two-sided alpha) has at least ``power`` at ``effect`` (noncentral t)."""
    for n in range(2, most):
        crit = stats.t.isf(alpha / 2, n - 1)
        if stats.nct.sf(crit, n - 1, effect / sigma_d * np.sqrt(n)) >= power:
            return n
    return most


def wald_bound(power: float, effect: float, sigma_d: float, alpha: float) -> float:
    """The fewest seeds ANY sequential test can spend on average at ``effect`` if it declares "better"
    there with probability ``power`` and declares "better" under no effect with probability at most
    ``alpha / 2`` (one side of the two-sided alpha), paired differences ~ N(theta, sigma_d^2), sigma_d
    even known: E[N] * KL >= d(power || alpha / 2), KL = effect^2 / (2 sigma_d^2) the information of one
    seed, d the binary relative entropy (Wald 1947, the information inequality behind the
    Wald-Wolfowitz optimality of the SPRT). A lower bound, not an approximation."""
    a = alpha / 2
    d = power * np.log(power / a) + (1 - power) * np.log((1 - power) / (1 - a))
    return float(d * 2 * sigma_d ** 2 / effect ** 2)


def fixed_z_n(power: float, effect: float, sigma_d: float, alpha: float) -> float:
    """Seeds of the fixed design with that power at ``effect``, sigma_d known (z test, not rounded)."""
    return float(((stats.norm.isf(alpha / 2) + stats.norm.isf(1 - power)) * sigma_d / effect) ** 2)


def shares(state: np.ndarray) -> list[float]:
    return [float(np.mean(state == i)) for i in range(4)]


def effect_rows(name: str, noise, cfg: SequentialConfig, n_fixed: int, sigma_d: float, count: int, rng):
    """(d): one comparison at effects 0, delta/2, delta, 2 delta, 4 delta; sequential and fixed design.
    Returns the rows and the sequential design's mean seeds at each effect."""
    rows, spent = [], []
    for mult in (0.0, 0.5, 1.0, 2.0, 4.0):
        x = studies(np.array([mult * cfg.delta]), noise, max(cfg.max_seeds, n_fixed), count, rng)
        st, used = sequential(x[..., :cfg.max_seeds], cfg)
        seq_share, fix_share = shares(st), shares(fixed(x, cfg, n_fixed))
        equal = bound = ""
        if mult > 0 and 0.5 < seq_share[0] < 1:  # the fixed design with the sequential design's measured power
            same = fixed_power_n(seq_share[0], mult * cfg.delta, sigma_d, cfg.alpha)
            equal = f"{used.mean() / same:.2f} (n={same})"
            args = (seq_share[0], mult * cfg.delta, sigma_d, cfg.alpha)
            bound = f"{wald_bound(*args) / fixed_z_n(*args):.2f}"
        spent.append(used.mean())
        rows.append([name, f"{mult:g} delta", "sequential", *(f"{v:.3f}" for v in seq_share),
                     f"{used.mean():.2f}", f"{used.mean() / n_fixed:.2f}", equal, bound])
        rows.append([name, f"{mult:g} delta", "fixed", *(f"{v:.3f}" for v in fix_share), f"{n_fixed}", "1.00", "",
                     ""])
    return rows, spent


def aa_rows(name: str, noise, cfg: SequentialConfig, n_fixed: int, count: int, rng) -> list[list[str]]:
    """(a): share of studies declaring a difference between identical arms, per null comparison and
    family-wise (any null comparison), with its binomial SE: 1 comparison, 3 null, and 3 of which one
    has a real effect of 4 delta (Holm passes its alpha on to the two null ones)."""
    rows = []
    for label, effects in (("1 null", [0.0]), ("3 null", [0.0] * 3), ("2 null + 4 delta", [4 * cfg.delta, 0, 0])):
        pairs = tuple((f"v{i}", "ref") for i in range(len(effects)))
        c = SequentialConfig(cfg.delta, cfg.alpha, cfg.min_seeds, cfg.max_seeds, cfg.batch, pairs)
        x = studies(np.array(effects), noise, max(c.max_seeds, n_fixed), count, rng)
        null = np.array(effects) == 0
        for design, st in (("sequential", sequential(x[..., :c.max_seeds], c)[0]), ("fixed", fixed(x, c, n_fixed))):
            diff = st[null] < 2
            fw, per = diff.any(0).mean(), diff.mean()
            se = np.sqrt(cfg.alpha * (1 - cfg.alpha) / count)
            rows.append([name, label, design, f"{per:.4f}", f"{fw:.4f}", f"{se:.4f}",
                         "yes" if fw <= cfg.alpha + 3 * se else "NO"])
    return rows


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delta", type=float, default=0.5, help="smallest effect that matters, accuracy points")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--min-seeds", type=int, default=3)
    ap.add_argument("--max-seeds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--fixed-seeds", type=int, default=None, help="the fixed design's seeds (default: --max-seeds)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    n_fixed = a.fixed_seeds or a.max_seeds
    start = time.perf_counter()
    sds = paired_sds(ROOT / "docs" / "ablation_p3_table1_c10_quick" / "report.csv")
    sigma_d = pooled(sds)
    cfg = SequentialConfig(a.delta, a.alpha, a.min_seeds, a.max_seeds, a.batch, (("v", "ref"),))
    atoms = run_residuals(ATOMS)
    models = {"normal": normal_noise(sigma_d), "resample": resample_noise(sigma_d, atoms)}
    rng = np.random.default_rng(a.seed)
    print(f"sigma_d = {sigma_d:.3f} pp (pooled from {len(sds)} paired intervals: "
          f"{', '.join(f'{s:.2f}' for s in sds)}); delta = {cfg.delta} pp; alpha = {cfg.alpha}; "
          f"looks at {list(cfg.looks)} seeds; fixed design: {n_fixed} seeds; {a.studies} studies per row; "
          f"resampled atoms: {atoms.size}\n")
    aa = [r for name, nz in models.items() for r in aa_rows(name, nz, cfg, n_fixed, a.studies, rng)]
    print(table(["noise", "comparisons", "design", "A/A per comparison", "A/A family-wise", "SE",
                 "<= alpha + 3 SE"], aa) + "\n")
    eff, spent = [], {}
    for name, nz in models.items():
        rows, spent[name] = effect_rows(name, nz, cfg, n_fixed, sigma_d, a.studies, rng)
        eff += rows
    print(table(["noise", "effect", "design", "better", "worse", "equivalent", "open", "mean seeds",
                 "seeds / fixed", "seeds / fixed at equal power", "any test's least / fixed at equal power"],
                eff) + "\n")
    for name, s in spent.items():
        print(f"{name}: mean seeds over the five effects {np.mean(s):.2f} = {np.mean(s) / n_fixed:.2f} of the "
              f"fixed design's {n_fixed}")
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
