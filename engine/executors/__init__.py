"""Executors run proxy training somewhere: this machine's processes (local) or Slurm jobs (slurm).

Every executor starts the same worker (`engine.executors.worker`) on a batch of runs; the worker
writes run files, and `engine.executors.base.run_swarm` schedules batches onto the executor's
slots and turns the run files into progress events.
"""

from __future__ import annotations

from pathlib import Path

from engine.executors.base import Executor, ExecutorSettings


def make_executor(settings: ExecutorSettings, log_dir: Path) -> Executor:
    """The executor [executor] kind names; workers' logs go under `log_dir`."""
    if settings.kind == "slurm":
        from engine.executors.slurm import SlurmExecutor

        return SlurmExecutor(settings, log_dir)
    from engine.executors.local import LocalExecutor

    return LocalExecutor(settings, log_dir)
