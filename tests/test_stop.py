"""Stopping what runs on a project, with real training: `olmix-tui stop` ends the scheduler (`swarm
run`) first, then its workers (local processes, submitit jobs, Ray tasks); the stopped runs read as
interrupted, finished ones are kept, and every process says in its job record how it ended. Ctrl-C
on `swarm run` names the workers that go on and how to stop them."""

import os
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import UNFINISHED_STEPS, long_runs, plan_swarm, start_swarm_run
from engine.executors.jobs import read_jobs
from engine.executors.liveness import pid_alive
from engine.project import Project
from olmix_tui.cli import app


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what} did not happen in time"
        time.sleep(0.2)


def _training_workers(project: Project) -> list:
    """The live workers' records, once each has said in its log what it trains."""
    return [r for r in read_jobs(project.root) if r.kind == "worker" and r.alive and "training" in Path(r.log).read_text()]


def test_stop_ends_the_scheduler_then_its_workers_keeping_finished_runs(small_project, tmp_path):
    project = long_runs(small_project, 150, workers=1, max_batch=1)  # one run at a time
    swarm_dir, _ = plan_swarm(project)
    scheduler = start_swarm_run(project, swarm_dir.id, tmp_path / "run.log")
    try:
        _wait(lambda: swarm_dir.counts()["done"] >= 1 and _training_workers(project), 600, "a run finishing, the next training")
        finished = {s.run: s for s in swarm_dir.statuses() if s.state == "done"}
        workers = [r.pid for r in _training_workers(project)]
        r = CliRunner().invoke(app, ["stop", str(project.root), "--swarm", swarm_dir.id])
        assert r.exit_code == 0, r.output
        assert f"stopped training swarm {swarm_dir.id}" in r.output and "worker" in r.output
        assert scheduler.wait(30) == 143  # SIGTERM unwound it: lock released, record ended
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)
    assert not any(pid_alive(pid) for pid in workers)
    states = [s.state for s in swarm_dir.statuses()]
    assert "running" not in states and "interrupted" in states and "failed" not in states
    assert all(swarm_dir.status(run) == status for run, status in finished.items())  # finished runs untouched
    assert f"{len(finished)} finished run(s) kept" in " ".join(r.output.split())
    records = {r.kind: r for r in read_jobs(project.root)}
    assert records["train"].state == "stopped" and records["train"].swarm == swarm_dir.id
    assert records["worker"].state == "stopped" and records["worker"].log.endswith(".log")
    log = Path(records["worker"].log).read_text()  # the per-run log says what the worker did
    assert f"training 1 run(s) of swarm {swarm_dir.id}" in log
    done_logs = [p for p in (project.cache / "logs" / swarm_dir.id).glob("*.log") if Path(p).stem in finished]
    assert done_logs and all(f"{p.stem}: done" in p.read_text() for p in done_logs)
    with Project.load(project.root).lock():  # nothing holds the project any more
        pass
    assert "nothing to stop" in CliRunner().invoke(app, ["stop", str(project.root)]).output


def test_ctrl_c_on_swarm_run_names_the_workers_that_go_on(small_project, tmp_path):
    project = long_runs(small_project, UNFINISHED_STEPS, max_batch=1)
    swarm_dir, _ = plan_swarm(project)
    log = tmp_path / "run.log"
    scheduler = start_swarm_run(project, swarm_dir.id, log, ctrl_c=True)
    try:
        _wait(lambda: _training_workers(project), 300, "a worker starting")
        os.kill(scheduler.pid, signal.SIGINT)
        assert scheduler.wait(60) == 130
        text = " ".join(log.read_text().split())
        assert "These go on training: worker" in text and f"of swarm {swarm_dir.id}" in text
        assert f"olmix-tui stop {project.root} --swarm {swarm_dir.id}" in text
        assert _training_workers(project) and "running" in {s.state for s in swarm_dir.statuses()}
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)
        report = CliRunner().invoke(app, ["stop", str(project.root)])
    assert report.exit_code == 0 and "stopped worker" in report.output
    assert not _training_workers(project) and "running" not in {s.state for s in swarm_dir.statuses()}


def test_stop_ends_submitit_jobs(small_project, tmp_path):
    pytest.importorskip("submitit")
    project = long_runs(small_project, UNFINISHED_STEPS, kind="slurm", slurm_cluster="local", slurm_max_jobs=1,
                         slurm_gpus_per_job=0, slurm_cpus_per_job=1, slurm_timeout_min=10)
    swarm_dir, _ = plan_swarm(project)
    scheduler = start_swarm_run(project, swarm_dir.id, tmp_path / "run.log")
    try:
        _wait(lambda: _training_workers(project), 300, "a job's worker starting")
        r = CliRunner().invoke(app, ["stop", str(project.root)])
        assert r.exit_code == 0, r.output
        assert scheduler.wait(30) == 143
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)
    _wait(lambda: "running" not in {s.state for s in swarm_dir.statuses()}, 60, "the runs reading as interrupted")
    assert "interrupted" in {s.state for s in swarm_dir.statuses()} and not _training_workers(project)
