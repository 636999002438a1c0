"""Messages the app's workers, jobs and tabs post; their handlers, on the UI thread, own the state.

Tests read them through `App.run_test(message_hook=...)`: what happened, not what a caption says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from engine.domains import Change
from engine.executors.stop import StopReport
from engine.history import Evidence
from engine.settings import Settings
from olmix_tui.app.snapshot import Snapshot

if TYPE_CHECKING:
    from olmix_tui.app.jobs import Job


class SnapshotRead(Message):
    """The reader worker read the project's files."""

    def __init__(self, snapshot: Snapshot):
        super().__init__()
        self.snapshot = snapshot


class JobStarted(Message):
    """A detached olmix-tui process was started from the app."""

    def __init__(self, job: Job):
        super().__init__()
        self.job = job


class JobEnded(Message):
    """A job started from the app exited with `code` (0: done)."""

    def __init__(self, job: Job, code: int):
        super().__init__()
        self.job, self.code = job, code


class JobRefused(Message):
    """`what` was not started, for `reason` (one sentence: who holds the project lock)."""

    def __init__(self, what: str, reason: str):
        super().__init__()
        self.what, self.reason = what, reason


class StopDone(Message):
    """A stop (of a swarm's training, or of one job) ended: engine.executors.stop's report."""

    def __init__(self, report: StopReport):
        super().__init__()
        self.report = report


class Staged(Message):
    """The engine validated `change` and wrote it to pending.toml."""

    def __init__(self, change: Change):
        super().__init__()
        self.change = change


class Discarded(Message):
    """The staged update was discarded (pending.toml removed)."""


class PendingUnchanged(Message):
    """pending.toml was left as it was: staging `change` (None: discarding) was refused for `reason`."""

    def __init__(self, change: Change | None, reason: str):
        super().__init__()
        self.change, self.reason = change, reason


@dataclass(frozen=True)
class ProposalView:
    """A proposal as the Fits tab shows it, beside the prior: its title, the mixtures as (label,
    weights, colour), the caption, what it rests on (the fit's verdict; fallback or force;
    warnings; the bootstrap spread), and the proposed mixture itself (on an unusable fit, the
    fallback)."""

    title: str
    shown: list[tuple[str, dict[str, float], str]]
    caption: str
    evidence: Evidence | None = None

    @property
    def mixture(self) -> dict[str, float]:
        return self.shown[-1][1]


class ProposalPreviewed(Message):
    """The proposal of fit `fit_id`; `saved` holds the project's settings when the proposer
    settings were saved to olmix.toml with it."""

    def __init__(self, fit_id: str, view: ProposalView, saved: Settings | None):
        super().__init__()
        self.fit_id, self.view, self.saved = fit_id, view, saved


class ProposalFailed(Message):
    """No proposal from fit `fit_id`, for `reason` (one sentence)."""

    def __init__(self, fit_id: str, reason: str):
        super().__init__()
        self.fit_id, self.reason = fit_id, reason

