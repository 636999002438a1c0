"""The local executor: worker processes on this machine, one per GPU, or on CPU one per core.

Workers start in their own session, so they keep training when the caller exits (Ctrl-C, a
closed SSH session, a quitting TUI); `swarm run` or `swarm status` re-attach by reading the run
files. Each worker's output goes to .olmix/logs/<swarm>/<first run>.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.executors.base import Executor, Slot
from engine.executors.liveness import process_start
from engine.runs import SwarmDir
from engine.settings import ExecutorSettings


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, settings: ExecutorSettings, log_dir: Path):
        self.settings = settings
        self.log_dir = Path(log_dir)

    def slots(self) -> list[Slot]:
        """One slot per GPU; on CPU, by default one single-threaded worker per core.

        Tiny proxies keep a core busier in a process of their own than split across threads
        (docs/benchmarks.md, "Figures behind constants in the code"); run_swarm pools the
        threads of idle CPU slots.
        """
        from engine.training.device import cpu_threads

        s = self.settings
        cores = cpu_threads()
        gpus = visible_gpus() if s.device in ("auto", "cuda") else 0
        if gpus:
            return [Slot(f"cuda:{i}", max(1, cores // gpus)) for i in range(gpus)]
        workers = s.workers or cores
        threads = s.threads or max(1, cores // workers)
        return [Slot("cpu", threads) for _ in range(workers)]

    def launch(self, swarm: SwarmDir, runs: list[str], slot: Slot) -> subprocess.Popen:
        log = self.log_dir / swarm.id / f"{runs[0]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(slot.threads)}
        cmd = [sys.executable, "-m", "engine.executors.worker", str(swarm.path), "--device", slot.device,
               "--threads", str(slot.threads), *runs]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        # The runs are the worker's from now on, not only once its imports are done: a scheduler
        # re-attaching in between sees them running and does not start them a second time.
        swarm.mark_running(runs, proc.pid, started=process_start(proc.pid))
        proc.log_path = log  # type: ignore[attr-defined]
        return proc

    def poll(self, handle: subprocess.Popen) -> int | None:
        return handle.poll()

    def failure_detail(self, handle: subprocess.Popen) -> str:
        try:
            lines = Path(handle.log_path).read_text(errors="replace").strip().splitlines()  # type: ignore[attr-defined]
        except OSError:
            return "the worker exited without a result"
        return lines[-1] if lines else "the worker exited without a result"
