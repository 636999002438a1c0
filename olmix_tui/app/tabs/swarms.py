"""The Swarms tab: swarms in the history's order, the highlighted swarm's runs (and the share of its
workers' time that was not training steps), and the highlighted run's detail (its mixture, where it
trains, its error in full, where its time went, its curve); keys plan a swarm (each plan's cost in
view), train the unfinished runs in a detached job, and stop the training.

On a tall terminal the run detail sits under the runs table; on a short one it is closed until m
(or Enter on a run) opens it in place of the swarm list, so the runs table always keeps its room.
Below 120 columns the runs table keeps to the columns that fit (state, progress, live loss and
tokens/s, the top of the mixture or the start of the error); the detail has the rest."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from engine.phases import swarm_timing
from engine.runs import RunStatus
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import fill, number, run_mixture
from olmix_tui.render import headline_metrics

STATE_STYLES = {"done": "green", "running": "yellow", "pending": "dim", "interrupted": "magenta", "failed": "bold red"}
COUNTED_STATES = ("done", "running", "pending", "interrupted", "failed")
SHORT_STATES = {"done": "done", "running": "run", "pending": "pend", "interrupted": "intr", "failed": "fail"}
"""Below 120 columns the swarm list counts a swarm's runs in one column: "3 done 1 intr 1 fail"."""
ERROR_WIDTH = 40
"""An error's first characters in the runs table; the run detail shows it whole."""
NARROW_NOTE_WIDTH = 26
"""Below 120 columns: the width of the runs table's last column (the top of the mixture, or the error)."""


