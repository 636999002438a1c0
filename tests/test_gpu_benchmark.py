"""benchmarks/gpu.py runs end to end (--smoke: tiny shapes, on this machine's device) and its checks
pass; a main job it stops leaves no worker behind."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_smoke_reports_figures_and_its_correctness_checks_pass():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    check = figures["correctness"]
    assert check["passed"] is True and figures["smoke"] is True
    assert check["max_loss_difference"] <= 1e-3 and check["max_logit_difference"] <= 1e-4
    assert 0 < check["bf16_final_loss_difference"] <= 0.03  # bfloat16 rounds differently, but tracks float32
    for shape in ("regmix-1m", "olmix-30m"):
        arm = figures["throughput"][shape]
        assert arm["batched_tokens_per_s"] > 0 and arm["loop_tokens_per_s"] > 0
        assert 0 < arm["batched_mfu"] < 1 and 0 < arm["loop_mfu"] < 1
        assert arm["proxy0_loss_difference"] < 0.03  # the same proxy on the same batch, batched or alone
    assert figures["main_job_s"] is None and figures["overhead_share"] is None  # skipped under --smoke
    assert set(figures["floors"]) == {"regmix-1m_batched_ge_3x_loop", "olmix-30m_batched_ge_2x_loop",
                                      "olmix-30m_mfu_ge_40%", "overhead_le_20%", "main_job_le_60s"}
    assert figures["floors"]["overhead_le_20%"] is None and figures["floors"]["main_job_le_60s"] is None


def test_a_stopped_main_job_s_workers_are_stopped_through_the_run_files(small_project):
    """The main job's workers run in sessions of their own; stopping the job kills those its running
    runs name on this machine, and no process a run names on another machine."""
    from benchmarks.gpu import stop_workers
    from conftest import plan_swarm
    from engine.executors.liveness import pid_alive

    swarm_dir, _ = plan_swarm(small_project)
    first, second, third = swarm_dir.run_ids
    worker = subprocess.Popen([sys.executable, "-m", "engine.executors.worker", "--serve", "--device", "cpu"],
                              stdin=subprocess.PIPE, start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        swarm_dir.mark_running([first, second], worker.pid)
        swarm_dir.mark_running([third], bystander.pid)
        swarm_dir.write_status(third, host="another-machine")
        stop_workers(small_project.root)
        assert worker.wait(timeout=60) == -9
        assert pid_alive(bystander.pid)
    finally:
        for process in (worker, bystander):
            process.kill()
            process.wait()
