"""raypair from Python or a notebook: the commands of the CLI as functions that return rows.

```python
from raypair import api

rows = api.tune("search_spaces/quickstart.yaml", storage="runs", set={"epochs": 2}, num_samples=4)
api.ablate("ablations/p3_table1_c10.yaml", quick=True, seeds=[0, 1])
api.report("quickstart", storage="runs", frame=True)   # a pandas DataFrame
api.status("quickstart", storage="runs")
```

Each function builds the command line of the same command (``raypair tune FILE --num-samples 4
...``: a keyword ``num_samples=4`` is the option ``--num-samples 4``, ``True`` a flag, a list a
comma-separated value, ``set=`` a mapping or a list of ``PATH=VALUE``), parses it with the CLI's own
parser and runs the CLI's own command code, so it checks and does exactly what the command does.
Bad input raises :class:`~raypair.config.ConfigError` (the CLI's one line) instead of exiting.

What comes back is a list of plain dicts (:class:`Rows`): one per trial for ``tune``, ``ablate``,
``train``, ``run`` and ``status`` (key, status, epochs, the trial's params, the metrics of its last
epoch), one per row of the report's table (``report.csv``) for ``report``. ``frame=True`` returns a
pandas DataFrame instead (pandas is imported only then). A trial that failed
raises nothing: its row says so (``status``), as the command's line per trial does.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from raypair.config import ConfigError

__all__ = ["ConfigError", "Rows", "ablate", "report", "run", "status", "train", "tune", "validate"]


class Rows(list):
    """A list of dicts, one per trial (or table row)."""

    def frame(self) -> Any:
        """The rows as a pandas DataFrame, through pyarrow's conversion (typed columns);
        a column whose rows hold values of different types is shown as text."""
        import pyarrow as pa

        keys = list(dict.fromkeys(k for row in self for k in row))
        return pa.table({k: _column(pa, [row.get(k) for row in self]) for k in keys}).to_pandas()


def _column(pa: Any, values: list[Any]) -> Any:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values])


def tune(space: str | Path, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair tune SPACE``: a sweep; one row per trial."""
    return _experiment("tune", space, opts, frame)


def ablate(file: str | Path, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair ablate FILE``: an ablation's (variant, seed) pairs; one row per pair."""
    return _experiment("ablate", file, opts, frame)


def train(file: str | Path, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair train FILE``: one run; one row."""
    return _experiment("train", file, opts, frame)


def run(file: str | Path, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair run FILE``: an experiment file of any kind (plug-in kinds included)."""
    return _experiment("run", file, opts, frame)


def validate(file: str | Path, **opts: Any) -> dict[str, Any]:
    """``raypair validate FILE``: the resolved experiment (what the command prints), nothing started."""
    from raypair.cli import commands

    return commands.resolved(_parse("validate", [str(file)], opts))


def report(name: str, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair report NAME``: writes the report's files; the rows of its table (``report.csv``)."""
    from raypair.cli import commands

    args = _parse("report", [name], opts)
    files = commands.report_files(args)
    rows = Rows()
    for table in (f for f in files if Path(f).name == "report.csv"):
        with open(table, newline="") as f:
            rows = Rows(csv.DictReader(f))
    return rows.frame() if frame else rows


def status(name: str, *, frame: bool = False, **opts: Any) -> Any:
    """``raypair status NAME``: where an experiment stands, from its trial store; one row per trial."""
    from raypair.cli.status import trial_records
    from raypair.experiments.outcome import rows

    out = Rows(rows(trial_records(_parse("status", [name], opts))))
    return out.frame() if frame else out


# ----------------------------------------------------------------------------------- helpers
def _experiment(command: str, file: str | Path, opts: dict[str, Any], frame: bool) -> Any:
    from raypair.cli import commands
    from raypair.experiments.outcome import rows

    _, records, outcome = commands.execute(_parse(command, [str(file)], opts))
    print(outcome.text)
    out = Rows(rows(records))
    return out.frame() if frame else out


def _parse(command: str, positional: list[str], opts: dict[str, Any]) -> Any:
    """The CLI's own parse of ``raypair COMMAND POSITIONAL --opt value ...``."""
    from raypair.cli import parser

    return parser().parse_args([command, *positional, *argv(opts)])


def argv(opts: dict[str, Any]) -> list[str]:
    """Keywords as options: ``num_samples=4`` -> ``--num-samples 4``, ``quick=True`` -> ``--quick``
    (False and None: left out), ``seeds=[0, 1]`` -> ``--seeds 0,1``, ``set={"epochs": 2}`` or
    ``set=["epochs=2"]`` -> ``--set epochs=2``."""
    out: list[str] = []
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if key == "set":
            items = value.items() if isinstance(value, dict) else [str(v).split("=", 1) for v in value]
            for path, v in items:
                out += ["--set", f"{path}={v if isinstance(v, str) else json.dumps(v)}"]
        elif value is True:
            out.append(flag)
        elif value is not None and value is not False:
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            out += [flag, shown]
    return out
