"""Job records: what runs on a project, each written by the job itself under .olmix/jobs/.

Every long olmix-tui command (applying an update, training a swarm, fitting, planning) and every
training worker writes a record when it starts (what it does, pid and host, its Slurm job or Ray
driver, its log) and rewrites it when it ends (exit code). So whoever opens the project later (the
app reopened mid-job, another terminal, `olmix-tui stop`) finds the jobs from the project's files,
not from a process's memory. A record whose process is gone without a word (SIGKILL, a lost node)
reads as `gone`. A record is its job's own file: it is written without the project lock, like a
run's status.json, and the oldest ended records are pruned when a new job starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from engine import atomic
from engine.executors.liveness import pid_alive, process_start, slurm_job_alive

JOBS_DIR = Path(".olmix") / "jobs"
KEEP_ENDED = 20
"""Ended records kept for the Jobs panel (their logs stay under .olmix/logs/)."""
STOPPED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM)
"""Exit codes of a process that was stopped (Ctrl-C, SIGTERM from `olmix-tui stop` or scancel), not one that failed."""


@dataclass(frozen=True)
class JobRecord:
    """A job as its record says: kind (update | train | fit | plan | tokenize | worker), what it does,
    its process, when it started (whole epoch seconds), its command line, where its output goes ("" for a
    terminal), the swarm it works on now and (a worker) its runs, its Slurm job or Ray driver; once
    ended, when and with which exit code."""

    kind: str
    label: str
    pid: int
    host: str
    started: int
    command: str = ""
    log: str = ""
    swarm: str = ""
    runs: list[str] = field(default_factory=list)
    slurm_job: str = ""
    ray_driver: str = ""
    process: str | None = None  # liveness.process_start of pid: a later process with the same pid is not this job
    ended: int | None = None
    exit_code: int | None = None

    @property
    def key(self) -> str:
        return f"{self.host}-{self.pid}"

    @property
    def alive(self) -> bool:
        """Whether it still runs: its process (this machine, or elsewhere while its Slurm job is listed)."""
        if self.ended is not None:
            return False
        if self.host == socket.gethostname() or not self.slurm_job:
            return pid_alive(self.pid, self.host, self.process)
        return slurm_job_alive(self.slurm_job)

    @property
    def state(self) -> str:
        """running | done | stopped | failed | gone (its process ended without rewriting the record)."""
        if self.ended is None:
            return "running" if self.alive else "gone"
        if self.exit_code == 0:
            return "done"
        return "stopped" if self.exit_code in STOPPED_CODES else "failed"

    @property
    def where(self) -> str:
        """The process, and its Slurm job or Ray driver: "pid 123 on node3, Slurm job 45"."""
        owner = f", Slurm job {self.slurm_job}" if self.slurm_job else f", Ray driver {self.ray_driver}" if self.ray_driver else ""
        return f"pid {self.pid} on {self.host}{owner}"


def jobs_dir(root: Path) -> Path:
    return Path(root) / JOBS_DIR


def read_jobs(root: Path) -> list[JobRecord]:
    """Every job record of the project, oldest first; a torn or foreign file is skipped."""
    folder = jobs_dir(root)
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            records.append(JobRecord(**{f.name: data[f.name] for f in dataclasses.fields(JobRecord) if f.name in data}))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(records, key=lambda r: r.started)


class RunningJob:
    """This process's record while it runs: `note` rewrites what it does."""

    def __init__(self, root: Path, record: JobRecord):
        self.root, self.record, self.recorded = Path(root), record, True
        self._write()

    def _write(self) -> None:
        """Write the record; where the project cannot be written (read-only, full), the job goes on
        unrecorded: the record only informs the app and `olmix-tui stop`."""
        if not self.recorded:
            return
        try:
            atomic.write_json(jobs_dir(self.root) / f"{self.record.key}.json", dataclasses.asdict(self.record))
        except OSError:
            self.recorded = False

    def note(self, **fields) -> None:
        """Set fields of the record (e.g. swarm= when an update starts training a swarm)."""
        self.record = dataclasses.replace(self.record, **fields)
        self._write()

    def end(self, exit_code: int) -> None:
        self.note(ended=int(time.time()), exit_code=exit_code)


_current: RunningJob | None = None


@contextmanager
def job(root: Path, kind: str, label: str, swarm: str = "", runs: list[str] = ()) -> Iterator[RunningJob]:
    """Record this process as a job of the project at `root` while the block runs; the record ends
    with exit code 0, 130 when interrupted or stopped, or the SystemExit code, else 1."""
    global _current
    record = JobRecord(kind, label, os.getpid(), socket.gethostname(), int(time.time()), " ".join(sys.argv), _own_log(),
                       swarm, list(runs), os.environ.get("SLURM_JOB_ID", ""), os.environ.get("OLMIX_RAY_DRIVER", ""),
                       process_start(os.getpid()))
    _prune(root)
    running = RunningJob(root, record)
    outer, _current = _current, running
    code = 1
    try:
        yield running
        code = 0
    except KeyboardInterrupt:
        code = 130
        raise
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        raise
    finally:
        _current = outer
        running.end(code)


def note(**fields) -> None:
    """Rewrite this process's job record, if it has one (a step of the pipeline says what it does now)."""
    if _current is not None:
        _current.note(**fields)


def _own_log() -> str:
    """Where this process's output goes when that is a file (started by the app, or by an executor), else ""."""
    try:
        target = os.readlink("/proc/self/fd/1")
    except OSError:
        return ""
    return target if os.path.isfile(target) else ""


def _prune(root: Path) -> None:
    """Remove all but the KEEP_ENDED newest records of jobs that no longer run."""
    over = [record for record in read_jobs(root) if not record.alive]
    for record in over[:-KEEP_ENDED]:
        try:
            (jobs_dir(root) / f"{record.key}.json").unlink(missing_ok=True)
        except OSError:  # a read-only project: nothing to prune
            return
