"""The executor interface and the scheduling loop every executor shares.

An executor knows its slots (a GPU, or a share of the CPU cores) and how to launch one worker on
a slot and poll it. `run_swarm` splits the runs into batches (proxies trained together), keeps
every slot busy, and reads the run files for progress, so the loop is the same whether workers
are local processes or cluster jobs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engine.events import EventSink, Message, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.runs import SwarmDir


@dataclass(frozen=True)
class ExecutorSettings:
    """[executor] in olmix.toml.

    kind: "local" (worker processes on this machine), "slurm" (one Slurm job per batch of runs,
        submitted through submitit) or "ray" (one Ray task per batch). On a cluster the project
        folder and the Python environment must be visible on the nodes (a shared filesystem).
    device: "auto" (every GPU, else the CPU), "cpu", or "cuda".
    workers: CPU workers (0 = one per core, each single-threaded: tiny proxies use a core best
        in a process of their own).
    threads: torch threads per CPU worker (0 = the machine's cores / workers).
    max_batch: at most this many proxies trained together by one worker (one batched computation);
        a swarm's runs are split into at least one batch per slot, so every GPU or worker has work.
    poll_seconds: how often progress is read from the run files.
    slurm_*: used when kind = "slurm". slurm_max_jobs: jobs at once (the slots); slurm_gpus_per_job:
        1 (the job's proxies train on its GPU) or 0 (CPU jobs); slurm_cpus_per_job: cores (and torch
        threads) per job; slurm_mem_gb: memory per job (0 = the partition's default);
        slurm_timeout_min: the jobs' time limit; slurm_partition, slurm_account: as for sbatch
        ("" = the cluster's default); slurm_setup: shell lines run before the worker (e.g.
        "source ~/venvs/olmix/bin/activate"); slurm_extra: more sbatch options ({"qos" = "low"});
        slurm_cluster: "slurm" (sbatch), or "local" to run the same submitit jobs as processes on
        this machine (a check of the setup without a cluster).
    ray_*: used when kind = "ray". ray_address: "" (a Ray instance on this machine, for the run),
        "auto" (the cluster this machine belongs to) or "ray://head:10001"; ray_gpus_per_task: 1 or
        0 (CPU tasks); ray_cpus_per_task: cores (and torch threads) per task; ray_max_tasks: tasks at
        once (0 = one per GPU, or per ray_cpus_per_task cores, of the cluster).
    """

    kind: str = "local"
    device: str = "auto"
    workers: int = 0
    threads: int = 0
    max_batch: int = 16
    poll_seconds: float = 0.5
    slurm_max_jobs: int = 4
    slurm_gpus_per_job: int = 1
    slurm_cpus_per_job: int = 8
    slurm_mem_gb: int = 0
    slurm_timeout_min: int = 240
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_setup: list[str] = field(default_factory=list)
    slurm_extra: dict[str, str] = field(default_factory=dict)
    slurm_cluster: str = "slurm"
    ray_address: str = ""
    ray_gpus_per_task: int = 1
    ray_cpus_per_task: int = 1
    ray_max_tasks: int = 0

    def __post_init__(self):
        if self.kind not in ("local", "slurm", "ray"):
            raise ValueError(f"kind '{self.kind}' is unknown; use 'local', 'slurm' or 'ray'")
        if self.ray_gpus_per_task not in (0, 1):
            raise ValueError("ray_gpus_per_task must be 1 (a GPU per task) or 0 (CPU tasks)")
        if self.ray_cpus_per_task < 1 or self.ray_max_tasks < 0:
            raise ValueError("ray_cpus_per_task must be >= 1 and ray_max_tasks >= 0")
        if self.slurm_cluster not in ("slurm", "local"):
            raise ValueError(f"slurm_cluster '{self.slurm_cluster}' is unknown; use 'slurm' (sbatch) or 'local' (a check on this machine)")
        if self.slurm_gpus_per_job not in (0, 1):
            raise ValueError("slurm_gpus_per_job must be 1 (a GPU per job) or 0 (CPU jobs); "
                             "raise slurm_max_jobs to train on more GPUs at once")
        if min(self.slurm_max_jobs, self.slurm_cpus_per_job, self.slurm_timeout_min) < 1 or self.slurm_mem_gb < 0:
            raise ValueError("slurm_max_jobs, slurm_cpus_per_job and slurm_timeout_min must be >= 1, slurm_mem_gb >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device '{self.device}' is unknown; use auto, cpu or cuda")
        if self.max_batch < 1 or self.workers < 0 or self.threads < 0:
            raise ValueError("max_batch must be >= 1, workers and threads >= 0")


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a device string ("cpu", "cuda:1") and its CPU threads."""

    device: str
    threads: int


@dataclass
class Launched:
    slot: Slot
    runs: list[str]
    handle: object
    started: float = field(default_factory=time.monotonic)


class Executor(ABC):
    """Launches workers; `run_swarm` drives it."""

    name = "executor"

    @abstractmethod
    def slots(self) -> list[Slot]:
        """The places a worker can run at once."""

    @abstractmethod
    def launch(self, swarm: SwarmDir, runs: list[str], slot: Slot) -> object:
        """Start a worker training `runs` on `slot`; returns a handle for `poll`."""

    @abstractmethod
    def poll(self, handle: object) -> int | None:
        """None while the worker runs, else its exit code."""

    def failure_detail(self, handle: object) -> str:
        """A short reason for a worker that died without marking its runs (e.g. the log's tail)."""
        return "the worker exited without a result"


def batches(runs: list[str], max_size: int, min_batches: int = 1) -> list[list[str]]:
    """Runs split into the fewest batches of at most max_size, but at least min_batches (one per
    slot, so that every GPU or CPU worker gets work), sizes differing by at most one
    (18 -> 9 + 9, not 16 + 2; 18 on 4 slots -> 5 + 5 + 4 + 4)."""
    if not runs:
        return []
    n = min(len(runs), max(-(-len(runs) // max_size), min_batches))
    size, extra = divmod(len(runs), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        out.append(runs[start:end])
        start = end
    return out


def pool_cpu_threads(slots: list[Slot], n_batches: int) -> list[Slot]:
    """With fewer batches than CPU slots, the idle slots' threads go to the busy ones.

    One run on a 2-core machine then trains on both cores instead of one. GPU slots are kept.
    """
    if not 0 < n_batches < len(slots) or any(s.device != "cpu" for s in slots):
        return list(slots)
    threads = sum(s.threads for s in slots)
    return [Slot("cpu", threads // n_batches + (i < threads % n_batches)) for i in range(n_batches)]


def run_swarm(executor: Executor, swarm: SwarmDir, runs: list[str], max_batch: int, on_event: EventSink = ignore,
              poll_seconds: float = 0.5) -> dict[str, int]:
    """Train `runs` of `swarm` on the executor's slots; returns the swarm's state counts at the end.

    Runs already being trained by a live worker are waited for, not started twice.
    """
    slots = executor.slots()
    todo = batches(runs, max_batch, min_batches=len(slots))
    free = pool_cpu_threads(slots, len(todo))
    active: list[Launched] = []
    watched = set(runs) | {s.run for s in swarm.statuses() if s.state == "running"}
    task = f"swarm {swarm.id}"
    on_event(TaskStarted(task, total=len(watched), unit="runs"))
    while todo or active or _still_running(swarm, watched):
        while todo and free:
            slot = free.pop(0)
            batch = todo.pop(0)
            active.append(Launched(slot, batch, executor.launch(swarm, batch, slot)))
        for item in list(active):
            code = executor.poll(item.handle)
            if code is None:
                continue
            active.remove(item)
            free.append(item.slot)
            stuck = [r for r in item.runs if swarm.status(r).state in ("running", "interrupted", "pending")]
            if stuck:
                detail = executor.failure_detail(item.handle)
                for r in stuck:
                    swarm.write_status(r, state="failed", error=f"worker exit code {code}: {detail}")
                on_event(Message(f"{len(stuck)} run(s) failed: {detail}", level="warning"))
        _report(swarm, watched, task, on_event)
        if todo or active or _still_running(swarm, watched):
            time.sleep(poll_seconds)
    swarm.write_tables()
    counts = swarm.counts()
    on_event(TaskFinished(task, info=counts))
    return counts


def _still_running(swarm: SwarmDir, runs: set[str]) -> bool:
    return any(swarm.status(r).state == "running" for r in runs)


def _report(swarm: SwarmDir, runs: set[str], task: str, on_event: EventSink) -> None:
    done, info = 0.0, {}
    for r in runs:
        s = swarm.status(r)
        if s.state in ("done", "failed"):
            done += 1
        elif s.state == "running":
            done += float(s.data.get("progress", 0.0))
            for key in ("loss", "tokens_per_s", "mfu"):
                if key in s.data:
                    info[key] = s.data[key]
    on_event(TaskProgress(task, completed=done, info=info))
