"""The Slurm executor with real (tiny) proxy training: submitit jobs on this machine, and real sbatch
jobs when a Slurm cluster answers here (`bash .ci/slurm-single-node` starts a one-node one)."""

import dataclasses
import os
import shutil
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

from conftest import plan_swarm
from engine.errors import ConfigError
from engine.executors import make_executor
from engine.settings import ExecutorSettings
from engine.executors.slurm import slurm_job_alive
from engine.project import Project
from engine.runs import SwarmDir
from engine.training.presets import get_preset
from olmix_tui.cli import app

pytest.importorskip("submitit")


def _slurm_up() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo")):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True)
    return out.returncode == 0 and "up" in out.stdout


needs_slurm = pytest.mark.skipif(not _slurm_up(), reason="no Slurm cluster answers here (bash .ci/slurm-single-node)")


def _use_slurm(project: Project, cluster: str, steps: int = 8, **executor) -> Project:
    """The project's settings switched to Slurm jobs (one CPU each, two at a time; `executor` overrides)."""
    project.settings = dataclasses.replace(
        project.settings,
        proxy=dataclasses.replace(project.settings.proxy, tokens_per_proxy=get_preset("cpu").tokens_per_step * steps),
        executor=ExecutorSettings(kind="slurm", slurm_cluster=cluster, slurm_max_jobs=2, slurm_gpus_per_job=0,
                                  slurm_cpus_per_job=1, slurm_timeout_min=10, poll_seconds=0.2, **executor),
    )
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def _trained_from_cli(small_project: Project, cluster: str) -> tuple[Project, SwarmDir]:
    """`swarm run` of the project's first swarm through Slurm jobs; every run must finish."""
    project = _use_slurm(small_project, cluster)
    swarm_dir, _ = plan_swarm(project)
    r = CliRunner().invoke(app, ["swarm", "run", str(project.root), "--swarm", swarm_dir.id])
    assert r.exit_code == 0, r.output
    assert {s.state for s in swarm_dir.statuses()} == {"done"}
    return project, swarm_dir


def test_submitit_jobs_train_a_swarm(small_project):
    project, swarm_dir = _trained_from_cli(small_project, "local")
    assert all(s.metrics["code/bpb"] > 0 for s in swarm_dir.statuses())
    jobs = sorted((project.cache / "logs" / swarm_dir.id / "slurm").glob("[0-9]*"))
    assert len(jobs) == 2  # three runs in two jobs, one per slot
    assert all(list(job.glob("*_result.pkl")) for job in jobs)


def test_a_killed_job_fails_its_runs_with_the_reason(small_project):
    project = _use_slurm(small_project, "local", steps=400)
    swarm_dir, _ = plan_swarm(project)
    executor = make_executor(project.settings.executor, project.cache / "logs")
    runs = swarm_dir.run_ids[:1]
    job = executor.launch(swarm_dir, runs, executor.slots()[0])
    deadline = time.time() + 120
    while time.time() < deadline and swarm_dir.status(runs[0]).pid == int(job.job_id):
        time.sleep(0.1)  # the job's worker has started (and recorded its pid)
    assert swarm_dir.status(runs[0]).state == "running"
    worker = swarm_dir.status(runs[0]).pid
    for pid in {int(job.job_id), worker}:  # the job's controller and the worker die without cleanup
        os.kill(pid, signal.SIGKILL)
    while executor.poll(job) is None and time.time() < deadline:
        time.sleep(0.2)
    assert executor.poll(job) == 1
    assert "ended without a result" in executor.failure_detail(job)
    deadline = time.time() + 60  # a SIGKILLed worker can take a moment to exit on a busy machine
    while swarm_dir.status(runs[0]).state == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert swarm_dir.status(runs[0]).state == "interrupted"  # its worker is gone: the next `swarm run` takes it


def test_slurm_settings_errors_say_what_to_do(small_project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match="sbatch is not on PATH.*slurm_cluster = \"local\""):
        make_executor(ExecutorSettings(kind="slurm"), tmp_path)
    (small_project.root / "olmix.toml").write_text(
        (small_project.root / "olmix.toml").read_text().replace("slurm_gpus_per_job = 1", "slurm_gpus_per_job = 2"))
    r = CliRunner().invoke(app, ["swarm", "status", str(small_project.root)])
    assert r.exit_code == 1 and "slurm_gpus_per_job must be 1" in r.output and "slurm_max_jobs" in r.output


@needs_slurm
def test_sbatch_jobs_train_a_swarm(small_project):
    _, swarm_dir = _trained_from_cli(small_project, "slurm")
    assert len({s.slurm_job for s in swarm_dir.statuses()}) == 2


@needs_slurm
def test_a_job_slurm_refuses_names_the_setting(small_project):
    project = _use_slurm(small_project, "slurm", slurm_partition="no-such-partition")
    swarm_dir, _ = plan_swarm(project)
    r = CliRunner().invoke(app, ["swarm", "run", str(project.root), "--swarm", swarm_dir.id])
    assert r.exit_code == 1 and "Slurm refused the job" in r.output and "invalid partition" in r.output.lower()
    assert "Traceback" not in r.output and swarm_dir.counts()["pending"] == 3  # nothing half-started


@needs_slurm
def test_a_queued_job_counts_as_running_until_slurm_forgets_it(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    run = swarm_dir.run_ids[0]
    out = subprocess.run(["sbatch", "--hold", "--parsable", "--wrap", "sleep 60"], capture_output=True, text=True, check=True)
    job = out.stdout.strip().split(";")[0]
    try:
        swarm_dir.mark_running([run], None, slurm_job=job)  # submitted from another machine: no pid here
        assert slurm_job_alive(job) and swarm_dir.status(run).state == "running"
        assert swarm_dir.status(run).shown_state == "queued"
        r = CliRunner().invoke(app, ["swarm", "status", str(small_project.root), "--swarm", swarm_dir.id])
        assert f"queued (Slurm job {job})" in " ".join(r.output.split()) and swarm_dir.status(run).where == f"Slurm job {job}"
    finally:
        subprocess.run(["scancel", job], check=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        if subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip() in ("", "CANCELLED"):
            break
        time.sleep(0.5)
    from engine.executors import liveness

    liveness._answers.clear()  # past the cache of squeue's answers
    assert swarm_dir.status(run).state == "interrupted"
