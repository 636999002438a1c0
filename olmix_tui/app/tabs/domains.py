"""The Domains tab: the domain set and the staged update; keys stage changes (add, remove, revise,
partition) through the engine, discard them, or apply the update in a detached job, after choosing
its plan with each plan's cost in view."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from engine.domains import Change
from engine.errors import OlmixError
from engine.project import Project
from engine.status import PendingUpdate, ProjectStatus
from olmix_tui.app.forms import ChangeForm
from olmix_tui.app.messages import Discarded, PendingUnchanged, Staged
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import WeightBars, fill
from olmix_tui.render import count, pct

COLUMNS = ["domain", "staged", "sources", "revision", "train tokens", "natural", "current"]
NARROW_COLUMNS = ["domain", "staged", "train tokens", "natural", "current"]
"""Below 120 columns: the domain table's columns that fit in 80 (`olmix-tui domains list` has the sources)."""


class DomainsTab(AppTab):
    KEY, TITLE = "domains", "Domains"
    BINDINGS = [
        Binding("a", "stage_form('add')", "Add", id="domains.add", tooltip="Stage a new domain (its name and files)"),
        Binding("d", "stage_remove", "Remove", id="domains.remove", tooltip="Stage removing the highlighted domain"),
        Binding("v", "stage_form('revise')", "Revise", id="domains.revise",
                tooltip="Stage a new revision of the highlighted domain (new files, or new content)"),
        Binding("p", "stage_form('partition')", "Partition", id="domains.partition",
                tooltip="Stage splitting the highlighted domain into parts"),
        Binding("x", "discard", "Discard", id="domains.discard", tooltip="Discard the staged update"),
        Binding("u", "apply", "Apply", id="domains.apply",
                tooltip="Apply the staged update (or compute the first mixture) in a background job, choosing its plan"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="domains-summary")
        yield DataTable(id="domains", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="domain-bars-scroll", can_focus=False):
            yield Static(id="domain-bars")

    def show(self, snapshot: Snapshot) -> None:
        status, summary = snapshot.status, self.query_one("#domains-summary", Static)
        if snapshot.error:
            summary.update(Text(f"error: {snapshot.error}", style="bold red"))
        if status is None:
            return
        pending = status.pending
        marks = {} if pending is None else {
            **{d: "revise" for d in pending.revised}, **{d: "remove" for d in pending.removed},
            **{d: "partition into " + ", ".join(parts) for d, parts in pending.partitioned.items()}}
        table, columns = self.query_one("#domains", DataTable), NARROW_COLUMNS if self.narrow else COLUMNS
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        cells = [{"domain": d.name, "staged": Text(marks.get(d.name, ""), style="yellow"), "sources": ", ".join(d.sources),
                  "revision": d.revision[:8], "train tokens": count(d.train_tokens) or "", "natural": pct(d.prior) or "",
                  "current": pct(d.weight) or ""} for d in status.domains]
        rows = [(row["domain"], [row[c] for c in columns]) for row in cells]
        fill(table, rows)
        if self.app.selection.domain not in {key for key, _ in rows}:
            self.app.select(domain=rows[0][0] if rows else None)
        if not snapshot.error:
            summary.update(Text("\n".join(self._summary_lines(status, pending))))
        bars = self.query_one("#domain-bars", Static)
        shown = [("natural", {d.name: d.prior for d in status.domains if d.prior is not None}, "blue"),
                 ("current", status.current_mixture or {}, "magenta")]
        shown = [m for m in shown if m[1]]
        bars.update(WeightBars(" and ".join({"natural": "the natural distribution (token shares)",
                                             "current": "the current mixture"}[m[0]] for m in shown), shown)
                    if shown else "")

    def _summary_lines(self, status: ProjectStatus, pending: PendingUpdate | None) -> list[str]:
        lines = [f"{len(status.domains)} domains; {status.history_entries} history entries"
                 + ("" if status.tokenized else "; not tokenized yet (applying the update tokenizes)")]
        if pending is not None:
            added = pending.added
            lines.append("Staged: " + "; ".join(pending.changes) + (f" (new: {', '.join(added)})" if added else ""))
            lines.append(f"{len(pending.affected)} affected, {len(pending.unaffected)} unaffected "
                         f"(frozen under reuse). u applies it ({' '.join(['olmix-tui DIR --batch', *self.app.apply_args])}) "
                         "in the background, with the plan you choose; x discards it.")
        else:
            lines.append("No staged update: a adds a domain; d, v, p remove, revise or partition the highlighted one."
                         + ("" if status.history_entries else " u computes the first mixture."))
        running = self.app.snapshot.running
        if running:
            lines.append("Running: " + "; ".join(f"{job.label} ({job.where})" for job in running) + " (Jobs tab, 5).")
        return lines

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.app.select(domain=event.row_key.value)

    # ------------------------------------------------------------ staging (the engine validates)
    def action_stage_form(self, kind: str) -> None:
        """The change's form; the engine stages what is typed before the form closes (a refusal keeps it open)."""
        domain = self.app.selection.domain
        if kind != "add" and domain is None:
            self.app.tell("No domain to change.", "warning")
            return
        self.app.push_screen(ChangeForm(kind, domain or "", self.app.project.root),
                             lambda change: change and self.post_message(Staged(change)))

    def action_stage_remove(self) -> None:
        if self.app.selection.domain is not None:
            self.stage(Change("remove", self.app.selection.domain))

    @work(thread=True, group="stage")
    def stage(self, change: Change) -> None:
        """Validate and stage `change` through the engine (it may hash the domain's files: off the UI thread)."""
        try:
            Project.load(self.app.project.root).stage(change)
        except OlmixError as err:
            self.post_message(PendingUnchanged(change, str(err)))
            return
        self.post_message(Staged(change))

    @work(thread=True, group="stage")
    def action_discard(self) -> None:
        try:
            project = Project.load(self.app.project.root)
            if not project.pending:
                self.post_message(PendingUnchanged(None, "Nothing is staged: there is no update to discard."))
                return
            project.discard_pending()
        except OlmixError as err:
            self.post_message(PendingUnchanged(None, str(err)))
            return
        self.post_message(Discarded())

    def on_staged(self, message: Staged) -> None:
        self.app.tell(f"Staged: {message.change.describe()}.")
        self.app.reload()

    def on_discarded(self, message: Discarded) -> None:
        self.app.tell("Staged update discarded.")
        self.app.reload()

    def on_pending_unchanged(self, message: PendingUnchanged) -> None:
        if message.change is None:
            self.app.tell(message.reason, "warning", 15)
        else:
            self.app.tell(f"Not staged: {message.reason}", "error", 15)

    # ------------------------------------------------------------ applying the update
    def action_apply(self) -> None:
        """Choose the update's plan (each plan's runs and FLOPs in view), then apply it in a detached job."""
        status = self.app.snapshot.status
        if status is None or (status.pending is None and status.history_entries):
            self.app.tell("Nothing to apply: stage a change first (a, d, v, p).", "warning")
            return
        if "pipeline" in self.app.jobs or any(job.kind == "update" for job in self.app.snapshot.running):
            self.app.tell("The update is being applied already (Jobs tab).", "warning")
            return
        if not self.refused_when_busy("applying the update"):
            self.choose_plan("apply", self._apply)

    def _apply(self, kind: str, unfreeze: list[str]) -> None:
        project = self.app.project
        plan = ["--plan", kind, *(arg for name in unfreeze for arg in ("--unfreeze", name))]
        self.app.start_job("pipeline", f"applying the update ({kind})",
                           ["run", str(project.root), "--batch", *plan, *self.app.apply_args],
                           project.cache / "logs" / "pipeline.log")
