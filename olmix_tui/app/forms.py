"""The app's forms: staging a domain-set change (add a domain, revise or partition one), choosing
the regressor to fit a swarm with, and the proposer settings to preview a proposal with.

The change form only builds an engine.domains.Change; validating it against the project (globs
that match, files claimed once, parts that cover the domain) is the engine's job when it is staged.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from engine.config import dump_section, load_section
from engine.domains import Change, parse_parts
from engine.errors import OlmixError
from engine.settings import PROPOSERS, REGRESSOR_NAMES, ProposeSettings

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
    submit button calls `result()`, whose value the form returns; an OlmixError from it is shown in the
    form, which stays open. Escape or Cancel returns None."""

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

    def submit(self) -> None:
        try:
            self.dismiss(self.result())
        except OlmixError as err:
            self.query_one("#form-error", Static).update(str(err))


class ChangeForm(Form):
    """Returns the Change to stage, or None when cancelled."""

    SUBMIT = ("stage", "Stage")

    def __init__(self, kind: str, domain: str = ""):
        super().__init__()
        self.kind, self.domain = kind, domain

    def fields(self) -> ComposeResult:
        yield Label(PROMPTS[self.kind].format(domain=self.domain))
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
        yield Label(f"Fit swarm {self.swarm_id}'s finished runs with (cross-validated; an identical fit is reused):")
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
        yield Label(f"Propose from fit {self.fit_id} with:")
        yield Select([(name, name) for name in PROPOSERS], value=self.current.proposer, allow_blank=False, id="proposer")
        for name, (_, help_text) in self.FIELDS.items():
            yield Label(f"{name}: {help_text}")
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
