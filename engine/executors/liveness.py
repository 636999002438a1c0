"""Whether the owner of a run (or of the project lock) still runs: a process, a Slurm job, a Ray driver.

A run's status.json names who trains it while it is `running` (engine/runs.py): the worker's pid
and host, and on a cluster its owner, a Slurm job id (set at submission, before any worker starts)
or the Ray driver ("pid@host") whose tasks train it. `owner_alive` answers for such a run; the
swarm folders take it as their judge (`SwarmDir(path, owner_alive)`), so a run whose owner is gone
reads as interrupted and is handed out again. `pid_alive` is the one process check, used by the
project lock too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from engine.runs import RunStatus

ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                 "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
"""Job states in which a job may still train its runs (squeue's %T)."""

QUERY_SECONDS = 15.0
"""How long one squeue answer about a job is reused: status files are read every second by the
app and every poll by `swarm run`, and a login node's slurmctld should not get a query for each."""

_answers: dict[str, tuple[float, bool]] = {}


def pid_alive(pid: int, host: str | None = None) -> bool:
    """Whether process `pid` runs (on `host`, default this machine). Another machine's process
    cannot be checked and counts as alive; a zombie (killed, not yet reaped) counts as gone."""
    if host is not None and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed worker whose parent is gone stays a zombie until init reaps it, which can take a while."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or the process just went away
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"])


def slurm_job_alive(job_id: str) -> bool:
    """Whether Slurm still lists job `job_id` as queued or running (answers cached QUERY_SECONDS).

    Without squeue here (a laptop reading a cluster's project), or when slurmctld does not answer,
    the run files are all there is to go on: the job counts as alive. Only Slurm's own "Invalid job
    id" (it has forgotten a finished job) or an inactive state counts as gone.
    """
    now = time.monotonic()
    cached = _answers.get(job_id)
    if cached and now - cached[0] < QUERY_SECONDS:
        return cached[1]
    squeue = shutil.which("squeue")
    if squeue is None:
        return True
    try:
        out = subprocess.run([squeue, "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if out.returncode == 0:
        alive = bool(ACTIVE_STATES & set(out.stdout.split()))
    elif "invalid job id" in out.stderr.lower():
        alive = False
    else:
        return True
    _answers[job_id] = (now, alive)
    return alive


def forget_slurm_job(job_id: str) -> None:
    """Drop the cached answer about a job (just cancelled: ask Slurm again)."""
    _answers.pop(job_id, None)


def owner_alive(status: RunStatus) -> bool:
    """Whether whoever trains a `running` run still does: its worker if that runs on this machine,
    else its Slurm job, else its Ray driver if that runs here; a worker on another machine with no
    owner to ask is trusted."""
    if status.pid and status.host == socket.gethostname():
        return pid_alive(status.pid)
    if status.slurm_job:
        return slurm_job_alive(status.slurm_job)
    if status.ray_driver:
        driver_pid, _, driver_host = status.ray_driver.partition("@")
        return pid_alive(int(driver_pid), driver_host)
    return bool(status.pid)
