"""Whether the owner of a run (or of the project lock) still runs: a process, a Slurm job, a Ray driver.

A run's status.json names who trains it while it is `running` (engine/runs.py): the worker's pid,
host and process start (`process_start`: the boot and the start time in /proc, so a pid reused by
another process, after a container restart for instance, is not taken for the worker), and on a
cluster its owner, a Slurm job id (set at submission, before any worker starts) or the Ray driver
("pid@host") whose tasks train it. `owner_alive` answers for such a run; the swarm folders take it
as their judge (`SwarmDir(path, owner_alive)`), so a run whose owner is gone reads as interrupted
and is handed out again. A worker on another machine cannot be asked: it is trusted while it writes
its status.json (every few seconds while it trains) and counts as gone after STALE_SECONDS of
silence. `pid_alive` is the one process check, used for the project lock's holder too.
"""

from __future__ import annotations

import functools
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

STALE_SECONDS = 600.0
"""A running run whose worker is on another machine (which this one cannot ask) counts as
interrupted once its status.json has not been written for this long. Workers rewrite it with
their progress every few seconds; ten minutes covers a slow start (imports, eval sets) and an
evaluation, and keeps `swarm run` from waiting forever on a machine that is gone."""

_answers: dict[str, tuple[float, bool]] = {}


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """A token naming the start of process `pid` on this machine ("<boot>:<start ticks>" from
    /proc), or None where /proc cannot tell (not Linux, or no such process). Two processes that
    share a pid (one after the other, or across a container restart) never share the token."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else None


def pid_alive(pid: int, host: str | None = None, started: str | None = None) -> bool:
    """Whether process `pid` runs (on `host`, default this machine; with `started`, the process that
    `process_start` named then, not a later one with the same pid). Another machine's process cannot
    be checked and counts as alive; a zombie (killed, not yet reaped) counts as gone."""
    if host is not None and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OverflowError, ValueError):  # not a pid at all
        return False
    if started is not None:
        now = process_start(pid)
        if now is not None and now != started:
            return False
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


def silent_seconds(status: RunStatus) -> float:
    """Seconds since a run's status.json was last written (by the clock of the machine reading it)."""
    return max(0.0, time.time() - (status.updated or 0.0))


def remote_owner(status: RunStatus) -> str:
    """Who trains a running run from a machine this one cannot ask ("worker 123 on node7"), or ""
    when its owner can be checked from here (a process here, a Slurm job, a Ray driver here)."""
    here = socket.gethostname()
    if status.slurm_job:
        return ""
    if status.ray_driver:
        return f"Ray driver {status.ray_driver}" if status.ray_driver.partition("@")[2] not in ("", here) else ""
    if status.pid and status.host not in (None, here):
        return f"worker {status.pid} on {status.host}"
    return ""


def owner_alive(status: RunStatus) -> bool:
    """Whether whoever trains a `running` run still does: its worker if that runs on this machine
    (the same process, not a reused pid), else its Slurm job, else its Ray driver if that runs here;
    an owner on another machine while it keeps writing the run's status (STALE_SECONDS)."""
    if remote_owner(status):
        return silent_seconds(status) < STALE_SECONDS
    if status.pid and status.host in (None, socket.gethostname()):
        return pid_alive(status.pid, started=status.started)
    if status.slurm_job:
        return slurm_job_alive(status.slurm_job)
    if status.ray_driver:
        driver_pid, _, driver_host = status.ray_driver.partition("@")
        return driver_pid.isdigit() and pid_alive(int(driver_pid), driver_host)
    return False


def owner_description(status: RunStatus) -> str:
    """Who trains a running run, for a message that says what is waited for: "worker 123 on node7,
    which this machine cannot check (it counts as gone after 600 s without writing the run's status)"."""
    remote = remote_owner(status)
    if remote:
        return (f"{remote}, which this machine cannot check (it counts as gone after {STALE_SECONDS:.0f} s without "
                "writing the run's status)")
    return status.where or "an owner this machine cannot name"
