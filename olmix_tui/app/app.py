"""MixingApp: the tabs of olmix_tui.app.tabs over one project, refreshed from its files once a second."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.widgets._footer import FooterKey

from engine.executors.jobs import JobRecord
from engine.executors.stop import StopReport, stop, stop_job
from engine.project import Project
from olmix_tui.app.jobs import Jobs, last_line
from olmix_tui.app.keys import ActionCommands, HelpScreen
from olmix_tui.app.messages import JobEnded, JobRefused, JobStarted, ProposalPreviewed, SnapshotRead, StopDone
from olmix_tui.app.snapshot import Selection, Snapshot, SnapshotReader
from olmix_tui.app.tabs import TABS, AppTab

REFRESH_SECONDS = 1.0
READ_WITH = ("swarm", "run", "entry", "compare_with")
"""The parts of the Selection that change what the reader reads (a new one is read at once)."""


class KeysFooter(Footer):
    """The footer, with Quit first so that a narrow terminal never cuts it off."""

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        first = [key for key in keys if isinstance(key, FooterKey) and key.action == "quit"]
        yield from first + [key for key in keys if key not in first]


class AppTabs(TabbedContent):
    """The tabs, opened only by the user (a number key, a click, the palette): a widget focused in a
    tab does not switch to it. TabbedContent does, through a message that can arrive after the user
    opened the next tab ("3" then "4" came back to 3); the app focuses widgets of the open tab only."""

    def _on_tab_pane_focused(self, event: TabPane.Focused) -> None:
        event.stop()
        event.prevent_default()  # TabbedContent's own handler would run next


class MixingApp(App):
    """The tabs over one project. `tab` is the KEY of the tab to open on; `apply_args` are added to
    `olmix-tui DIR --batch` when the update is applied from here (e.g. ["--compare", "--seeds", "3"])."""

    TITLE = "olmix-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {ActionCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        *(Binding(str(number), f"show_tab('{tab.pane_id()}')", tab.TITLE, show=False, id=f"app.tab.{tab.KEY}",
                  tooltip=f"Open the {tab.TITLE} tab") for number, tab in enumerate(TABS, 1)),
        Binding("r", "reload", "Refresh", show=False, id="app.reload", tooltip="Read the project's files now (done every second)"),
        Binding("question_mark,f1", "help", "Help", id="app.help", key_display="?",
                tooltip="The keys of every tab and a short guide to the mixing loop"),
        Binding("escape", "close_panels", "Close", show=False, id="app.close", tooltip="Close the keys panel"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Quit the app; jobs started from it go on"),
    ]

    def __init__(self, project: Project, tab: str = "domains", apply_args: tuple[str, ...] = ()):
        super().__init__()
        self.project, self.apply_args = project, tuple(apply_args)
        self.initial_tab = next(t.pane_id() for t in TABS if t.KEY == tab)
        self.reader = SnapshotReader(project)
        self.snapshot = Snapshot()
        self.selection = Selection()
        self.jobs = Jobs(self.post_message)
        self._reading = self._read_again = False

    def compose(self) -> ComposeResult:
        yield Header()
        with AppTabs(initial=self.initial_tab):
            for number, tab in enumerate(TABS, 1):
                yield tab(number)
        yield KeysFooter(compact=True)

    @property
    def tabs(self) -> list[AppTab]:
        return list(self.query(AppTab))

    def on_mount(self) -> None:
        self.sub_title = str(self.project.root)
        self.reload()
        self.set_interval(REFRESH_SECONDS, self._tick)

    def _tick(self) -> None:
        self.jobs.poll()
        self.reload()

    # ------------------------------------------------------------ the selection and reading the files
    def select(self, **changes: str | None) -> None:
        """Change what is highlighted (Selection's fields); the files are read again at once when
        that changes what is read."""
        before, self.selection = self.selection, dataclasses.replace(self.selection, **changes)
        if any(getattr(before, name) != getattr(self.selection, name) for name in READ_WITH):
            self.reload()

    def action_reload(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the files now, or as soon as the read under way ends. One read at a time: a read that
        takes longer than a second (a busy machine, a large project) is never cut short by the next,
        so the tabs keep showing fresh counts while jobs write."""
        if self._reading:
            self._read_again = True
            return
        self._reading, self._read_again = True, False
        self._read(self.selection)

    @work(thread=True, group="reload")
    def _read(self, selection: Selection) -> None:
        """Read the files in a worker thread and post what was read; the UI thread shows it."""
        self.post_message(SnapshotRead(self.reader.read(selection)))

    def on_snapshot_read(self, message: SnapshotRead) -> None:
        self._reading = False
        self.snapshot = message.snapshot
        self._show()
        if self._read_again or message.snapshot.selection != self.selection:
            self.reload()

    def _show(self) -> None:
        for tab in self.tabs:
            tab.show(self.snapshot)

    # ------------------------------------------------------------ jobs
    def start_job(self, key: str, label: str, args: list[str], log: Path) -> bool:
        """Start `olmix-tui ARGS` detached, unless it would wait for the project lock: then say who
        holds it and start nothing. Returns whether it started."""
        holder = self.project.lock_holder()
        if holder is not None:
            self.post_message(JobRefused(label, dataclasses.replace(self.snapshot, lock=holder).busy()))
            return False
        self.jobs.start(key, label, args, log)
        return True

    def on_job_refused(self, message: JobRefused) -> None:
        self.tell(f"Not {message.what}: {message.reason}; wait for it to end (Jobs tab) or stop it (s there).", "warning", 15)

    def on_job_started(self, message: JobStarted) -> None:
        self.notify(f"Started {message.job.label} (pid {message.job.process.pid}).", markup=False)
        self._show()

    def on_job_ended(self, message: JobEnded) -> None:
        job = message.job
        if message.code == 0:
            self.notify(f"Done: {job.label}.", markup=False)
        else:
            self.notify(f"Stopped: {job.label} (exit {message.code}): {last_line(job.log)}", severity="error", timeout=30,
                        markup=False)
        self._show()

    @work(thread=True, group="stop")
    def stop(self, swarm: str | None = None, job: JobRecord | None = None) -> None:
        """Stop a swarm's training (its scheduler, then its workers), or one job, in a worker thread
        (stopping waits for the processes to end)."""
        root = self.project.root
        report = stop_job(root, job) if job is not None else stop(root, swarm)
        self.post_message(StopDone(report))

    def on_stop_done(self, message: StopDone) -> None:
        report: StopReport = message.report
        self.notify(report.describe(), severity="information" if report.stopped else "warning", timeout=15, markup=False)
        self.reload()

    # ------------------------------------------------------------ settings
    def on_proposal_previewed(self, message: ProposalPreviewed) -> None:
        if message.saved is not None:
            self.project.settings = message.saved

    # ------------------------------------------------------------ tabs, help
    def action_show_tab(self, tab: str) -> None:
        self.query_one(AppTabs).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Keys go to the opened tab (its first table, once it is shown)."""
        self.call_after_refresh(self._focus_tab, event.pane.id)

    def _focus_tab(self, pane_id: str) -> None:
        """Focus the tab, unless another was opened since."""
        tabs = self.query_one(AppTabs)
        if tabs.active == pane_id:
            tabs.get_pane(pane_id).focus_first()

    @property
    def open_tab(self) -> AppTab:
        tabs = self.query_one(AppTabs)
        return tabs.get_pane(tabs.active)

    async def run_tab_action(self, tab: type[AppTab], action: str) -> None:
        """Open `tab` and run one of its actions there (the command palette's commands)."""
        self.action_show_tab(tab.pane_id())
        pane = self.query_one(f"#{tab.pane_id()}", AppTab)
        self.call_after_refresh(pane.run_action, action)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.open_tab.KEY))

    def action_close_panels(self) -> None:
        """Escape: close the keys panel (ctrl+p "keys")."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()

    def tell(self, text: str, severity: str = "information", timeout: float = 10) -> None:
        """A notification shown as written (no markup: engine messages keep their square brackets)."""
        self.notify(text, severity=severity, timeout=timeout, markup=False)
