"""Shared set-up of the benchmarks that train real proxies on the stdlib sample project.

The replicated benchmarks (reuse_sequence, mixture_value) build the sample once (its data, its
BPE, its token store), then run whole-pipeline replicates on copies of it: replicate i samples
its swarms with [swarm] seed 42 + i and trains them with [proxy] seed 1000 * i, so its swarms,
proxies and verification runs are its own, and the data is the same. Replicates run as child
processes (`--replicate I --base DIR --out FILE`), `--jobs` at a time, the cores shared among them.
Comparisons are paired inside a replicate (the same verification seeds for every mixture) and
summarised over replicates with a 95% t-interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import pipeline, samples
from engine.compare import Interval
from engine.events import Message, TaskFinished
from engine.project import Project

SWARM_SEED = 42
PROXY_SEED_STRIDE = 1000


def log(event) -> None:
    if isinstance(event, Message):
        print(event.text, flush=True)
    elif isinstance(event, TaskFinished) and event.task.startswith(("swarm", "fit")):
        print(f"  {event.task}: {json.dumps({k: v for k, v in event.info.items() if not isinstance(v, dict)}, default=str)}", flush=True)


def sample_project(folder: Path | None, tokens_per_proxy: int, runs_per_domain: int, eval_tokens: int = 0) -> Project:
    """A fresh stdlib sample project (in a temporary folder unless `folder` is given), at the given proxy
    scale (`eval_tokens`: held-out tokens per domain, 0 = the sample's)."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="olmix-bench-")) / "stdlib"
    project = samples.create(folder, "stdlib")
    s = project.settings
    proxy = dataclasses.replace(s.proxy, tokens_per_proxy=tokens_per_proxy, eval_every=0)
    if eval_tokens:
        proxy = dataclasses.replace(proxy, eval_tokens_per_domain=eval_tokens)
    project.settings = dataclasses.replace(s, proxy=proxy, swarm=dataclasses.replace(s.swarm, runs_per_domain=runs_per_domain))
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def spread_line(label: str, m: dict) -> str:
    return f"{label:>10}: {m['mean']:.4f} ± {m['std']:.4f}  (seeds: {', '.join(f'{v:.4f}' for v in m['values'])})"


# ---------------------------------------------------------------- replicates


def scale_arguments(ap: argparse.ArgumentParser, tokens: int, runs_per_domain: int, seeds: int, replicates: int,
                    jobs: int = 0) -> None:
    """The options every replicated benchmark takes (scale, verification seeds, replicates, where, how)."""
    ap.add_argument("--tokens-per-proxy", type=int, default=tokens)
    ap.add_argument("--runs-per-domain", type=int, default=runs_per_domain)
    ap.add_argument("--eval-tokens", type=int, default=0, help="held-out tokens per domain (0 = the sample's)")
    ap.add_argument("--seeds", type=int, default=seeds, help="verification proxies per mixture (seeds)")
    ap.add_argument("--replicates", type=int, default=replicates, help="whole-pipeline replicates")
    ap.add_argument("--jobs", type=int, default=jobs,
                    help=f"replicates running at once, the cores shared among them (0 = all of them; default {jobs})")
    ap.add_argument("--workdir", help="where the projects go (default: a temporary folder)")
    ap.add_argument("--replicate", type=int, help=argparse.SUPPRESS)  # child mode: run this replicate
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)


def replicate_project(base: Path, root: Path, index: int, workers: int) -> Project:
    """A copy of the prepared project `base` at `root`, seeded as replicate `index`."""
    shutil.copytree(base, root, ignore=shutil.ignore_patterns("lock"))
    project = Project.load(root)
    s = project.settings
    project.update_settings(swarm=dataclasses.replace(s.swarm, seed=SWARM_SEED + index),
                            proxy=dataclasses.replace(s.proxy, seed=PROXY_SEED_STRIDE * index),
                            executor=dataclasses.replace(s.executor, workers=workers, threads=1 if workers else 0))
    return project


