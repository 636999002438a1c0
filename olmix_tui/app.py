"""`olmix-tui watch DIR`: a live view of a project's swarms and mixtures, read from its files.

Proxy training runs in worker processes that write swarms/<id>/runs/<run>/status.json and
metrics.jsonl (engine/runs.py). This app only reads those files and history/, once a second and
off the UI thread, so it can open, quit and re-attach at any time without disturbing training.
`t` trains the highlighted swarm's unfinished runs in a detached `olmix-tui swarm run` process
(output in .olmix/logs/<swarm>/supervisor.log), which keeps going when the app quits.

Tabs: Swarms (swarms, the highlighted swarm's runs, the highlighted run's mixture and curve) and
Mixtures (the history, and the highlighted entry beside its full recomputation or predecessor).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from engine import pipeline
from engine.errors import OlmixError
from engine.history import HistoryEntry, read_history
from engine.project import Project
from engine.runs import RunStatus, SwarmDir, list_swarms
from olmix_tui.render import HISTORY_COLUMNS, headline_metrics, history_rows
from olmix_tui.views import comparison_view, fill, number, run_mixture, weight_bars

REFRESH_SECONDS = 1.0
STATE_STYLES = {"done": "green", "running": "yellow", "pending": "dim", "interrupted": "magenta", "failed": "bold red"}
COUNTED_STATES = ("done", "running", "pending", "interrupted", "failed")


@dataclass
class Snapshot:
    """The project's files at one moment: every swarm with its runs' statuses, the most recently
    planned swarm's id (verification runs aside), the highlighted run's curve, the history, and the highlighted entry's
    comparison (engine.compare's record, or why there is none)."""

    swarms: list[tuple[SwarmDir, list[RunStatus]]] = field(default_factory=list)
    newest: str | None = None
    curve: list[dict] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    comparison: dict | str = ""
    error: str = ""

    def swarm(self, swarm_id: str | None) -> tuple[SwarmDir, list[RunStatus]] | None:
        return next((item for item in self.swarms if item[0].id == swarm_id), None)


@dataclass
class Supervisor:
    """A `swarm run` process this app started."""

    process: subprocess.Popen
    log: Path


class MixingApp(App):
    """The Swarms and Mixtures tabs over one project, refreshed from its files."""

    TITLE = "olmix-tui watch"
    CSS = """
    #summary { height: auto; padding: 0 1; }
    #swarms { height: auto; max-height: 10; }
    #runs { height: 1fr; }
    #charts { height: 16; }
    #mixture { width: 1fr; padding: 0 1; }
    #history { height: auto; max-height: 12; }
    #comparison { padding: 0 1; }
    """
    BINDINGS = [
        Binding("t", "train(False)", "Train unfinished runs"),
        Binding("f", "train(True)", "Train, retrying failed runs"),
        Binding("s", "show_tab('swarms-tab')", "Swarms"),
        Binding("m", "show_tab('mixtures-tab')", "Mixtures"),
        Binding("r", "reload", "Refresh now"),
        Binding("q", "quit", "Quit (training goes on)"),
    ]

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.snapshot = Snapshot()
        self.swarm_id: str | None = None
        self.run_id: str | None = None
        self.entry_id: str | None = None
        self.supervisors: dict[str, Supervisor] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="swarms-tab"):
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
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.project.root)
        self.query_one("#swarms", DataTable).add_columns("swarm", "plan", "runs", *COUNTED_STATES)
        self.query_one("#history", DataTable).add_columns(*HISTORY_COLUMNS)
        self.action_reload()
        self.set_interval(REFRESH_SECONDS, self.action_reload)

    # ------------------------------------------------------------ reading the files (worker thread)
    @work(thread=True, exclusive=True, group="reload")
    def action_reload(self) -> None:
        snapshot = read_snapshot(self.project, self.swarm_id, self.run_id, self.entry_id)
        self.call_from_thread(self.show, snapshot)

    # ------------------------------------------------------------ showing them (UI thread)
    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._check_supervisors()
        swarms = self.query_one("#swarms", DataTable)
        rows = []
        for swarm, statuses in snapshot.swarms:
            counts = {s: 0 for s in COUNTED_STATES}
            for s in statuses:
                counts[s.state] += 1
            plan = str(swarm.spec.get("plan") or swarm.spec.get("purpose", ""))
            rows.append((swarm.id, [swarm.id, plan, len(statuses), *(counts[s] or "" for s in COUNTED_STATES)]))
        fill(swarms, rows)
        ids = [key for key, _ in rows]
        if self.swarm_id not in ids and snapshot.newest in ids:  # at first, the most recently planned swarm
            self.swarm_id, self.run_id = snapshot.newest, None
            swarms.move_cursor(row=ids.index(snapshot.newest))
        self._show_runs()
        self._show_summary()
        self._show_history()

    def _show_history(self) -> None:
        history = self.snapshot.history
        fill(self.query_one("#history", DataTable), [(e.label, row) for e, row in zip(history, history_rows(history))])
        if self.entry_id not in {e.label for e in history} and history:  # at first, the last entry
            self.entry_id = history[-1].label
            self.query_one("#history", DataTable).move_cursor(row=len(history) - 1)
        comparison, panel = self.snapshot.comparison, self.query_one("#comparison", Static)
        width = panel.content_size.width or 100
        entry = next((e for e in history if e.label == self.entry_id), None)
        if isinstance(comparison, dict):
            panel.update(comparison_view(comparison, width))
        elif entry is not None:  # nothing to compare it with (the first entry): its mixture alone
            panel.update(weight_bars(f"mixture of {entry.label}", [(entry.label, entry.mixture, "magenta")], width, comparison))
        else:
            panel.update(Text(comparison or f"No mixture yet: compute the first with `olmix-tui {self.project.root} --batch`."))

    def _show_summary(self) -> None:
        if self.snapshot.error:
            text = Text(f"error: {self.snapshot.error}", style="bold red")
        elif not self.snapshot.swarms:
            text = Text(f"No swarm yet: plan one with `olmix-tui swarm plan {self.project.root}`, then train it here (t).")
        else:
            training = ", ".join(f"{sid} (pid {sup.process.pid}, log {sup.log})" for sid, sup in self.supervisors.items())
            text = Text(f"{len(self.snapshot.swarms)} swarm(s); " + (f"training from here: {training}" if training else
                        "t trains the highlighted swarm's unfinished runs; quitting leaves training running."))
        self.query_one("#summary", Static).update(text)

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
            d = s.data
            weights = d.get("realised_weights") or d.get("weights", {})
            top = ", ".join(f"{u} {100 * w:.0f}%" for u, w in sorted(weights.items(), key=lambda kv: -kv[1])[:3] if w >= 0.005)
            live = s.state == "running"
            rows.append((s.run, [
                s.run.removeprefix(prefix), Text(s.state, style=STATE_STYLES.get(s.state, "")),
                f"{100 * d.get('progress', 0):.0f}%" if live or s.state == "done" else "",
                number(d.get("loss") if live else d.get("final_train_loss")),
                f"{d['tokens_per_s']:,.0f}" if live and "tokens_per_s" in d else "",
                top, *(number(s.metrics.get(m)) for m in metrics), str(d.get("error", ""))[:80],
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
            every = int(item[0].spec.get("proxy", {}).get("eval_every", 0))
            note = (f"learning curve: a point every {every} steps, {len(points)} so far" if every else
                    "no learning curve: only the final point is logged (eval_every = 0 in olmix.toml's [proxy])")
        mixture = self.query_one("#mixture", Static)
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
        if event.data_table.id == "swarms" and key != self.swarm_id:
            self.swarm_id, self.run_id = key, None
            self._show_runs()
            self.action_reload()
        elif event.data_table.id == "runs" and key != self.run_id:
            self.run_id = key
            self._show_charts()
            self.action_reload()
        elif event.data_table.id == "history" and key != self.entry_id:
            self.entry_id = key
            self.action_reload()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Keys go to the tab's first table; the training keys show only on the Swarms tab."""
        event.pane.query(DataTable).first().focus()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool:
        """Training keys belong to the Swarms tab."""
        return action != "train" or self.query_one(TabbedContent).active == "swarms-tab"

    # ------------------------------------------------------------ starting training
    def action_train(self, retry_failed: bool) -> None:
        item = self.snapshot.swarm(self.swarm_id)
        if item is None:
            self.notify("No swarm to train: plan one first.", severity="warning")
            return
        swarm, statuses = item
        states = [s.state for s in statuses]
        if swarm.id in self.supervisors or "running" in states:
            self.notify(f"Swarm {swarm.id} is training already.", severity="warning")
            return
        todo = sum(s in ("pending", "interrupted") or (retry_failed and s == "failed") for s in states)
        if not todo:
            hint = " (f retries the failed ones)" if "failed" in states else ""
            self.notify(f"Swarm {swarm.id} has no unfinished runs{hint}.")
            return
        log = self.project.cache / "logs" / swarm.id / "supervisor.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "olmix_tui", "swarm", "run", str(self.project.root), "--swarm", swarm.id]
        with open(log, "ab") as out:
            process = subprocess.Popen(cmd + (["--retry-failed"] if retry_failed else []), stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.supervisors[swarm.id] = Supervisor(process, log)
        self.notify(f"Training {todo} run(s) of swarm {swarm.id} (pid {process.pid}).")
        self._show_summary()

    def _check_supervisors(self) -> None:
        for swarm_id, sup in list(self.supervisors.items()):
            code = sup.process.poll()
            if code is None:
                continue
            del self.supervisors[swarm_id]
            if code == 0:
                self.notify(f"Swarm {swarm_id}: training finished.")
            else:
                self.notify(f"Swarm {swarm_id}: training stopped (exit {code}): {last_line(sup.log)}",
                            severity="error", timeout=30)


def read_snapshot(project: Project, swarm_id: str | None, run_id: str | None, entry_id: str | None) -> Snapshot:
    """Read every swarm's run statuses, the curve of `run_id` in `swarm_id`, the history and the
    comparison of `entry_id` (default: the last entry); a damaged file becomes `error`."""
    try:
        swarms = [(swarm, swarm.statuses()) for swarm in list_swarms(project.swarms_dir)]
        planned = [swarm for swarm, _ in swarms if swarm.spec.get("purpose") != "verify"] or [swarm for swarm, _ in swarms]
        newest = max(planned, key=lambda swarm: (swarm.path / "swarm.toml").stat().st_mtime_ns).id if planned else None
        chosen = next((swarm for swarm, _ in swarms if swarm.id == swarm_id), None)
        curve = chosen.curve(run_id) if chosen is not None and run_id in chosen.run_ids else []
        history = read_history(project)
    except (OlmixError, OSError, ValueError) as err:
        return Snapshot(error=str(err))
    comparison: dict | str = ""
    if history:
        try:
            comparison = pipeline.diff_entries(project, entry_id or history[-1].label, None)
        except OlmixError as err:
            comparison = str(err)
    return Snapshot(swarms, newest, curve, history, comparison)


def last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return lines[-1] if lines else f"see {path}"
