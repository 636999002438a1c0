"""Mixture reuse versus full recomputation over five domain-set updates, training real proxies.

Shaped like Olmix's case study, on the stdlib sample: start from three domains, then
  1. add a group of domains (code:c, data:decimal)
  2. add several sources (data:markup, prose:notes)
  3. revise one domain (code:tests points at another selection of test modules)
  4. remove one domain (data:markup)
  5. partition one domain (code:stdlib into two parts)
Two copies of the project follow the sequence: one recomputes every mixture in full (a swarm over
all leaf domains), the other reuses (unaffected domains frozen into one virtual domain). After
every update, verification proxies (seed repeats, same token budget) measure both mixtures on the
project's objective. Prints per update and in total the proxy runs and FLOPs of each path, the
mixtures and the measured objectives; checks the floors (reuse spends <= 35% of full
recomputation's compute; the final objective of reuse is within the seed-to-seed spread of full
recomputation's). The last line is one JSON object with the figures.

Usage: python -m benchmarks.reuse_sequence [--tokens-per-proxy N] [--runs-per-domain N] [--seeds N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time

from benchmarks.common import sample_project, spread_line
from benchmarks.mixture_value import log
from engine import pipeline
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


def start_project(args) -> Project:
    project = sample_project(args.project, args.tokens_per_proxy, args.runs_per_domain)
    with project.lock():
        project.domains = DomainSet(tuple(d for d in project.domains if d.name in START))
        project.pending = []
        project.save_domains()
        project.save_pending()
    return Project.load(project.root)


def step(project: Project, changes, kind: str):
    for change in changes:
        project.stage(change)
    ctx = pipeline.update_context(project, log)
    result = pipeline.run_update(project, ctx, kind, log)
    pipeline.apply_update(project, ctx, result)
    return ctx, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-per-proxy", type=int, default=98304)
    ap.add_argument("--runs-per-domain", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--project", help="where to build the full-recomputation project (default: a temporary folder)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    full = start_project(args)
    ctx = pipeline.update_context(full, log, initial=True)
    pipeline.apply_update(full, ctx, pipeline.run_update(full, ctx, "full", log))
    reuse_root = full.root.parent / (full.root.name + "-reuse")
    shutil.copytree(full.root, reuse_root, ignore=shutil.ignore_patterns("lock"))
    reuse = Project.load(reuse_root)
    rows, totals = [], {"full": {"runs": 0, "flops": 0.0}, "reuse": {"runs": 0, "flops": 0.0}}
    for i, (name, changes) in enumerate(UPDATES, 1):
        print(f"\n=== update {i}: {name} ===", flush=True)
        _, rf = step(full, changes, "full")
        ctx, rr = step(reuse, changes, "full_reuse")
        verify = pipeline.plan_verification(reuse, ctx, {"full": rf.mixture, "reuse": rr.mixture}, args.seeds)
        pipeline.train_swarm(reuse, verify, on_event=log)
        measured = {label: dataclasses.asdict(m) for label, m in
                    pipeline.measured_objective(verify, pipeline.objective_fn(reuse, verify.table().metric_names)).items()}
        for path, r in (("full", rf), ("reuse", rr)):
            totals[path]["runs"] += r.compute.runs
            totals[path]["flops"] += r.compute.flops
        rows.append({"update": name, "leaves": ctx.leaves, "plan_reuse": rr.plan.kind,
                     "full": {"runs": rf.compute.runs, "flops": rf.compute.flops, "mixture": rf.mixture,
                              "measured": measured["full"]},
                     "reuse": {"runs": rr.compute.runs, "flops": rr.compute.flops, "mixture": rr.mixture,
                               "measured": measured["reuse"]}})
        print(f"runs: full {rf.compute.runs}, reuse {rr.compute.runs} ({rr.plan.kind})")
        print("mixtures (full | reuse):")
        for x in ctx.leaves:
            print(f"  {x:>16}: {rf.mixture[x]:.3f} | {rr.mixture[x]:.3f}")
        print(spread_line("full", measured["full"]))
        print(spread_line("reuse", measured["reuse"]))

    print("\n=== summary ===")
    print(f"{'update':>22} {'full runs':>9} {'reuse runs':>10} {'full obj':>16} {'reuse obj':>16}")
    for r in rows:
        f, u = r["full"], r["reuse"]
        print(f"{r['update']:>22} {f['runs']:>9} {u['runs']:>10} {f['measured']['mean']:>9.4f}±{f['measured']['std']:.4f}"
              f" {u['measured']['mean']:>9.4f}±{u['measured']['std']:.4f}")
    share = totals["reuse"]["flops"] / totals["full"]["flops"]
    last = rows[-1]
    gap = last["reuse"]["measured"]["mean"] - last["full"]["measured"]["mean"]
    spread = last["full"]["measured"]["std"]
    compute_ok, quality_ok = share <= 0.35, gap <= spread
    print(f"total: full {totals['full']['runs']} runs {totals['full']['flops']:.3g} FLOPs; reuse {totals['reuse']['runs']} runs "
          f"{totals['reuse']['flops']:.3g} FLOPs = {100 * share:.1f}% of full ({100 * (1 - share):.1f}% less): "
          f"floor <= 35% {'MET' if compute_ok else 'NOT MET'}")
    print(f"final objective: reuse - full = {gap:+.4f}; full's seed spread {spread:.4f}: floor {'MET' if quality_ok else 'NOT MET'}")
    print(json.dumps({"tokens_per_proxy": args.tokens_per_proxy, "runs_per_domain": args.runs_per_domain, "seeds": args.seeds,
                      "updates": rows, "totals": totals, "reuse_compute_share": share, "final_gap": gap,
                      "final_full_seed_std": spread, "compute_floor_met": compute_ok, "quality_floor_met": quality_ok,
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
