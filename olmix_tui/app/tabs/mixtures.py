"""The Mixtures tab: the history, and the highlighted entry beside its full recomputation (when the
update was compared) or the entry before it; the first entry's mixture alone."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from engine.compare import Comparison
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import WeightBars, comparison_view, fill
from olmix_tui.render import HISTORY_COLUMNS, history_rows


class MixturesTab(AppTab):
    KEY, TITLE = "mixtures", "Mixtures"

    def compose(self) -> ComposeResult:
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="comparison-scroll"):
            yield Static(id="comparison")

    def on_mount(self) -> None:
        self.query_one("#history", DataTable).add_columns(*HISTORY_COLUMNS)

    def show(self, snapshot: Snapshot) -> None:
        history, table = snapshot.history, self.query_one("#history", DataTable)
        fill(table, [(e.label, row) for e, row in zip(history, history_rows(history))])
        if self.app.selection.entry not in {e.label for e in history} and history:  # at first, the last entry
            self.app.select(entry=history[-1].label)
            table.move_cursor(row=len(history) - 1)
        comparison, panel = snapshot.comparison, self.query_one("#comparison", Static)
        entry = next((e for e in history if e.label == snapshot.selection.entry), history[-1] if history else None)
        if isinstance(comparison, Comparison):
            panel.update(comparison_view(comparison))
        elif entry is not None:  # nothing to compare it with (the first entry): its mixture alone
            panel.update(WeightBars(f"mixture of {entry.label}", [(entry.label, entry.mixture, "magenta")], comparison))
        else:
            root = self.app.project.root
            panel.update(Text(comparison or f"No mixture yet: compute the first with `olmix-tui {root} --batch`."))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value != self.app.selection.entry:
            self.app.select(entry=event.row_key.value)
