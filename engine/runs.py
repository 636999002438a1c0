"""Swarms on disk: one folder per swarm, one folder per proxy run, files a UI can tail.

  swarms/<id>/swarm.toml         what the swarm is: units, frozen groups, proxy settings, data keys
  swarms/<id>/plan.csv           planned unit weights per run (written before training)
  swarms/<id>/ratios.csv         realised unit ratios of finished runs (Olmix layout)
  swarms/<id>/metrics.csv        final metrics of finished runs (Olmix layout)
  swarms/<id>/runs/<run>/status.json   state (pending | running | done | failed), progress, results
  swarms/<id>/runs/<run>/metrics.jsonl append-only curve (one JSON object per eval point)

Workers own their runs' status files while training (atomic rewrites); a run whose worker died
is `running` with a dead pid, and counts as interrupted: `pending_runs` hands it out again, so a
swarm killed with SIGKILL resumes without losing a finished run. A run handed to a cluster records
its owner too: a Slurm job (queued or on another node, the run is alive while Slurm lists the job),
or the Ray driver whose tasks train it (Ray stops a driver's tasks when it exits). Whether an owner
still runs is the schedulers' knowledge (engine.executors.liveness): a SwarmDir is given that
judge by whoever opens it, and this module stores and reads files only.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import atomic
from engine.errors import DataError, OlmixError
from engine.mixture_table import MixtureTable, write_tables
from engine.swarm_spec import SPEC_FILE, SwarmSpec

STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class RunStatus:
    """A proxy run's status.json.

    state: pending | running | done | failed as written, and "interrupted" when read through a
    SwarmDir whose judge says a running run's owner is gone (the file still says running).
    seed, weights (planned unit weights) and label (verification runs: the mixture it checks) are
    set when the swarm is planned; pid and host (the worker) and slurm_job or ray_driver ("pid@host",
    the owner on a cluster) while it runs; progress, loss, tokens_per_s and mfu while it trains;
    metrics, tokens, flops, realised_tokens, realised_weights (unit ratios actually trained),
    final_train_loss, wall_time_s and note when done; error when failed. timing: the run's share of
    its worker's seconds per phase (engine.phases.PHASES), when done.
    """

    run: str
    state: str = "pending"
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    label: str = ""
    progress: float = 0.0
    error: str = ""
    pid: int | None = None
    host: str | None = None
    slurm_job: str | None = None
    ray_driver: str | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tokens: int | None = None
    flops: float | None = None
    realised_tokens: dict[str, int] = field(default_factory=dict)
    realised_weights: dict[str, float] = field(default_factory=dict)
    final_train_loss: float | None = None
    wall_time_s: float | None = None
    note: str = ""
    timing: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "RunStatus":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        """The status.json content: unset fields (None, "", {}) are left out."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != "" and v != {}}

    @property
    def shown_state(self) -> str:
        """The state as shown: a running run whose cluster job or task has not started its worker yet is "queued"."""
        if self.state == "running" and (self.slurm_job or self.ray_driver) and not self.pid:
            return "queued"
        return self.state

    @property
    def where(self) -> str:
        """Who trains a running run, for display: "Slurm job 45, worker 123 on node3", "" when not running."""
        if self.state != "running":
            return ""
        owner = (f"Slurm job {self.slurm_job}" if self.slurm_job else
                 f"Ray driver {self.ray_driver}" if self.ray_driver else "")
        worker = f"worker {self.pid} on {self.host}" if self.pid else ""
        return ", ".join(part for part in (owner, worker) if part)

    @property
    def trained_weights(self) -> dict[str, float]:
        """The unit ratios the run trained on once done, else the planned ones."""
        return self.realised_weights or self.weights


OwnerCheck = Callable[[RunStatus], bool]
"""Whether a running run's owner still runs (engine.executors.liveness.owner_alive)."""


