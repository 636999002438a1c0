"""Progress events: plain dataclasses the engine emits and the CLI / TUI render.

Engine functions take an optional `on_event: Callable[[Event], None]`; they never print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Event:
    """Base class of all progress events."""


@dataclass(frozen=True)
class TaskStarted(Event):
    """A long task began; `total` is in `unit`s (None when unknown)."""

    task: str
    total: Optional[float] = None
    unit: str = ""


@dataclass(frozen=True)
class TaskProgress(Event):
    """`completed` units of `task` are done (absolute, not an increment)."""

    task: str
    completed: float
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFinished(Event):
    task: str
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Message(Event):
    """A one-line note for the user (level: info | warning)."""

    text: str
    level: str = "info"


EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """Default sink: drop events."""
