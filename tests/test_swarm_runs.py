"""Swarms on disk with real (tiny) proxy training: idempotent, resumable after SIGKILL, failures recorded."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import long_runs, plan_swarm, start_swarm_run
from engine import pipeline
from engine.settings import ExecutorSettings
from engine.mixture_table import read_tables
from engine.project import Project
from engine.training.presets import get_preset
from olmix_tui.cli import app


def test_plan_train_tables_and_idempotence(small_project):
    swarm_dir, swarm = plan_swarm(small_project)
    assert len(swarm) == 3 and swarm_dir.counts()["pending"] == 3
    again, _ = plan_swarm(small_project)
    assert again.id == swarm_dir.id  # content-addressed: same plan, same swarm
    counts = pipeline.train_swarm(small_project, swarm_dir)
    assert counts["done"] == 3
    table = read_tables(swarm_dir.path / "ratios.csv", swarm_dir.path / "metrics.csv")
    assert table.run_ids == swarm_dir.run_ids
    assert np.allclose(table.ratios.sum(axis=1), 1)
    assert {"code/bpb", "notes/bpb", "decimal/bpb", "code/loss"} <= set(table.metric_names)
    assert np.all(np.isfinite(table.metrics)) and np.all(table.metrics > 0)
    for s in swarm_dir.statuses():
        assert sum(s.realised_tokens.values()) == s.tokens == 4096
        assert swarm_dir.curve(s.run)[-1]["step"] == 4096 // get_preset("cpu").tokens_per_step
    before = {s.run: s for s in swarm_dir.statuses()}
    t0 = time.perf_counter()
    assert pipeline.train_swarm(small_project, swarm_dir)["done"] == 3  # nothing left to do
    assert time.perf_counter() - t0 < 5
    assert before == {s.run: s for s in swarm_dir.statuses()}


def test_a_worker_without_the_cpu_kernels_trains_and_says_so_in_its_log(small_project, monkeypatch):
    monkeypatch.setenv("OLMIX_CPU_KERNELS", "0")  # as on a machine without a C compiler
    swarm_dir, _ = plan_swarm(small_project)
    assert pipeline.train_swarm(small_project, swarm_dir)["done"] == 3
    logs = "".join(p.read_text() for p in (small_project.cache / "logs" / swarm_dir.id).glob("*.log"))
    assert "warning: Fused CPU kernels unavailable (OLMIX_CPU_KERNELS=0)" in logs


def test_realised_weights_follow_the_repetition_cap(small_project):
    p = small_project
    train = {name: d.train_tokens for name, d in p.tokens().items()}
    # a cap that bites: together the domains hold only 1.5 proxies' worth of tokens at this repetition,
    # so in every run some domain must use at least 2/3 of what its cap allows
    max_repetition = 1.5 * 4096 / sum(train.values())
    p.settings = dataclasses.replace(p.settings, swarm=dataclasses.replace(p.settings.swarm, max_repetition=max_repetition))
    with p.lock():
        p.save_settings()
    swarm_dir, _ = plan_swarm(p)
    pipeline.train_swarm(p, swarm_dir)
    seq = get_preset("cpu").seq_len
    for s in swarm_dir.statuses():
        realised = s.realised_weights
        assert abs(sum(realised.values()) - 1) < 1e-9 and s.tokens == 4096
        used = {d: n / (max_repetition * train[d]) for d, n in s.realised_tokens.items()}  # share of the cap
        assert max(used.values()) <= 1 and max(used.values()) >= 0.55, used  # 2/3, less whole-sequence rounding
        # whole sequences: the realised share differs from the planned one by at most a sequence's worth per domain
        for unit, w in s.weights.items():
            assert abs(realised[unit] - w) <= 2 * seq / 4096 + 1e-9


def test_failed_runs_are_marked_and_retried(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    store = small_project.cache / "tokens"
    hidden = small_project.cache / "hidden-tokens"
    shutil.move(store, hidden)  # the worker cannot find the planned token data
    runner = CliRunner()
    r = runner.invoke(app, ["swarm", "run", str(small_project.root), "--swarm", swarm_dir.id])
    assert r.exit_code == 1 and "--retry-failed" in r.output
    statuses = swarm_dir.statuses()
    assert {s.state for s in statuses} == {"failed"}
    assert "token store has no entry" in statuses[0].error
    shutil.move(hidden, store)
    r = runner.invoke(app, ["swarm", "run", str(small_project.root), "--swarm", swarm_dir.id])
    assert r.exit_code == 1  # failed runs are skipped without --retry-failed
    r = runner.invoke(app, ["swarm", "run", str(small_project.root), "--swarm", swarm_dir.id, "--retry-failed"])
    assert r.exit_code == 0, r.output
    assert swarm_dir.counts()["done"] == 3


def test_sigkill_resumes_without_losing_finished_runs(small_project):
    p = long_runs(small_project, 8, max_batch=1)
    swarm_dir, _ = plan_swarm(p)
    proc = start_swarm_run(p, swarm_dir.id)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and swarm_dir.counts()["done"] < 1:
            time.sleep(0.2)
        assert swarm_dir.counts()["done"] >= 1, "no run finished in time"
        finished = {s.run: s for s in swarm_dir.statuses() if s.state == "done"}
        os.killpg(proc.pid, signal.SIGKILL)  # the scheduler ...
        proc.wait(10)
        for pid in _worker_pids(swarm_dir):  # ... and its workers (sessions of their own) die without cleanup
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + 60  # SIGKILLed workers can take a moment to exit on a busy machine
    while swarm_dir.counts()["running"] and time.time() < deadline:
        time.sleep(0.2)
    counts = swarm_dir.counts()
    assert counts["done"] >= 1 and counts["running"] == 0
    # resume
    again = Project.load(p.root)
    assert pipeline.train_swarm(again, pipeline.open_swarm(again, swarm_dir.id))["done"] == 3
    for run, status in finished.items():
        assert swarm_dir.status(run) == status  # finished runs untouched


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_zombie_worker_counts_as_interrupted(small_project):
    """A SIGKILLed worker whose parent is gone lingers as a zombie until init reaps it: not alive."""
    swarm_dir, _ = plan_swarm(small_project)
    run = swarm_dir.run_ids[0]
    child = subprocess.Popen(["sleep", "60"])
    try:
        swarm_dir.mark_running([run], child.pid)
        assert swarm_dir.status(run).state == "running"
        child.kill()  # not reaped yet: a zombie
        deadline = time.time() + 10
        while swarm_dir.status(run).state == "running" and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(f"/proc/{child.pid}")  # still there, as a zombie
        assert swarm_dir.status(run).state == "interrupted" and run in swarm_dir.pending_runs()
    finally:
        child.kill()
        child.wait()


def _worker_pids(swarm_dir) -> list[int]:
    """The workers of a swarm's running runs, as their status files name them (also those still
    importing: a run is handed to its worker's pid before the worker reads it)."""
    return sorted({s.pid for s in swarm_dir.statuses() if s.state == "running" and s.pid})


