"""What a report reads back and writes out is not trusted more than a file on the command line:
the YAML its parent run logged is read with a config file's limits, and no CSV cell it writes can
start a spreadsheet formula."""
from __future__ import annotations

import csv

import pytest

from raypair.config import ConfigError
from raypair.report.cells import cell
from raypair.tracking.read import Child, Parent


@pytest.mark.parametrize("text, shown", [
    ("=HYPERLINK(\"http://x\",\"a\")", "'=HYPERLINK(\"http://x\",\"a\")"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("-0.5", "-0.5"), ("+1e-3", "+1e-3"), ("cutmix", "cutmix"), ("", ""), ("a=b", "a=b"),
])
def test_a_cell_that_would_be_a_formula_is_quoted(text, shown):
    assert cell(text) == shown


def test_numbers_pass_unchanged():
    assert [cell(v) for v in (3, -0.25, None)] == [3, -0.25, None]


def test_a_sweep_csv_quotes_a_formula_in_a_searched_value(tmp_path):
    from raypair.report.sweep import sweep_report

    evil = '=HYPERLINK("http://evil.example","click")'
    kids = [Child("t0", "FINISHED", {"raypair.trial_id": "t0", "raypair.search.method.aug": evil},
                  {"val_acc": -0.5}, {"val_acc": {1: -0.5}})]
    sweep = {"tune": {"metric": "val_acc", "mode": "max"}, "space": {"method.aug": {"choice": [evil]}}}
    sweep_report(sweep, Parent("p"), kids, tmp_path, top=5)
    [row] = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert row["method.aug"] == "'" + evil
    assert row["last_val_acc"] == "-0.5"  # a negative number is still a number


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for the cases (a store's first open migrates its schema: seconds)."""
    from mlflow.tracking import MlflowClient

    from raypair.tracking import default_uri

    root = tmp_path_factory.mktemp("store")
    uri = default_uri(root)
    return uri, MlflowClient(uri), root


def _sweep_logging(store, name: str, text: str) -> str:
    uri, client, root = store
    exp = client.create_experiment(name, artifact_location=(root / name).as_uri())
    run = client.create_run(exp, run_name=name, tags={"raypair.kind": "sweep"}).info.run_id
    client.log_text(run, text, "sweep.yaml")
    return uri


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, why", [
    (BOMB, "aliases"),
    ("tune: {metric: val_acc}\n" + "# pad\n" * 200_000, "longer than"),
    ("tune: {metric: a, metric: b}\n", "metric"),
])
def test_a_logged_yaml_beyond_a_config_files_limits_is_one_error(store, tmp_path, text, why):
    from raypair.report import report

    uri = _sweep_logging(store, tmp_path.name, text)
    with pytest.raises(ConfigError) as e:
        report(uri, tmp_path.name, tmp_path / "out", log=False)
    assert e.value.field == "experiment" and "sweep.yaml" in str(e.value) and why in str(e.value)
