"""Does the proposed mixture beat the natural one? Verification proxies on the stdlib sample.

Builds the sample project, runs the first-mixture pipeline (full swarm, log-linear fit, exact
proposer), then trains verification proxies with seed repeats, same token budget, on three
mixtures: the natural distribution, the uniform mixture and the proposed one. Prints each one's
measured objective (the project's objective: bits per byte on the held-out eval sets) with its
seed-to-seed spread, the spread of the objective across the swarm's mixtures for scale, and
whether the floor holds: proposed beats natural by more than the larger seed spread of the two.
The last line is one JSON object with the figures.

Usage: python benchmarks/mixture_value.py [--tokens-per-proxy N] [--runs-per-domain N] [--seeds N] [--project DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from benchmarks.common import sample_project, spread_line
from engine import pipeline
from engine.events import Message, TaskFinished


def log(event) -> None:
    if isinstance(event, Message):
        print(event.text, flush=True)
    elif isinstance(event, TaskFinished) and event.task.startswith(("swarm", "fit")):
        print(f"  {event.task}: {json.dumps({k: v for k, v in event.info.items() if not isinstance(v, dict)}, default=str)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-per-proxy", type=int, default=262144)
    ap.add_argument("--runs-per-domain", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--project", help="where to build the sample project (default: a temporary folder)")
    args = ap.parse_args()
    start = time.perf_counter()
    project = sample_project(args.project, args.tokens_per_proxy, args.runs_per_domain)
    print(f"project {project.root}: {len(project.domains)} domains, {args.tokens_per_proxy:,} tokens per proxy")
    ctx = pipeline.update_context(project, log, initial=True)
    result = pipeline.run_update(project, ctx, "full", log)
    leaves = ctx.leaves
    mixtures = {"natural": dict(ctx.prior), "uniform": {x: 1 / len(leaves) for x in leaves}, "proposed": result.mixture}
    verify = pipeline.plan_verification(project, ctx, mixtures, args.seeds)
    pipeline.train_swarm(project, verify, on_event=log)
    names = verify.table().metric_names
    objective = pipeline.objective_fn(project, names)
    measured = {label: dataclasses.asdict(m) for label, m in pipeline.measured_objective(verify, objective).items()}
    swarm_values = [objective(s.metrics) for s in pipeline.find_swarm(project, result.swarm).statuses() if s.state == "done"]

    print("\nmixtures (natural | uniform | proposed):")
    for x in leaves:
        print(f"  {x:>14}: {mixtures['natural'][x]:.3f} | {mixtures['uniform'][x]:.3f} | {mixtures['proposed'][x]:.3f}")
    print(f"\nmeasured objective ({', '.join(w for w in project.settings.objective.weights) or 'mean of all metrics'}), "
          f"{args.seeds} seeds each:")
    for label in ("natural", "uniform", "proposed"):
        print(spread_line(label, measured[label]))
    gain = measured["natural"]["mean"] - measured["proposed"]["mean"]
    spread = max(measured["natural"]["std"], measured["proposed"]["std"])
    print(f"predicted objective of the proposal: {result.predicted:.4f}")
    print(f"spread of the objective across the {len(swarm_values)} swarm mixtures (std): {np.std(swarm_values, ddof=1):.4f}")
    floor = gain > spread
    print(f"proposed beats natural by {gain:.4f} bits/byte; seed spread {spread:.4f}: floor {'MET' if floor else 'NOT MET'}")
    figures = {
        "tokens_per_proxy": args.tokens_per_proxy, "seeds": args.seeds, "swarm_runs": result.compute.runs,
        "measured": {k: {"mean": v["mean"], "std": v["std"]} for k, v in measured.items()},
        "predicted_proposed": result.predicted, "gain_over_natural": gain, "seed_spread": spread,
        "swarm_objective_std": float(np.std(swarm_values, ddof=1)), "mixtures": mixtures, "floor_met": bool(floor),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