class SwarmDir:
    """A swarm folder: its spec, its runs' status files, and the tables fitting reads.

    `alive` judges whether a running run's owner (worker, Slurm job, Ray driver) still runs; a run
    whose owner is gone reads as interrupted. The folder only stores what the files say: the
    judge comes from the caller (engine.executors.liveness.owner_alive).
    """

    def __init__(self, path: Path, alive: OwnerCheck):
        self.path = Path(path)
        self.alive = alive
        if not (self.path / SPEC_FILE).exists():
            raise OlmixError(f"{self.path} is not a swarm folder (no {SPEC_FILE}); list swarms with `olmix-tui swarm status`.")
        self.spec = SwarmSpec.read(self.path / SPEC_FILE)

    @property
    def id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, path: Path, spec: SwarmSpec, unit_weights: np.ndarray, seeds: list[int], alive: OwnerCheck,
               labels: list[str] | None = None) -> "SwarmDir":
        """Write a new swarm (or return the existing one with the same id: plans are content-addressed).

        `unit_weights` [runs, units] and `seeds` are per run of `spec.runs`; `labels` name what each
        run stands for (verification runs: the mixture it checks)."""
        path = Path(path)
        if (path / SPEC_FILE).exists():
            return cls(path, alive)
        for i, (run, weights, seed) in enumerate(zip(spec.runs, unit_weights, seeds)):
            status = RunStatus(run, seed=int(seed), weights=dict(zip(spec.units, map(float, weights))),
                               label=labels[i] if labels else "")
            atomic.write_json(path / "runs" / run / "status.json", status.to_json())
        atomic.write_csv(path / "plan.csv", ["run", *spec.units],
                         ([r, *map(float, w)] for r, w in zip(spec.runs, unit_weights)))
        atomic.write_toml(path / SPEC_FILE, spec.to_toml())  # last: marks it complete
        return cls(path, alive)

    # ------------------------------------------------------------ runs
    @property
    def run_ids(self) -> list[str]:
        return list(self.spec.runs)

    @property
    def units(self) -> list[str]:
        return list(self.spec.units)

    def run_dir(self, run: str) -> Path:
        return self.path / "runs" / run

    def _read(self, run: str) -> RunStatus:
        """The status file as written."""
        f = self.run_dir(run) / "status.json"
        try:
            return RunStatus.from_json(json.loads(f.read_text()))
        except FileNotFoundError:
            raise DataError(f"{f} is missing; the swarm folder is damaged: delete {self.path} and plan it again.") from None

    def status(self, run: str) -> RunStatus:
        """A run's status, a running run whose owner is gone as interrupted."""
        status = self._read(run)
        if status.state == "running" and not self.alive(status):
            return dataclasses.replace(status, state="interrupted")
        return status

    def statuses(self) -> list[RunStatus]:
        return [self.status(r) for r in self.run_ids]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (*STATES, "interrupted")}
        for st in self.statuses():
            out[st.state] += 1
        return out

    def pending_runs(self, retry_failed: bool = False) -> list[str]:
        """Runs to (re)start: pending and interrupted ones, and failed ones when asked."""
        wanted = {"pending", "interrupted"} | ({"failed"} if retry_failed else set())
        return [s.run for s in self.statuses() if s.state in wanted]

    def mark_running(self, runs: list[str], pid: int | None, slurm_job: str | None = None,
                     ray_driver: str | None = None) -> None:
        """Hand `runs` to a worker: process `pid` on this machine, and/or its owner: Slurm job
        `slurm_job` (which may still wait in the queue) or Ray driver `ray_driver` ("pid@host").
        Running, progress and error reset."""
        host = socket.gethostname() if pid else None
        for r in runs:
            self.write_status(r, state="running", progress=0.0, error="", pid=pid, host=host, slurm_job=slurm_job,
                              ray_driver=ray_driver)

    def write_status(self, run: str, **fields) -> None:
        """Set `fields` of a run's status.json (atomic)."""
        status = dataclasses.replace(self._read(run), **fields)
        atomic.write_json(self.run_dir(run) / "status.json", status.to_json())

    def append_metrics(self, run: str, record: dict) -> None:
        atomic.append_jsonl(self.run_dir(run) / "metrics.jsonl", record)

    def curve(self, run: str) -> list[dict]:
        return atomic.read_jsonl(self.run_dir(run) / "metrics.jsonl")

    # ------------------------------------------------------------ results
    def table(self) -> MixtureTable:
        """Finished runs as a MixtureTable over units: realised ratios and final metrics.

        A run whose metrics include NaN or infinity is left out (it diverged) and named in `skipped`.
        """
        done = [s for s in self.statuses() if s.state == "done"]
        units = self.units
        rows, metrics, ids = [], [], []
        names = sorted({k for s in done for k in s.metrics})
        for s in done:
            realised = s.trained_weights
            vals = [s.metrics.get(n, float("nan")) for n in names]
            if not np.all(np.isfinite(vals)):
                continue
            ids.append(s.run)
            rows.append([float(realised.get(u, 0.0)) for u in units])
            metrics.append(vals)
        return MixtureTable(ids, units, np.array(rows).reshape(len(ids), len(units)), names,
                            np.array(metrics).reshape(len(ids), len(names)))

    def skipped_runs(self) -> list[str]:
        """Finished runs left out of `table()` because a metric is NaN or infinite."""
        out = []
        for s in self.statuses():
            if s.state == "done" and not np.all(np.isfinite(list(s.metrics.values()))):
                out.append(s.run)
        return out

    def write_tables(self) -> MixtureTable:
        """Refresh ratios.csv and metrics.csv from the finished runs (atomic)."""
        table = self.table()
        write_tables(table, self.path / "ratios.csv", self.path / "metrics.csv")
        return table


def list_swarms(swarms_dir: Path, alive: OwnerCheck) -> list[SwarmDir]:
    """Every swarm folder under `swarms_dir`, by id."""
    if not swarms_dir.is_dir():
        return []
    return [SwarmDir(p, alive) for p in sorted(swarms_dir.iterdir()) if (p / SPEC_FILE).exists()]
