"""Mixture history: one TOML file per applied domain-set update, history/NNNN-<kind>.toml.

Each entry records the change, the plan, swarm and fit ids, the mixture over leaf domains and the
compute spent (`EntryContent`); an update checked against its full recomputation records that
comparison too (`CompareRecord`). The current mixture is the last entry's. Every entry is checked
when read (a mixture of weights in [0, 1] summing to 1, ids that name folders of the project, one
entry per number), and an entry is written together with the domain set it produces
(`Project.write_together`), so a command killed in between leaves nothing half-applied.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine import atomic
from engine.bootstrap import ProposalSpread
from engine.config import Table, load_section, parse_toml, read_toml
from engine.domains import DomainSet, check_name
from engine.errors import ConfigError
from engine.project import DOMAINS_FILE, PENDING_FILE, Project
from engine.regression.verdict import FitVerdict
from engine.reuse import PlanRecord

ENTRY_RE = re.compile(r"^(\d{4})-([a-z0-9+_-]{1,60})\.toml$")
SUM_TOLERANCE = 1e-3
"""How far from 1 a stored mixture's weights may sum (they are written with 8 significant digits)."""


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


ACTIONS = ("proposed", "forced", "fallback")
FALLBACKS = ("incumbent", "natural")


@dataclass(frozen=True)
class Evidence(Table):
    """What a mixture chosen from a fit rests on: the fit's verdict (its findings and figures), what
    was done with it, and the proposal's warnings and bootstrap spread.

    action: "proposed" (a usable or weak fit: a weak one with a warning), "forced" (an unusable fit,
    proposed from anyway because --force was given) or "fallback" (an unusable fit: the mixture is
    `fallback` instead: "incumbent", the current mixture with added domains at 0
    (engine.reuse.incumbent_mixture), or "natural", the natural distribution); reason: why it fell back, in a few words (the
    verdict holds every finding, and in `fix` what would make the fit usable); warnings: what the
    user should know about the proposal (a weak fit, no KL and no caps, an imported swarm without
    token counts); spread: the bootstrap spread (engine.bootstrap), when one was run.
    """

    finite_floats = False

    verdict: FitVerdict
    action: str = "proposed"
    fallback: str = ""
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    spread: ProposalSpread | None = None

    def validate(self) -> None:
        if self.action not in ACTIONS or (self.action == "fallback") != (self.fallback in FALLBACKS):
            raise ConfigError(f"action '{self.action}' with fallback '{self.fallback}' is not a recorded choice; "
                              f"action is one of {', '.join(ACTIONS)}, and only a fallback names one of "
                              f"{', '.join(FALLBACKS)}.")

    @property
    def summary(self) -> str:
        """A few words: the verdict and what was done, e.g. "unusable, kept incumbent"."""
        done = {"fallback": f", kept {self.fallback}" if self.fallback == "incumbent" else f", took {self.fallback}",
                "forced": ", forced"}.get(self.action, "")
        return self.verdict.verdict + done


@dataclass(frozen=True)
class UpdateRecord(Table):
    """One path through an update: plan, mixture over leaves, swarm and fit ids, the predicted
    objective, how the proposal was made (none when the plan needed no swarm, or when an unusable
    fit fell back), the compute, and the evidence behind the mixture (none without a fit)."""

    finite_floats = False

    plan: PlanRecord
    mixture: dict[str, float]
    swarm: str = ""
    fit: str = ""
    predicted: float | None = None
    proposal: ProposalInfo | None = None
    compute: Compute = field(default_factory=Compute)
    evidence: Evidence | None = None

    def validate(self) -> None:
        bad = next((f"{k} = {w}" for k, w in self.mixture.items() if not (math.isfinite(w) and 0.0 <= w <= 1.0)), None)
        if bad is not None:
            raise ConfigError(f"mixture weight {bad} is not between 0 and 1; restore the entry from git.")
        if self.mixture and abs(sum(self.mixture.values()) - 1.0) > SUM_TOLERANCE:
            raise ConfigError(f"mixture weights sum to {sum(self.mixture.values()):.6g}, not 1; restore the entry from git.")
        for what, value in (("swarm", self.swarm), ("fit", self.fit)):
            if value:
                check_name(value, what, what)


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
    """All entries, oldest first (with the one a killed command left in the journal); a malformed
    entry, or two entries with one number (two branches merged), is an error naming the files."""
    texts: dict[str, str | None] = {p.name: None for p in project.history_dir.glob("*.toml")}
    texts.update((rel.removeprefix("history/"), text) for rel, text in project.journal.items()
                 if rel.startswith("history/") and text is not None)
    entries: dict[int, HistoryEntry] = {}
    for name in sorted(texts):
        path = project.history_dir / name
        m = ENTRY_RE.match(name)
        if not m:
            raise ConfigError(f"{path} is not named NNNN-<kind>.toml; rename or remove it.")
        number = int(m.group(1))
        if number in entries:
            raise ConfigError(f"history has two entries numbered {number:04d} ({entries[number].path.name} and {name}), "
                              "as after merging two branches; keep one, or renumber the later one after the last entry.")
        data = read_toml(path) if texts[name] is None else parse_toml(texts[name], path)
        if not isinstance(data.get("mixture"), dict):
            raise ConfigError(f"{path}: [mixture] must map each leaf domain to its weight.")
        entries[number] = HistoryEntry(number, m.group(2), path, load_section(EntryContent, data, str(path)))
    return list(entries.values())


def current_mixture(project: Project) -> dict[str, float] | None:
    entries = read_history(project)
    return entries[-1].mixture if entries else None


def write_entry(project: Project, content: EntryContent, domains: DomainSet | None = None,
                pending_text: str | None = None) -> HistoryEntry:
    """Append a new entry (under the project lock); numbering continues from the last one. With
    `domains`, the entry, domains.toml and pending.toml (`pending_text`, None: no file) are written
    as one step, and the project holds the new domain set."""
    with project.lock():
        entries = read_history(project)
        number = entries[-1].number + 1 if entries else 1
        rel = f"history/{number:04d}-{content.kind}.toml"
        files: dict[str, str | None] = {rel: atomic.dumps_toml(dataclasses.asdict(content))}
        if domains is not None:
            files.update({DOMAINS_FILE: atomic.dumps_toml(domains.to_toml()), PENDING_FILE: pending_text})
        project.write_together(files)
        if domains is not None:
            project.domains = domains
    return HistoryEntry(number, content.kind, project.root / rel, content)
