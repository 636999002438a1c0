"""Rich renderables and table filling shared by the app's tabs: mixtures as bars, side by side."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable

from engine.compare import Comparison
from engine.history import Evidence
from engine.runs import RunStatus
from olmix_tui import render


@dataclass(frozen=True)
class WeightBars:
    """Mixtures side by side, one bar per domain (or unit) and mixture, sorted by the first mixture (ties by name);
    `shown` holds (label, weights, colour). Two mixtures get a diff column. The bars fit the width
    the table is drawn at (known only then: a panel's scrollbar can come and go)."""

    title: str
    shown: list[tuple[str, dict[str, float], str]]
    caption: str = ""
    style: str = "dim"

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        shown = self.shown
        names = sorted(set().union(*(w for _, w, _ in shown)), key=lambda n: (-shown[0][1].get(n, 0.0), n))
        diff = len(shown) == 2
        bar_width = max(4, (width - max(map(len, names), default=4) - 2 - 8 * diff) // len(shown) - 9)
        table = Table(title=Text(self.title), caption=Text(self.caption, style=self.style) if self.caption else None,
                      caption_justify="left", box=None, padding=(0, 1))
        table.add_column("domain", no_wrap=True)
        for label, _, _ in shown:
            table.add_column("%", justify="right", min_width=5)
            table.add_column(Text(label), width=bar_width, no_wrap=True)
        if diff:
            table.add_column("diff", justify="right")
        for name in names:
            weights = [float(w.get(name, 0.0)) for _, w, _ in shown]
            cells: list = [Text(name)]
            for w, (_, _, color) in zip(weights, shown):
                cells += [f"{100 * w:.1f}", Text("█" * round(w * bar_width), style=color)]
            if diff:
                cells.append(f"{round(100 * (weights[1] - weights[0]), 1) or 0.0:+.1f}")  # no "-0.0"
            table.add_row(*cells)
        return table


def run_mixture(status: RunStatus, caption: str = "") -> WeightBars:
    """A run's planned mixture and, once trained, the realised one."""
    realised = status.realised_weights
    shown = [("planned", status.weights, "magenta"), *((("trained", realised, "green"),) if realised else ())]
    return WeightBars(f"mixture of {status.run}", shown, caption)


def comparison_view(result: Comparison) -> WeightBars:
    """Two mixtures (engine.compare's Comparison) side by side, with their compute, objectives and
    the verdict of the fit each rests on (and what was done with it)."""
    a, b = result.a, result.b
    lines = [f"L1 {result.l1:.4f}   KL(a||b) {result.kl_ab:.4f}   KL(b||a) {result.kl_ba:.4f}"]
    for side in (a, b):
        m, p = side.measured, side.predicted
        lines.append(f"{side.label}: {side.compute.runs} runs, {side.compute.flops:.3g} FLOPs"
                     + (f"; predicted {p:.4f}" if p is not None else "")
                     + (f"; measured {m.mean:.4f} ± {m.std:.4f} over {len(m.values)} seeds" if m else "")
                     + (f"; fit {side.evidence.summary}" if side.evidence is not None else ""))
    if a.compute.flops and b.compute.flops:
        lines.append(f"{a.label} spent {100 * a.compute.flops / b.compute.flops:.0f}% of the FLOPs of {b.label}")
    lines += [f"{parent} = {' + '.join(parts)} (partitioned between the two: the parts added up)"
              for parent, parts in result.parts.items()]
    shown = [(a.label, {x.domain: x.a for x in result.leaves}, "magenta"),
             (b.label, {x.domain: x.b for x in result.leaves}, "cyan")]
    return WeightBars(f"{a.label}  vs  {b.label}", shown, "\n".join(lines), style="")


def evidence_view(evidence: Evidence, mixture: dict[str, float], prior: dict[str, float]) -> Group:
    """What a mixture rests on (olmix_tui.render's lines: verdict, findings, fix, fallback, warnings)
    and, when a bootstrap ran, its spread: intervals with whiskers, how often each cap binds."""
    parts: list = [Text("\n").join(render.evidence_lines(evidence))]
    if evidence.spread is not None:
        parts += [render.spread_table("bootstrap spread", list(mixture), mixture, prior, evidence.spread, width=24),
                  Text(render.spread_line(evidence.spread), style="dim")]
    return Group(*parts)


def fill(table: DataTable, rows: list[tuple[str, list]]) -> None:
    """Show `rows` (key, cells) in `table`, updating cells in place when the keys are unchanged and
    every value fits its column (the cursor stays put), else rebuilding and keeping the cursor on the
    same key. Columns are widened for their values at once: DataTable would widen them when next
    idle, and a row drawn in between stayed drawn at the old width (a value cut short on a busy
    machine). A string cell shows as written (DataTable would read it as markup: "[proxy] lr" would
    lose its brackets)."""
    rows = [(key, [Text(c) if isinstance(c, str) else c for c in cells]) for key, cells in rows]
    keys = [key for key, _ in rows]
    columns = list(table.columns.values())
    widest = [max((getattr(cells[i], "cell_len", 0) for _, cells in rows if i < len(cells)), default=0)
              for i in range(len(columns))]
    fits = all(width <= column.content_width for column, width in zip(columns, widest))
    if fits and [k.value for k in table.rows] == keys:
        for key, cells in rows:
            for column, value in zip(columns, cells):
                if table.get_cell(key, column.key) != value:
                    table.update_cell(key, column.key, value)
        return
    current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value if table.row_count else None
    table.clear()
    for column, width in zip(columns, widest):
        if column.auto_width:
            column.content_width = max(column.content_width, width)
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if current in keys:
        table.move_cursor(row=keys.index(current))


def number(value) -> str:
    return "" if value is None else f"{value:.4f}"
