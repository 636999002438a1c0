"""Rendering for the command line: rich progress driven by engine events, tables, JSON."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from engine.atomic import round_floats
from engine.events import Event, Message, TaskFinished, TaskProgress, TaskStarted

console = Console()
err_console = Console(stderr=True)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(round_floats(data), indent=2, sort_keys=True) + "\n")


@contextmanager
def progress(quiet: bool = False) -> Iterator:
    """An event sink drawing rich progress bars (to stderr, so stdout stays clean for --json)."""
    if quiet:
        yield lambda event: None
        return
    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err_console, transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, TaskStarted):
            tasks[event.task] = bars.add_task(event.task, total=event.total, info="")
        elif isinstance(event, TaskProgress) and event.task in tasks:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in event.info.items())
            bars.update(tasks[event.task], completed=event.completed, info=info)
        elif isinstance(event, TaskFinished) and event.task in tasks:
            task = bars.tasks[tasks[event.task]]
            bars.update(tasks[event.task], completed=task.total if task.total is not None else task.completed)
        elif isinstance(event, Message):
            bars.console.print(("[yellow]warning:[/] " if event.level == "warning" else "") + event.text)

    with bars:
        yield on_event


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list], justify_numbers: bool = True) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if justify_numbers and i > 0 else "left")
    for row in rows:
        t.add_row(*["-" if v is None else (_fmt(v) if not isinstance(v, str) else v) for v in row])
    return t


def pct(x) -> str | None:
    return None if x is None else f"{100 * x:.2f}%"


def count(x) -> str | None:
    return None if x is None else f"{x:,}"


def headline_metrics(statuses, limit: int = 4) -> list[str]:
    """The metrics worth a column: eval sets first, then the mean-like per-domain BPBs, at most `limit`."""
    names = sorted({k for s in statuses for k in s.metrics})
    evals = [n for n in names if n.startswith("eval:")]
    bpb = [n for n in names if n.endswith("/bpb") and n not in evals]
    return (evals + bpb)[:limit]


def stacked_bars(weights, units: list[str], title: str, width: int = 100, height: int = 18) -> Text:
    """A terminal stacked-bar chart of mixtures (one bar per row of `weights`)."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    x = list(range(1, len(weights) + 1))
    plt.stacked_bar(x, [list(map(float, weights[:, j])) for j in range(len(units))], labels=units)
    plt.title(title)
    plt.xlabel("run")
    return Text.from_ansi(plt.build())
