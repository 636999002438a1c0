"""Stopping a project's jobs (`olmix-tui stop DIR [--swarm ID]`, the app's stop key), and saying who
trains a swarm's running runs (Ctrl-C on `swarm run` names them).

The jobs that hand runs out go first (an update, `swarm run`: left running, they would start the
runs again or mark them failed), then whoever trains the runs: local workers (their process group:
each leads its own session), Slurm jobs (scancel; a local submitit job through its worker's
process), Ray tasks (their driver is a `swarm run`, stopped first; a worker left on this machine is
signalled). SIGTERM first, SIGKILL for what still runs after `grace` seconds. A stopped run reads as
interrupted (its owner is gone) and the next `swarm run` trains it again; finished runs are not
touched, and a worker finishes its runs together, so nothing finished is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from engine.executors import liveness
from engine.executors.jobs import JobRecord, read_jobs
from engine.executors.liveness import owner_alive, pid_alive
from engine.runs import RunStatus, list_swarms


@dataclass(frozen=True)
class Owner:
    """Who trains running runs of a swarm: a worker process (kind "worker", ident its pid), a Slurm
    job ("slurm", its id; queued or on a node) or a Ray driver ("ray", "pid@host")."""

    kind: str
    ident: str
    host: str
    swarm: str
    runs: tuple[str, ...]

    def describe(self) -> str:
        what = {"worker": f"worker {self.ident} on {self.host}", "slurm": f"Slurm job {self.ident}",
                "ray": f"Ray driver {self.ident}"}[self.kind]
        return f"{what} ({len(self.runs)} run(s) of swarm {self.swarm})"


def run_owners(swarms: Iterable[tuple[str, list[RunStatus]]]) -> list[Owner]:
    """The owners of the running runs of swarms (id, statuses read through a judge), one per worker,
    Slurm job or Ray driver: a worker of this machine stands for its runs (it can be signalled here),
    else its Slurm job or Ray driver."""
    here = socket.gethostname()
    owned: dict[tuple[str, str, str, str], list[str]] = {}
    for swarm_id, statuses in swarms:
        for s in statuses:
            if s.state != "running":
                continue
            if s.pid and s.host == here:
                key = ("worker", str(s.pid), here)
            elif s.slurm_job:
                key = ("slurm", s.slurm_job, "")
            elif s.ray_driver:
                key = ("ray", s.ray_driver, s.ray_driver.partition("@")[2])
            else:
                key = ("worker", str(s.pid), s.host or "")
            owned.setdefault((*key, swarm_id), []).append(s.run)
    return [Owner(kind, ident, host, swarm, tuple(runs)) for (kind, ident, host, swarm), runs in owned.items()]


@dataclass
class StopReport:
    """What `stop` did: what it signalled or cancelled, what runs elsewhere and could not be stopped
    from here, and the runs it stopped (now interrupted) and left finished."""

    stopped: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    done: int = 0

    def describe(self) -> str:
        if not self.stopped and not self.unreachable:
            return "nothing to stop: no job runs on this project."
        lines = [f"stopped {item}" for item in self.stopped]
        lines += [f"could not stop {item} from this machine" for item in self.unreachable]
        if self.interrupted or self.done:
            lines.append(f"{len(self.interrupted)} run(s) interrupted (the next `swarm run` trains them again); "
                         f"{self.done} finished run(s) kept.")
        return "\n".join(lines)


def stop(root: Path, swarm_id: str | None = None, grace: float = 20.0) -> StopReport:
    """Stop the jobs of the project at `root` (or those of swarm `swarm_id`) and the workers of its swarms."""
    root = Path(root)
    here, report = socket.gethostname(), StopReport()
    swarms = [s for s in list_swarms(root / "swarms", owner_alive) if swarm_id in (None, s.id)]
    records = [r for r in read_jobs(root) if r.alive and swarm_id in (None, r.swarm)]
    schedulers = [r for r in records if r.kind != "worker"]
    _stop_processes([r.pid for r in schedulers if r.host == here], grace, lead_groups=False)
    report.stopped += [f"{r.label} ({r.where})" for r in schedulers if r.host == here]
    report.unreachable += [f"{r.label} ({r.where})" for r in schedulers if r.host != here]

    owners = run_owners((s.id, s.statuses()) for s in swarms)
    running = [run for o in owners for run in o.runs]
    workers = {int(o.ident) for o in owners if o.kind == "worker" and o.host == here}
    workers |= {r.pid for r in records if r.kind == "worker" and r.host == here}
    drivers = {int(o.ident.partition("@")[0]) for o in owners if o.kind == "ray" and o.host == here}
    cancelled = _scancel(sorted({o.ident for o in owners if o.kind == "slurm"}))
    _stop_processes(sorted(workers | drivers), grace, lead_groups=True)
    for o in owners:
        reachable = o.host == here or (o.kind == "slurm" and o.ident in cancelled)
        (report.stopped if reachable else report.unreachable).append(o.describe())
    for swarm in swarms:
        statuses = {s.run: s for s in swarm.statuses()}
        report.interrupted += [r for r in running if r in statuses and statuses[r].state == "interrupted"]
        report.done += sum(s.state == "done" for s in statuses.values())
    return report


def stop_job(root: Path, record: JobRecord, grace: float = 20.0) -> StopReport:
    """Stop one job: one that works on a swarm together with that swarm's workers (`stop`), another
    (a fit, tokenizing) alone."""
    if record.swarm:
        return stop(root, record.swarm, grace)
    report = StopReport()
    if record.host == socket.gethostname():
        _stop_processes([record.pid], grace, lead_groups=False)
        report.stopped.append(f"{record.label} ({record.where})")
    else:
        report.unreachable.append(f"{record.label} ({record.where})")
    return report


def _scancel(job_ids: list[str]) -> set[str]:
    """Cancel Slurm jobs; returns the ids cancelled (none without scancel here)."""
    scancel = shutil.which("scancel")
    if not job_ids or scancel is None:
        return set()
    subprocess.run([scancel, *job_ids], capture_output=True, timeout=60)
    for job_id in job_ids:
        liveness.forget_slurm_job(job_id)  # read its runs afresh: interrupted once Slurm lets go of it
    return set(job_ids)


def _stop_processes(pids: list[int], grace: float, lead_groups: bool) -> None:
    """SIGTERM each process (with `lead_groups`, the whole group of one that leads its own), wait up
    to `grace` seconds for them to go, then SIGKILL what is left."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        _signal(pid, signal.SIGTERM, lead_groups)
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL, lead_groups)
    deadline = time.monotonic() + grace
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)


def _signal(pid: int, sig: int, lead_groups: bool) -> None:
    try:
        if lead_groups and os.getpgid(pid) == pid != os.getpgid(0):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
