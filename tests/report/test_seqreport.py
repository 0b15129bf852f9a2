"""The report of a seeds-until-decided ablation (raypair/report/sequential.py) from child runs as
MLflow holds them: each comparison's path at the looks it reached (seeds, and an estimate checked
against the plain mean of the paired differences), when it was decided, the seeds spent against
the fixed design, written into report.md, sequential.csv and path.png."""
from __future__ import annotations

import csv

import numpy as np
import yaml

from raypair.tracking.read import Child, Parent
from helpers import SEQUENTIAL

ACC = {"base": [0.91, 0.88, 0.93, 0.90, 0.89], "same_again": [0.91, 0.88, 0.93], "slow": [0.42, 0.35, 0.47, 0.40, 0.38]}


def _children() -> list[Child]:
    return [Child(f"{v} s{s}", "FINISHED", {"raypair.variant": v, "raypair.seed": str(s)},
                  {"val_acc": a, "train_loss": 1.0}, {"val_acc": {1: a}})
            for v, accs in ACC.items() for s, a in enumerate(accs)] + \
        [Child("slow s5", "FAILED", {"raypair.variant": "slow", "raypair.seed": "5"}, {"val_acc": 0.1})]


def test_the_path_of_each_comparison(tmp_path):
    from raypair.experiments.seqkind import Sequential, sequential_from_plain
    from raypair.experiments.kinds import kind_of
    from raypair.report.sequential import sequential_report

    exp = kind_of(yaml.safe_load(SEQUENTIAL.read_text())).load(SEQUENTIAL, type("O", (), {"overrides": []})())
    assert isinstance(exp, Sequential)
    exp = sequential_from_plain(yaml.safe_load(yaml.safe_dump(exp.plain() | {"sequential": exp.plan()})))
    files = sequential_report(exp, Parent("p1"), _children(), tmp_path)
    assert {f.name for f in files} >= {"report.md", "sequential.csv", "path.png"}
    rows = list(csv.DictReader((tmp_path / "sequential.csv").open()))
    got = [(r["comparison"], int(r["look"]), int(r["n"])) for r in rows]
    assert got == [("same_again vs base", 1, 3), ("slow vs base", 1, 3), ("slow vs base", 2, 5)]
    d = np.subtract(ACC["slow"], ACC["base"])
    assert (rows[1]["estimate"], rows[2]["estimate"]) == (f"{d[:3].mean():.6g}", f"{d.mean():.6g}")
    assert rows[0]["state"] == "equivalent" and float(rows[0]["estimate"]) == 0.0
    text = (tmp_path / "report.md").read_text()
    assert "Seeds spent: 13 finished pairs; the fixed design runs 24 (8 per variant)" in text
    assert "same_again vs base: equivalent at look 1 (3 seeds)." in text
