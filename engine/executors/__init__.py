"""Executors run proxy training somewhere: this machine's processes (local), Slurm jobs (slurm) or
Ray tasks (ray).

Every executor starts the same worker (`engine.executors.worker`) on a batch of runs; the worker
writes run files, and `engine.executors.base.run_swarm` schedules batches onto the executor's
slots and turns the run files into progress events.
"""

from __future__ import annotations

from pathlib import Path

from engine.executors.base import Executor
from engine.settings import ExecutorSettings


def make_executor(settings: ExecutorSettings, log_dir: Path) -> Executor:
    """The executor [executor] kind names; workers' logs go under `log_dir`."""
    if settings.kind == "slurm":
        from engine.executors.slurm import SlurmExecutor

        return SlurmExecutor(settings, log_dir)
    if settings.kind == "ray":
        from engine.executors.ray import RayExecutor

        return RayExecutor(settings, log_dir)
    from engine.executors.local import LocalExecutor

    return LocalExecutor(settings, log_dir)


def trains_on_gpu(settings: ExecutorSettings) -> bool:
    """Whether the workers [executor] starts train on GPUs: on a Slurm cluster or a remote Ray
    cluster when its jobs or tasks ask for one; on this machine (local workers, a Ray instance
    started here) when a CUDA GPU is visible and device is not "cpu"."""
    if settings.kind == "slurm":
        return settings.slurm_gpus_per_job > 0
    if settings.kind == "ray":
        if not settings.ray_gpus_per_task or settings.ray_address:
            return settings.ray_gpus_per_task > 0
    elif settings.device == "cpu":
        return False
    from engine.executors.local import visible_gpus

    return visible_gpus() > 0
