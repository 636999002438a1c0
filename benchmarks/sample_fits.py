"""How good are the fits behind the stdlib sample's mixtures? Cross-validation of every fit of the main job.

For each seed: a fresh copy of the stdlib sample with [swarm] seed and [proxy] seed set to it runs
the README's main job (`olmix-tui DIR --batch --compare`: the first mixture, the staged update by
reuse, its full recomputation and verification proxies). Then every swarm the job fitted (first
mixture, reuse, full recomputation) is cross-validated again with the project's regression
settings: per objective metric Spearman x100 and R^2, and for the objective itself (the
objective-weighted out-of-fold predictions against the measured objective), and what the job
recorded with the fit (its verdict; a fallback or a forced proposal). With --refit, no
training: the swarms of projects made before are refitted with the engine on the path, which
measures a change of the fit on the same runs. The last line is one JSON object with the figures.

    python -m benchmarks.sample_fits --seeds 0 1 2 [--keep DIR]
    python -m benchmarks.sample_fits --refit DIR/seed-0 DIR/seed-1 DIR/seed-2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.mixture_value import log
from engine import pipeline, samples
from engine.history import read_history
from engine.project import Project
from engine.propose import objective_weights
from engine.regression.cv import cross_validate, score


def seeded_sample(folder: Path, seed: int) -> Project:
    """The stdlib sample in `folder`, its swarms and proxies seeded with `seed`."""
    project = samples.create(folder, "stdlib")
    s = project.settings
    project.settings = dataclasses.replace(s, swarm=dataclasses.replace(s.swarm, seed=seed),
                                           proxy=dataclasses.replace(s.proxy, seed=seed))
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def fitted_swarms(project: Project) -> list[tuple[str, str, str]]:
    """(label, swarm id, what the job did with its fit) of every swarm the main job fitted, in order."""
    out = []
    for entry in read_history(project):
        c = entry.content
        kind = "initial" if entry.kind == "initial" else "update"
        records = [(f"{kind} ({c.plan.kind})", c)]
        if c.compare is not None and c.compare.full.swarm != c.swarm:
            records.append((f"{kind} (full)", c.compare.full))
        for label, record in records:
            if record.swarm:
                out.append((label, record.swarm, record.evidence.summary if record.evidence is not None else "-"))
    return out


def cross_validated(project: Project, swarm_id: str) -> dict:
    """CV of the project's regressor on the swarm's runs: objective metrics and the objective."""
    table = pipeline.open_swarm(project, swarm_id).table()
    s = project.settings.regression
    start = time.perf_counter()
    cv = cross_validate(s.regressor, table.ratios, table.metrics, **s.cv_kwargs(s.regressor))
    seconds = time.perf_counter() - start
    w = objective_weights(project.settings.objective, table.metric_names)
    objective = score("objective", (table.metrics @ w)[:, None], (cv.predictions @ w)[:, None])
    metrics = {m: {"spearman": float(cv.spearman[i]), "r2": float(cv.r2[i])}
               for i, m in enumerate(table.metric_names) if w[i] > 0}
    return {"runs": table.n_runs, "units": len(table.domains), "cv_seconds": round(seconds, 2),
            "objective": {"spearman": float(objective.spearman[0]), "r2": float(objective.r2[0])}, "metrics": metrics}


def measured(project: Project) -> dict:
    out = {}
    for entry in read_history(project):
        if entry.content.compare is not None:
            out[entry.label] = {k: round(m.mean, 4) for k, m in entry.content.compare.verification.measured.items()}
    return out


def report(project: Project) -> dict:
    fits = {}
    for label, swarm_id, done in fitted_swarms(project):
        r = fits[label] = {**cross_validated(project, swarm_id), "recorded": done}
        o = r["objective"]
        per_metric = "  ".join(f"{m.split(':')[-1]} {v['spearman']:.1f}/{v['r2']:.3g}" for m, v in r["metrics"].items())
        print(f"  {label:28s} {r['runs']:3d} runs {r['units']} units  objective CV spearman {o['spearman']:6.1f}  "
              f"R^2 {o['r2']:9.3g}  | {per_metric}  ({r['cv_seconds']}s)  recorded: {done}", flush=True)
    return {"fits": fits, "measured": measured(project)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--keep", type=Path, help="build the projects here (default: a temporary folder)")
    ap.add_argument("--refit", type=Path, nargs="*", help="refit these projects' swarms instead of training")
    args = ap.parse_args()
    results = {}
    if args.refit:
        for root in args.refit:
            print(f"{root}:")
            results[str(root)] = report(Project.load(root))
    else:
        base = args.keep or Path(tempfile.mkdtemp(prefix="olmix-sample-fits-"))
        for seed in args.seeds:
            start = time.perf_counter()
            project = seeded_sample(base / f"seed-{seed}", seed)
            pipeline.run_batch(project, True, 3, log)
            print(f"seed {seed} ({project.root}, {time.perf_counter() - start:.0f}s):")
            results[f"seed-{seed}"] = report(Project.load(project.root))
            for label, m in results[f"seed-{seed}"]["measured"].items():
                print(f"  measured objective {label}: " + ", ".join(f"{k} {v}" for k, v in m.items()))
    summary = {}
    for key, r in results.items():
        for label, f in r["fits"].items():
            summary.setdefault(label, []).append(f["objective"])
    for label, values in summary.items():
        sp = [v["spearman"] for v in values]
        r2 = [v["r2"] for v in values]
        print(f"{label:22s} objective CV spearman mean {np.mean(sp):6.1f} (min {min(sp):.1f})  "
              f"R^2 median {np.median(r2):.3g} (min {min(r2):.3g})")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
