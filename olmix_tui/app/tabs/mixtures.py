"""The Mixtures tab: the history, and the highlighted entry beside its full recomputation (when the
update was compared) or the entry before it (the first entry's mixture alone), with what it rests
on: its fit's verdict, a fallback or forced proposal, its warnings and bootstrap intervals. c pins
the highlighted entry: any entry highlighted after it is compared with it (across a partition, the
parts added up under the domain they were split from); c again unpins it."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from engine.compare import Comparison
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import WeightBars, comparison_view, evidence_view, fill
from olmix_tui.render import HISTORY_COLUMNS, history_rows


CHANGES_WIDTH = 30
"""Below 120 columns: an entry's changes are cut to this width (the comparison below names them)."""


class MixturesTab(AppTab):
    KEY, TITLE = "mixtures", "Mixtures"
    BINDINGS = [
        Binding("c", "pin", "Compare with", id="mixtures.compare",
                tooltip="Pin the highlighted entry (or unpin it): the entry highlighted next is compared with it"),
    ]

    def compose(self) -> ComposeResult:
        yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="comparison-scroll"):
            yield Static(id="comparison")

    def show(self, snapshot: Snapshot) -> None:
        history, table = snapshot.history, self.query_one("#history", DataTable)
        columns = HISTORY_COLUMNS[:-1] if self.narrow else HISTORY_COLUMNS  # narrow: the mixture is in the bars below
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        pinned = self.app.selection.compare_with
        rows = [row[:len(columns)] for row in history_rows(history)]
        for e, row in zip(history, rows):
            row[0] = Text(f"{e.label} (pinned)", style="bold cyan") if e.label == pinned else e.label
            if self.narrow and len(row[1]) > CHANGES_WIDTH:
                row[1] = row[1][:CHANGES_WIDTH - 1] + "…"
        fill(table, [(e.label, row) for e, row in zip(history, rows)])
        if self.app.selection.entry not in {e.label for e in history} and history:  # at first, the last entry
            self.app.select(entry=history[-1].label)
            table.move_cursor(row=len(history) - 1)
        comparison, panel = snapshot.comparison, self.query_one("#comparison", Static)
        entry = next((e for e in history if e.label == snapshot.selection.entry), history[-1] if history else None)
        evidence = entry.content.evidence if entry is not None else None
        shown = [] if evidence is None else [evidence_view(evidence, entry.mixture, self._prior(snapshot))]
        if isinstance(comparison, Comparison):
            panel.update(Group(comparison_view(comparison), *shown))
        elif entry is not None:  # nothing to compare it with (the first entry): its mixture alone
            panel.update(Group(WeightBars(f"mixture of {entry.label}", [(entry.label, entry.mixture, "magenta")],
                                          comparison + " c pins an entry to compare any other with."), *shown))
        else:
            root = self.app.project.root
            panel.update(Text(comparison or f"No mixture yet: compute the first with u on the Domains tab "
                                            f"(or `olmix-tui {root} --batch`)."))

    @staticmethod
    def _prior(snapshot: Snapshot) -> dict[str, float]:
        """The natural distribution of the current domains, as far as they are tokenized."""
        status = snapshot.status
        return {d.name: d.prior for d in status.domains if d.prior is not None} if status is not None else {}

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value != self.app.selection.entry:
            self.app.select(entry=event.row_key.value)

    def action_pin(self) -> None:
        entry, pinned = self.app.selection.entry, self.app.selection.compare_with
        if entry is None:
            self.app.tell("No history entry yet.", "warning")
            return
        self.app.select(compare_with=None if pinned == entry else entry)
        self.app.tell(f"Unpinned {entry}." if pinned == entry else
                      f"Pinned {entry}: highlight another entry to compare it with {entry} (c again unpins).")
        self.show(self.app.snapshot)
