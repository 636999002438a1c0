"""Workers: the phases every run records, served workers that train batch after batch, the slots of
several GPUs, and the proxy scale "auto" resolves to."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from typer.testing import CliRunner

from conftest import plan_swarm
from engine import pipeline
from engine.executors import trains_on_gpu
from engine.executors.base import Slot, run_swarm
from engine.executors.local import LocalExecutor, shared_workers
from engine.executors.liveness import pid_alive
from engine.phases import PHASES, PhaseTimer, swarm_timing
from engine.project import Project
from engine.settings import ExecutorSettings, ProxySettings
from engine.training.presets import GPU_TOKENS_PER_PROXY, PRESETS, resolve_proxy
from olmix_tui.cli import app


def _gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    return not pid_alive(pid)


def _one_worker(project: Project, seed: int = 0) -> Project:
    """The project with one single-threaded CPU worker (so that one process trains every batch) and proxy seed `seed`."""
    project.settings = dataclasses.replace(project.settings, executor=ExecutorSettings(device="cpu", workers=1, threads=1),
                                           proxy=dataclasses.replace(project.settings.proxy, seed=seed))
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def test_runs_record_their_phases_and_swarm_status_shows_them(small_project):
    project = _one_worker(small_project)
    swarm_dir, _ = plan_swarm(project)
    assert pipeline.train_swarm(project, swarm_dir)["done"] == 3
    statuses = swarm_dir.statuses()
    for s in statuses:
        assert set(s.timing) == set(PHASES)  # one worker trained the one batch: it started for it
        assert all(seconds >= 0 for seconds in s.timing.values()) and s.timing["train"] > 0
        assert s.timing == statuses[0].timing  # one batch: every run its equal share
    # the shares add up to the worker's busy time, which its process outlived by little
    summary = swarm_timing(s.timing for s in statuses)
    assert summary.runs == 3 and 0 < summary.overhead_share < 1
    assert summary.total == pytest.approx(sum(sum(s.timing.values()) for s in statuses))

    runner = CliRunner()
    r = runner.invoke(app, ["swarm", "status", str(project.root), "--timing"])
    assert r.exit_code == 0, r.output
    assert "where the workers' time went (3 runs; seconds)" in r.output and "training steps: overhead" in r.output
    assert "preset cpu, 4,096 tokens per proxy" in r.output
    for phase in PHASES:
        assert phase in r.output
    info = json.loads(runner.invoke(app, ["swarm", "status", str(project.root), "--json"]).stdout)
    assert info["timing"]["runs"] == 3
    assert info["timing"]["overhead_share"] == pytest.approx(summary.overhead_share, abs=1e-6)

    from benchmarks.gpu import overhead_share, swarm_phases  # what the GPU benchmark reports of its main job

    swarms = swarm_phases(project.root)
    assert swarms[swarm_dir.id]["preset"] == "cpu" and swarms[swarm_dir.id]["timed_runs"] == 3
    assert overhead_share(swarms)[0] == pytest.approx(summary.overhead_share)


def test_a_served_worker_trains_swarm_after_swarm_then_exits(small_project):
    first = _one_worker(small_project)
    with shared_workers():
        a, _ = plan_swarm(first)
        assert pipeline.train_swarm(first, a)["done"] == 3
        second = _one_worker(first, seed=1)
        b, _ = plan_swarm(second)
        assert b.id != a.id
        assert pipeline.train_swarm(second, b)["done"] == 3
        pids = {s.pid for s in a.statuses() + b.statuses()}
        assert len(pids) == 1  # the same process trained both swarms
        worker = pids.pop()
        assert pid_alive(worker)  # idle, waiting for the next batch
    assert _gone(worker)  # its input ended with the block
    assert {"start", "imports"} <= set(a.statuses()[0].timing)
    assert not {"start", "imports"} & set(b.statuses()[0].timing)  # paid once, with the first batch


def test_without_a_shared_pool_a_swarms_workers_exit_with_it(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    assert pipeline.train_swarm(small_project, swarm_dir)["done"] == 3
    for pid in {s.pid for s in swarm_dir.statuses()}:
        assert _gone(pid)


class _DevicesOnTheCpu(LocalExecutor):
    """The local executor's slots as on a machine with two GPUs, each slot's batch trained on the CPU."""

    def __init__(self, *args):
        super().__init__(*args)
        self.devices: dict[str, list[str]] = {}

    def launch(self, swarm, runs, slot):
        self.devices[slot.device] = list(runs)
        return super().launch(swarm, runs, Slot("cpu", 1))


def test_a_swarm_spreads_over_every_gpu(small_project, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.executors.local.visible_gpus", lambda: 2)
    monkeypatch.setattr("engine.training.device.cpu_threads", lambda: 8)
    assert LocalExecutor(ExecutorSettings(), tmp_path).slots() == [Slot("cuda:0", 4), Slot("cuda:1", 4)]
    assert LocalExecutor(ExecutorSettings(device="cpu", workers=2), tmp_path).slots() == [Slot("cpu", 4)] * 2
    monkeypatch.undo()
    monkeypatch.setattr("engine.executors.local.visible_gpus", lambda: 2)
    swarm_dir, _ = plan_swarm(small_project)
    executor = _DevicesOnTheCpu(ExecutorSettings(), tmp_path)
    counts = run_swarm(executor, swarm_dir, swarm_dir.run_ids, max_batch=16, poll_seconds=0.2)
    assert counts["done"] == 3
    assert sorted(executor.devices) == ["cuda:0", "cuda:1"]  # fewer runs than max_batch, yet both GPUs got a batch
    assert sorted(sum(executor.devices.values(), [])) == swarm_dir.run_ids
    by_batch = [{swarm_dir.status(r).pid for r in runs} for runs in executor.devices.values()]
    assert all(len(pids) == 1 for pids in by_batch) and by_batch[0] != by_batch[1]  # a worker per device


def test_auto_resolves_to_the_hardware_the_swarm_trains_on(small_project, monkeypatch):
    asked = []

    def on_gpu(answer: bool):
        return lambda: asked.append(answer) or answer

    auto = ProxySettings(tokens_per_proxy=65536)
    assert resolve_proxy(auto, 256, on_gpu(False)) == (PRESETS["cpu"], 65536)
    assert resolve_proxy(auto, 256, on_gpu(True)) == (PRESETS["gpu"], GPU_TOKENS_PER_PROXY)
    big = ProxySettings(tokens_per_proxy=4 * GPU_TOKENS_PER_PROXY)
    assert resolve_proxy(big, 256, on_gpu(True)) == (PRESETS["gpu"], 4 * GPU_TOKENS_PER_PROXY)  # never less than asked
    asked.clear()
    assert resolve_proxy(ProxySettings(preset="cpu", tokens_per_proxy=4096), 256, on_gpu(True)) == (PRESETS["cpu"], 4096)
    assert asked == []  # a named preset does not look for a GPU

    assert not trains_on_gpu(ExecutorSettings(kind="slurm", slurm_gpus_per_job=0))
    assert trains_on_gpu(ExecutorSettings(kind="slurm", slurm_gpus_per_job=1))
    assert trains_on_gpu(ExecutorSettings(kind="ray", ray_address="ray://head:10001"))
    assert not trains_on_gpu(ExecutorSettings(kind="ray", ray_gpus_per_task=0))
    monkeypatch.setattr("engine.executors.local.visible_gpus", lambda: 1)
    assert trains_on_gpu(ExecutorSettings()) and trains_on_gpu(ExecutorSettings(kind="ray"))
    assert not trains_on_gpu(ExecutorSettings(device="cpu"))

    # what a swarm planned here records: the preset and budget auto chose, not "auto"
    small_project.settings = dataclasses.replace(
        small_project.settings, proxy=dataclasses.replace(small_project.settings.proxy, preset="auto"))
    on_gpu_box = pipeline.proxy_scale(small_project, 256)
    assert (on_gpu_box.preset, on_gpu_box.tokens_per_proxy) == ("gpu", GPU_TOKENS_PER_PROXY)
    monkeypatch.setattr("engine.executors.local.visible_gpus", lambda: 0)
    swarm_dir, _ = plan_swarm(small_project)
    assert (swarm_dir.spec.proxy.preset, swarm_dir.spec.proxy.tokens_per_proxy) == ("cpu", 4096)


def test_phase_timer_adds_up_and_waits_at_phase_ends():
    timer, synced = PhaseTimer(), []
    with timer.phase("data", sync=lambda: synced.append("data")):
        time.sleep(0.01)
    with timer.phase("data"):
        pass
    timer.add("train", 3.0)
    assert synced == ["data"] and 0.01 <= timer.seconds["data"] < 1
    assert timer.shares(2) == {"data": timer.seconds["data"] / 2, "train": 1.5}
    with pytest.raises(ValueError):
        timer.add("lunch", 1.0)
    summary = swarm_timing([{"train": 3.0, "data": 1.0}, {}, {"train": 1.0}])
    assert summary.runs == 2 and summary.totals == {"data": 1.0, "train": 4.0}
    assert summary.overhead_share == pytest.approx(0.2) and summary.mean == {"data": 0.5, "train": 2.0}
    assert swarm_timing([{}, {}]) is None
