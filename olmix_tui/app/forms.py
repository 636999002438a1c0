"""The app's forms: staging a domain-set change (add a domain, revise or partition one), choosing
the plan of a swarm or an update (each plan's runs and FLOPs shown), choosing the regressor to fit
a swarm with, and the proposer settings to preview a proposal with.

The change form builds an engine.domains.Change and has the engine stage it before it closes:
validating it against the project (globs that match, files claimed once, parts that cover the
domain) is the engine's job, and a change it refuses keeps the form open with the reason and what
was typed.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Select, SelectionList, Static

from engine.config import dump_section, load_section
from engine.domains import Change, parse_parts
from engine.errors import OlmixError
from engine.pipeline import PlanOptions
from engine.project import Project
from engine.settings import PROPOSERS, REGRESSOR_NAMES, ProposeSettings
from olmix_tui.render import count, pct

PROMPTS = {
    "add": "Add a domain: its name, and its files or globs relative to the project folder (separated by spaces).",
    "revise": "Revise {domain}: new files or globs, or leave empty when the same paths hold new content.",
    "partition": "Partition {domain}: one part per entry, NAME=GLOB[,GLOB...], entries separated by ';'.",
}


def split_paths(text: str) -> tuple[str, ...]:
    """Files or globs typed into one field: separated by spaces or commas."""
    return tuple(p for p in text.replace(",", " ").split() if p)


class Form(ModalScreen):
    """A modal form: its fields, an error line, a submit button and Cancel. Enter in a field or the
    submit button calls `result()`, then `check(result)` in a worker thread (the engine's say, e.g.
    staging a change), and the form returns the result; an OlmixError from either is shown in the
    form, which stays open with what was typed. Escape or Cancel returns None."""

    DEFAULT_CSS = """
    Form { align: center middle; }
    Form > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 100%; border: thick $accent;
                            background: $surface; padding: 1 2; }
    Form Label { width: 1fr; }
    Form Input { margin-bottom: 1; }
    Form #form-error { color: $error; height: auto; }
    Form Horizontal { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def fields(self) -> ComposeResult:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with VerticalScroll(can_focus=False):
            yield from self.fields()
            yield Static(id="form-error")
            with Horizontal():
                yield Button(self.SUBMIT[1], variant="primary", id=self.SUBMIT[0])
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == self.SUBMIT[0]:
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.submit()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def check(self, result) -> None:
        """What the engine does with the result before the form closes (off the UI thread); an
        OlmixError keeps the form open. Default: nothing."""

    def submit(self) -> None:
        try:
            result = self.result()
        except OlmixError as err:
            self._refused(str(err))
            return
        self.query_one("#form-error", Static).update(Text("checking…", style="dim"))
        self._check(result)

    @work(thread=True, exclusive=True, group="form")
    def _check(self, result) -> None:
        try:
            self.check(result)
        except OlmixError as err:
            self.app.call_from_thread(self._refused, str(err))
            return
        self.app.call_from_thread(self.dismiss, result)

    def _refused(self, reason: str) -> None:
        self.query_one("#form-error", Static).update(Text(reason))


class ChangeForm(Form):
    """Stages a change to the project at `root` (through the engine); returns the Change staged, or
    None when cancelled."""

    SUBMIT = ("stage", "Stage")

    def __init__(self, kind: str, domain: str = "", root: Path | None = None):
        super().__init__()
        self.kind, self.domain, self.root = kind, domain, root

    def check(self, change: Change) -> None:
        if self.root is not None:
            Project.load(self.root).stage(change)

    def fields(self) -> ComposeResult:
        yield Label(Text(PROMPTS[self.kind].format(domain=self.domain)))
        if self.kind == "add":
            yield Input(placeholder="name, e.g. web:news", id="name")
        placeholder = {"add": "data/news/*.jsonl", "revise": "(same paths)",
                       "partition": f"{self.domain}:a=data/...; {self.domain}:b=data/..."}[self.kind]
        yield Input(placeholder=placeholder, id="paths")

    def result(self) -> Change:
        """The Change the fields describe; a malformed entry raises OlmixError."""
        paths = self.query_one("#paths", Input).value
        if self.kind == "add":
            name = self.query_one("#name", Input).value.strip()
            if not name or not split_paths(paths):
                raise OlmixError("give the new domain a name and at least one file or glob.")
            return Change("add", name, sources=split_paths(paths))
        if self.kind == "revise":
            return Change("revise", self.domain, sources=split_paths(paths))
        return Change("partition", self.domain, parts=parse_parts(p for p in paths.split(";") if p.strip()))


class FitForm(Form):
    """Returns the name of the regressor to fit a swarm with, or None when cancelled."""

    SUBMIT = ("fit", "Fit")

    def __init__(self, swarm_id: str, default: str):
        super().__init__()
        self.swarm_id, self.default = swarm_id, default

    def fields(self) -> ComposeResult:
        yield Label(Text(f"Fit swarm {self.swarm_id}'s finished runs with (cross-validated; an identical fit is reused):"))
        yield Select([(name, name) for name in REGRESSOR_NAMES], value=self.default, allow_blank=False, id="regressor")

    def result(self) -> str:
        return str(self.query_one("#regressor", Select).value)


class ProposeForm(Form):
    """The proposer and its main settings, prefilled from olmix.toml's [propose]; returns the settings
    to preview a proposal with and whether to save them as the project's, or None when cancelled."""

    SUBMIT = ("preview", "Preview")
    FIELDS = {
        "target_tokens": (int, "tokens of the target run (0: no repetition caps)"),
        "repetition_factor": (float, "most times a domain's tokens may repeat at the target scale"),
        "kl_reg": (float, "weight of KL(mixture || prior) (0: none)"),
        "bootstrap": (int, "bootstrap replicates behind the proposal's intervals (0: none)"),
    }

    def __init__(self, fit_id: str, current: ProposeSettings):
        super().__init__()
        self.fit_id, self.current = fit_id, current

    def fields(self) -> ComposeResult:
        yield Label(Text(f"Propose from fit {self.fit_id} with:"))
        yield Select([(name, name) for name in PROPOSERS], value=self.current.proposer, allow_blank=False, id="proposer")
        for name, (_, help_text) in self.FIELDS.items():
            yield Label(Text(f"{name}: {help_text}"))
            yield Input(str(getattr(self.current, name)), id=name)
        yield Checkbox(Text("save these as olmix.toml's [propose] settings"), id="save")  # Text: no markup

    def result(self) -> tuple[ProposeSettings, bool]:
        """The settings, checked the way olmix.toml's are, and whether to save them."""
        values: dict = {"proposer": str(self.query_one("#proposer", Select).value)}
        for name, (kind, _) in self.FIELDS.items():
            text = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = kind(text)
            except ValueError:
                raise OlmixError(f"{name} must be {'a whole number' if kind is int else 'a number'}, not {text!r}.") from None
        settings = load_section(ProposeSettings, {**dump_section(self.current), **values}, "the form", "propose")
        return settings, self.query_one("#save", Checkbox).value


class PlanForm(Form):
    """The plan of a swarm (`purpose` "plan") or of applying the update ("apply"): each plan kind's
    units, runs, tokens and FLOPs side by side (engine.pipeline.PlanOptions), the kind to use, and for
    partial reuse the unaffected domains to unfreeze (those the last fit suggests ticked, the costs
    following the ticks). Returns (kind, domains to unfreeze), or None when cancelled. Without options
    (the domains are not tokenized yet) it says why and offers the kinds alone."""

    DEFAULT_CSS = """
    PlanForm RadioSet { layout: horizontal; width: 100%; margin-bottom: 1; }
    PlanForm SelectionList { height: auto; max-height: 8; }
    """

    def __init__(self, purpose: str, changes: str, options: PlanOptions | None, kinds: tuple[str, ...], default: str,
                 reason: str = ""):
        super().__init__()
        self.SUBMIT = ("plan", "Plan the swarm") if purpose == "plan" else ("apply", "Apply")
        self.purpose, self.changes, self.options, self.reason = purpose, changes, options, reason
        self.kinds, self.default = kinds, default

    def fields(self) -> ComposeResult:
        what = "Plan the swarm of" if self.purpose == "plan" else "Apply"
        yield Label(Text(f"{what}: {self.changes}"))
        options = self.options
        if options is not None and options.first is not None:
            first = options.first
            yield Static(Text(f"First the first mixture over the current domains: a full swarm of {first['runs']} runs, "
                              f"{count(first['tokens'])} tokens, {first['flops']:.3g} FLOPs; then this update:"))
        yield Static(Text(self.reason, style="yellow") if options is None else "", id="plan-costs")
        with RadioSet(id="plan-kind"):
            for kind in self.kinds:
                yield RadioButton(kind, value=kind == self.default, name=kind)
        if options is not None and options.unaffected and "partial_reuse" in self.kinds:
            scores = dict(options.suggested)
            yield Label(Text("partial_reuse also varies: " + ("(ticked: what the last fit suggests, with the interaction score)"
                                                              if scores else "(the last fit suggests none)")))
            yield SelectionList(*[(Text(f"{name} ({scores[name]:.2g})" if name in scores else name), name, name in scores)
                                  for name in options.unaffected], id="unfreeze")

    def on_mount(self) -> None:
        self._show_costs()

    def on_selection_list_selected_changed(self) -> None:
        self._show_costs()

    def _unfreeze(self) -> list[str]:
        lists = self.query("#unfreeze")
        return [str(v) for v in lists.first(SelectionList).selected] if lists else []

    def _show_costs(self) -> None:
        if self.options is None:
            return
        table = Table(box=None, padding=(0, 1), title="each plan's cost", title_justify="left")
        for column in ("plan", "planned as", "units", "runs", "tokens", "FLOPs", "saving"):
            table.add_column(column, justify="left" if column in ("plan", "planned as") else "right")
        for kind, cost in self.options.costs(self._unfreeze()).items():
            table.add_row(kind, cost["plan"], str(cost["units"]), str(cost["runs"]), count(cost["tokens"]),
                          f"{cost['flops']:.3g}", pct(cost["saving"]))
        self.query_one("#plan-costs", Static).update(table)

    def result(self) -> tuple[str, list[str]]:
        pressed = self.query_one("#plan-kind", RadioSet).pressed_button
        kind = pressed.name if pressed is not None else self.default
        return kind, self._unfreeze() if kind == "partial_reuse" else []
