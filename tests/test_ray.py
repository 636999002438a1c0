"""The Ray executor with real (tiny) proxy training on a Ray instance of this machine."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from conftest import plan_swarm
from engine.errors import ConfigError
from engine.executors import make_executor
from engine.settings import ExecutorSettings
from engine.project import Project
from engine.training.presets import get_preset
from olmix_tui.cli import app

ray = pytest.importorskip("ray")


@pytest.fixture
def ray_project(small_project):
    """The small project training on Ray (CPU tasks); Ray stopped again afterwards."""
    p = small_project
    p.settings = dataclasses.replace(
        p.settings,
        proxy=dataclasses.replace(p.settings.proxy, tokens_per_proxy=get_preset("cpu").tokens_per_step * 200),
        executor=ExecutorSettings(kind="ray", ray_gpus_per_task=0, poll_seconds=0.2),
    )
    with p.lock():
        p.save_settings()
    yield Project.load(p.root)
    ray.shutdown()


def _swarm_run(project: Project, swarm_id: str) -> None:
    r = CliRunner().invoke(app, ["swarm", "run", str(project.root), "--swarm", swarm_id])
    assert r.exit_code == 0, r.output


def test_ray_tasks_train_a_swarm_and_resume_after_the_driver_is_killed(ray_project):
    swarm_dir, _ = plan_swarm(ray_project)
    cmd = [sys.executable, "-c", "from olmix_tui.cli import main; main()", "swarm", "run", str(ray_project.root),
           "--swarm", swarm_dir.id]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and {s.shown_state for s in swarm_dir.statuses()} != {"running"}:
            time.sleep(0.1)  # every run's worker has started (and is loading torch or training)
        statuses = swarm_dir.statuses()
        assert {s.shown_state for s in statuses} == {"running"}, "the workers did not start in time"
        host = statuses[0].host
        assert {s.ray_driver for s in statuses} == {f"{driver.pid}@{host}"}
        assert statuses[0].where == f"Ray driver {driver.pid}@{host}, worker {statuses[0].pid} on {host}"
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # Ray stops the tasks of a driver that is gone
        driver.wait(10)
    deadline = time.time() + 60
    while time.time() < deadline and "running" in {s.state for s in swarm_dir.statuses()}:
        time.sleep(0.2)
    states = {s.run: s.state for s in swarm_dir.statuses()}
    assert set(states.values()) <= {"done", "interrupted"} and "interrupted" in states.values()
    finished = {s.run: s for s in swarm_dir.statuses() if s.state == "done"}
    _swarm_run(ray_project, swarm_dir.id)  # resumes on a Ray instance of its own
    statuses = swarm_dir.statuses()
    assert {s.state for s in statuses} == {"done"} and all(s.metrics["code/bpb"] > 0 for s in statuses)
    assert all(swarm_dir.status(run) == status for run, status in finished.items())  # finished runs untouched
    assert list((ray_project.cache / "logs" / swarm_dir.id / "ray").glob("*.log"))


def test_a_failing_ray_task_marks_its_runs_failed_with_the_reason(ray_project):
    swarm_dir, _ = plan_swarm(ray_project)
    (ray_project.cache / "tokens").rename(ray_project.cache / "hidden-tokens")  # the worker cannot find its data
    r = CliRunner().invoke(app, ["swarm", "run", str(ray_project.root), "--swarm", swarm_dir.id])
    assert r.exit_code == 1 and "--retry-failed" in r.output
    assert {s.state for s in swarm_dir.statuses()} == {"failed"}
    assert "token store has no entry" in swarm_dir.statuses()[0].error


def test_an_unreachable_ray_cluster_is_one_sentence(tmp_path):
    started = time.monotonic()
    with pytest.raises(ConfigError, match="no Ray cluster answers at ray_address = '127.0.0.1:1'.*ray start --head"):
        make_executor(ExecutorSettings(kind="ray", ray_address="127.0.0.1:1"), tmp_path)
    assert time.monotonic() - started < 30  # not Ray's minutes of retries
    with pytest.raises(ConfigError, match="ray_gpus_per_task must be 1"):
        ExecutorSettings(kind="ray", ray_gpus_per_task=2)


def test_stop_ends_the_driver_and_its_tasks_workers(ray_project, tmp_path):
    """`olmix-tui stop`: the driver (`swarm run`) goes first, Ray stops its tasks, and a worker process
    a task left on this machine is stopped too; every run not finished reads as interrupted."""
    from engine.executors.jobs import read_jobs

    swarm_dir, _ = plan_swarm(ray_project)
    cmd = [sys.executable, "-m", "olmix_tui", "swarm", "run", str(ray_project.root), "--swarm", swarm_dir.id]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers = lambda: [r for r in read_jobs(ray_project.root) if r.kind == "worker" and r.alive]  # noqa: E731
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not workers():
            time.sleep(0.2)
        assert workers() and workers()[0].ray_driver == f"{driver.pid}@{workers()[0].host}"
        r = CliRunner().invoke(app, ["stop", str(ray_project.root)])
        assert r.exit_code == 0 and "stopped training swarm" in r.output, r.output
        assert driver.wait(30) == 143
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    deadline = time.time() + 60
    while time.time() < deadline and (workers() or "running" in {s.state for s in swarm_dir.statuses()}):
        time.sleep(0.2)
    assert not workers() and {s.state for s in swarm_dir.statuses()} <= {"done", "interrupted"}
