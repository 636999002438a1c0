"""Reading the project's files for the app, off the UI thread: one Snapshot at a time.

The reader runs in a worker thread once a second; what it reads depends on the Selection (the
highlighted swarm, run and history entry), which the UI thread owns and hands it by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine import pipeline
from engine.compare import Comparison
from engine.errors import OlmixError
from engine.history import HistoryEntry, read_history
from engine.project import Project
from engine.regression.store import FitSummary, list_fits
from engine.regression.verdict import FitVerdict
from engine.runs import RunStatus, SwarmDir
from engine.status import ProjectStatus, project_status


@dataclass(frozen=True)
class Selection:
    """What is highlighted across the tabs: the reader reads the curve of `run` in `swarm` and the
    comparison of `entry`; the Fits tab fits `swarm`."""

    domain: str | None = None
    swarm: str | None = None
    run: str | None = None
    entry: str | None = None
    fit: str | None = None


@dataclass
class Snapshot:
    """The project's files at one moment: its status (engine.status: domains, staged update), every
    swarm with its runs' statuses, the most recently planned swarm's id (verification runs aside),
    the selected run's curve, the history, the selected entry's comparison (engine.compare's record,
    or why there is none), the stored fits with their verdicts on the project's objective (None for a
    fit by an earlier version), and the error that stopped reading, if any."""

    selection: Selection = field(default_factory=Selection)
    status: ProjectStatus | None = None
    swarms: list[tuple[SwarmDir, list[RunStatus]]] = field(default_factory=list)
    newest: str | None = None
    curve: list[dict] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    comparison: Comparison | str = ""
    fits: list[FitSummary] = field(default_factory=list)
    verdicts: dict[str, FitVerdict | None] = field(default_factory=dict)
    error: str = ""

    def swarm(self, swarm_id: str | None) -> tuple[SwarmDir, list[RunStatus]] | None:
        return next((item for item in self.swarms if item[0].id == swarm_id), None)

    def fit(self, fit_id: str | None) -> FitSummary | None:
        return next((f for f in self.fits if f.fit_id == fit_id), None)


class SnapshotReader:
    """Reads Snapshots of one project; engine.status.project_status is recomputed only when the
    project's definition files change (it hashes staged sources, too slow to repeat every second on
    a large corpus). Used by one worker thread at a time."""

    WATCHED = ("olmix.toml", "domains.toml", "pending.toml", "history", ".olmix/tokens")

    def __init__(self, project: Project):
        self.project = project
        self._key: tuple | None = None
        self._status: ProjectStatus | None = None

    def _project_status(self) -> ProjectStatus:
        key = tuple(_mtime(self.project.root / name) for name in self.WATCHED)
        if key != self._key:
            self._status, self._key = project_status(Project.load(self.project.root)), key
        return self._status

    def read(self, selection: Selection) -> Snapshot:
        """The project's files now; a damaged file becomes the snapshot's `error`."""
        project = self.project
        try:
            status = self._project_status()
            swarms = [(swarm, swarm.statuses()) for swarm in pipeline.project_swarms(project)]
            planned = [s for s, _ in swarms if s.spec.purpose != "verify"] or [s for s, _ in swarms]
            newest = max(planned, key=lambda s: (s.path / "swarm.toml").stat().st_mtime_ns).id if planned else None
            chosen = next((s for s, _ in swarms if s.id == selection.swarm), None)
            curve = chosen.curve(selection.run) if chosen is not None and selection.run in chosen.run_ids else []
            history = read_history(project)
            fits = list_fits(project.fits_dir)
            verdicts = {f.fit_id: f.verdict_on(project.settings.objective) for f in fits}
        except (OlmixError, OSError, ValueError, KeyError) as err:
            return Snapshot(selection, error=str(err))
        comparison: Comparison | str = ""
        if history:
            try:
                comparison = pipeline.diff_entries(project, selection.entry or history[-1].label, None)
            except OlmixError as err:
                comparison = str(err)
        return Snapshot(selection, status, swarms, newest, curve, history, comparison, fits, verdicts)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
