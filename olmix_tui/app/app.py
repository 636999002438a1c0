"""MixingApp: the tabs of olmix_tui.app.tabs over one project, refreshed from its files once a second."""

from __future__ import annotations

import dataclasses

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent
from textual.widgets._footer import FooterKey
from textual.worker import get_current_worker

from engine.project import Project
from olmix_tui.app.jobs import Jobs, last_line
from olmix_tui.app.messages import JobEnded, JobStarted, ProposalPreviewed, SnapshotRead
from olmix_tui.app.snapshot import Selection, Snapshot, SnapshotReader
from olmix_tui.app.tabs import TABS, AppTab

REFRESH_SECONDS = 1.0
READ_WITH = ("swarm", "run", "entry")
"""The parts of the Selection that change what the reader reads (a new one is read at once)."""


class KeysFooter(Footer):
    """The footer, with Quit first so that a narrow terminal never cuts it off."""

    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        first = [key for key in keys if isinstance(key, FooterKey) and key.action == "quit"]
        yield from first + [key for key in keys if key not in first]


class MixingApp(App):
    """The tabs over one project. `tab` is the KEY of the tab to open on; `apply_args` are added to
    `olmix-tui DIR --batch` when the update is applied from here (e.g. ["--compare", "--seeds", "3"])."""

    TITLE = "olmix-tui"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]
    BINDINGS = [
        *(Binding(str(number), f"show_tab('{tab.pane_id()}')", tab.TITLE, show=False, id=f"app.tab.{tab.KEY}",
                  tooltip=f"Open the {tab.TITLE} tab") for number, tab in enumerate(TABS, 1)),
        Binding("r", "reload", "Refresh", show=False, id="app.reload", tooltip="Read the project's files now (done every second)"),
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

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial=self.initial_tab):
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
        self._read(self.selection)

    @work(thread=True, exclusive=True, group="reload")
    def _read(self, selection: Selection) -> None:
        """Read the files in a worker thread and post what was read; the UI thread shows it."""
        snapshot = self.reader.read(selection)
        if not get_current_worker().is_cancelled:
            self.post_message(SnapshotRead(snapshot))

    def on_snapshot_read(self, message: SnapshotRead) -> None:
        self.snapshot = message.snapshot
        self._show()

    def _show(self) -> None:
        for tab in self.tabs:
            tab.show(self.snapshot)

    # ------------------------------------------------------------ jobs and settings
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

    def on_proposal_previewed(self, message: ProposalPreviewed) -> None:
        if message.saved is not None:
            self.project.settings = message.saved

    # ------------------------------------------------------------ tabs
    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Keys go to the opened tab (its first table, once it is shown)."""
        self.call_after_refresh(self._focus_tab, event.pane.id)

    def _focus_tab(self, pane_id: str) -> None:
        """Focus the tab, unless another was opened since: focusing a widget opens its tab, so a
        late focus would switch back."""
        tabs = self.query_one(TabbedContent)
        if tabs.active == pane_id:
            tabs.get_pane(pane_id).focus_first()
