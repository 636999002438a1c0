"""The Ray executor: one Ray task per batch of runs, on a Ray instance of this machine or a Ray cluster.

Each task starts the same worker as the local executor (`python -m engine.executors.worker`) as a
process on the node Ray picks, logging to .olmix/logs/<swarm>/ray/<first run>.log, so the project
folder and the Python environment must be visible on every node. Ray stops a driver's tasks when
the driver exits, so the `swarm run` that submitted them owns the runs: their status files name it
(`ray_driver = "pid@host"`), and once it is gone they count as interrupted and the next
`swarm run` trains them again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError
from engine.executors.base import Executor, Slot
from engine.runs import SwarmDir
from engine.settings import ExecutorSettings


def run_worker(argv: list[str], log: str, driver: str, threads: int) -> int:
    """The body of a Ray task: the worker as a process on the task's node; returns its exit code."""
    env = {**os.environ, "OLMIX_RAY_DRIVER": driver, "OMP_NUM_THREADS": str(threads)}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.call([sys.executable, "-m", "engine.executors.worker", *argv], stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise OSError when a "host:port" or "ray://host:port" address does not accept connections."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        socket.create_connection((host, int(port)), timeout=timeout).close()


@dataclass
class RayTask:
    """A launched task: its object ref, its worker's log, and why it failed (if it did)."""

    ref: object
    log: Path
    error: str = ""


class RayExecutor(Executor):
    """Batches of runs as Ray tasks (one GPU, or ray_cpus_per_task cores, each)."""

    name = "ray"

    def __init__(self, settings: ExecutorSettings, log_dir: Path):
        try:
            import ray
        except ImportError:
            raise ConfigError("[executor] kind = \"ray\" needs Ray: pip install 'olmix-tui[ray]'.") from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a tool that may run offline
        address = settings.ray_address
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            _check_reachable(address)  # ray.init retries an unreachable address for minutes
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                     logging_level=logging.ERROR)
        except (ConnectionError, OSError, RuntimeError, ValueError) as err:
            raise ConfigError(
                f"no Ray cluster answers at ray_address = {address!r} ({str(err).splitlines()[0]}); "
                "start one (`ray start --head`) or set ray_address = \"\" in [executor] to use this machine."
            ) from None
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)  # ray.init sets its own; the caller's unwinds `swarm run` cleanly
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.driver = f"{os.getpid()}@{socket.gethostname()}"
        self.remote = ray.remote(run_worker)

    def slots(self) -> list[Slot]:
        """One per GPU of the cluster (with ray_gpus_per_task = 1), else per ray_cpus_per_task cores;
        ray_max_tasks, when set, is the number of tasks at once (Ray queues what does not fit)."""
        import ray

        s = self.settings
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if s.ray_gpus_per_task else 0
        n = gpus or max(1, int(resources.get("CPU", 1)) // s.ray_cpus_per_task)
        return [Slot("cuda" if gpus else "cpu", s.ray_cpus_per_task) for _ in range(s.ray_max_tasks or n)]

    def launch(self, swarm: SwarmDir, runs: list[str], slot: Slot) -> RayTask:
        log = self.log_dir / swarm.id / "ray" / f"{runs[0]}.log"
        argv = [str(swarm.path), "--device", slot.device, "--threads", str(slot.threads), *runs]
        ref = self.remote.options(num_cpus=slot.threads, num_gpus=1 if slot.device == "cuda" else 0,
                                  name=f"olmix-{swarm.id}").remote(argv, str(log), self.driver, slot.threads)
        swarm.mark_running(runs, None, ray_driver=self.driver)
        return RayTask(ref, log)

    def poll(self, task: RayTask) -> int | None:
        import ray

        ready, _ = ray.wait([task.ref], timeout=0)
        if not ready:
            return None
        try:
            return int(ray.get(task.ref))
        except Exception as err:  # the task died (its worker or node lost): run_swarm marks its runs failed
            lines = str(err).strip().splitlines()
            task.error = f"the Ray task failed: {lines[0] if lines else type(err).__name__}"
            return 1

    def failure_detail(self, task: RayTask) -> str:
        if task.error:
            return f"{task.error} (log: {task.log})"
        try:
            lines = task.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return f"{lines[-1] if lines else 'the worker exited without a result'} (log: {task.log})"
