"""The Jobs tab: what runs on the project and what ran, wherever it was started (the job records
under .olmix/jobs/, and the owners of running runs that no record covers: a queued Slurm job, a
worker of an older olmix-tui): its state, since when, where (pid, host, Slurm job or Ray driver);
the highlighted job's log below, followed live; l shows it full screen, s stops the job (a training
job with its workers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import DataTable, RichLog, Static

from engine.executors.jobs import JobRecord
from engine.executors.stop import Owner
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import fill

STATE_STYLES = {"running": "yellow", "done": "green", "failed": "bold red", "stopped": "magenta", "gone": "red"}
TAIL_BYTES = 64 * 1024
"""How much of a log the viewer reads when it opens one (then it follows what is appended)."""


@dataclass(frozen=True)
class JobRow:
    """A row of the Jobs table: a job record, or a run owner no record covers."""

    key: str
    state: str
    started: int | None
    label: str
    where: str
    log: Path | None
    record: JobRecord | None = None
    owner: Owner | None = None


def job_rows(snapshot: Snapshot, root: Path) -> list[JobRow]:
    """Running jobs first (newest first), then the owners no record covers, then what ended (newest first)."""
    records = sorted(snapshot.jobs, key=lambda j: (j.state != "running", -j.started))
    rows = [JobRow(j.key, j.state, j.started, j.label, j.where, Path(j.log) if j.log else None, record=j) for j in records]
    owners = [JobRow(f"owner {o.kind} {o.ident}", "queued" if o.kind == "slurm" else "running", None, o.describe(), "",
                     root / ".olmix" / "logs" / o.swarm / f"{o.runs[0]}.log" if o.kind == "worker" else None, owner=o)
              for o in snapshot.owners]
    running = sum(r.state == "running" for r in rows)
    return rows[:running] + owners + rows[running:]


def since(started: int | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(started)) if started else ""


class LogTail:
    """A log file followed from where it was last read: the last TAIL_BYTES at first, then the lines
    appended (a line still being written waits for its end)."""

    def __init__(self):
        self.path: Path | None = None
        self.offset = 0

    def read(self, path: Path | None) -> tuple[bool, list[str]]:
        """(whether to start over, the whole lines to add)."""
        restart = path != self.path
        self.path = path
        if path is None:
            self.offset = 0
            return restart, []
        try:
            size = path.stat().st_size
            if restart or size < self.offset:  # a new log, or one written anew
                restart, self.offset = True, max(0, size - TAIL_BYTES)
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return restart, []
        whole = data[:data.rfind(b"\n") + 1]
        self.offset += len(whole)
        return restart, whole.decode("utf-8", errors="replace").splitlines()


def follow(log: RichLog, tail: LogTail, path: Path | None, missing: str) -> None:
    """Show `path`'s new lines in `log` (all of its tail when it is a new one), as written: no markup."""
    restart, lines = tail.read(path)
    if restart:
        log.clear()
        if path is None or not path.exists():
            log.write(Text(missing, style="dim"))
    for line in lines:
        log.write(Text(line))


def job_log(id: str, max_lines: int) -> RichLog:
    """A log viewer: long lines wrap (an error's fix is at its end)."""
    return RichLog(id=id, max_lines=max_lines, wrap=True, markup=False, highlight=False, min_width=20)


class JobsTab(AppTab):
    KEY, TITLE = "jobs", "Jobs"
    BINDINGS = [
        Binding("s", "stop", "Stop", id="jobs.stop",
                tooltip="Stop the highlighted job (one that trains a swarm with its workers; finished runs are kept)"),
        Binding("l", "log", "Log", id="jobs.log", tooltip="The highlighted job's log, full screen, followed live"),
    ]

    def __init__(self, number: int):
        super().__init__(number)
        self.rows: list[JobRow] = []
        self.tail = LogTail()

    def compose(self) -> ComposeResult:
        yield Static(id="jobs-summary")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static(id="log-title")
        yield job_log("job-log", 5000)

    def show(self, snapshot: Snapshot) -> None:
        self.rows = job_rows(snapshot, self.app.project.root)
        table = self.query_one("#jobs", DataTable)
        columns = ["state", "started", "job"] + ([] if self.narrow else ["where", "log"])
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        root = self.app.project.root
        fill(table, [(r.key, [Text(r.state, style=STATE_STYLES.get(r.state, "yellow")), since(r.started), r.label,
                              *([] if self.narrow else [r.where, _relative(r.log, root)])]) for r in self.rows])
        keys = [r.key for r in self.rows]
        if self.app.selection.job not in keys and keys:
            self.app.select(job=keys[0])
            table.move_cursor(row=0)
        running = sum(r.state in ("running", "queued") for r in self.rows)
        self.query_one("#jobs-summary", Static).update(Text(
            f"{running} running, {len(self.rows) - running} ended (records under .olmix/jobs/); s stops the highlighted "
            "one, l shows its log full screen." if self.rows else
            "No job has run on this project yet: u (Domains), t (Swarms) and n (Fits) start them; so does the command line."))
        self._show_log()

    def _chosen(self) -> JobRow | None:
        return next((r for r in self.rows if r.key == self.app.selection.job), None)

    def _show_log(self) -> None:
        row = self._chosen()
        title = self.query_one("#log-title", Static)
        if row is None:
            title.update("")
            follow(self.query_one("#job-log", RichLog), self.tail, None, "")
            return
        code = f", exit code {row.record.exit_code}" if row.record and row.record.exit_code is not None else ""
        where = f" ({row.where}{code})" if row.where else ""
        shown = _relative(row.log, self.app.project.root) or "its output went to a terminal"
        title.update(Text(f"{row.label}{where}; log: {shown}", style="bold"))
        follow(self.query_one("#job-log", RichLog), self.tail, row.log,
               "No log file: the job's output went to the terminal that started it." if row.log is None else
               f"{row.log} does not exist (yet).")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value != self.app.selection.job:
            self.app.select(job=event.row_key.value)
            self._show_log()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a job opens its log full screen, as l does."""
        event.stop()
        self.action_log()

    def action_log(self) -> None:
        row = self._chosen()
        if row is None:
            self.app.tell("No job to show the log of.", "warning")
            return
        self.app.push_screen(LogScreen(row.label, row.log, _relative(row.log, self.app.project.root)))

    def action_stop(self) -> None:
        row = self._chosen()
        if row is None or row.state not in ("running", "queued"):
            self.app.tell("The highlighted job does not run.", "warning")
            return
        self.app.tell(f"Stopping {row.label}…")
        if row.record is not None:
            self.app.stop(job=row.record)
        else:
            self.app.stop(swarm=row.owner.swarm)


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class LogScreen(ModalScreen):
    """A job's log full screen, followed live (read once a second); Escape, q or l closes it."""

    DEFAULT_CSS = """
    LogScreen { background: $background; }
    LogScreen #log-screen-title { height: auto; padding: 0 1; }
    LogScreen RichLog { height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,l", "dismiss", "Close", id="log.close")]

    def __init__(self, label: str, path: Path | None, shown: str):
        super().__init__()
        self.label, self.path, self.shown, self.tail = label, path, shown, LogTail()

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.label}: {self.shown or 'no log file'} (Escape closes; the log is followed live)",
                          style="bold"), id="log-screen-title")
        yield job_log("log-screen", 20000)

    def on_mount(self) -> None:
        self._follow()
        self.set_interval(1.0, self._follow)
        self.query_one(RichLog).focus()

    def _follow(self) -> None:
        follow(self.query_one(RichLog), self.tail, self.path, "No log file: the job's output went to a terminal.")

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(result)
