"""Where a sweep's trials come from: an Optuna study, or a seeded list of random / grid points.

The Optuna study lives in ``<exp>/optuna.db`` and is the searcher's memory: a resumed sweep
loads it, so TPE keeps every result it was told. Trial ``t0007`` is Optuna trial number 7, for
good: a trial the killed driver had asked for but not finished is proposed again with the same
number and parameters (it continues from its checkpoint), and one whose result the trial store
recorded but Optuna never heard of is told on start-up. So the study never keeps a RUNNING trial
once the sweep is over, and it counts exactly the trials that ran.
"""
from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any, Optional, Protocol

from raypair.config import ParamSpace, TuneSettings
from raypair.experiments.base import Proposer, Record, Trial


class Searched(Protocol):
    """What a proposer reads of a sweep (``experiments.sweep.Sweep`` has it; named here so that this
    module, which the sweep uses, does not import it back)."""

    name: str
    metric: str
    mode: str
    space: dict[str, ParamSpace]
    tune: TuneSettings

_PRIMITIVE = (type(None), bool, int, float, str)


def key_of(number: int) -> str:
    return f"t{number:04d}"


def random_points(space: dict[str, ParamSpace], num_samples: int, seed: Optional[int]) -> list[dict[str, Any]]:
    """``num_samples`` repeats of the grid (one point if no grid), random paths drawn afresh for
    each point from a generator seeded by ``(seed, point index)``: the same list on every resume."""
    grid = {k: list(v.args) for k, v in space.items() if v.kind == "grid"}
    combos = [dict(zip(grid, c)) for c in itertools.product(*grid.values())] or [{}]
    points = []
    for i, combo in enumerate(c for _ in range(num_samples) for c in combos):
        rng = random.Random(f"{seed}/{i}")
        point = {}
        for path, ps in space.items():
            point[path] = combo[path] if ps.kind == "grid" else _draw(ps, rng)
        points.append(point)
    return points


def _draw(ps: ParamSpace, rng: random.Random) -> Any:
    a = ps.args
    if ps.kind == "uniform":
        return rng.uniform(a[0], a[1])
    if ps.kind == "loguniform":
        return math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
    if ps.kind == "int":
        return rng.randint(a[0], a[1])
    return rng.choice(list(a))


class OptunaProposer(Proposer):
    def __init__(self, sweep: Searched, db: Path, known: dict[str, Record]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = sweep.tune.searcher
        storage, direction = f"sqlite:///{db}", "maximize" if sweep.mode == "max" else "minimize"
        self.study = optuna.create_study(storage=storage, study_name=sweep.name, direction=direction,
                                         load_if_exists=True)
        # a resumed study must not draw the same points again: the seed moves on with its size
        seed = None if s.seed is None else s.seed + 1_000_003 * len(self.study.get_trials(deepcopy=False))
        self.study.sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
                              if s.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
        self.space, self.num_samples, self.metric = sweep.space, sweep.tune.num_samples, sweep.metric
        self.dists = {k: _distribution(v) for k, v in sweep.space.items()}
        self.pending: list[Trial] = []
        self._settle(known)

    def _settle(self, known: dict[str, Record]) -> None:
        """Trials the study still holds as RUNNING (the driver died): told now if their store
        recorded an end, else proposed again first."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            key = key_of(t.number)
            rec = known.get(key)
            if rec is not None and rec.end is not None:
                self.tell(key, rec.final(self.metric), rec.status)
            else:
                self.pending.append(Trial(key, self._decode(t.params)))

    def propose(self) -> Optional[Trial]:
        if self.pending:
            return self.pending.pop(0)
        if len(self.study.get_trials(deepcopy=False)) >= self.num_samples:
            return None
        t = self.study.ask(self.dists)
        return Trial(key_of(t.number), self._decode(t.params))

    def tell(self, key: str, value: Optional[float], status: str = "finished") -> None:
        from optuna.trial import TrialState

        number = int(key[1:])
        if value is None or not math.isfinite(value):
            trial = self.study.get_trials(deepcopy=False)[number]
            if trial.state == TrialState.RUNNING:  # why it failed, for optuna-dashboard and the report
                self.study._storage.set_trial_user_attr(trial._trial_id, "raypair.status", status)
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            self.study.tell(number, value, skip_if_finished=True)

    def _decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's values back to the space's: a non-primitive choice is stored as its index."""
        out = {}
        for path, v in params.items():
            ps = self.space[path]
            out[path] = list(ps.args)[v] if ps.kind == "choice" and not _primitive(ps.args) else v
        return out


def _primitive(choices: Any) -> bool:
    return all(isinstance(c, _PRIMITIVE) for c in choices)


def _distribution(ps: ParamSpace) -> Any:
    from optuna import distributions as d

    a = ps.args
    if ps.kind == "uniform":
        return d.FloatDistribution(a[0], a[1])
    if ps.kind == "loguniform":
        return d.FloatDistribution(a[0], a[1], log=True)
    if ps.kind == "int":
        return d.IntDistribution(a[0], a[1])
    choices = list(a)
    return d.CategoricalDistribution(choices if _primitive(choices) else list(range(len(choices))))
