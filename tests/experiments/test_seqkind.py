"""The seeds-until-decided kind (raypair/experiments/seqkind.py) without Ray: how its file is
recognised, every bad setting as one line and exit 2, and its proposer driven as the runner drives
it (up to ``max_concurrent`` trials asked for, each told as it ends): the paired first look, "wait"
while a look's pairs run, more seeds only for open comparisons up to max_seeds, and a resume from
the stored records that asks for exactly the trials the uninterrupted run would have."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import yaml

from raypair.experiments.base import WAIT, Record

from helpers import SEQUENTIAL



def load(path=SEQUENTIAL, **kw):
    from raypair.experiments.seqkind import load_sequential

    opts = SimpleNamespace(**({"overrides": [], "quick": False, "seeds": None, "variants": None, "name": None,
                               "max_concurrent": None} | kw))
    return load_sequential(path, opts)


def test_a_sequential_section_makes_the_kind():
    from raypair.experiments.kinds import kind_of

    raw = yaml.safe_load(SEQUENTIAL.read_text())
    assert kind_of(raw).name == "sequential"
    assert kind_of({k: v for k, v in raw.items() if k != "sequential"}).name == "ablation"
    exp = load()
    assert exp.seeds == list(range(8)) and exp.cfg.comparisons == (("same_again", "base"), ("slow", "base"))
    assert exp.cfg.looks == (3, 5, 7, 8)


BAD = [({"delta": 0}, "sequential.delta: must be > 0 (got 0)"),
       ({"alpha": 0.5}, "sequential.alpha: must be in (0, 0.5) (got 0.5)"),
       ({"min_seeds": 9}, "sequential.max_seeds: must be >= min_seeds (9) (got 8)"),
       ({"comparisons": [["slow", "nope"]]}, "sequential.comparisons[0]: names unknown variant 'nope'"),
       ({"comparisons": [["slow", "base"]]}, "sequential.comparisons: leaves variant 'same_again' out"),
       ({"seeds": [0, 1, 2]}, "seeds: lists 3 seeds, fewer than sequential.max_seeds (8)"),
       ({"bogus": 1}, "sequential.bogus: unknown key")]


@pytest.mark.parametrize("change,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_sequential_input_is_one_line_and_exit_2(tmp_path, capsys, change, message):
    from raypair.cli import main

    raw = yaml.safe_load(SEQUENTIAL.read_text())
    if "seeds" in change:
        raw["seeds"] = change["seeds"]
    else:
        raw["sequential"] |= change
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["validate", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"raypair: error: {message}"), err


# ------------------------------------------------------------------------------ the proposer
def truth(key: str) -> float:
    """A made-up final val_acc per trial: base and same_again equal per seed, slow far below."""
    variant, seed = key.rsplit("__s", 1)
    noise = random.Random(int(seed)).gauss(0, 0.01)
    return 0.9 + noise - (0.5 if variant == "slow" else 0.0) + (0.003 * (-1) ** int(seed) if variant == "noisy" else 0)


def drive(exp, known: dict, stop_after: int | None = None, concurrent: int = 2):
    """The runner's loop: ask until ``concurrent`` run or WAIT/None, end the oldest, tell it."""
    prop, running, asked, log = exp.proposer(None, known), [], [], []
    while True:
        while len(running) < concurrent:
            t = prop.propose()
            if t is None or t is WAIT:
                log.append("wait" if t is WAIT else "done")
                break
            running.append(t.key)
            asked.append(t.key)
        if not running:
            assert log[-1] == "done"
            return asked, known
        key = running.pop(0)
        known[key] = Record(key, {}, history=[{"epoch": 1, "val_acc": truth(key)}], end={"status": "finished"})
        prop.tell(key, truth(key))
        if stop_after is not None and len(asked) >= stop_after and len(known) >= stop_after - 1:
            return asked, known  # the driver dies: the trials still running have no end


