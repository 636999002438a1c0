"""Long work started from the app: detached `olmix-tui` processes, and following them until they end.

Each job runs in its own session (it outlives the app) with its output appended to a log under
.olmix/logs/; the app polls them once a second and posts JobEnded when one exits. What runs on the
project, started here or not, is read from the job records (engine.executors.jobs): this module
only keeps the processes this app started, to reap them and say how they ended.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from textual.message import Message

from olmix_tui.app.messages import JobEnded, JobStarted


@dataclass
class Job:
    """A detached olmix-tui process started from the app (applying the update, training, fitting)."""

    key: str
    label: str
    process: subprocess.Popen
    log: Path


class Jobs:
    """The jobs started from this app that still run, by key (one job per key at a time)."""

    def __init__(self, post: Callable[[Message], object]):
        self._post = post
        self._running: dict[str, Job] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._running

    def __bool__(self) -> bool:
        return bool(self._running)

    def __iter__(self):
        return iter(list(self._running.values()))

    def start(self, key: str, label: str, args: list[str], log: Path) -> Job:
        """Start `olmix-tui ARGS` detached, output appended to `log`; posts JobStarted."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "olmix_tui", *args], stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        job = self._running[key] = Job(key, label, process, log)
        self._post(JobStarted(job))
        return job

    def poll(self) -> None:
        """Post JobEnded for every job that exited since the last poll."""
        for key, job in list(self._running.items()):
            code = job.process.poll()
            if code is not None:
                del self._running[key]
                self._post(JobEnded(job, code))


def last_line(path: Path) -> str:
    """The last line of a job's log: usually the error that stopped it."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no log at {path}"
    return lines[-1] if lines else f"see {path}"
