"""The live view of a running experiment on a terminal (``rich``), redrawn twice a second in place:

    omega  ━━━━━━━━━━━━━━━╺━━━━━━━━━━━━━━  412/2400 trial-epochs (17%)  elapsed 1:02:13  ETA <= 5:00:41
    3 finished · 5 stopped · 0 failed · 1 diverged · 4 running
     running trial                                         epoch     val_acc
     t0012  method.omega=0.3321 method.omega_mode=beta    41/200      0.7712
    best val_acc=0.8123  t0004  method.omega=1.2 method.omega_mode=const

What it shows is :class:`raypair.runner.progress.Progress`'s state (the members :class:`State`
names); the line per ended trial (and, with ``--verbose``, per epoch) scrolls above it. Only the
driver holds a view: it is made on first use and never pickled (Tune saves its callbacks)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Protocol, TextIO

from raypair.experiments.base import fmt_value

SHOWN = ("finished", "stopped", "failed", "diverged")  # always shown, even at 0; other statuses once seen


class State(Protocol):
    """What the view reads of a running experiment's progress (``runner.progress.Progress`` has it;
    named here so that this module, which Progress uses, does not import it back)."""

    book: Any  # .exp (name, metric, base_run.epochs) and .shown (key -> the trial's description)
    planned: Optional[int]
    total_epochs: Optional[int]
    epochs_done: int
    running: dict[str, tuple[int, Optional[float]]]  # key -> (epoch, metric)
    ended: Counter[str]
    best: Optional[tuple[float, str]]
    notes: list[str]  # the proposer's decisions (a sequential ablation's comparisons)

    def timing(self) -> tuple[float, Optional[float]]: ...  # (elapsed, ETA upper bound) in seconds

    def clock_text(self, seconds: float) -> str: ...


class View:
    """A ``rich.live.Live`` over ``progress``; ``print`` writes a line above it."""

    def __init__(self, progress: State, out: TextIO) -> None:
        import sys

        from rich.console import Console
        from rich.live import Live

        self.progress = progress
        self.console = Console(file=out, force_terminal=True)
        ours = out is sys.stdout  # other prints to stdout / stderr (Ray's) then scroll above the view too
        self.live = Live(self, console=self.console, refresh_per_second=2, transient=True,
                         redirect_stdout=ours, redirect_stderr=ours)
        self.live.start()

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        self.live.stop()

    def __rich__(self) -> Any:
        return render(self.progress)


def render(p: State) -> Any:
    """The view of ``p``'s state: the bar, the counts, the running trials, the best so far."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    exp, (elapsed, eta) = p.book.exp, p.timing()
    head = Table.grid(padding=(0, 2))
    done = f"{p.epochs_done}/{p.total_epochs} trial-epochs ({100 * min(1.0, p.epochs_done / p.total_epochs):.0f}%)" \
        if p.total_epochs else f"{p.epochs_done} trial-epochs"
    when = f"elapsed {p.clock_text(elapsed)}" + (f"  ETA <= {p.clock_text(eta)}" if eta is not None else "")
    head.add_row(Text(exp.name, style="bold", no_wrap=True),
                 ProgressBar(total=p.total_epochs, completed=p.epochs_done, width=30),
                 Text(f"{done}  {when}", no_wrap=True, overflow="ellipsis"))
    counts = [f"{p.ended[s]} {s}" for s in SHOWN] + [f"{n} {s}" for s, n in p.ended.items() if s not in SHOWN and n]
    of = f" of {p.planned}" if p.planned else ""
    parts: list[Any] = [head, Text(" · ".join(counts) + f" · {len(p.running)} running{of}")]
    if p.running:
        parts.append(_running(p))
    if p.best is not None:
        parts.append(Text(f"best {exp.metric}={p.best[0]:.4f}  {p.best[1]}", style="green"))
    parts.extend(Text(line, style="cyan") for line in p.notes)  # a sequential ablation's comparisons
    return Group(*parts)


def _running(p: State) -> Any:
    """A row per running trial: its label, its epoch of the run's, its metric."""
    from rich.table import Table

    exp = p.book.exp
    epochs = exp.base_run.epochs  # validated once: a redraw rebuilds no run config
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    table.add_column("running trial")
    table.add_column("epoch", justify="right")
    table.add_column(exp.metric, justify="right")
    for key, (epoch, value) in sorted(p.running.items()):
        label = p.book.shown[key].label if key in p.book.shown else key
        table.add_row(label, f"{epoch}/{epochs}" if epoch else "starting", "-" if value is None else fmt_value(value))
    return table
