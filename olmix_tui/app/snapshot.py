"""Reading the project's files for the app, off the UI thread: one Snapshot at a time.

The reader runs in a worker thread once a second; what it reads depends on the Selection (the
highlighted swarm, run and history entry), which the UI thread owns and hands it by value. Jobs are
read from their records under .olmix/jobs/ and the runs' owners, so a job started elsewhere (or by
an earlier session of the app) shows like one started here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine import pipeline
from engine.compare import Comparison
from engine.errors import OlmixError
from engine.executors.jobs import JobRecord, read_jobs
from engine.executors.stop import Owner, run_owners
from engine.history import HistoryEntry, read_history
from engine.project import LockHolder, Project
from engine.regression.store import FitSummary, list_fits
from engine.regression.verdict import FitVerdict
from engine.runs import RunStatus, SwarmDir
from engine.status import ProjectStatus, project_status


@dataclass(frozen=True)
class Selection:
    """What is highlighted across the tabs: the reader reads the curve of `run` in `swarm` and the
    comparison of `entry` (with `compare_with` when an entry is pinned to compare with, else with its
    full recomputation or the entry before it); the Fits tab fits `swarm`; the Jobs tab shows the log
    of `job` (a JobRecord's key)."""

    domain: str | None = None
    swarm: str | None = None
    run: str | None = None
    entry: str | None = None
    compare_with: str | None = None
    fit: str | None = None
    job: str | None = None


@dataclass
class Snapshot:
    """The project's files at one moment: its status (engine.status: domains, staged update), every
    swarm with its runs' statuses in the history's order (`used_by` names the entry that used each),
    the most recently planned swarm's id (verification runs aside), the selected run's curve, the
    history, the selected entry's comparison (engine.compare's record, or why there is none), the
    stored fits with their verdicts on the project's objective (None for a fit by an earlier
    version), the jobs (their records, and the owners of running runs that no record covers), who
    holds the project lock, and the error that stopped reading, if any."""

    selection: Selection = field(default_factory=Selection)
    status: ProjectStatus | None = None
    swarms: list[tuple[SwarmDir, list[RunStatus]]] = field(default_factory=list)
    newest: str | None = None
    curve: list[dict] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    comparison: Comparison | str = ""
    fits: list[FitSummary] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    owners: list[Owner] = field(default_factory=list)
    lock: LockHolder | None = None
    used_by: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, FitVerdict | None] = field(default_factory=dict)
    error: str = ""

    def swarm(self, swarm_id: str | None) -> tuple[SwarmDir, list[RunStatus]] | None:
        return next((item for item in self.swarms if item[0].id == swarm_id), None)

    def fit(self, fit_id: str | None) -> FitSummary | None:
        return next((f for f in self.fits if f.fit_id == fit_id), None)

    def job(self, key: str | None) -> JobRecord | None:
        return next((j for j in self.jobs if j.key == key), None)

    @property
    def running(self) -> list[JobRecord]:
        """The jobs that run now (workers aside: they belong to a training job)."""
        return [j for j in self.jobs if j.state == "running" and j.kind != "worker"]

    def busy(self) -> str:
        """Why an action that takes the project lock must wait ("" when it need not): who holds it."""
        if self.lock is None:
            return ""
        holder = next((j for j in self.jobs if j.pid == self.lock.pid and j.host == self.lock.host and j.state == "running"), None)
        what = holder.label if holder else self.lock.command
        return f"the project is busy: {what} (pid {self.lock.pid}) holds its lock"


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
            history = read_history(project)
            used_by = swarm_uses(history)
            swarms = sorted(((swarm, swarm.statuses()) for swarm in pipeline.project_swarms(project)),
                            key=lambda item: _history_order(item[0], list(used_by)))
            planned = [s for s, _ in swarms if s.spec.purpose != "verify"] or [s for s, _ in swarms]
            newest = max(planned, key=_planned_at).id if planned else None
            chosen = next((s for s, _ in swarms if s.id == selection.swarm), None)
            curve = chosen.curve(selection.run) if chosen is not None and selection.run in chosen.run_ids else []
            fits = list_fits(project.fits_dir)
            jobs = read_jobs(project.root)
            lock = project.lock_holder()
            verdicts = {f.fit_id: f.verdict_on(project.settings.objective) for f in fits}
        except (OlmixError, OSError, ValueError, KeyError) as err:
            return Snapshot(selection, error=str(err))
        comparison: Comparison | str = ""
        if history:
            try:
                entry = selection.entry or history[-1].label
                pinned = selection.compare_with if selection.compare_with != entry else None
                comparison = pipeline.diff_entries(project, pinned or entry, entry if pinned else None)
            except OlmixError as err:
                comparison = str(err)
        owners = untracked_owners(run_owners((s.id, statuses) for s, statuses in swarms), jobs)
        return Snapshot(selection, status, swarms, newest, curve, history, comparison, fits, jobs, owners, lock, used_by,
                        verdicts)


def swarm_uses(history: list[HistoryEntry]) -> dict[str, str]:
    """Swarm id -> the history entry that used it, in the history's order: the update's swarm, its
    full recomputation's, its verification runs."""
    uses: dict[str, str] = {}
    for entry in history:
        content = entry.content
        compared = content.compare
        for swarm, role in ((content.swarm, ""), (compared.full.swarm if compared else "", " full"),
                            (compared.verification.swarm if compared else "", " verify")):
            if swarm and swarm not in uses:
                uses[swarm] = entry.label + role
    return uses


def _history_order(swarm: SwarmDir, used: list[str]) -> tuple:
    """The history's swarms first, in its order; then the others as they were planned."""
    return (used.index(swarm.id), 0) if swarm.id in used else (len(used), _planned_at(swarm))


def _planned_at(swarm: SwarmDir) -> int:
    return (swarm.path / "swarm.toml").stat().st_mtime_ns


def untracked_owners(owners: list[Owner], jobs: list[JobRecord]) -> list[Owner]:
    """Owners of running runs that no live job record stands for (a queued Slurm job, a worker of an
    older olmix-tui): the Jobs tab lists them too."""
    live = [j for j in jobs if j.state == "running"]
    pids = {(str(j.pid), j.host) for j in live}
    slurm = {j.slurm_job for j in live if j.slurm_job}
    drivers = {f"{j.pid}@{j.host}" for j in live}
    return [o for o in owners if not ((o.kind == "worker" and (o.ident, o.host) in pids) or (o.kind == "slurm" and o.ident in slurm)
                                      or (o.kind == "ray" and o.ident in drivers))]


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
