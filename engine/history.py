"""Mixture history: one TOML file per applied domain-set update, history/NNNN-<kind>.toml.

Each entry records the change, the plan, swarm and fit ids, the mixture over leaf domains and the
compute spent (`EntryContent`); an update checked against its full recomputation records that
comparison too (`CompareRecord`). The current mixture is the last entry's.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine import atomic
from engine.config import Table, load_section, read_toml
from engine.errors import ConfigError
from engine.project import Project
from engine.reuse import PlanRecord

ENTRY_RE = re.compile(r"^(\d{4})-([a-z0-9+_-]+)\.toml$")


@dataclass(frozen=True)
class Compute(Table):
    """What an update's swarm spent: proxy runs, training tokens and FLOPs."""

    runs: int = 0
    tokens: int = 0
    flops: float = 0.0


@dataclass(frozen=True)
class ProposalInfo(Table):
    """How the proposal was made: proposer, predicted objective, KL to the prior, leaves at their
    cap, the exact proposer's KKT residual, the fit's cross-validated Spearman (x100), the setting
    that chose the proposer ("[propose] proposer" or "[reuse.proposer] <kind>"), and the KL term's
    centre over the units of a reuse fit ("prior", "natural" or "current"; "" for the leaves' natural
    distribution)."""

    finite_floats = False

    proposer: str
    predicted_objective: float
    kl: float
    binding_caps: list[str] = field(default_factory=list)
    kkt_residual: float | None = None
    fit_cv_spearman: float = float("nan")
    proposer_setting: str = "[propose] proposer"
    kl_centre: str = ""


@dataclass(frozen=True)
class UpdateRecord(Table):
    """One path through an update: plan, mixture over leaves, swarm and fit ids, the predicted
    objective, how the proposal was made (none when the plan needed no swarm) and the compute."""

    finite_floats = False

    plan: PlanRecord
    mixture: dict[str, float]
    swarm: str = ""
    fit: str = ""
    predicted: float | None = None
    proposal: ProposalInfo | None = None
    compute: Compute = field(default_factory=Compute)


@dataclass(frozen=True)
class Measured(Table):
    """The objective measured on verification runs of one mixture: mean, spread (std), each seed's
    value and the seeds (empty in entries written before seeds were recorded)."""

    finite_floats = False

    mean: float
    std: float
    values: list[float]
    seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Verification(Table):
    """Verification runs (a swarm of purpose "verify"): seeds per mixture, and the measured objective per label."""

    finite_floats = False

    swarm: str
    seeds: int
    measured: dict[str, Measured] = field(default_factory=dict)


@dataclass(frozen=True)
class CompareRecord(Table):
    """An update checked against its full recomputation: the full path, the verification runs of
    both mixtures (and of the incumbent: the mixture the project had, carried onto the new domains
    with the added ones at 0), and L1 and KL(chosen || full) between them."""

    finite_floats = False

    full: UpdateRecord
    verification: Verification
    l1: float
    kl: float
    incumbent: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EntryContent(UpdateRecord):
    """A history file: the update's record plus its kind, the changes it applied, the domains'
    revisions after it, and the comparison with full recomputation when one was asked for."""

    kind: str = "update"
    changes: list[str] = field(default_factory=list)
    domains: dict[str, str] = field(default_factory=dict)
    compare: CompareRecord | None = None


@dataclass(frozen=True)
class HistoryEntry:
    number: int
    kind: str
    path: Path
    content: EntryContent

    @property
    def mixture(self) -> dict[str, float]:
        return dict(self.content.mixture)

    @property
    def label(self) -> str:
        return f"{self.number:04d}-{self.kind}"

    def to_json(self) -> dict:
        """The entry as `history --json` prints it: its label, then the file's content."""
        return {"entry": self.label, **dataclasses.asdict(self.content)}


def read_history(project: Project) -> list[HistoryEntry]:
    """All entries, oldest first; a malformed entry is an error naming its file."""
    entries = []
    for path in sorted(project.history_dir.glob("*.toml")):
        m = ENTRY_RE.match(path.name)
        if not m:
            raise ConfigError(f"{path} is not named NNNN-<kind>.toml; rename or remove it.")
        data = read_toml(path)
        if not isinstance(data.get("mixture"), dict):
            raise ConfigError(f"{path}: [mixture] must map each leaf domain to its weight.")
        entries.append(HistoryEntry(int(m.group(1)), m.group(2), path, load_section(EntryContent, data, str(path))))
    return entries


def current_mixture(project: Project) -> dict[str, float] | None:
    entries = read_history(project)
    return entries[-1].mixture if entries else None


def write_entry(project: Project, content: EntryContent) -> HistoryEntry:
    """Append a new entry (under the project lock); numbering continues from the last one."""
    with project.lock():
        entries = read_history(project)
        number = entries[-1].number + 1 if entries else 1
        path = project.history_dir / f"{number:04d}-{content.kind}.toml"
        atomic.write_toml(path, dataclasses.asdict(content))
    return HistoryEntry(number, content.kind, path, content)
