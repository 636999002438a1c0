"""What every tab is: a TabPane that owns its widgets, its keys and its rendering; and the one flow
two tabs share, choosing a plan (each plan's cost shown) before a job plans a swarm or applies the update."""

from __future__ import annotations

from typing import Callable, ClassVar

from textual import work
from textual.widgets import DataTable, TabPane

from engine import pipeline
from engine.errors import NotTokenizedError, OlmixError
from engine.history import read_history
from engine.project import Project
from engine.settings import PLAN_KINDS
from olmix_tui.app.forms import PlanForm
from olmix_tui.app.messages import JobRefused
from olmix_tui.app.snapshot import Snapshot

Launch = Callable[[str, list[str]], None]
"""Starts the job for a chosen plan: (kind, domains to unfreeze)."""


class AppTab(TabPane):
    """A tab: KEY names it (`olmix-tui ... --tab KEY`, its pane id KEY-tab), TITLE labels it.

    Its BINDINGS are active while the focus is inside it; `show` renders a Snapshot, on every read
    and when jobs start or end. The app numbers the tabs in the order of olmix_tui.app.tabs.TABS."""

    KEY: ClassVar[str]
    TITLE: ClassVar[str]

    def __init__(self, number: int):
        super().__init__(f"{number} {self.TITLE}", id=self.pane_id())

    @classmethod
    def pane_id(cls) -> str:
        return f"{cls.KEY}-tab"

    def show(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def focus_first(self) -> None:
        """Keys go to the tab's first table when it is opened."""
        tables = self.query(DataTable)
        if tables:
            tables.first().focus()

    def on_resize(self) -> None:
        """Drawn again for the new width: the columns that fit."""
        if self.is_mounted:
            self.show(self.app.snapshot)

    @property
    def narrow(self) -> bool:
        """Below 120 columns: tables keep to the columns that fit, the rest is in a detail panel."""
        return self.app.size.width < 120

    def refused_when_busy(self, what: str) -> bool:
        """Refuse `what` (JobRefused: who holds the lock) when a job holds the project lock: it would
        only wait, then fail. The app checks the lock itself again when it starts the job."""
        busy = self.app.snapshot.busy()
        if busy:
            self.post_message(JobRefused(what, busy))
        return bool(busy)

    # ------------------------------------------------------------ choosing a plan
    def choose_plan(self, purpose: str, launch: Launch) -> None:
        """Read each plan's cost off the UI thread, then ask which plan (PlanForm); `launch` starts the job."""
        self.app.tell("Reading each plan's cost… (the first time, loading the fit takes a few seconds)", timeout=5)
        self._plan_options(purpose, launch)

    @work(thread=True, exclusive=True, group="plan-options")
    def _plan_options(self, purpose: str, launch: Launch) -> None:
        project = Project.load(self.app.project.root)
        reason = ""
        try:
            options = pipeline.plan_options(project, for_update=purpose == "apply")
        except NotTokenizedError as err:
            options, reason = None, f"{err} Each plan's cost shows once they are; the job tokenizes first."
        except OlmixError as err:
            self.app.call_from_thread(self.app.tell, str(err), "warning", 15)
            return
        first = not read_history(project)
        changes = "; ".join(c.describe() for c in project.pending)
        if first and purpose == "apply":
            changes = f"the first mixture over {len(project.domains)} domains" + (f", then: {changes}" if changes else "")
        only_full = first and (purpose == "plan" or not project.pending)  # the first mixture is a full swarm
        kinds = ("full",) if only_full else PLAN_KINDS
        default = "full" if only_full else options.default if options else project.settings.reuse.plan
        form = PlanForm(purpose, changes or f"the first mixture over {len(project.domains)} domains", options, kinds, default,
                        reason)
        self.app.call_from_thread(self.app.push_screen, form, lambda choice: choice and launch(*choice))
