"""Is there mixing signal at this proxy scale? Seed noise against the spread across mixtures.

Builds the stdlib sample project at the given scale, samples its first full swarm, and trains the
same mixtures once per proxy seed (`--seeds`, each seed a swarm of its own: the same mixtures,
another initialisation and data order). For the objective and for every metric it prints:

- across: the standard deviation across the swarm's mixtures (of each mixture's seed mean);
- seed: the seed-to-seed standard deviation of one run (pooled over mixtures);
- paired: the same after taking out each seed's mean over the mixtures: the runs of one swarm
  share their seed, so an offset common to all of them moves no comparison between them (nor
  between verification runs of two mixtures with the same seed); this is the noise that does;
- robust: the paired noise from the median absolute deviation (x 1.4826), which one run far off
  (a mixture of one small domain, repeated until it overfits) does not dominate;
- ratio across / robust: above ~2 a regression can rank mixtures, near 1 it fits noise;
- the Spearman correlation (x100) of the mixtures' values between the first two seeds;
and, per seed, the 5-fold cross-validation of the log-linear fit on the swarm: Spearman and R^2
of the objective built from the out-of-fold predictions. With `--reuse`, the same for the swarm of
the sample's pending update (adding prose:notes) as the project plans it ([reuse] plan), after the
first mixture is proposed from the first seed's swarm and applied. The last line is one JSON object.

Usage: python -m benchmarks.signal_scale [--tokens-per-proxy N] [--eval-tokens N]
       [--runs-per-domain N] [--seeds N] [--preset NAME] [--project DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from benchmarks.common import log, sample_project
from engine import pipeline
from engine.project import Project
from engine.propose import objective_weights
from engine.regression.cv import cross_validate, score


def with_seed(project: Project, seed: int) -> None:
    s = project.settings
    project.settings = dataclasses.replace(s, proxy=dataclasses.replace(s.proxy, seed=seed))


def seed_swarms(project: Project, seeds: int, initial: bool) -> list:
    """The swarm of the project's update (the first mixture with `initial`, else the pending update,
    planned as [reuse] plan says), once per proxy seed (same mixtures), trained."""
    swarms = []
    for seed in range(seeds):
        with_seed(project, seed)
        ctx = pipeline.update_context(project, log, initial=initial)
        plan = pipeline.make_plan(project, ctx, "full" if initial else None)
        folder, _ = pipeline.plan_swarm(project, ctx, plan)
        swarms.append(folder)
    with_seed(project, 0)
    for folder in swarms:
        start = time.perf_counter()
        pipeline.train_swarm(project, folder, on_event=log)
        print(f"swarm {folder.id}: {time.perf_counter() - start:.0f} s", flush=True)
    return swarms


def spreads(values: np.ndarray) -> dict:
    """values [seeds, runs]: across-mixture std of the seed means, pooled seed std (raw, and with each
    seed's mean over the runs taken out), across / paired, and the seeds' rank agreement."""
    from scipy.stats import spearmanr

    across = float(np.std(values.mean(0), ddof=1))
    seed = float(np.sqrt(np.mean(np.var(values, axis=0, ddof=1))))
    centred = values - values.mean(1, keepdims=True)
    paired = float(np.sqrt(np.mean(np.var(centred, axis=0, ddof=1))))
    deviations = centred - centred.mean(0)
    robust = float(1.4826 * np.median(np.abs(deviations)) * np.sqrt(len(values) / (len(values) - 1)))
    rho = float(100 * spearmanr(values[0], values[1]).statistic) if len(values) > 1 else float("nan")
    return {"across": across, "seed": seed, "paired": paired, "robust": robust,
            "ratio": across / robust if robust > 0 else float("inf"), "seed_spearman": rho}


def objective_cv(project: Project, table, folds: int = 5) -> dict:
    """Cross-validated Spearman (x100) and R^2 of the objective from the log-linear fit's out-of-fold predictions."""
    settings = project.settings.regression
    report = cross_validate("loglinear", table.ratios, table.metrics, **{**settings.cv_kwargs("loglinear"), "folds": folds})
    w = objective_weights(project.settings.objective, table.metric_names)
    combined = score("objective", (table.metrics @ w)[:, None], (report.predictions @ w)[:, None])
    return {"spearman": float(combined.spearman[0]), "r2": float(combined.r2[0]),
            "metric_spearman_mean": report.mean_spearman, "metric_r2_mean": report.mean_r2}


def report(project: Project, swarms: list, title: str) -> dict:
    """Print and return the spreads of every metric and the objective's CV of each seed's fit."""
    tables = [folder.table() for folder in swarms]
    names = tables[0].metric_names
    w = objective_weights(project.settings.objective, names)
    stacked = np.stack([t.metrics for t in tables])  # [seeds, runs, metrics]
    rows = {"objective": spreads(stacked @ w)}
    rows.update({name: spreads(stacked[:, :, j]) for j, name in enumerate(names)})
    print(f"\n{title}: {len(tables[0].run_ids)} mixtures over {len(tables[0].domains)} units x {len(swarms)} seeds")
    print(f"{'metric':>28} {'across':>8} {'seed':>8} {'paired':>8} {'robust':>8} {'ratio':>6} {'seed rho':>8}")
    for name, r in rows.items():
        print(f"{name:>28} {r['across']:8.4f} {r['seed']:8.4f} {r['paired']:8.4f} {r['robust']:8.4f} {r['ratio']:6.2f} "
              f"{r['seed_spearman']:8.1f}")
    fits = [objective_cv(project, t) for t in tables]
    for seed, fit in enumerate(fits):
        print(f"seed {seed}: log-linear fit, objective CV spearman {fit['spearman']:.1f}, R^2 {fit['r2']:.3f}; "
              f"per metric mean spearman {fit['metric_spearman_mean']:.1f}, R^2 {fit['metric_r2_mean']:.3f}")
    return {"runs": len(tables[0].run_ids), "units": tables[0].domains, "spreads": rows, "fits": fits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-per-proxy", type=int, default=262144)
    ap.add_argument("--eval-tokens", type=int, default=8192, help="[proxy] eval_tokens_per_domain")
    ap.add_argument("--runs-per-domain", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="also measure the swarm of the sample's pending update")
    ap.add_argument("--project", help="where to build the sample project (default: a temporary folder)")
    args = ap.parse_args()
    start = time.perf_counter()
    project = sample_project(args.project, args.tokens_per_proxy, args.runs_per_domain)
    s = project.settings
    project.settings = dataclasses.replace(
        s, proxy=dataclasses.replace(s.proxy, preset=args.preset, eval_tokens_per_domain=args.eval_tokens))
    print(f"{args.tokens_per_proxy:,} tokens per proxy, preset {args.preset}, {args.eval_tokens} eval tokens per domain")
    out = {"tokens_per_proxy": args.tokens_per_proxy, "eval_tokens": args.eval_tokens, "preset": args.preset,
           "seeds": args.seeds, "first": report(project, seed_swarms(project, args.seeds, True), "first swarm")}
    if args.reuse:
        ctx = pipeline.update_context(project, log, initial=True)
        pipeline.apply_update(project, ctx, pipeline.run_update(project, ctx, "full", log))
        out["update"] = report(project, seed_swarms(project, args.seeds, False), "update swarm")
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