class SwarmsTab(AppTab):
    KEY, TITLE = "swarms", "Swarms"
    BINDINGS = [
        Binding("t", "train(False)", "Train", id="swarms.train", tooltip="Train the highlighted swarm's unfinished runs"),
        Binding("f", "train(True)", "Train + failed", id="swarms.retry",
                tooltip="Train the highlighted swarm's unfinished runs, retrying the failed ones"),
        Binding("s", "stop", "Stop", id="swarms.stop",
                tooltip="Stop training the highlighted swarm: its job, then its workers (finished runs are kept)"),
        Binding("p", "plan", "Plan", id="swarms.plan",
                tooltip="Plan a swarm for the staged update (or the first mixture), seeing each plan's runs and FLOPs"),
        Binding("m", "toggle_detail", "Run detail", id="swarms.detail",
                tooltip="Show or hide the highlighted run's mixture, error and curve"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield DataTable(id="swarms", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="run-detail"):
            with VerticalScroll(id="mixture-scroll", can_focus=False):
                yield Static(id="mixture")
            yield PlotextPlot(id="curve")


    def action_toggle_detail(self) -> None:
        """Open the run detail on a short terminal (where it is closed at first), close it on a tall one."""
        self.toggle_class("-detail-toggled")

    # ------------------------------------------------------------ rendering
    def show(self, snapshot: Snapshot) -> None:
        swarms, selection = self.query_one("#swarms", DataTable), self.app.selection
        columns = ["swarm", "used by", "runs", "states"] if self.narrow else ["swarm", "used by", "plan", "runs", *COUNTED_STATES]
        if [str(c.label) for c in swarms.columns.values()] != columns:
            swarms.clear(columns=True)
            swarms.add_columns(*columns)
        rows = []
        for swarm, statuses in snapshot.swarms:
            counts = {s: 0 for s in COUNTED_STATES}
            for s in statuses:
                counts[s.state] += 1
            first = [swarm.id, snapshot.used_by.get(swarm.id, "")]
            if self.narrow:
                states = Text(" ").join(Text(f"{counts[s]} {SHORT_STATES[s]}", style=STATE_STYLES[s]) for s in COUNTED_STATES if counts[s])
                rows.append((swarm.id, [*first, len(statuses), states]))
            else:
                rows.append((swarm.id, [*first, swarm.spec.plan, len(statuses), *(counts[s] or "" for s in COUNTED_STATES)]))
        fill(swarms, rows)
        ids = [key for key, _ in rows]
        if selection.swarm not in ids and snapshot.newest in ids:  # at first, the most recently planned swarm
            self.app.select(swarm=snapshot.newest, run=None)
            swarms.move_cursor(row=ids.index(snapshot.newest))
        self._show_runs()

    def _show_summary(self) -> None:
        """What the tab holds and what keys do; the highlighted swarm's overhead share once runs record their phases."""
        snapshot, root = self.app.snapshot, self.app.project.root
        if snapshot.error:
            text = Text(f"error: {snapshot.error}", style="bold red")
        elif not snapshot.swarms:
            text = Text(f"No swarm yet: p plans one (or `olmix-tui swarm plan {root}`), then t trains it here.")
        else:
            training = [job for job in snapshot.running if job.swarm and job.kind in ("train", "update")]
            text = Text(f"{len(snapshot.swarms)} swarm(s); " + (
                "; ".join(f"{job.label} ({job.where}); s stops it" for job in training) if training else
                "t trains the highlighted swarm's unfinished runs; m shows a run's detail; "
                "quitting leaves training running."))
            item = snapshot.swarm(self.app.selection.swarm)
            timing = swarm_timing(s.timing for s in item[1]) if item else None
            if timing is not None:
                text.append(f"\nSwarm {item[0].id}: {timing.overhead_share:.0%} of its workers' time was not "
                            "training steps.")
        self.query_one("#summary", Static).update(text)

    def _show_runs(self) -> None:
        table, selection = self.query_one("#runs", DataTable), self.app.selection
        item = self.app.snapshot.swarm(selection.swarm)
        statuses = item[1] if item else []
        metrics = [] if self.narrow else headline_metrics(statuses)
        columns = ["run", "state", "progress", "loss", "tokens/s",
                   *(["mixture (top 2) or error"] if self.narrow else ["error", "mixture (top 3)", *metrics])]
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        fill(table, [(s.run, run_row(s, f"{selection.swarm}-", metrics, self.narrow)) for s in statuses])
        if selection.run not in {s.run for s in statuses}:
            self.app.select(run=statuses[0].run if statuses else None)
        self._show_summary()
        self._show_detail()

    def _show_detail(self) -> None:
        snapshot, selection = self.app.snapshot, self.app.selection
        item = snapshot.swarm(selection.swarm)
        status = next((s for s in item[1] if s.run == selection.run), None) if item else None
        points = snapshot.curve if status is not None and snapshot.selection.run == status.run else []
        curve = self.query_one("#curve", PlotextPlot)
        curve.display = len(points) >= 2
        mixture = self.query_one("#mixture", Static)
        if status is None:
            mixture.update("")
            return
        figures = ", ".join(f"{name} {number(status.metrics[name])}" for name in headline_metrics([status]))
        notes = [f"trained by {status.where}" if status.where else "",
                 f"error: {status.error}" if status.error else "", f"final: {figures}" if figures else "",
                 run_phases(status)]
        if not curve.display:
            every = item[0].spec.proxy.eval_every if item[0].spec.proxy else 0
            notes.append(f"learning curve: a point every {every} steps, {len(points)} so far" if every else
                         "no learning curve: only the final point is logged (eval_every = 0 in olmix.toml's [proxy])")
        mixture.update(run_mixture(status, "\n".join(n for n in notes if n)))
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
        event.stop()
        key, selection = event.row_key.value, self.app.selection
        if event.data_table.id == "swarms" and key != selection.swarm:
            self.app.select(swarm=key, run=None)
            self._show_runs()
        elif event.data_table.id == "runs" and key != selection.run:
            self.app.select(run=key)
            self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a run opens (or closes) its detail, as m does."""
        event.stop()
        if event.data_table.id == "runs":
            self.action_toggle_detail()

    # ------------------------------------------------------------ planning, training, stopping
    def action_plan(self) -> None:
        if not self.refused_when_busy("planning a swarm"):
            self.choose_plan("plan", self._plan)

    def _plan(self, kind: str, unfreeze: list[str]) -> None:
        project = self.app.project
        self.app.start_job("plan", f"planning a {kind} swarm",
                           ["swarm", "plan", str(project.root), "--plan", kind,
                            *(arg for name in unfreeze for arg in ("--unfreeze", name))],
                           project.cache / "logs" / "plan.log")

    def action_train(self, retry_failed: bool) -> None:
        item = self.app.snapshot.swarm(self.app.selection.swarm)
        if item is None:
            self.app.tell("No swarm to train: plan one first (p).", "warning")
            return
        swarm, statuses = item
        states = [s.state for s in statuses]
        if swarm.id in self.app.jobs or "running" in states:
            self.app.tell(f"Swarm {swarm.id} is training already (s stops it).", "warning")
            return
        todo = sum(s in ("pending", "interrupted") or (retry_failed and s == "failed") for s in states)
        if not todo:
            hint = " (f retries the failed ones)" if "failed" in states else ""
            self.app.tell(f"Swarm {swarm.id} has no unfinished runs{hint}.")
            return
        if self.refused_when_busy(f"training swarm {swarm.id}"):
            return
        root = self.app.project.root
        args = ["swarm", "run", str(root), "--swarm", swarm.id] + (["--retry-failed"] if retry_failed else [])
        self.app.start_job(swarm.id, f"training {todo} run(s) of swarm {swarm.id}", args,
                           self.app.project.cache / "logs" / swarm.id / "supervisor.log")

    def action_stop(self) -> None:
        item = self.app.snapshot.swarm(self.app.selection.swarm)
        jobs = [job for job in self.app.snapshot.running if item is not None and job.swarm == item[0].id]
        if item is None or not (jobs or any(s.state == "running" for s in item[1])):
            self.app.tell("Nothing works on this swarm now.", "warning")
            return
        self.app.tell(f"Stopping swarm {item[0].id}'s training…")
        self.app.stop(swarm=item[0].id)


def run_phases(status: RunStatus) -> str:
    """Where a finished run's share of its worker's time went, phase by phase (engine.phases)."""
    timing = swarm_timing([status.timing])
    if timing is None:
        return ""
    phases = "  ".join(f"{name} {seconds:.2f}" for name, seconds in timing.totals.items())
    return f"time: {timing.total:.2f} s, {1 - timing.overhead_share:.0%} of it training steps\n{phases} (seconds)"



def run_row(s: RunStatus, prefix: str, metrics: list[str], narrow: bool = False) -> list:
    """A run's row: its short name (the swarm id dropped), state, progress, its own live loss and
    tokens/s (or final train loss), then the start of its error, its top three units and its headline
    metrics; narrow, one last column: the start of its error, else its top two units."""
    live, error = s.state == "running", s.error
    shown = 2 if narrow else 3
    top = ", ".join(f"{u} {100 * w:.0f}%" for u, w in sorted(s.trained_weights.items(), key=lambda kv: -kv[1])[:shown] if w >= 0.005)
    row = [
        s.run.removeprefix(prefix), Text(s.shown_state, style=STATE_STYLES.get(s.state, "")),
        f"{100 * s.progress:.0f}%" if live or s.state == "done" else "",
        number(s.loss if live else s.final_train_loss),
        f"{s.tokens_per_s:,.0f}" if live and s.tokens_per_s is not None else "",
    ]
    if narrow:
        note = Text(error, style="red") if error else Text(top)
        note.truncate(NARROW_NOTE_WIDTH, overflow="ellipsis")
        return row + [note]
    return row + [error if len(error) <= ERROR_WIDTH else error[:ERROR_WIDTH - 1] + "…", top,
                  *(number(s.metrics.get(m)) for m in metrics)]
