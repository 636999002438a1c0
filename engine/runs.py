"""Swarms on disk: one folder per swarm, one folder per proxy run, files a UI can tail.

  swarms/<id>/swarm.toml         what the swarm is: units, frozen groups, proxy settings, data keys
  swarms/<id>/plan.csv           planned unit weights per run (written before training)
  swarms/<id>/ratios.csv         realised unit ratios of finished runs (Olmix layout)
  swarms/<id>/metrics.csv        final metrics of finished runs (Olmix layout)
  swarms/<id>/runs/<run>/status.json   state (pending | running | done | failed), progress, results
  swarms/<id>/runs/<run>/metrics.jsonl append-only curve (one JSON object per eval point and attempt)

An imported swarm has no runs/ folder: its runs are the rows of ratios.csv and metrics.csv, read
as finished runs (a CSV of 100k runs is two files, not 100k folders, and no run id from a CSV
becomes a path).

Workers own their runs' status files while training (atomic rewrites); a run whose worker died
is `running` with a dead pid, and counts as interrupted: `pending_runs` hands it out again, so a
swarm killed with SIGKILL resumes without losing a finished run. Each hand-out is a new attempt
(numbered in status.json and in every curve point), and a run's curve is its current attempt's. A run handed to a cluster records
its owner too: a Slurm job (queued or on another node, the run is alive while Slurm lists the job),
or the Ray driver whose tasks train it (Ray stops a driver's tasks when it exits). Whether an owner
still runs is the schedulers' knowledge (engine.executors.liveness): a SwarmDir is given that
judge by whoever opens it, and this module stores and reads files only.
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import atomic
from engine.config import Table, load_section, read_json
from engine.errors import ConfigError, DataError, OlmixError
from engine.mixture_table import MixtureTable, read_tables, write_tables
from engine.swarm_spec import SPEC_FILE, SwarmSpec

STATES = ("pending", "running", "done", "failed")
SHOWN_STATES = (*STATES, "interrupted")
STATUS_FILE = "status.json"
CURVE_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunStatus(Table):
    """A proxy run's status.json, checked when read (a damaged file is a DataError naming it).

    state: pending | running | done | failed as written, and "interrupted" when read through a
    SwarmDir whose judge says a running run's owner is gone (the file still says running).
    seed, weights (planned unit weights) and label (verification runs: the mixture it checks) are
    set when the swarm is planned; attempt counts the times the run was handed out; pid, host and
    started (the worker, and its process start: engine.executors.liveness.process_start) and
    slurm_job or ray_driver ("pid@host", the owner on a cluster) while it runs; progress, loss,
    tokens_per_s and mfu while it trains; metrics, tokens, flops, realised_tokens, realised_weights
    (unit ratios actually trained), final_train_loss, wall_time_s and note when done; error when
    failed; updated: when the file was last written (whole seconds since the epoch). timing: the
    run's share of its worker's seconds per phase (engine.phases.PHASES), when done.
    """

    finite_floats = False

    run: str
    state: str = "pending"
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    label: str = ""
    progress: float = 0.0
    error: str = ""
    attempt: int = 0
    pid: int | None = None
    host: str | None = None
    started: str | None = None
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
    updated: float | None = None

    def validate(self) -> None:
        if self.state not in SHOWN_STATES:
            raise ConfigError(f"state '{self.state}' is unknown; it is one of {', '.join(STATES)}.")
        if self.pid is not None and self.pid < 1 or self.attempt < 0:
            raise ConfigError(f"pid {self.pid} or attempt {self.attempt} is not valid.")
        if not 0.0 <= self.progress <= 1.0:
            raise ConfigError(f"progress {self.progress} is not between 0 and 1.")

    @classmethod
    def from_json(cls, data, file: str = STATUS_FILE) -> "RunStatus":
        """A status.json's content, checked: keys this version does not know are ignored (a newer
        version may add some), a value of the wrong type or out of range is a ConfigError naming `file`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{file} holds {type(data).__name__}, not a run's status (a JSON object).")
        known = {f.name for f in dataclasses.fields(cls)}
        return load_section(cls, {k: v for k, v in data.items() if k in known and v is not None}, file)

    def to_json(self) -> dict:
        """The status.json content: unset fields (None, "", {}) are left out (fields are plain values
        and flat dicts, so no deep copy is made: a swarm of 100k runs is listed in seconds)."""
        return {f.name: v for f in _STATUS_FIELDS if (v := getattr(self, f.name)) is not None and v != "" and v != {}}

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


_STATUS_FIELDS = dataclasses.fields(RunStatus)

OwnerCheck = Callable[[RunStatus], bool]
"""Whether a running run's owner still runs (engine.executors.liveness.owner_alive)."""

