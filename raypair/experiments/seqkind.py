"""Seeds until decided: an ablation file with a ``sequential:`` section (``seqconfig.py``) runs
every variant's first ``min_seeds`` seeds (the same seeds for every variant: seed i of one variant
pairs with seed i of another), then after each look decides every comparison with the
group-sequential paired test of ``sequential.py`` and runs ``batch`` more seeds only for the
variants still in an open comparison, up to ``max_seeds``.

```yaml
name: digits_seq
run: {...}                                   # as in any ablation file (ablation.py)
variants: {base: {}, base_again: {...}, slow: {optim.lr: 0.001}}
reference: base
sequential: {delta: 0.02, alpha: 0.05, min_seeds: 3, max_seeds: 8, batch: 2}
```

Seeds are the file's ``seeds:`` (at least ``max_seeds`` of them), else ``0 .. max_seeds-1``. A look
uses, per comparison, the seeds from the first on that both variants finished, in seed order, so a
decision is a pure function of the trial store: a resumed driver re-decides the same way, and a
finished pair never runs again. A failed pair holds its comparisons at that look; ``--resume`` runs
it again (as in any ablation).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Optional

from raypair.config import ConfigError, read_yaml
from raypair.experiments.base import WAIT, Proposer, Record, Trial, write_notes
from raypair.experiments.pairs import Ablation, slug
from raypair.experiments.seqconfig import SequentialConfig, comparison_name, sequential_config
from raypair.experiments.sequential import Decision, decide, next_seeds

TEST = "group-sequential paired t (O'Brien-Fleming-type spending, Holm across comparisons, TOST equivalence)"


@dataclass
class Sequential(Ablation):
    kind: ClassVar[str] = "sequential"
    seq: Optional[SequentialConfig] = None

    @property
    def cfg(self) -> SequentialConfig:
        assert self.seq is not None
        return self.seq

    def planned_trials(self) -> Optional[int]:
        return None  # decided as results come in (at most max_seeds per variant)

    def proposer(self, exp_dir: Path, known: dict[str, Record]) -> Proposer:
        return SeedsProposer(self, known, exp_dir)

    def fingerprint(self) -> Optional[str]:
        """The pre-registered plan and seeds: a ``--resume`` may not change them."""
        return hashlib.sha1(json.dumps([self.plan(), self.seeds], sort_keys=True).encode()).hexdigest()[:16]

    def keys(self) -> dict[str, tuple[str, int]]:
        """Every trial key this experiment may run -> (variant, index of its seed)."""
        return {slug(v, s): (v, i) for v in self.variants for i, s in enumerate(self.seeds)}

    def decisions(self, finals: dict[str, dict[int, float]], upto: Optional[int] = None) -> dict[str, Decision]:
        """Each comparison decided from ``finals`` (variant -> seed index -> final metric): the
        seeds from the first on that both arms have (at most ``upto``)."""
        diffs = {}
        for a, b in self.cfg.comparisons:
            fa, fb, d = finals.get(a, {}), finals.get(b, {}), []
            while len(d) < (upto or self.cfg.max_seeds) and len(d) in fa and len(d) in fb:
                d.append(fa[len(d)] - fb[len(d)])
            diffs[comparison_name(a, b)] = d
        return decide(diffs, self.cfg)

    def finals(self, records: list[Record]) -> dict[str, dict[int, float]]:
        """Variant -> seed index -> final metric, of the finished pairs among ``records``."""
        out: dict[str, dict[int, float]] = {}
        keys = self.keys()
        for rec in records:
            value = rec.final(self.metric) if rec.status == "finished" else None
            if rec.key in keys and value is not None and value == value:
                v, i = keys[rec.key]
                out.setdefault(v, {})[i] = value
        return out

    # ---------------------------------------------------------------------------- reported
    def plan(self) -> dict[str, Any]:
        c = self.cfg
        return {"delta": c.delta, "alpha": c.alpha, "min_seeds": c.min_seeds, "max_seeds": c.max_seeds,
                "batch": c.batch, "comparisons": [list(p) for p in c.comparisons], "test": TEST,
                "looks": list(c.looks)}

    def parent(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        tags, params, doc = super().parent()
        plan = self.plan()
        tags = tags | {"raypair.kind": "sequential", "raypair.test": TEST}
        params = params | {f"sequential.{k}": v for k, v in plan.items() if k != "test"}
        return tags, params, doc | {"sequential": plan}

    def summary(self, records: list[Record]) -> tuple[dict[str, Any], dict[str, float]]:
        tags, metrics = super(Ablation, self).summary(records)
        ran = [r for r in records if r.key in self.keys()]
        tags |= {"raypair.seeds_spent": len(ran), "raypair.seeds_fixed_design": self.cfg.max_seeds * len(self.variants)}
        for name, d in self.decisions(self.finals(records)).items():
            tags |= {f"raypair.seq.{name}.decision": d.state, f"raypair.seq.{name}.estimate": d.estimate,
                     f"raypair.seq.{name}.interval": f"[{d.low:.4g}, {d.high:.4g}]",
                     f"raypair.seq.{name}.seeds": d.n, f"raypair.seq.{name}.look": d.look}
        return tags, metrics

    def outcome(self, records: list[Record], where: Any) -> Any:
        from raypair.experiments.outcome import Outcome

        tags, _ = self.summary(records)
        lines = [f"{name}: {d.state} after {d.n} seeds (look {d.look}), {self.metric} difference "
                 f"{d.estimate:+.4g} in [{d.low:.4g}, {d.high:.4g}] (delta {self.cfg.delta:g})"
                 for name, d in self.decisions(self.finals(records)).items()]
        failed = sum(r.status in ("failed", "diverged") for r in records)
        lines.append(f"seeds spent: {tags['raypair.seeds_spent']} pairs of {tags['raypair.seeds_fixed_design']} "
                     f"in the fixed design; {failed} failed")
        lines.append(f"MLflow: {where.uri} (experiment {self.name!r}); report: raypair report {self.name} "
                     f"--storage {where.storage}")
        return Outcome("\n".join(lines), 0 if failed == 0 else 1)

    def resolved(self) -> dict[str, Any]:
        return self.plain() | {"sequential": self.plan()}


class SeedsProposer(Proposer):
    """Pairs of one look at a time: proposes the seeds up to each variant's next look, then waits
    (:data:`WAIT`) for their results before deciding; None once nothing is open or running."""

    def __init__(self, exp: Sequential, known: dict[str, Record], exp_dir: Optional[Path] = None) -> None:
        self.exp, self.keys, self.exp_dir = exp, exp.keys(), exp_dir
        self.results = exp.finals(list(known.values()))
        self.ran = {v: 0 for v in exp.variants}  # seeds asked for, per variant (a prefix of the seeds)
        for key in known:
            if key in self.keys:
                v, i = self.keys[key]
                self.ran[v] = max(self.ran[v], i + 1)
        self.pending = [Trial(k, self._params(k)) for k, r in known.items() if k in self.keys and not exp.done(r)]
        self.running: set[str] = set()
        self.todo: Optional[list[tuple[int, str]]] = None  # (seed index, variant) still to ask, this look

    def _params(self, key: str) -> dict[str, Any]:
        v, i = self.keys[key]
        return {"variant": v, "seed": self.exp.seeds[i]}

    def propose(self) -> Optional[Trial]:
        if self.pending:
            trial = self.pending.pop(0)
        else:
            trial = self._next()
            if trial is None:
                return WAIT if self.running else None
        self.running.add(trial.key)
        return trial

    def _next(self) -> Optional[Trial]:
        """The lowest seed, of any variant, below that variant's next look and not yet asked for.
        A look's decisions use only the seeds from the first on that both arms finished, so while a
        look's pairs run, its next look is the one they belong to: nothing more is asked for."""
        if self.todo is None:  # decided again only after a result came in
            decisions = self.exp.decisions(self.results)
            self.notes = [f"{n}: {d.state} at {d.n} seeds, difference {d.estimate:+.4g} in [{d.low:.4g}, {d.high:.4g}]"
                          for n, d in decisions.items()]
            write_notes(self.exp_dir, self.notes)
            have = {v: next(i for i in range(len(self.exp.seeds) + 1) if i not in self.results.get(v, {}))
                    for v in self.exp.variants}
            want = {v: have[v] + n for v, n in next_seeds(decisions, have, self.exp.cfg).items()}
            order = list(self.exp.variants)
            self.todo = sorted(((i, v) for v, n in want.items() for i in range(self.ran[v], n)),
                               key=lambda t: (t[0], order.index(t[1])))
        if not self.todo:
            return None
        i, v = self.todo.pop(0)
        self.ran[v] = max(self.ran[v], i + 1)
        return Trial(slug(v, self.exp.seeds[i]), {"variant": v, "seed": self.exp.seeds[i]})

    def tell(self, key: str, value: Optional[float], status: str = "finished") -> None:
        self.running.discard(key)
        self.todo = None
        if key in self.keys and status == "finished" and value is not None and value == value:
            v, i = self.keys[key]
            self.results.setdefault(v, {})[i] = float(value)


