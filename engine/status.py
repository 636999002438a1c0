"""What `status` reports about a project: domains with token counts and prior, current mixture,
pending update. Typed records, rendered by the CLI (table or JSON) and the app."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.domains import AffectedRecord
from engine.history import read_history
from engine.project import Project


@dataclass(frozen=True)
class DomainStatus:
    """A current domain: its sources, revision and parent; once tokenized its token and byte
    counts and natural share (prior); its weight in the current mixture, when there is one."""

    name: str
    sources: list[str]
    revision: str
    parent: str
    train_tokens: int | None = None
    val_tokens: int | None = None
    train_bytes: int | None = None
    bytes_per_token: float | None = None
    prior: float | None = None
    weight: float | None = None


@dataclass(frozen=True)
class PendingUpdate(AffectedRecord):
    """The staged update: its changes in words, and what they affect."""

    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectStatus:
    """A project at one moment: its domains, whether all are tokenized (and their training tokens),
    the current mixture and the history it comes from, and the staged update (None if none)."""

    project: str
    root: str
    tokenized: bool
    train_tokens: int | None
    domains: list[DomainStatus]
    current_mixture: dict[str, float] | None
    history_entries: int
    last_entry: str | None
    pending: PendingUpdate | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def project_status(project: Project) -> ProjectStatus:
    cached = project.cached_tokens()
    tokenized = all(t is not None for t in cached.values()) and bool(cached)
    total = sum(t.train_tokens for t in cached.values() if t is not None)
    history = read_history(project)
    current = history[-1].mixture if history else None
    domains = []
    for d in project.domains:
        t = cached[d.name]
        counts = {} if t is None else {"train_tokens": t.train_tokens, "val_tokens": t.val_tokens,
                                       "train_bytes": t.train_bytes, "bytes_per_token": t.bytes_per_token,
                                       "prior": t.train_tokens / total if tokenized else None}
        domains.append(DomainStatus(d.name, list(d.sources), d.revision, d.parent, **counts,
                                    weight=current.get(d.name) if current else None))
    pending = None
    if project.pending:
        affected = dataclasses.asdict(project.affected().record())
        pending = PendingUpdate(**affected, changes=[c.describe() for c in project.pending])
    return ProjectStatus(project.settings.project.name, str(project.root), tokenized, total if tokenized else None,
                         domains, current, len(history), history[-1].label if history else None, pending)
