"""Mixture reuse against full recomputation over five domain-set updates, in whole-pipeline replicates.

Shaped like Olmix's case study, on the stdlib sample: start from three domains, then
  1. add a group of domains (code:c, data:decimal)
  2. add several sources (data:markup, prose:notes)
  3. revise one domain (code:tests points at another selection of test modules)
  4. remove one domain (data:markup)
  5. partition one domain (code:stdlib into two parts)
Each replicate (its own swarm and proxy seeds, the same data; benchmarks/common.py) proposes the
first mixture once; then two copies of it follow the sequence: one recomputes every mixture in
full (a swarm over all leaf domains), the other plans each update as [reuse] says (full_reuse:
unaffected domains frozen into one virtual domain, its swarm per [reuse.swarm], its proposer per
[reuse.proposer]). After every update, verification proxies train both arms' mixtures with the
same seeds, so the gap reuse - full is paired within a replicate.

Prints per update the paired gap (mean over replicates with its 95% t-interval) next to full
recomputation's own spread over replicates, the fits' cross-validation, and the compute. Floors:
at every update the gap's interval contains 0 or lies below it (reuse no worse), and reuse spends
<= 30% of full recomputation's FLOPs. The last line is one JSON object: the replicates, the compute
ratio, a boolean per floor, and every figure.

Usage: python -m benchmarks.reuse_sequence [--tokens-per-proxy N] [--runs-per-domain N] [--seeds N]
       [--replicates N] [--jobs N] [--eval-tokens N] [--workdir DIR]
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from benchmarks.common import (PROXY_SEED_STRIDE, SWARM_SEED, fit_record, interval_text, log, measured_values,
                               replicate_project, replicated_main, sample_project, timing, verdict_counts)
from engine import pipeline
from engine.compare import t_interval
from engine.domains import Change, DomainSet
from engine.project import Project

START = ("code:stdlib", "code:tests", "prose:docs")
UPDATES = [
    ("add a group", [Change("add", "code:c", sources=("data/c/headers.jsonl",)),
                     Change("add", "data:decimal", sources=("data/decimal/*.txt",))]),
    ("add several sources", [Change("add", "data:markup", sources=("data/markup/fixtures.jsonl",)),
                             Change("add", "prose:notes", sources=("data/notes/*.txt",))]),
    ("revise one", [Change("revise", "code:tests", sources=("data/tests-v2/*.txt",))]),
    ("remove one", [Change("remove", "data:markup")]),
    ("partition one", [Change("partition", "code:stdlib", parts={
        "code:stdlib:a-m": ("data/code/[_a-m]*.jsonl",), "code:stdlib:n-z": ("data/code/[n-z]*.jsonl",)})]),
]
COMPUTE_FLOOR = 0.30


def set_domains(project: Project, domains: DomainSet) -> None:
    with project.lock():
        project.domains = domains
        project.pending = []
        project.save_domains()
        project.save_pending()


def prepare(args) -> Path:
    """The sample at the benchmark's scale over the START domains, with every domain of the sequence
    tokenized (so replicates copy the token store instead of tokenizing again)."""
    project = sample_project(Path(args.workdir) / "base", args.tokens_per_proxy, args.runs_per_domain, args.eval_tokens)
    start = DomainSet(tuple(d for d in project.domains if d.name in START))
    set_domains(project, start)
    project = Project.load(project.root)
    for _, changes in UPDATES:
        for change in changes:
            project.stage(change)
        staged = project.staged_domains()
        project.tokens(staged, on_event=log)
        set_domains(project, staged)
    set_domains(project, start)
    return project.root


def step(project: Project, changes, kind: str | None):
    for change in changes:
        project.stage(change)
    ctx = pipeline.update_context(project, log)
    record = pipeline.run_update(project, ctx, kind, log)
    pipeline.apply_update(project, ctx, record)
    return ctx, record


def arm(record) -> dict:
    return {"plan": record.plan.kind, "runs": record.compute.runs, "flops": record.compute.flops, "mixture": record.mixture,
            **fit_record(record)}


def one_replicate(args) -> dict:
    """Replicate args.replicate: the first mixture, then the sequence by full recomputation and by reuse."""
    work = Path(args.workdir)
    full = replicate_project(Path(args.base), work / f"rep{args.replicate}-full", args.replicate, args.workers)
    ctx = pipeline.update_context(full, log, initial=True)
    pipeline.apply_update(full, ctx, pipeline.run_update(full, ctx, "full", log))
    reuse_root = work / f"rep{args.replicate}-reuse"
    shutil.copytree(full.root, reuse_root, ignore=shutil.ignore_patterns("lock"))
    reuse = Project.load(reuse_root)
    rows = []
    for name, changes in UPDATES:
        print(f"\n=== replicate {args.replicate}, update: {name} ===", flush=True)
        _, rf = step(full, changes, "full")
        ctx, rr = step(reuse, changes, None)
        measured = measured_values(reuse, ctx, {"full": rf.mixture, "reuse": rr.mixture}, args.seeds)
        rows.append({"update": name, "leaves": ctx.leaves, "full": arm(rf), "reuse": arm(rr), "measured": measured})
    return {"replicate": args.replicate, "swarm_seed": SWARM_SEED + args.replicate,
            "proxy_seed": PROXY_SEED_STRIDE * args.replicate, "updates": rows}


def summarise(results: list[dict], args, seconds: float) -> dict:
    print(f"\n=== {len(results)} replicates, {args.tokens_per_proxy:,} tokens per proxy, {args.runs_per_domain} runs per "
          f"domain, {args.seeds} verification seeds ===")
    print(f"{'update':>20} {'gap reuse - full [95% CI]':>28} {'full sd':>8} {'reuse sd':>8} {'full obj':>8} "
          f"{'runs f/r':>9} {'CV rho f/r':>11}  verdicts full | reuse")
    updates, floors = [], []
    for u, (name, _) in enumerate(UPDATES):
        rows = [r["updates"][u] for r in results]
        full = [float(np.mean(r["measured"]["full"])) for r in rows]
        reuse = [float(np.mean(r["measured"]["reuse"])) for r in rows]
        gap = t_interval(np.subtract(reuse, full))
        full_spread, reuse_spread = float(np.std(full, ddof=1)), float(np.std(reuse, ddof=1))
        cv = {a: [r[a]["objective_cv_spearman"] for r in rows] for a in ("full", "reuse")}
        runs = {a: int(sum(r[a]["runs"] for r in rows)) for a in ("full", "reuse")}
        ok = gap.lo <= 0
        floors.append(ok)
        cv_text = "/".join(f"{np.nanmean([c for c in cv[a] if c is not None]):.0f}" if any(c is not None for c in cv[a])
                           else "-" for a in ("full", "reuse"))
        print(f"{name:>20} {interval_text(gap):>28} {full_spread:8.4f} {reuse_spread:8.4f} {np.mean(full):8.4f} "
              f"{runs['full']:>4}/{runs['reuse']:<4} {cv_text:>11}  {verdict_counts([r['full'] for r in rows])} | "
              f"{verdict_counts([r['reuse'] for r in rows])}  {'ok' if ok else 'REUSE WORSE'}")
        updates.append({"update": name, "gap": dataclasses.asdict(gap), "full_replicate_sd": full_spread,
                        "reuse_replicate_sd": reuse_spread, "full_mean": float(np.mean(full)), "reuse_mean": float(np.mean(reuse)), "runs": runs,
                        "objective_cv_spearman": cv, "plans": [r["reuse"]["plan"] for r in rows],
                        "proposers": [r["reuse"]["proposer"] for r in rows],
                        "verdicts": {a: [r[a]["verdict"] for r in rows] for a in ("full", "reuse")},
                        "actions": {a: [r[a]["action"] for r in rows] for a in ("full", "reuse")}})
    flops = {a: float(sum(u[a]["flops"] for r in results for u in r["updates"])) for a in ("full", "reuse")}
    ratio = flops["reuse"] / flops["full"]
    compute_ok = ratio <= COMPUTE_FLOOR
    print(f"compute: reuse {flops['reuse']:.3g} FLOPs = {100 * ratio:.1f}% of full's {flops['full']:.3g}: "
          f"floor <= {100 * COMPUTE_FLOOR:.0f}% {'MET' if compute_ok else 'NOT MET'}")
    print(f"quality: the gap's interval contains 0 or favours reuse at {sum(floors)} of {len(floors)} updates: floor "
          f"{'MET' if all(floors) else 'NOT MET'}")
    return {"replicates": [{k: r[k] for k in ("replicate", "swarm_seed", "proxy_seed")} for r in results],
            "compute_ratio": ratio, "floors": {"gap_contains_0_or_favours_reuse": all(floors), "compute_at_most_30pct": compute_ok},
            "gap_floor_per_update": floors, "tokens_per_proxy": args.tokens_per_proxy, "runs_per_domain": args.runs_per_domain,
            "eval_tokens": args.eval_tokens, "seeds": args.seeds, "updates": updates, "flops": flops,
            **timing(seconds), "per_replicate": results}


if __name__ == "__main__":
    replicated_main("benchmarks.reuse_sequence", __doc__, prepare, one_replicate, summarise)