DAMAGED = "restore it from git, or delete the swarm folder and plan the swarm again"


class SwarmDir:
    """A swarm folder: its spec, its runs' status files, and the tables fitting reads.

    `alive` judges whether a running run's owner (worker, Slurm job, Ray driver) still runs; a run
    whose owner is gone reads as interrupted. The folder only stores what the files say: the
    judge comes from the caller (engine.executors.liveness.owner_alive). An imported swarm's runs
    are the rows of its ratios.csv and metrics.csv, read as finished runs.
    """

    def __init__(self, path: Path, alive: OwnerCheck):
        self.path = Path(path)
        self.alive = alive
        if not (self.path / SPEC_FILE).exists():
            raise OlmixError(f"{self.path} is not a swarm folder (no {SPEC_FILE}); list swarms with `olmix-tui swarm status`.")
        for folder in (self.path, self.path / "runs"):
            if folder.is_symlink():
                raise DataError(f"{folder} is a symlink; a swarm's files stay in the project: replace it with a folder.")
        self.spec = SwarmSpec.read(self.path / SPEC_FILE)
        self._runs = frozenset(self.spec.runs)

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
            atomic.write_json(path / "runs" / run / STATUS_FILE, status.to_json())
        atomic.write_csv(path / "plan.csv", ["run", *spec.units],
                         ([r, *map(float, w)] for r, w in zip(spec.runs, unit_weights)))
        atomic.write_toml(path / SPEC_FILE, spec.to_toml())  # last: marks it complete
        return cls(path, alive)

    @classmethod
    def create_imported(cls, path: Path, spec: SwarmSpec, table: MixtureTable, alive: OwnerCheck) -> "SwarmDir":
        """Write an imported swarm: its spec and its table (ratios.csv, metrics.csv), nothing per run."""
        write_tables(table, Path(path) / "ratios.csv", Path(path) / "metrics.csv")
        atomic.write_toml(Path(path) / SPEC_FILE, spec.to_toml())  # last: marks it complete
        return cls(path, alive)

    # ------------------------------------------------------------ runs
    @property
    def imported(self) -> bool:
        return not self.spec.trained_here

    @property
    def run_ids(self) -> list[str]:
        return self._imported().table.run_ids if self.imported else list(self.spec.runs)

    @property
    def units(self) -> list[str]:
        return list(self.spec.units)

    def run_dir(self, run: str) -> Path:
        if run not in self._runs:
            raise DataError(f"swarm {self.id} has no run '{run}' with files of its own; list its runs with "
                            "`olmix-tui swarm status`.")
        return self.path / "runs" / run

    def _imported(self) -> "_ImportedRuns":
        """An imported swarm's table, and its rows as finished runs once asked for (read once per
        change of the files: the app reads every second)."""
        files = (self.path / "ratios.csv", self.path / "metrics.csv")
        try:
            key = (self.path.resolve(), *(f.stat().st_mtime_ns for f in files))
        except OSError:
            raise DataError(f"{self.path} lacks its ratios.csv or metrics.csv; import the swarm again.") from None
        cached = _IMPORTED.get(key[0])
        if cached is None or cached.key != key:
            if len(_IMPORTED) >= 4:
                _IMPORTED.pop(next(iter(_IMPORTED)))
            cached = _IMPORTED[key[0]] = _ImportedRuns(key, read_tables(*files))
        return cached

    def _read(self, run: str) -> RunStatus:
        """The status file as written (an imported run: its row); a missing or damaged file is a DataError."""
        if self.imported:
            status = self._imported().statuses.get(run)
            if status is None:
                raise DataError(f"swarm {self.id} has no run '{run}'; list its runs with `olmix-tui swarm status`.")
            return status
        f = self.run_dir(run) / STATUS_FILE
        missing = f"{f} is missing; the swarm folder is damaged: delete {self.path} and plan it again."
        try:
            status = RunStatus.from_json(read_json(f, missing, DAMAGED + "."), str(f))
            if status.updated is None:  # written before the field existed: the file's time says as much
                status = dataclasses.replace(status, updated=f.stat().st_mtime)
        except (ConfigError, OSError) as err:
            if str(err) == missing:
                raise DataError(missing) from None
            detail = str(err).removeprefix(f"{f}: ").removeprefix(f"{f} ").split("; ")[0].rstrip(".")
            raise DataError(f"{f} is damaged ({detail}); {DAMAGED}.") from None
        if status.run != run:
            raise DataError(f"{f} names run '{status.run}', not '{run}'; {DAMAGED}.")
        return status

    def status(self, run: str) -> RunStatus:
        """A run's status, a running run whose owner is gone as interrupted."""
        status = self._read(run)
        if status.state == "running" and not self.alive(status):
            return dataclasses.replace(status, state="interrupted")
        return status

    def statuses(self) -> list[RunStatus]:
        if self.imported:
            return list(self._imported().statuses.values())
        return [self.status(r) for r in self.run_ids]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SHOWN_STATES}
        for st in self.statuses():
            out[st.state] += 1
        return out

    def pending_runs(self, retry_failed: bool = False) -> list[str]:
        """Runs to (re)start: pending and interrupted ones, and failed ones when asked."""
        wanted = {"pending", "interrupted"} | ({"failed"} if retry_failed else set())
        return [s.run for s in self.statuses() if s.state in wanted]

    def mark_running(self, runs: list[str], pid: int | None, slurm_job: str | None = None,
                     ray_driver: str | None = None, started: str | None = None) -> None:
        """Hand `runs` to a worker: process `pid` on this machine (`started`: its process start,
        engine.executors.liveness.process_start), and/or its owner: Slurm job `slurm_job` (which
        may still wait in the queue) or Ray driver `ray_driver` ("pid@host"). Running, progress and
        error reset; a run that was not running under a live owner starts a new attempt (a worker
        taking over the runs its scheduler just handed it keeps the attempt)."""
        host = socket.gethostname() if pid else None
        for r in runs:
            current = self.status(r)
            attempt = current.attempt + (current.state != "running")
            self.write_status(r, state="running", progress=0.0, error="", pid=pid, host=host, started=started,
                              slurm_job=slurm_job, ray_driver=ray_driver, attempt=attempt)

    def write_status(self, run: str, **fields) -> None:
        """Set `fields` of a run's status.json (atomic), and when it was written."""
        # whole seconds: a float is written with 8 significant digits, 100 s at this magnitude
        status = dataclasses.replace(self._read(run), **fields, updated=int(time.time()))
        if self.run_dir(run).is_symlink():
            raise DataError(f"{self.run_dir(run)} is a symlink; a run's files stay in the project: replace it with a folder.")
        atomic.write_json(self.run_dir(run) / STATUS_FILE, status.to_json())

    def append_metrics(self, run: str, record: dict) -> None:
        """Append a curve point of the run's current attempt to metrics.jsonl."""
        atomic.append_jsonl(self.run_dir(run) / CURVE_FILE, {**record, "attempt": self._read(run).attempt})

    def curve(self, run: str) -> list[dict]:
        """The curve points of the run's current attempt (a dead attempt's points are left out)."""
        if self.imported:
            return []
        attempt = self._read(run).attempt
        return [rec for rec in atomic.read_jsonl(self.run_dir(run) / CURVE_FILE) if rec.get("attempt", 0) == attempt]

    # ------------------------------------------------------------ results
    def table(self) -> MixtureTable:
        """Finished runs as a MixtureTable over units: realised ratios and final metrics.

        A run whose metrics include NaN or infinity is left out (it diverged) and named in `skipped`.
        """
        if self.imported:
            return self._imported().table
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
            if s.state == "done" and not all(math.isfinite(v) for v in s.metrics.values()):
                out.append(s.run)
        return out

    def write_tables(self) -> MixtureTable:
        """Refresh ratios.csv and metrics.csv from the finished runs (atomic)."""
        table = self.table()
        if not self.imported:
            write_tables(table, self.path / "ratios.csv", self.path / "metrics.csv")
        return table


class _ImportedRuns:
    """An imported swarm's table as read at `key` (folder, files' times), and its rows as finished runs."""

    def __init__(self, key: tuple, table: MixtureTable):
        self.key, self.table = key, table
        self._statuses: dict[str, RunStatus] | None = None

    @property
    def statuses(self) -> dict[str, RunStatus]:
        if self._statuses is None:
            t = self.table
            self._statuses = {run: RunStatus(run, state="done", progress=1.0, weights=dict(zip(t.domains, w)),
                                             metrics=dict(zip(t.metric_names, m)))
                              for run, w, m in zip(t.run_ids, t.ratios.tolist(), t.metrics.tolist())}
        return self._statuses


_IMPORTED: dict[Path, _ImportedRuns] = {}
"""Imported swarms' tables by folder (a few at most)."""


def list_swarms(swarms_dir: Path, alive: OwnerCheck) -> list[SwarmDir]:
    """Every swarm folder under `swarms_dir`, by id (a folder being written, or left by a killed
    import, has a name starting with '.' and is not a swarm)."""
    if not swarms_dir.is_dir():
        return []
    return [SwarmDir(p, alive) for p in sorted(swarms_dir.iterdir())
            if not p.name.startswith(".") and (p / SPEC_FILE).exists()]
