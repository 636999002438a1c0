"""The local executor: served worker processes on this machine, one per GPU, or on CPU one per core.

A worker (`python -m engine.executors.worker --serve`) is started for a slot's first batch and
then handed the slot's next batches on its stdin, so a swarm's batches, and inside
`shared_workers()` every swarm's (the main job's), pay Python's and torch's imports and the
device's set-up once per slot. A batch is finished when its runs' status files say so; a worker
that exits before that leaves its runs to `run_swarm`, which marks them failed.

Workers start in their own session, so they keep training when the caller exits (Ctrl-C, a
closed SSH session, a quitting TUI): the end of their input lets them finish the batch in hand,
then exit. `swarm run` or `swarm status` re-attach by reading the run files. Each batch's output
goes to .olmix/logs/<swarm>/<first run>.log.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engine.executors.base import Executor, Slot
from engine.executors.liveness import process_start
from engine.executors.worker import BatchRequest
from engine.runs import SwarmDir
from engine.settings import ExecutorSettings

CLOSE_WAIT_SECONDS = 10.0
"""How long closing a pool waits for its idle workers to exit (they exit as soon as their input ends)."""


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class ServedWorker:
    """A served worker process and the device it trains on; `busy` while it has a batch."""

    process: subprocess.Popen
    device: str
    busy: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class ServedBatch:
    """A batch handed to a served worker (the handle `poll` takes)."""

    worker: ServedWorker
    swarm: SwarmDir
    runs: list[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.worker.pid


class WorkerPool:
    """Served workers by device: an idle one takes the next batch for its device, else a new one starts."""

    def __init__(self) -> None:
        self.workers: list[ServedWorker] = []

    def idle(self, device: str) -> ServedWorker | None:
        """A running worker of `device` without a batch, if there is one."""
        self.workers = [w for w in self.workers if w.process.poll() is None]
        return next((w for w in self.workers if w.device == device and not w.busy), None)

    def start(self, device: str, request: BatchRequest) -> ServedWorker:
        """A new worker of `device`, its output going to `request`'s log until it reads a batch."""
        log = Path(request.log)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(request.threads)}
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "engine.executors.worker", "--serve", "--device", device],
                                       stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, text=True)
        worker = ServedWorker(process, device)
        self.workers.append(worker)
        return worker

    @staticmethod
    def send(worker: ServedWorker, request: BatchRequest) -> bool:
        """Hand `request` to `worker`; False if it has exited meanwhile."""
        try:
            worker.process.stdin.write(request.to_line())
            worker.process.stdin.flush()
        except OSError:
            return False
        worker.busy = True
        return True

    def close(self) -> None:
        """End every worker's input: idle ones exit now (waited for, briefly), busy ones after their batch."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.process.stdin.close()
        for worker in self.workers:
            if not worker.busy:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(CLOSE_WAIT_SECONDS)
        self.workers = []


_shared: WorkerPool | None = None


@contextlib.contextmanager
def shared_workers() -> Iterator[WorkerPool]:
    """Within this block, local executors share one pool: a worker trains the batches of swarm after
    swarm (the main job's), and the pool closes when the block ends. Nested blocks share the outer pool."""
    global _shared
    if _shared is not None:
        yield _shared
        return
    _shared = WorkerPool()
    try:
        yield _shared
    finally:
        pool, _shared = _shared, None
        pool.close()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, settings: ExecutorSettings, log_dir: Path):
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.pool = _shared if _shared is not None else WorkerPool()

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

    def launch(self, swarm: SwarmDir, runs: list[str], slot: Slot) -> ServedBatch:
        log = self.log_dir / swarm.id / f"{runs[0]}.log"
        request = BatchRequest(str(swarm.path), list(runs), slot.threads, str(log))
        worker = self.pool.idle(slot.device) or self.pool.start(slot.device, request)
        # The runs are the worker's from now on, before it reads the batch: a scheduler
        # re-attaching in between sees them running and does not start them a second time.
        swarm.mark_running(runs, worker.pid, started=process_start(worker.pid))
        if not self.pool.send(worker, request):  # an idle worker that exited meanwhile: a new one
            worker = self.pool.start(slot.device, request)
            swarm.mark_running(runs, worker.pid, started=process_start(worker.pid))
            self.pool.send(worker, request)  # if this one died at once, poll reports its exit
        return ServedBatch(worker, swarm, list(runs), log)

    def poll(self, handle: ServedBatch) -> int | None:
        """0 once every run of the batch is done, 1 once all are done or failed with some failed; the
        worker's exit code if it exited first; None while it trains."""
        states = {handle.swarm.status(r).state for r in handle.runs}
        if states <= {"done", "failed"}:
            handle.worker.busy = False
            return 0 if states == {"done"} else 1
        code = handle.worker.process.poll()
        if code is not None:
            return code or 1
        return None

    def close(self) -> None:
        if self.pool is not _shared:
            self.pool.close()

    def failure_detail(self, handle: ServedBatch) -> str:
        try:
            lines = handle.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "the worker exited without a result"
        return lines[-1] if lines else "the worker exited without a result"