def load_sequential(path: str | Path, opts: Any) -> Sequential:
    """An ablation file with ``sequential:``, loaded as an ablation, then its plan checked."""
    from raypair.experiments.ablation import load_ablation

    raw = read_yaml(path)
    section = raw.pop("sequential", None)
    quick = getattr(opts, "quick", False)
    ab = load_ablation(path, opts.overrides, quick=quick, seeds=getattr(opts, "seeds", None),
                       only=getattr(opts, "variants", None), name=getattr(opts, "name", None),
                       max_concurrent=getattr(opts, "max_concurrent", None), raw=raw)
    if isinstance(section, dict) and "comparisons" not in section:  # each variant vs its reference
        section = section | {"comparisons": [[v, r] for v in ab.variants if (r := ab.reference_of(v))]}
    cfg = sequential_config(section, list(ab.variants))
    if missing := sorted(set(ab.variants) - {v for p in cfg.comparisons for v in p}):
        raise ConfigError("sequential.comparisons", f"leaves variant {missing[0]!r} out of every comparison "
                          "(it would never run)", [list(p) for p in cfg.comparisons])
    explicit = getattr(opts, "seeds", None) or "seeds" in raw or (quick and (raw.get("quick") or {}).get("seeds"))
    seeds = _seeds(ab.seeds if explicit else None, cfg)
    return Sequential(**{f.name: getattr(ab, f.name) for f in fields(ab)} | {"seeds": seeds, "seq": cfg})


def _seeds(given: Optional[list[int]], cfg: SequentialConfig) -> list[int]:
    """The seeds in the order they run: the file's (or ``--seeds``), which must give every variant
    ``max_seeds`` paired seeds, else ``0 .. max_seeds-1``."""
    if not given:
        return list(range(cfg.max_seeds))
    if len(given) < cfg.max_seeds:
        raise ConfigError("seeds", f"lists {len(given)} seeds, fewer than sequential.max_seeds ({cfg.max_seeds}): "
                          "every variant runs the same seeds, in order", list(given))
    return list(given)[: cfg.max_seeds]


def sequential_from_plain(doc: dict[str, Any]) -> Sequential:
    """The experiment from the ``sequential.yaml`` its parent run logged (what the report reads)."""
    from raypair.experiments.pairs import from_plain

    ab, plan = from_plain(doc), doc["sequential"]
    cfg = SequentialConfig(float(plan["delta"]), float(plan["alpha"]), int(plan["min_seeds"]), int(plan["max_seeds"]),
                           int(plan["batch"]), tuple(tuple(p) for p in plan["comparisons"]))
    return Sequential(**{f.name: getattr(ab, f.name) for f in fields(ab)} | {"seq": cfg})
