"""What every tab of the app is: a TabPane that owns its widgets, its keys and its rendering."""

from __future__ import annotations

from typing import ClassVar

from textual.widgets import DataTable, TabPane

from olmix_tui.app.snapshot import Snapshot


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