def test_clear_and_aa_decide_at_the_first_look():
    exp = load()
    asked, known = drive(exp, {})
    assert sorted(asked) == sorted(f"{v}__s{s}" for v in exp.variants for s in range(3))  # paired, once each
    assert asked[:3] == ["base__s0", "same_again__s0", "slow__s0"]  # seed by seed
    d = exp.decisions(exp.finals(list(known.values())))
    assert (d["slow vs base"].state, d["slow vs base"].n) == ("worse", 3)
    assert d["same_again vs base"].state == "equivalent" and d["same_again vs base"].estimate == 0.0
    tags, _ = exp.summary(list(known.values()))
    assert tags["raypair.seeds_spent"] == 9 and tags["raypair.seeds_fixed_design"] == 24
    assert tags["raypair.seq.slow vs base.decision"] == "worse"


def test_a_look_waits_for_its_pairs():
    exp = load()
    prop = exp.proposer(None, {})
    first = [prop.propose() for _ in range(9)]
    assert all(t is not None and t is not WAIT for t in first)
    assert prop.propose() is WAIT  # nine running: the next look needs their results
    for t in first[:-1]:
        prop.tell(t.key, truth(t.key))
    assert prop.propose() is WAIT
    prop.tell(first[-1].key, truth(first[-1].key))
    assert prop.propose() is None  # both decided, nothing running


def test_an_open_comparison_runs_to_max_seeds_and_resume_asks_the_same(tmp_path):
    """``noisy`` differs from base by +-0.003 alternating per seed (delta 0.002): its mean stays inside the
    margin, but its interval at 8 seeds (t_7 > 2.36 times 0.003/sqrt(8) ~ 0.0025) cannot exclude 0
    nor fit in (-0.002, 0.002): open at max_seeds, so base and noisy run all 8 seeds, slow only 3."""
    raw = yaml.safe_load(SEQUENTIAL.read_text())
    raw["variants"] = {"base": {}, "noisy": {"optim.momentum": 0.8}, "slow": {"optim.lr": 0.001}}
    raw["sequential"]["delta"] = 0.002
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    exp = load(tmp_path / "s.yaml")
    whole, known = drive(exp, {})
    assert sorted(k for k in whole if k.startswith("noisy")) == [f"noisy__s{s}" for s in range(8)]
    assert sorted(k for k in whole if k.startswith("slow")) == [f"slow__s{s}" for s in range(3)]
    assert len(whole) == len(set(whole)) == 19
    assert exp.decisions(exp.finals(list(known.values())))["noisy vs base"].state == "open"
    for cut in (4, 10, 13):  # a kill mid-look: a resumed driver runs the rest, nothing finished again
        first, part = drive(exp, {}, stop_after=cut)
        rest, _ = drive(exp, dict(part))
        assert not set(rest) & set(part) and sorted(set(first) | set(rest)) == sorted(whole)


def test_status_shows_the_decisions_the_proposer_noted(tmp_path, capsys):
    from raypair.cli import main
    from raypair.trials.store import STATE_FILE

    exp = load()
    exp_dir = tmp_path / exp.name
    exp_dir.mkdir()
    (exp_dir / STATE_FILE).write_text('{"kind": "sequential", "name": "digits_seq"}')
    prop = exp.proposer(exp_dir, {})
    first = [prop.propose() for _ in range(9)]
    for t in first:
        prop.tell(t.key, truth(t.key))
    assert prop.propose() is None
    assert main(["status", exp.name, "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  same_again vs base: equivalent at 3 seeds, difference +0 in [0, 0]" in out
    assert "  slow vs base: worse at 3 seeds, difference -0.5" in out


def test_the_plan_may_not_change_on_resume(tmp_path):
    raw = yaml.safe_load(SEQUENTIAL.read_text())
    raw["sequential"]["alpha"] = 0.1
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert load().fingerprint() == load().fingerprint() != load(tmp_path / "s.yaml").fingerprint()
