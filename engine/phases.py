"""Where a worker's time goes: the phases of training a batch of runs, timed, and a swarm's summary.

A worker records, per batch of runs it trains, the seconds each phase took (`PhaseTimer`) and
writes every run its share (the batch's seconds / the runs in it) as `timing` in status.json, so
that a swarm's runs add up to its workers' busy seconds. `swarm_timing` sums them over a swarm:
the mean per run, the totals, and the overhead share, 1 - training steps / all recorded seconds.

The training phase (`TRAIN`) is the optimiser steps after the first, timed as one stretch without
waiting for the device at each step; a phase that queues device work waits for it once at its end
(`PhaseTimer.phase(sync=...)`), so the work counts where it was queued.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

PHASES: dict[str, str] = {
    "start": "process start: the interpreter and the engine's modules",
    "imports": "torch, transformers and the trainer imported",
    "device": "device set-up: CUDA context, CPU kernels, the matmul peak for MFU",
    "data": "token data and eval sets loaded, sequences planned, windows sent to the device",
    "model": "the stacked proxies and their optimiser built",
    "warmup": "the first optimiser step (compiles, warms kernels and allocator)",
    "train": "the other optimiser steps",
    "eval": "held-out evaluation and curve points",
    "write": "results gathered and written (up to the final status.json, which holds this record)",
}
"""Phase names in the order they happen, and what each covers; a served worker's start and imports
are recorded with the first batch it trains only."""

TRAIN = "train"


class PhaseTimer:
    """Seconds per phase, added up over every time a phase is entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(0.0, float(seconds))

    @contextmanager
    def phase(self, name: str, sync: Callable[[], None] | None = None) -> Iterator[None]:
        """Time the block as phase `name`; `sync` (waiting for queued device work) runs at its end."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if sync is not None:
                sync()
            self.add(name, time.perf_counter() - start)

    def shares(self, runs: int) -> dict[str, float]:
        """Each run's share of the phases, in PHASES order."""
        return {name: self.seconds[name] / runs for name in PHASES if name in self.seconds}


@dataclass(frozen=True)
class SwarmTiming:
    """The phases of a swarm's timed runs: total seconds per phase over `runs` runs."""

    totals: dict[str, float]
    runs: int

    @property
    def total(self) -> float:
        return sum(self.totals.values())

    @property
    def mean(self) -> dict[str, float]:
        return {name: seconds / self.runs for name, seconds in self.totals.items()}

    @property
    def overhead_share(self) -> float:
        """1 - training-step seconds / all recorded worker seconds."""
        return 1.0 - self.totals.get(TRAIN, 0.0) / self.total if self.total > 0 else 0.0


def swarm_timing(timings: Iterable[Mapping[str, float]]) -> SwarmTiming | None:
    """The summary of runs' `timing` records (runs without one are left out); None when none has one."""
    totals: dict[str, float] = {}
    runs = 0
    for timing in timings:
        if not timing:
            continue
        runs += 1
        for name, seconds in timing.items():
            totals[name] = totals.get(name, 0.0) + float(seconds)
    if not runs:
        return None
    order = list(PHASES) + sorted(set(totals) - set(PHASES))
    return SwarmTiming({name: totals[name] for name in order if name in totals}, runs)