def run_replicates(module: str, args, base: Path) -> list[dict]:
    """Run replicates 0..args.replicates-1 of `module` as child processes, args.jobs at a time; their results."""
    jobs = max(1, min(args.jobs or args.replicates, args.replicates))
    workers = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    work = Path(args.workdir)
    pending = list(range(args.replicates))
    running: dict[int, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop(0)
            command = [sys.executable, "-m", module, *sys.argv[1:], "--workdir", str(work), "--replicate", str(i),
                       "--base", str(base), "--out", str(work / f"replicate-{i}.json"), "--workers", str(workers)]
            with open(work / f"replicate-{i}.log", "w") as out:
                running[i] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            print(f"replicate {i}: started (log {work / f'replicate-{i}.log'})", flush=True)
        for i, proc in list(running.items()):
            if proc.poll() is not None:
                del running[i]
                if proc.returncode != 0:
                    raise SystemExit(f"replicate {i} failed (exit {proc.returncode}); see {work / f'replicate-{i}.log'}")
                print(f"replicate {i}: done", flush=True)
        time.sleep(1.0)
    return [json.loads((work / f"replicate-{i}.json").read_text()) for i in range(args.replicates)]


def replicated_main(module: str, description: str, prepare, one_replicate, summarise, runs_per_domain: int = 4,
                    jobs: int = 0) -> None:
    """A replicated benchmark's command line: in child mode (--replicate) run that replicate and write
    its result; else prepare the base project (`prepare(args)` -> its root) in the work folder, run
    every replicate and print the summary's JSON as the last line. `runs_per_domain` and `jobs` are
    the defaults of --runs-per-domain and --jobs."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    scale_arguments(ap, tokens=98304, runs_per_domain=runs_per_domain, seeds=2, replicates=5, jobs=jobs)
    args = ap.parse_args()
    if args.replicate is not None:
        Path(args.out).write_text(json.dumps(one_replicate(args)))
        return
    start = time.perf_counter()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix=f"olmix-{module.rsplit('.', 1)[-1]}-")
    results = run_replicates(module, args, prepare(args))
    print(json.dumps(summarise(results, args, time.perf_counter() - start)))


def measured_values(project: Project, ctx, mixtures: dict[str, dict[str, float]], seeds: int) -> dict[str, list[float]]:
    """Train verification proxies of each labelled mixture with the same `seeds` seeds; the objective per seed."""
    verify = pipeline.plan_verification(project, ctx, mixtures, seeds)
    pipeline.train_swarm(project, verify, on_event=log)
    objective = pipeline.objective_fn(project, verify.table().metric_names)
    return {label: m.values for label, m in pipeline.measured_objective(verify, objective).items()}


def fit_record(record) -> dict:
    """What an update's mixture rests on, for a benchmark's JSON: the fit's CV Spearman, its verdict
    and the action taken on it (proposed, forced, fallback to the incumbent or the natural mixture)."""
    info, evidence = record.proposal, record.evidence
    return {"proposer": info.proposer if info else "",
            "objective_cv_spearman": evidence.verdict.objective_spearman if evidence else None,
            "verdict": evidence.verdict.verdict if evidence else "",
            "action": (evidence.fallback or evidence.action) if evidence else ""}


def verdict_counts(records: list[dict]) -> str:
    """How many records' fits were usable, weak or unusable and how many fell back, e.g. "u2 w1 x2 (fb 2)"."""
    count = lambda key, value: sum(r[key] == value for r in records)  # noqa: E731
    fell_back = sum(r["action"] in ("incumbent", "natural") for r in records)
    return f"u{count('verdict', 'usable')} w{count('verdict', 'weak')} x{count('verdict', 'unusable')} (fb {fell_back})"


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and every child it has waited for, theirs included:
    divided by the cores, about what the run would take on an otherwise idle machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timing(seconds: float) -> dict:
    """Wall time, CPU time, the cores and the load: what a run under load took and would take alone."""
    cpu, cores = cpu_seconds(), os.cpu_count() or 1
    print(f"wall {seconds / 60:.1f} min; CPU {cpu / 60:.1f} min over {cores} cores, i.e. about {cpu / cores / 60:.1f} min "
          f"on an otherwise idle machine; load average {os.getloadavg()[0]:.1f}")
    return {"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "cores": cores,
            "idle_machine_estimate_s": round(cpu / cores, 1), "load_average": round(os.getloadavg()[0], 2)}


def interval_text(ci: Interval) -> str:
    return f"{ci.mean:+.4f} [{ci.lo:+.4f}, {ci.hi:+.4f}]"
