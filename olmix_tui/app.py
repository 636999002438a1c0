"""The Textual app over a project (`olmix-tui DIR`, `olmix-tui watch DIR`): the mixing loop, live.

Tabs, in the loop's order:
  Domains   the domain set and the staged update; keys stage changes (add, remove, revise,
            partition), discard them, or apply the update
  Swarms    swarms, the highlighted swarm's runs, the highlighted run's mixture and curve
  Mixtures  the history, and the highlighted entry beside its full recomputation or predecessor
  Fits      stored regressions with their cross-validation; keys fit a swarm with a chosen
            regressor, or preview the proposal of the highlighted fit beside the prior, with proposer
            settings from a form (saved to olmix.toml's [propose] when asked)

Long work never runs in the app: applying the update starts `olmix-tui DIR --batch`, training a
swarm `olmix-tui swarm run` and fitting one `olmix-tui fit`, each as a detached process (output in .olmix/logs/) that
keeps going when the app quits. The app reads the project's files (run status files, curves,
history, domains) once a second in a worker thread, so it can open, quit and re-attach at any time.
Staging a change goes through the engine, which validates it and writes pending.toml.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from engine import pipeline
from engine.compare import Comparison
from engine.domains import Change
from engine.errors import OlmixError
from engine.history import HistoryEntry, read_history
from engine.project import Project
from engine.regression.store import FitSummary, list_fits, load_fit
from engine.runs import RunStatus, SwarmDir
from engine.settings import ProposeSettings
from engine.status import ProjectStatus, project_status
from olmix_tui.forms import ChangeForm, FitForm, ProposeForm
from olmix_tui.render import HISTORY_COLUMNS, count, headline_metrics, history_rows, pct
from olmix_tui.views import comparison_view, fill, number, run_mixture, weight_bars

REFRESH_SECONDS = 1.0
STATE_STYLES = {"done": "green", "running": "yellow", "pending": "dim", "interrupted": "magenta", "failed": "bold red"}
COUNTED_STATES = ("done", "running", "pending", "interrupted", "failed")


@dataclass
class Snapshot:
    """The project's files at one moment: its status (engine.status: domains, staged update), every
    swarm with its runs' statuses, the most recently planned swarm's id (verification runs aside),
    the highlighted run's curve, the history, and the highlighted entry's comparison
    (engine.compare's record, or why there is none)."""

    status: ProjectStatus | None = None
    swarms: list[tuple[SwarmDir, list[RunStatus]]] = field(default_factory=list)
    newest: str | None = None
    curve: list[dict] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    comparison: Comparison | str = ""
    fits: list[FitSummary] = field(default_factory=list)
    error: str = ""

    def swarm(self, swarm_id: str | None) -> tuple[SwarmDir, list[RunStatus]] | None:
        return next((item for item in self.swarms if item[0].id == swarm_id), None)


@dataclass
class Job:
    """A detached olmix-tui process this app started (applying the update, training a swarm)."""

    label: str
    process: subprocess.Popen
    log: Path


class StatusCache:
    """engine.status.project_status, recomputed only when the project's definition files change
    (it hashes staged sources, too slow to repeat every second on a large corpus)."""

    def __init__(self, root: Path):
        self.root, self.key, self.status = root, None, None

    def get(self) -> ProjectStatus:
        key = tuple(_mtime(self.root / name) for name in
                    ("olmix.toml", "domains.toml", "pending.toml", "history", ".olmix/tokens"))
        if key != self.key:
            self.status, self.key = project_status(Project.load(self.root)), key
        return self.status


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class MixingApp(App):
    """The Domains, Swarms and Mixtures tabs over one project, refreshed from its files.

    `tab` is the tab to open on; `apply_args` are added to `olmix-tui DIR --batch` when the
    update is applied from here (e.g. ["--compare", "--seeds", "3"])."""

    TITLE = "olmix-tui"
    CSS = """
    #domains-summary { height: auto; padding: 0 1; }
    #domains { height: auto; max-height: 20; }
    #domain-bars { padding: 1 1 0 1; }
    #summary { height: auto; padding: 0 1; }
    #swarms { height: auto; max-height: 10; }
    #runs { height: 1fr; }
    #charts { height: 16; }
    #mixture { width: 1fr; padding: 0 1; }
    #history { height: auto; max-height: 12; }
    #comparison { padding: 0 1; }
    #fits { height: auto; max-height: 12; }
    #cv { width: 2fr; padding: 0 1; }
    #proposal { width: 3fr; padding: 0 1; }
    """
    TABS = {"domains": "domains-tab", "swarms": "swarms-tab", "mixtures": "mixtures-tab", "fits": "fits-tab"}
    TAB_ACTIONS = {"swarms-tab": {"train"}, "domains-tab": {"stage_form", "stage_remove", "discard", "apply"},
                   "fits-tab": {"fit", "propose"}}
    BINDINGS = [
        Binding("1", "show_tab('domains-tab')", "Domains"),
        Binding("2", "show_tab('swarms-tab')", "Swarms"),
        Binding("3", "show_tab('mixtures-tab')", "Mixtures"),
        Binding("4", "show_tab('fits-tab')", "Fits"),
        Binding("a", "stage_form('add')", "Add"),
        Binding("d", "stage_remove", "Remove"),
        Binding("v", "stage_form('revise')", "Revise"),
        Binding("p", "stage_form('partition')", "Partition"),
        Binding("x", "discard", "Discard staged"),
        Binding("u", "apply", "Apply update"),
        Binding("t", "train(False)", "Train unfinished runs"),
        Binding("f", "train(True)", "Train, retrying failed"),
        Binding("n", "fit", "Fit a swarm"),
        Binding("o", "propose", "Propose"),
        Binding("r", "reload", "Refresh"),
        Binding("q", "quit", "Quit (jobs go on)"),
    ]

    def __init__(self, project: Project, tab: str = "domains", apply_args: tuple[str, ...] = ()):
        super().__init__()
        self.project, self.tab, self.apply_args = project, self.TABS[tab], tuple(apply_args)
        self.status_cache = StatusCache(project.root)
        self.snapshot = Snapshot()
        self.domain_id: str | None = None
        self.swarm_id: str | None = None
        self.run_id: str | None = None
        self.entry_id: str | None = None
        self.fit_id: str | None = None
        self.proposals: dict[str, tuple] = {}  # fit id -> (title, mixtures side by side, caption)
        self.jobs: dict[str, Job] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial=self.tab):
            with TabPane("Domains", id="domains-tab"):
                yield Static(id="domains-summary")
                yield DataTable(id="domains", cursor_type="row", zebra_stripes=True)
                yield Static(id="domain-bars")
            with TabPane("Swarms", id="swarms-tab"):
                yield Static(id="summary")
                yield DataTable(id="swarms", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="charts"):
                    yield Static(id="mixture")
                    yield PlotextPlot(id="curve")
            with TabPane("Mixtures", id="mixtures-tab"):
                yield DataTable(id="history", cursor_type="row", zebra_stripes=True)
                yield Static(id="comparison")
            with TabPane("Fits", id="fits-tab"):
                yield DataTable(id="fits", cursor_type="row", zebra_stripes=True)
                with Horizontal():
                    yield Static(id="cv")
                    yield Static(id="proposal")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.project.root)
        self.query_one("#domains", DataTable).add_columns(*DOMAIN_COLUMNS)
        self.query_one("#swarms", DataTable).add_columns("swarm", "plan", "runs", *COUNTED_STATES)
        self.query_one("#history", DataTable).add_columns(*HISTORY_COLUMNS)
        self.query_one("#fits", DataTable).add_columns(*FIT_COLUMNS)
        self.action_reload()
        self.set_interval(REFRESH_SECONDS, self.action_reload)

    # ------------------------------------------------------------ reading the files (worker thread)
    @work(thread=True, exclusive=True, group="reload")
    def action_reload(self) -> None:
        snapshot = read_snapshot(self.project, self.status_cache, self.swarm_id, self.run_id, self.entry_id)
        self.call_from_thread(self.show, snapshot)

    # ------------------------------------------------------------ showing them (UI thread)
    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._check_jobs()
        self._show_domains()
        self._show_swarms()
        self._show_history()
        self._show_fits()

    def _show_swarms(self) -> None:
        swarms, snapshot = self.query_one("#swarms", DataTable), self.snapshot
        rows = []
        for swarm, statuses in snapshot.swarms:
            counts = {s: 0 for s in COUNTED_STATES}
            for s in statuses:
                counts[s.state] += 1
            plan = swarm.spec.plan or swarm.spec.purpose
            rows.append((swarm.id, [swarm.id, plan, len(statuses), *(counts[s] or "" for s in COUNTED_STATES)]))
        fill(swarms, rows)
        ids = [key for key, _ in rows]
        if self.swarm_id not in ids and snapshot.newest in ids:  # at first, the most recently planned swarm
            self.swarm_id, self.run_id = snapshot.newest, None
            swarms.move_cursor(row=ids.index(snapshot.newest))
        self._show_runs()
        self._show_summary()

    def _show_domains(self) -> None:
        status, summary = self.snapshot.status, self.query_one("#domains-summary", Static)
        if self.snapshot.error:
            summary.update(Text(f"error: {self.snapshot.error}", style="bold red"))
        if status is None:
            return
        pending = status.pending
        marks = {} if pending is None else {
            **{d: "revise" for d in pending.revised}, **{d: "remove" for d in pending.removed},
            **{d: "partition into " + ", ".join(parts) for d, parts in pending.partitioned.items()}}
        rows = [(d.name, [d.name, ", ".join(d.sources), d.revision[:8], count(d.train_tokens) or "",
                          pct(d.prior) or "", pct(d.weight) or "", Text(marks.get(d.name, ""), style="yellow")])
                for d in status.domains]
        fill(self.query_one("#domains", DataTable), rows)
        if self.domain_id not in {key for key, _ in rows}:
            self.domain_id = rows[0][0] if rows else None
        lines = [f"{len(rows)} domains; {status.history_entries} history entries"
                 + ("" if status.tokenized else "; not tokenized yet (applying the update tokenizes)")]
        if pending:
            added = pending.added
            lines.append("Staged: " + "; ".join(pending.changes) + (f" (new: {', '.join(added)})" if added else ""))
            lines.append(f"{len(pending.affected)} affected, {len(pending.unaffected)} unaffected "
                         f"(frozen under reuse). u applies it (olmix-tui DIR --batch {' '.join(self.apply_args)}) "
                         "in the background; x discards it.")
        else:
            lines.append("No staged update: a adds a domain; d, v, p remove, revise or partition the highlighted one. "
                         + ("u computes the first mixture." if not status.history_entries else ""))
        if self.jobs:
            lines.append(self._jobs_line())
        summary.update(Text("\n".join(lines)))
        bars = self.query_one("#domain-bars", Static)
        shown = [("natural", {d.name: d.prior for d in status.domains if d.prior is not None}, "blue"),
                 ("current", status.current_mixture or {}, "magenta")]
        bars.update(weight_bars("the natural distribution (token shares) and the current mixture",
                                [m for m in shown if m[1]], bars.content_size.width or 100) if shown[0][1] else "")

    def _show_history(self) -> None:
        history = self.snapshot.history
        fill(self.query_one("#history", DataTable), [(e.label, row) for e, row in zip(history, history_rows(history))])
        if self.entry_id not in {e.label for e in history} and history:  # at first, the last entry
            self.entry_id = history[-1].label
            self.query_one("#history", DataTable).move_cursor(row=len(history) - 1)
        comparison, panel = self.snapshot.comparison, self.query_one("#comparison", Static)
        width = panel.content_size.width or 100
        entry = next((e for e in history if e.label == self.entry_id), None)
        if isinstance(comparison, Comparison):
            panel.update(comparison_view(comparison, width))
        elif entry is not None:  # nothing to compare it with (the first entry): its mixture alone
            panel.update(weight_bars(f"mixture of {entry.label}", [(entry.label, entry.mixture, "magenta")], width, comparison))
        else:
            panel.update(Text(comparison or f"No mixture yet: compute the first with `olmix-tui {self.project.root} --batch`."))

    def _show_fits(self) -> None:
        fits = self.snapshot.fits
        rows = []
        for f in fits:
            means = f.cv.means()
            rows.append((f.fit_id, [f.fit_id, f.info["chosen"], ", ".join(f.info["source_swarms"]), f.info.get("n_runs", ""),
                                    len(f.info["metrics"]), f"{means['spearman']:.1f}", f"{means['r2']:.3f}",
                                    f"{means['mae']:.4f}", f"{f.info['seconds']:.1f}"]))
        fill(self.query_one("#fits", DataTable), rows)
        if self.fit_id not in {f.fit_id for f in fits} and fits:
            self.fit_id = fits[-1].fit_id
            self.query_one("#fits", DataTable).move_cursor(row=len(fits) - 1)
        chosen = next((f for f in fits if f.fit_id == self.fit_id), None)
        cv, proposal = self.query_one("#cv", Static), self.query_one("#proposal", Static)
        if chosen is None:
            cv.update(Text("No fit yet: n fits the swarm highlighted on the Swarms tab (a finished one)."))
            proposal.update("")
            return
        table = Table(title=f"fit {chosen.fit_id}: {chosen.cv.folds}-fold CV of {chosen.cv.regressor}", box=None)
        for column in ("metric", "spearman x100", "R^2", "MAE"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for m, sp, r2, mae in zip(chosen.info["metrics"], chosen.cv.spearman, chosen.cv.r2, chosen.cv.mae):
            table.add_row(m, f"{sp:.1f}", Text(f"{r2:.3f}", style="red" if r2 < 0 else ""), f"{mae:.4f}")
        cv.update(table)
        shown = self.proposals.get(chosen.fit_id)
        proposal.update(weight_bars(*shown[:2], proposal.content_size.width or 80, shown[2]) if shown else
                        Text("o proposes from this fit with the project's [propose] settings and shows the mixture "
                             "beside the prior (a preview: nothing is written; applying an update records its proposal)."))

    def _show_summary(self) -> None:
        if self.snapshot.error:
            text = Text(f"error: {self.snapshot.error}", style="bold red")
        elif not self.snapshot.swarms:
            text = Text(f"No swarm yet: plan one with `olmix-tui swarm plan {self.project.root}`, then train it here (t).")
        else:
            text = Text(f"{len(self.snapshot.swarms)} swarm(s); " + (self._jobs_line() if self.jobs else
                        "t trains the highlighted swarm's unfinished runs; quitting leaves training running."))
        self.query_one("#summary", Static).update(text)

    def _jobs_line(self) -> str:
        return "running from here: " + "; ".join(f"{job.label} (pid {job.process.pid}, log {job.log})"
                                                 for job in self.jobs.values())

    def _show_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        item = self.snapshot.swarm(self.swarm_id)
        statuses = item[1] if item else []
        metrics = headline_metrics(statuses)
        columns = ["run", "state", "progress", "loss", "tokens/s", "mixture (top 3)", *metrics, "error"]
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        prefix = f"{self.swarm_id}-"
        rows = []
        for s in statuses:
            weights = s.trained_weights
            top = ", ".join(f"{u} {100 * w:.0f}%" for u, w in sorted(weights.items(), key=lambda kv: -kv[1])[:3] if w >= 0.005)
            live = s.state == "running"
            rows.append((s.run, [
                s.run.removeprefix(prefix), Text(s.shown_state, style=STATE_STYLES.get(s.state, "")),
                f"{100 * s.progress:.0f}%" if live or s.state == "done" else "",
                number(s.loss if live else s.final_train_loss),
                f"{s.tokens_per_s:,.0f}" if live and s.tokens_per_s is not None else "",
                top, *(number(s.metrics.get(m)) for m in metrics), s.error[:80],
            ]))
        fill(table, rows)
        if self.run_id not in {s.run for s in statuses}:
            self.run_id = statuses[0].run if statuses else None
        self._show_charts()

    def _show_charts(self) -> None:
        item = self.snapshot.swarm(self.swarm_id)
        status = next((s for s in item[1] if s.run == self.run_id), None) if item else None
        points = self.snapshot.curve if status is not None else []
        curve = self.query_one("#curve", PlotextPlot)
        curve.display = len(points) >= 2
        note = ""
        if status is not None and not curve.display:
            every = item[0].spec.proxy.eval_every if item[0].spec.proxy else 0
            note = (f"learning curve: a point every {every} steps, {len(points)} so far" if every else
                    "no learning curve: only the final point is logged (eval_every = 0 in olmix.toml's [proxy])")
        mixture = self.query_one("#mixture", Static)
        if status is not None and status.where:
            note = "\n".join(line for line in (f"trained by {status.where}", note) if line)
        mixture.update(run_mixture(status, mixture.content_size.width or 80, note) if status else "")
        if curve.display:
            plt = curve.plt
            plt.clear_figure()
            tokens = [p["tokens"] for p in points]
            plt.plot(tokens, [p["train/loss"] for p in points], label="train loss")
            bpb = [[v for k, v in p.items() if k.endswith("/bpb") and not k.startswith("eval:")] for p in points]
            if all(bpb):
                plt.plot(tokens, [sum(b) / len(b) for b in bpb], label="held-out bpb (mean)")
            plt.xlabel("tokens")
            plt.title(f"curve of {status.run}")
            curve.refresh()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if event.data_table.id == "domains":
            self.domain_id = key
        elif event.data_table.id == "swarms" and key != self.swarm_id:
            self.swarm_id, self.run_id = key, None
            self._show_runs()
            self.action_reload()
        elif event.data_table.id == "runs" and key != self.run_id:
            self.run_id = key
            self._show_charts()
            self.action_reload()
        elif event.data_table.id == "fits" and key != self.fit_id:
            self.fit_id = key
            self._show_fits()
        elif event.data_table.id == "history" and key != self.entry_id:
            self.entry_id = key
            self.action_reload()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Keys go to the active tab's first table (once it is shown); the training keys show only on the Swarms tab."""
        self.call_after_refresh(self._focus_active_tab)
        self.refresh_bindings()

    def _focus_active_tab(self) -> None:
        pane = self.query_one(TabbedContent).active_pane
        if pane is not None:
            pane.query(DataTable).first().focus()

    def check_action(self, action: str, parameters: tuple) -> bool:
        """Each tab's own keys show and work on that tab only."""
        active = self.query_one(TabbedContent).active
        return all(action not in actions or tab == active for tab, actions in self.TAB_ACTIONS.items())

    # ------------------------------------------------------------ the domain set (Domains tab)
    def action_stage_form(self, kind: str) -> None:
        if kind != "add" and self.domain_id is None:
            self.notify("No domain to change.", severity="warning")
            return
        self.push_screen(ChangeForm(kind, self.domain_id or ""), self.stage)

    def action_stage_remove(self) -> None:
        if self.domain_id is not None:
            self.stage(Change("remove", self.domain_id))

    @work(thread=True, group="stage")
    def stage(self, change: Change | None) -> None:
        """Validate and stage `change` through the engine (it may hash the domain's files: off the UI thread)."""
        if change is None:
            return
        try:
            Project.load(self.project.root).stage(change)
        except OlmixError as err:
            self.call_from_thread(self.notify, f"Not staged: {err}", severity="error", timeout=15)
            return
        self.call_from_thread(self.notify, f"Staged: {change.describe()}.")
        self.action_reload()

    @work(thread=True, group="stage")
    def action_discard(self) -> None:
        try:
            Project.load(self.project.root).discard_pending()
        except OlmixError as err:
            self.call_from_thread(self.notify, str(err), severity="error", timeout=15)
            return
        self.call_from_thread(self.notify, "Staged update discarded.")
        self.action_reload()

    def action_apply(self) -> None:
        status = self.snapshot.status
        if status is None or not (status.pending or not status.history_entries):
            self.notify("Nothing to apply: stage a change first (a, d, v, p).", severity="warning")
            return
        if "pipeline" in self.jobs:
            self.notify("The update is being applied already.", severity="warning")
            return
        self._launch("pipeline", "applying the update", ["run", str(self.project.root), "--batch", *self.apply_args],
                     self.project.cache / "logs" / "pipeline.log")

    # ------------------------------------------------------------ fits and proposals (Fits tab)
    def action_fit(self) -> None:
        if self.snapshot.swarm(self.swarm_id) is None:
            self.notify("No swarm to fit: highlight a trained one on the Swarms tab.", severity="warning")
            return
        swarm_id = self.swarm_id
        if f"fit {swarm_id}" in self.jobs:
            self.notify(f"Swarm {swarm_id} is being fitted already.", severity="warning")
            return

        def fit(regressor: str | None) -> None:
            if regressor:
                self._launch(f"fit {swarm_id}", f"fitting {regressor} on swarm {swarm_id}",
                             ["fit", str(self.project.root), "--swarm", swarm_id, "--regressor", regressor, "--json"],
                             self.project.cache / "logs" / swarm_id / "fit.log")

        self.push_screen(FitForm(swarm_id, self.project.settings.regression.regressor), fit)

    def action_propose(self) -> None:
        """Ask for the proposer settings (olmix.toml's [propose] to start from), then preview the proposal."""
        summary = next((f for f in self.snapshot.fits if f.fit_id == self.fit_id), None)
        if summary is None:
            self.notify("No fit to propose from: n fits a swarm first.", severity="warning")
            return

        def preview(choice: tuple[ProposeSettings, bool] | None) -> None:
            if choice is not None:
                self._preview_proposal(summary, *choice)

        self.push_screen(ProposeForm(summary.fit_id, self.project.settings.propose), preview)

    @work(thread=True, exclusive=True, group="propose")
    def _preview_proposal(self, summary: FitSummary, settings: ProposeSettings, save: bool) -> None:
        """The highlighted fit's proposal with `settings` (saved to olmix.toml first when asked); the
        exact proposer takes milliseconds, loading the fit's model most of the time."""
        try:
            project = Project.load(self.project.root)
            if save:
                self.project.settings = project.update_settings(propose=settings)
            preview = pipeline.preview_proposal(project, load_fit(summary.folder), settings)
        except OlmixError as err:
            self.call_from_thread(self.notify, f"No proposal: {err}", severity="error", timeout=15)
            return
        proposal, prior = preview.proposal, preview.prior
        caption = (f"{preview.note}predicted objective {proposal.predicted_objective:.4f}; KL to the prior {proposal.kl:.4f}"
                   + (f"; at their cap: {', '.join(proposal.binding_caps)}" if proposal.binding_caps else "")
                   + (f"; KKT residual {proposal.kkt_residual:.1e}" if proposal.kkt_residual is not None else "")
                   + (". Settings saved to olmix.toml; the proposal is a preview, nothing else is written." if save
                      else ". A preview: nothing is written."))
        shown = (f"proposal from fit {summary.fit_id} ({proposal.proposer}, kl_reg {settings.kl_reg:g}) beside the prior",
                 [("prior", prior, "blue"), ("proposal", proposal.mixture, "green")],
                 caption)
        self.proposals[summary.fit_id] = shown
        self.call_from_thread(self._show_fits)

    # ------------------------------------------------------------ training a swarm (Swarms tab)
    def action_train(self, retry_failed: bool) -> None:
        item = self.snapshot.swarm(self.swarm_id)
        if item is None:
            self.notify("No swarm to train: plan one first.", severity="warning")
            return
        swarm, statuses = item
        states = [s.state for s in statuses]
        if swarm.id in self.jobs or "running" in states:
            self.notify(f"Swarm {swarm.id} is training already.", severity="warning")
            return
        todo = sum(s in ("pending", "interrupted") or (retry_failed and s == "failed") for s in states)
        if not todo:
            hint = " (f retries the failed ones)" if "failed" in states else ""
            self.notify(f"Swarm {swarm.id} has no unfinished runs{hint}.")
            return
        args = ["swarm", "run", str(self.project.root), "--swarm", swarm.id] + (["--retry-failed"] if retry_failed else [])
        self._launch(swarm.id, f"training {todo} run(s) of swarm {swarm.id}", args,
                     self.project.cache / "logs" / swarm.id / "supervisor.log")

    # ------------------------------------------------------------ background jobs
    def _launch(self, key: str, label: str, args: list[str], log: Path) -> None:
        """Start `olmix-tui ARGS` detached (its own session: it outlives the app), output appended to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "olmix_tui", *args], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.jobs[key] = Job(label, process, log)
        self.notify(f"Started {label} (pid {process.pid}).")
        self._show_summary()
        self._show_domains()

    def _check_jobs(self) -> None:
        for key, job in list(self.jobs.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self.jobs[key]
            if code == 0:
                self.notify(f"Done: {job.label}.")
            else:
                self.notify(f"Stopped: {job.label} (exit {code}): {last_line(job.log)}", severity="error", timeout=30)


def read_snapshot(project: Project, status: StatusCache, swarm_id: str | None, run_id: str | None,
                  entry_id: str | None) -> Snapshot:
    """Read the project's status, every swarm's run statuses, the curve of `run_id` in `swarm_id`,
    the history and the comparison of `entry_id` (default: the last entry); a damaged file becomes `error`."""
    try:
        project_now = status.get()
        swarms = [(swarm, swarm.statuses()) for swarm in pipeline.project_swarms(project)]
        planned = [swarm for swarm, _ in swarms if swarm.spec.purpose != "verify"] or [swarm for swarm, _ in swarms]
        newest = max(planned, key=lambda swarm: (swarm.path / "swarm.toml").stat().st_mtime_ns).id if planned else None
        chosen = next((swarm for swarm, _ in swarms if swarm.id == swarm_id), None)
        curve = chosen.curve(run_id) if chosen is not None and run_id in chosen.run_ids else []
        history = read_history(project)
        fits = list_fits(project.fits_dir)
    except (OlmixError, OSError, ValueError, KeyError) as err:
        return Snapshot(error=str(err))
    comparison: Comparison | str = ""
    if history:
        try:
            comparison = pipeline.diff_entries(project, entry_id or history[-1].label, None)
        except OlmixError as err:
            comparison = str(err)
    return Snapshot(project_now, swarms, newest, curve, history, comparison, fits)


DOMAIN_COLUMNS = ["domain", "sources", "revision", "train tokens", "natural", "current", "staged"]
FIT_COLUMNS = ["fit", "regressor", "swarm", "runs", "metrics", "spearman x100", "R^2", "MAE", "seconds"]


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return lines[-1] if lines else f"see {path}"
