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
or the Ray driver whose tasks train it (Ray stops a driver's tasks when it exits).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import atomic
from engine.errors import DataError, OlmixError
from engine.mixture_table import MixtureTable, write_tables
from engine.config import read_toml

STATES = ("pending", "running", "done", "failed")


@dataclass(frozen=True)
class RunStatus:
    """A proxy run's status.json, plus whether a `running` run's worker is still alive."""

    run: str
    data: dict

    @property
    def state(self) -> str:
        state = self.data.get("state", "pending")
        if state == "running" and not _worker_alive(self.data):
            return "interrupted"
        return state

    @property
    def label(self) -> str:
        """The state as shown: a running run whose cluster job or task has not started its worker yet is "queued"."""
        state = self.state
        if state == "running" and (self.data.get("slurm_job") or self.data.get("ray_driver")) and not self.data.get("pid"):
            return "queued"
        return state

    @property
    def where(self) -> str:
        """Who trains a running run, for display: "Slurm job 45, worker 123 on node3", "" when not running."""
        if self.state != "running":
            return ""
        d = self.data
        owner = (f"Slurm job {d['slurm_job']}" if d.get("slurm_job") else
                 f"Ray driver {d['ray_driver']}" if d.get("ray_driver") else "")
        worker = f"worker {d['pid']} on {d['host']}" if d.get("pid") else ""
        return ", ".join(part for part in (owner, worker) if part)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.data.get("metrics", {}))


def _worker_alive(data: dict) -> bool:
    """The worker if it runs here, else its owner: the Slurm job, or the Ray driver if that runs here."""
    here = socket.gethostname()
    pid, host, job, driver = data.get("pid"), data.get("host"), data.get("slurm_job"), data.get("ray_driver")
    if pid and host == here:
        return _process_alive(int(pid))
    if job:
        from engine.executors.slurm import slurm_job_alive  # only projects that use Slurm get here

        return slurm_job_alive(str(job))
    if driver:
        driver_pid, _, driver_host = str(driver).partition("@")
        return _process_alive(int(driver_pid)) if driver_host == here else True
    return bool(pid)  # another machine's worker and no owner to ask: trust its state


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed worker whose parent is gone stays a zombie until init reaps it, which can take a while."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or the process just went away
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"])


class SwarmDir:
    """A swarm folder: its spec, its runs' status files, and the tables fitting reads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "swarm.toml").exists():
            raise OlmixError(f"{self.path} is not a swarm folder (no swarm.toml); list swarms with `olmix-tui swarm status`.")
        self.spec = read_toml(self.path / "swarm.toml")

    @property
    def id(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, path: Path, spec: dict, run_ids: list[str], units: list[str], unit_weights: np.ndarray,
               seeds: list[int], labels: list[str] | None = None) -> "SwarmDir":
        """Write a new swarm (or return the existing one with the same id: plans are content-addressed).

        `labels` name what each run stands for (verification runs: the mixture it checks)."""
        path = Path(path)
        if (path / "swarm.toml").exists():
            return cls(path)
        for i, (run, weights, seed) in enumerate(zip(run_ids, unit_weights, seeds)):
            status = {"run": run, "state": "pending", "seed": int(seed), "weights": dict(zip(units, map(float, weights)))}
            if labels:
                status["label"] = labels[i]
            atomic.write_json(path / "runs" / run / "status.json", status)
        atomic.write_csv(path / "plan.csv", ["run", *units], ([r, *map(float, w)] for r, w in zip(run_ids, unit_weights)))
        atomic.write_toml(path / "swarm.toml", {**spec, "units": units, "runs": run_ids})  # last: marks it complete
        return cls(path)

    # ------------------------------------------------------------ runs
    @property
    def run_ids(self) -> list[str]:
        return list(self.spec["runs"])

    @property
    def units(self) -> list[str]:
        return list(self.spec["units"])

    def run_dir(self, run: str) -> Path:
        return self.path / "runs" / run

    def status(self, run: str) -> RunStatus:
        import json

        f = self.run_dir(run) / "status.json"
        try:
            return RunStatus(run, json.loads(f.read_text()))
        except FileNotFoundError:
            raise DataError(f"{f} is missing; the swarm folder is damaged: delete {self.path} and plan it again.") from None

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
        """Merge `fields` into a run's status.json (atomic)."""
        data = self.status(run).data
        data.update(fields)
        atomic.write_json(self.run_dir(run) / "status.json", data)

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
            realised = s.data.get("realised_weights") or s.data["weights"]
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


def list_swarms(swarms_dir: Path) -> list[SwarmDir]:
    if not swarms_dir.is_dir():
        return []
    return [SwarmDir(p) for p in sorted(swarms_dir.iterdir()) if (p / "swarm.toml").exists()]
