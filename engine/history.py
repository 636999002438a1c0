"""Mixture history: one TOML file per applied domain-set update, history/NNNN-<kind>.toml.

Each entry records the change, the plan, swarm and fit ids, the mixture over leaf domains and the
compute spent. The current mixture is the last entry's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine import atomic
from engine.errors import ConfigError
from engine.config import read_toml
from engine.project import Project

ENTRY_RE = re.compile(r"^(\d{4})-([a-z0-9+_-]+)\.toml$")


@dataclass(frozen=True)
class HistoryEntry:
    number: int
    kind: str
    path: Path
    data: dict

    @property
    def mixture(self) -> dict[str, float]:
        return dict(self.data.get("mixture", {}))

    @property
    def label(self) -> str:
        return f"{self.number:04d}-{self.kind}"


def read_history(project: Project) -> list[HistoryEntry]:
    """All entries, oldest first; a malformed entry is an error naming its file."""
    entries = []
    for path in sorted(project.history_dir.glob("*.toml")):
        m = ENTRY_RE.match(path.name)
        if not m:
            raise ConfigError(f"{path} is not named NNNN-<kind>.toml; rename or remove it.")
        data = read_toml(path)
        mixture = data.get("mixture")
        if not isinstance(mixture, dict) or not all(isinstance(v, (int, float)) for v in mixture.values()):
            raise ConfigError(f"{path}: [mixture] must map each leaf domain to its weight.")
        entries.append(HistoryEntry(int(m.group(1)), m.group(2), path, data))
    return entries


def current_mixture(project: Project) -> dict[str, float] | None:
    entries = read_history(project)
    return entries[-1].mixture if entries else None


def write_entry(project: Project, kind: str, data: dict) -> HistoryEntry:
    """Append a new entry (under the project lock); numbering continues from the last one."""
    with project.lock():
        entries = read_history(project)
        number = entries[-1].number + 1 if entries else 1
        path = project.history_dir / f"{number:04d}-{kind}.toml"
        atomic.write_toml(path, {"kind": kind, **data})
    return HistoryEntry(number, kind, path, {"kind": kind, **data})
