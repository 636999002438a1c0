"""Every key of the app, found from the bindings themselves: the command palette's commands (ctrl+p,
each with its key and what it does) and the help screen (? or F1: the key map of every tab and a
short guide to the mixing loop)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from olmix_tui.app.tabs import TABS, AppTab

GUIDE = """\
The mixing loop, tab by tab:
 1 Domains   stage a change to the domain set (a add, d remove, v revise, p partition), or none for
             the first mixture; u applies it in the background: it plans a swarm (you choose full
             recomputation or reuse, seeing each plan's runs and FLOPs), trains it, fits, proposes
             and records the new mixture in history/.
 2 Swarms    p plans a swarm without applying anything; t trains its unfinished runs; watch each
             run's progress, loss and tokens/s; m opens a run's detail (mixture, error, curve);
             s stops the training (finished runs are kept, stopped ones train again next time).
 3 Mixtures  the history: each entry beside its full recomputation or the entry before it; c pins
             the highlighted entry, then any other is compared with it.
 4 Fits      n fits the swarm highlighted on Swarms with a regressor you choose; o previews what the
             highlighted fit proposes, with proposer settings you can save to olmix.toml.
 5 Jobs      what runs on the project (started here or elsewhere) and what ran: since when, where
             (pid, host, Slurm job), its log live below; l shows the log full screen, s stops a job.
Long work runs in detached processes: quit (q) at any time, they go on, and the app re-attaches.
Every key is also in the command palette (ctrl+p): type what you want to do ("train", "stop").
"""


@dataclass(frozen=True)
class KeyAction:
    """One key of the app: the tab it belongs to (None: everywhere), its binding."""

    tab: type[AppTab] | None
    binding: Binding

    @property
    def key(self) -> str:
        return self.binding.key_display or self.binding.key.split(",")[0]

    @property
    def name(self) -> str:
        return f"{self.tab.TITLE if self.tab else 'App'}: {self.binding.description} ({self.key})"


def key_actions(app_bindings: list[Binding]) -> list[KeyAction]:
    """The app's keys, then each tab's, in the tabs' order (the palette does not list itself)."""
    out = [KeyAction(None, b) for b in app_bindings if b.action not in ("close_panels", "command_palette")]
    for tab in TABS:
        out += [KeyAction(tab, b) for b in tab.BINDINGS if isinstance(b, Binding)]
    return out


class ActionCommands(Provider):
    """The command palette's commands: every key of the app, by what it does; running one opens its tab first."""

    def _actions(self) -> list[KeyAction]:
        return key_actions([b for b in type(self.app).BINDINGS if isinstance(b, Binding)])

    def _command(self, action: KeyAction):
        app: App = self.app
        if action.tab is None:
            return partial(app.run_action, action.binding.action)
        return partial(app.run_tab_action, action.tab, action.binding.action)

    async def discover(self) -> Hits:
        for action in self._actions():
            yield DiscoveryHit(Text(action.name), self._command(action), text=action.name, help=action.binding.tooltip)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action in self._actions():
            score = max(matcher.match(action.name), matcher.match(action.binding.tooltip or "") * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(action.name), self._command(action), text=action.name,
                          help=action.binding.tooltip)


class HelpScreen(ModalScreen):
    """The key map of every tab (the open one first) and a guide to the loop; Escape, q, ? or F1 closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; height: auto; max-height: 100%; border: thick $accent;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, open_tab: str):
        super().__init__()
        self.open_tab = open_tab

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self._keys(), id="help-keys")
            yield Static(Text(GUIDE), id="help-guide")

    def _keys(self) -> Table:
        actions = key_actions([b for b in type(self.app).BINDINGS if isinstance(b, Binding)])
        order = sorted({a.tab for a in actions if a.tab}, key=lambda t: (t.KEY != self.open_tab, TABS.index(t)))
        table = Table(title="Keys (ctrl+p finds them by name; Escape closes this)", title_justify="left", box=None,
                      padding=(0, 1), expand=True)
        table.add_column("tab", no_wrap=True, style="bold")
        table.add_column("key", no_wrap=True, style="cyan")
        table.add_column("what it does", ratio=1)
        for tab in [*order, None]:
            for i, a in enumerate(a for a in actions if a.tab is tab):
                table.add_row(Text("" if i else tab.TITLE if tab else "everywhere"), Text(a.key),
                              Text(a.binding.tooltip or a.binding.description))
        return table

    async def action_dismiss(self, result=None) -> None:
        self.dismiss(result)
