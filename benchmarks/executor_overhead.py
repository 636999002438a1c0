"""What each executor adds to a swarm: the same small swarm trained through every executor available here.

The stdlib sample project is built once and tokenized; then for each executor a copy of it trains
the same swarm (one run per domain and one more, cpu preset, 8 steps each, so that start-up and
scheduling dominate)
with `olmix-tui swarm run` as a user would start it, two workers / jobs / tasks at a time on CPU.
Executors: local processes; Slurm through submitit's local cluster (needs submitit); Slurm through
sbatch (needs a Slurm cluster answering here, e.g. `bash .ci/slurm-single-node`); Ray on an instance
started for the run (needs ray). Prints seconds per executor; the last line is one JSON object.

    python -m benchmarks.executor_overhead
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import sample_project
from engine import pipeline
from engine.settings import ExecutorSettings
from engine.project import Project
from engine.training.presets import get_preset

STEPS = 8


def slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True)
    return out.returncode == 0 and "up" in out.stdout


def executors() -> dict[str, ExecutorSettings | str]:
    """Each executor's settings, or why it cannot run here."""
    cpu_jobs = dict(slurm_max_jobs=2, slurm_gpus_per_job=0, slurm_cpus_per_job=1)
    has = {name: importlib.util.find_spec(name) is not None for name in ("submitit", "ray")}
    return {
        "local processes": ExecutorSettings(device="cpu"),
        "slurm, submitit's local cluster": (ExecutorSettings(kind="slurm", slurm_cluster="local", **cpu_jobs)
                                            if has["submitit"] else "submitit is not installed"),
        "slurm, sbatch": (ExecutorSettings(kind="slurm", **cpu_jobs) if has["submitit"] and slurm_answers()
                          else "no Slurm cluster answers here"),
        "ray, an instance for the run": (ExecutorSettings(kind="ray", ray_gpus_per_task=0)
                                         if has["ray"] else "ray is not installed"),
    }


def main() -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="olmix-bench-"))
    base = sample_project(scratch / "base", get_preset("cpu").tokens_per_step * STEPS, runs_per_domain=1)
    pipeline.update_context(base)  # trains the BPE and fills the token store once; the copies reuse them
    figures: dict[str, float | None] = {}
    for i, (name, settings) in enumerate(executors().items()):
        if isinstance(settings, str):
            print(f"{name:32s} skipped: {settings}")
            figures[name] = None
            continue
        root = scratch / f"copy-{i}"
        shutil.copytree(base.root, root)
        project = Project.load(root)
        project.settings = dataclasses.replace(project.settings, executor=dataclasses.replace(settings, poll_seconds=0.2))
        with project.lock():
            project.save_settings()
        ctx = pipeline.update_context(project)
        swarm_dir, swarm = pipeline.plan_swarm(project, ctx, pipeline.make_plan(project, ctx))
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "olmix_tui", "swarm", "run", str(root), "--swarm", swarm_dir.id],
                             capture_output=True, text=True)
        seconds = time.perf_counter() - start
        done = swarm_dir.counts()["done"]
        if run.returncode != 0 or done != len(swarm):
            sys.exit(f"{name}: swarm run failed (exit {run.returncode}, {done} of {len(swarm)} runs done):\n{run.stdout[-2000:]}")
        print(f"{name:32s} {seconds:6.1f} s for {done} runs")
        figures[name] = seconds
    shutil.rmtree(scratch, ignore_errors=True)
    result = {"runs": len(swarm), "steps_per_run": STEPS, "seconds": figures}
    print(json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()
