"""Where the fit verdict's thresholds sit, measured on RegMix's released swarm (docs/verdicts.md).

With the project's default log-linear settings and Pile-CC loss as the objective:
  1. the verdict of fits on the first 48, 128 and 512 training runs (the figures it judged);
  2. the null: the same 160 runs with their losses shuffled across mixtures, `--shuffles` times: the
     CV Spearman of the objective (against the chance bound 1.645 / sqrt(n - 1)), the spread of the
     fit's predictions against the measured spread, and the verdicts;
  3. where the law on all 512 runs sits at its floor (varying part below a tenth of a standard
     deviation): the share of runs, and how far their measured loss misses the prediction (rms, in
     standard deviations), per metric, for the blind-floor threshold.
The last line is one JSON object with the figures.

    python -m benchmarks.verdict_calibration [--data DIR] [--shuffles N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from engine.mixture_table import read_tables
from engine.regression.base import make_regressor
from engine.regression.store import fit_and_store
from engine.regression.verdict import THRESHOLDS
from engine.settings import ObjectiveSettings, RegressionSettings

REPO = Path(__file__).resolve().parents[1]
PILE_CC = "the_pile_pile_cc_val_loss"
SETTINGS = RegressionSettings(regressor="loglinear")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "regmix")
    ap.add_argument("--shuffles", type=int, default=12)
    args = ap.parse_args()
    table = read_tables(args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv")
    objective = ObjectiveSettings({PILE_CC: 1.0})
    pile = table.select_metrics([PILE_CC])
    figures: dict = {"subsets": {}, "shuffled": [], "floor": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for runs in (48, 128, 512):
            v = fit_and_store(tmp, pile.subset(np.arange(runs)), "loglinear", SETTINGS, objective=objective).verdict
            figures["subsets"][runs] = {"verdict": v.verdict, "spearman": v.objective_spearman, "r2": v.objective_r2,
                                        "spread": v.prediction_spread}
            print(f"{runs:4d} runs: {v.verdict:8s} CV Spearman {v.objective_spearman:5.1f} (chance {v.chance_spearman:.0f}), "
                  f"R^2 {v.objective_r2:.3f}, prediction spread {v.prediction_spread:.2f}", flush=True)
        base = pile.subset(np.arange(160))
        for seed in range(args.shuffles):
            shuffled = base.subset(np.arange(160))
            shuffled.metrics = base.metrics[np.random.default_rng(100 + seed).permutation(160)]
            v = fit_and_store(tmp, shuffled, "loglinear", SETTINGS, objective=objective).verdict
            figures["shuffled"].append({"verdict": v.verdict, "spearman": v.objective_spearman, "spread": v.prediction_spread})
    sp = np.array([s["spearman"] for s in figures["shuffled"]])
    spread = np.array([s["spread"] for s in figures["shuffled"]])
    chance = 100 * THRESHOLDS.chance_z / np.sqrt(159)
    print(f"shuffled losses, 160 runs, {args.shuffles} shuffles: CV Spearman {sp.mean():.1f} +- {sp.std():.1f} "
          f"(above the chance bound {chance:.0f} in {int((sp >= chance).sum())}), prediction spread "
          f"{spread.min():.2f}-{spread.max():.2f}; verdicts {dict(Counter(s['verdict'] for s in figures['shuffled']))}")
    model = make_regressor("loglinear", **SETTINGS.regressor_settings("loglinear")).fit(table.ratios, table.metrics)
    fitted, sd = model.predict(table.ratios), table.metrics.std(0)
    with np.errstate(over="ignore"):
        varying = np.exp(table.ratios @ model.t.T)
    for i, name in enumerate(table.metric_names):
        at = varying[:, i] < THRESHOLDS.floor_band * sd[i]
        miss = float(np.sqrt(np.mean((table.metrics[at, i] - fitted[at, i]) ** 2)) / sd[i]) if at.any() else 0.0
        figures["floor"][name] = {"share": float(at.mean()), "miss": miss}
    shares = [f["share"] for f in figures["floor"].values()]
    misses = [f["miss"] for f in figures["floor"].values() if f["share"] > 0]
    print(f"512 runs, 13 metrics: at the law's floor on {min(shares):.0%}-{max(shares):.0%} of the runs, missing it by "
          f"{min(misses, default=0):.2f}-{max(misses, default=0):.2f} standard deviations (blind from "
          f"{THRESHOLDS.blind_residual})")
    print(json.dumps(figures, sort_keys=True, default=float))


if __name__ == "__main__":
    main()