def test_launched_runs_are_running_before_the_worker_starts(small_project, tmp_path):
    """A scheduler re-attaching while a worker still imports must not start its runs again."""
    from engine.executors.base import Slot
    from engine.executors.local import LocalExecutor

    swarm_dir, _ = plan_swarm(small_project)
    run = swarm_dir.run_ids[0]
    batch = LocalExecutor(ExecutorSettings(), tmp_path).launch(swarm_dir, [run], Slot("cpu", 1))
    try:
        status = swarm_dir.status(run)  # read at once: the worker has not got past its imports
        assert status.state == "running" and status.pid == batch.pid
        assert run not in swarm_dir.pending_runs()
    finally:
        batch.worker.process.kill()
        batch.worker.process.wait(10)
    assert swarm_dir.status(run).state == "interrupted" and run in swarm_dir.pending_runs()


def test_nan_metrics_are_left_out_of_the_table(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    pipeline.train_swarm(small_project, swarm_dir)
    run = swarm_dir.run_ids[0]
    metrics = swarm_dir.status(run).metrics
    metrics["code/bpb"] = float("nan")
    swarm_dir.write_status(run, metrics=metrics)
    assert run not in swarm_dir.table().run_ids
    assert swarm_dir.skipped_runs() == [run]


def test_swarm_status_json(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    r = CliRunner().invoke(app, ["swarm", "status", str(small_project.root), "--json"])
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["swarm"] == swarm_dir.id and info["counts"]["pending"] == 3


def test_batches_are_even():
    from engine.executors.base import batches

    assert [len(b) for b in batches([str(i) for i in range(18)], 16)] == [9, 9]
    assert [len(b) for b in batches([str(i) for i in range(33)], 16)] == [11, 11, 11]
    assert batches([], 4) == []
    assert sum(batches([str(i) for i in range(7)], 2), []) == [str(i) for i in range(7)]
    assert [len(b) for b in batches([str(i) for i in range(18)], 16, min_batches=4)] == [5, 5, 4, 4]  # every slot busy
    assert [len(b) for b in batches([str(i) for i in range(3)], 16, min_batches=4)] == [1, 1, 1]


def test_cpu_slots_one_per_core_and_idle_threads_pooled(tmp_path, monkeypatch):
    from engine.executors.base import Slot, pool_cpu_threads
    from engine.settings import ExecutorSettings
    from engine.executors.local import LocalExecutor

    monkeypatch.setattr("engine.training.device.cpu_threads", lambda: 4)
    slots = LocalExecutor(ExecutorSettings(device="cpu"), tmp_path).slots()
    assert slots == [Slot("cpu", 1)] * 4
    assert LocalExecutor(ExecutorSettings(device="cpu", workers=2), tmp_path).slots() == [Slot("cpu", 2)] * 2
    assert pool_cpu_threads(slots, 4) == slots
    assert pool_cpu_threads(slots, 1) == [Slot("cpu", 4)]  # one run trains on every core
    assert pool_cpu_threads(slots, 3) == [Slot("cpu", 2), Slot("cpu", 1), Slot("cpu", 1)]
    gpus = [Slot("cuda:0", 2), Slot("cuda:1", 2)]
    assert pool_cpu_threads(gpus, 1) == gpus


def test_live_loss_and_tokens_per_s_are_each_runs_own(small_project):
    """Three runs trained together by one worker: each status shows its own loss (the proxies differ)
    and its share of the worker's tokens/s, not the worker's figure copied to every run."""
    from engine.executors.stop import stop

    p = long_runs(small_project, 400, workers=1, max_batch=3)
    swarm_dir, _ = plan_swarm(p)
    proc = start_swarm_run(p, swarm_dir.id)
    try:
        deadline, live = time.time() + 300, []
        while time.time() < deadline:
            live = [s for s in swarm_dir.statuses() if s.state == "running" and s.loss is not None and s.tokens_per_s]
            if len(live) == 3:
                break
            time.sleep(0.2)
        assert len(live) == 3, "the runs did not report their figures in time"
        assert len({s.loss for s in live}) == 3  # each proxy's own loss
        assert len({s.pid for s in live}) == 1  # one worker trains them together...
        assert len({round(s.tokens_per_s) for s in live}) == 1  # ...each at its share of its throughput
    finally:
        stop(p.root)
        proc.wait(60)
