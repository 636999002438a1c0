"""The executor interface and the scheduling loop every executor shares.

An executor knows its slots (a GPU, or a share of the CPU cores) and how to hand a batch of runs
to a worker on a slot (starting one, or giving it to one it keeps) and poll it. `run_swarm`
splits the runs into batches (proxies trained together), keeps every slot busy, and reads the
run files for progress, so the loop is the same whether workers are local processes or cluster
jobs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from engine.events import EventSink, Message, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.executors.jobs import STOPPED_CODES
from engine.executors.liveness import owner_description
from engine.runs import SwarmDir


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
        """Have a worker train `runs` on `slot`; returns a handle for `poll`."""

    @abstractmethod
    def poll(self, handle: object) -> int | None:
        """None while the batch trains, else 0 when it finished, non-zero when it did not (the worker's exit code)."""

    def failure_detail(self, handle: object) -> str:
        """A short reason for a worker that died without marking its runs (e.g. the log's tail)."""
        return "the worker exited without a result"

    def close(self) -> None:
        """Let go of what the executor holds once a swarm's scheduling ends (the local executor's idle workers)."""


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

    Runs already being trained by a live worker are waited for, not started twice, and the wait
    says whose they are; one whose owner goes (or, on another machine, stops writing) is trained here.
    """
    slots = executor.slots()
    todo = batches(runs, max_batch, min_batches=len(slots))
    free = pool_cpu_threads(slots, len(todo))
    active: list[Launched] = []
    others = {s.run for s in swarm.statuses() if s.state == "running"} - set(runs)  # another scheduler's
    watched = set(runs) | others
    task = f"swarm {swarm.id}"
    on_event(TaskStarted(task, total=len(watched), unit="runs"))
    waiting = ""
    try:
        while True:
            orphans = sorted(r for r in others if swarm.status(r).state == "interrupted")
            if orphans:  # their owner is gone: train them here
                others -= set(orphans)
                todo += batches(orphans, max_batch)
            if not (todo or active or _still_running(swarm, watched)):
                break
            said = _waiting_for(swarm, others)
            if said != waiting and said:
                on_event(Message(said))
            waiting = said
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
                if stuck and code in STOPPED_CODES:  # stopped, not broken: its runs read as interrupted
                    on_event(Message(f"{len(stuck)} run(s) stopped with their worker (exit code {code}); "
                                     "the next `swarm run` trains them again.", level="warning"))
                elif stuck:
                    detail = executor.failure_detail(item.handle)
                    for r in stuck:
                        swarm.write_status(r, state="failed", error=f"worker exit code {code}: {detail}")
                    on_event(Message(f"{len(stuck)} run(s) failed: {detail}", level="warning"))
            _report(swarm, watched, task, on_event)
            if todo or active or _still_running(swarm, watched):
                time.sleep(poll_seconds)
    finally:
        executor.close()
    swarm.write_tables()
    counts = swarm.counts()
    on_event(TaskFinished(task, info=counts))
    return counts


def _waiting_for(swarm: SwarmDir, others: set[str]) -> str:
    """What the loop waits for besides its own workers: runs another scheduler's workers train."""
    statuses = [swarm.status(r) for r in sorted(others)]
    owners = sorted({owner_description(s) for s in statuses if s.state == "running"})
    if not owners:
        return ""
    n = sum(s.state == "running" for s in statuses)
    return f"waiting for {n} run(s) trained by another scheduler: {'; '.join(owners)}"


def _still_running(swarm: SwarmDir, runs: set[str]) -> bool:
    return any(swarm.status(r).state == "running" for r in runs)


def _report(swarm: SwarmDir, runs: set[str], task: str, on_event: EventSink) -> None:
    done, info = 0.0, {}
    for r in runs:
        s = swarm.status(r)
        if s.state in ("done", "failed"):
            done += 1
        elif s.state == "running":
            done += s.progress
            for key in ("loss", "tokens_per_s", "mfu"):
                if getattr(s, key) is not None:
                    info[key] = getattr(s, key)
    on_event(TaskProgress(task, completed=done, info=info))
