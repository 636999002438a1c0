"""Regressors and the exact proposer on RegMix's public 1M-scale swarm (512 train / 256 test runs).

For every regressor: fit on the 512 training runs (time), Spearman x100 of predicted vs true loss on
the 256 test mixtures per metric and on average, and K-fold CV (Spearman / R^2 / MAE means) on the
training runs. Nothing is tuned on, or early-stopped on, the test runs: LightGBM early-stops on a
held-out split of the training runs and auto chooses by CV on the training runs. Then the exact
proposer minimises the predicted Pile-CC loss of the log-linear fit near RegMix's prior under
sample repetition caps, with its KKT residual and solve time, and the bootstrap spread of that
proposal ([propose] bootstrap replicates: seconds, interval widths); and the proposal with the
default [propose] settings, the default objective and no token counts (no caps), against the same
with kl_reg = 0.

Prints whether each floor is met; the last line is one JSON object with every figure.

    python benchmarks/regmix_public.py [--data DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.mixture_table import read_tables  # noqa: E402
from engine.bootstrap import bootstrap_proposal  # noqa: E402
from engine.propose import ObjectiveSettings, ProposeSettings, propose  # noqa: E402
from engine.regression.base import make_regressor  # noqa: E402
from engine.regression.cv import cross_validate  # noqa: E402
from engine.regression.store import RegressionSettings  # noqa: E402
from engine.regression.cv import spearman  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PILE_CC = "the_pile_pile_cc_val_loss"
# RegMix's prior for the 17 domains, in the column order of the data (shared/data/regmix/README.md).
PRIOR = [
    0.11328527, 0.07960865, 0.00391349, 0.1853759, 0.05108136, 0.01596293, 0.10175077, 0.00370752, 0.06652935,
    0.00175077, 0.02708548, 0.23686921, 0.01184346, 0.00792997, 0.00803296, 0.03882595, 0.04644696,
]
FLOORS = {"mean_spearman": 98.9, "pile_cc_spearman": 99.0, "loglinear_fit_seconds": 30.0}
REGRESSORS = ["loglinear", "lightgbm", "ridge", "gp", "powerlaw", "auto"]
# A sample constraint setting: a 100B-token target run drawn from a 100B-token corpus split as the
# prior, each domain repeated at most twice (so no domain may exceed twice its prior weight).
CORPUS_TOKENS = 100_000_000_000
TARGET_TOKENS = 100_000_000_000
REPETITION = 2.0
KL_REG = 0.01


def settings_for(quick: bool) -> RegressionSettings:
    if quick:
        return RegressionSettings(
            folds=3, candidates=["loglinear", "lightgbm", "ridge"], loglinear_inits=8, loglinear_iterations=50,
            lightgbm_bags=1, lightgbm_rounds=300, lightgbm_learning_rate=0.05, gp_max_opt_points=48, powerlaw_inits=2,
        )
    return RegressionSettings()


def evaluate(name: str, settings: RegressionSettings, train, test) -> dict:
    """Fit on train, score on test, cross-validate on train."""
    start = time.perf_counter()
    model = make_regressor(name, **settings.regressor_settings(name)).fit(train.ratios, train.metrics)
    seconds = time.perf_counter() - start
    test_sp = spearman(test.metrics, model.predict(test.ratios))
    if name == "auto":  # auto already cross-validated every option on the training runs
        cv, cv_note = model.report, f"CV of the chosen {model.report.regressor} (selection made on these folds)"
    else:
        cv = cross_validate(name, train.ratios, train.metrics, **settings.cv_kwargs(name))
        cv_note = f"{settings.folds}-fold CV"
    return {
        "regressor": name,
        "chosen": model.describe(),
        "fit_seconds": round(seconds, 2),
        "test_spearman": {m: round(float(v), 2) for m, v in zip(train.metric_names, test_sp)},
        "test_mean_spearman": round(float(np.mean(test_sp)), 2),
        "test_pile_cc_spearman": round(float(test_sp[train.metric_names.index(PILE_CC)]), 2),
        "cv_spearman": round(cv.mean_spearman, 2),
        "cv_r2": round(cv.mean_r2, 4),
        "cv_mae": round(cv.mean_mae, 4),
        "cv_note": cv_note,
        "model": model,
    }


def proposal(loglinear, train) -> dict:
    prior = np.array(PRIOR)
    tokens = prior * CORPUS_TOKENS
    settings = ProposeSettings(target_tokens=TARGET_TOKENS, repetition_factor=REPETITION, kl_reg=KL_REG)
    objective = ObjectiveSettings({PILE_CC: 1.0})
    p = propose(loglinear, train, prior, tokens, settings, objective)
    cpu = time.process_time()
    spread = bootstrap_proposal(p, loglinear, train, prior, tokens, settings, objective)
    cpu = time.process_time() - cpu
    widths = [spread.upper[d] - spread.lower[d] for d in p.domains]
    prior_loss = float(loglinear.predict(prior[None])[0, train.metric_names.index(PILE_CC)])
    return {
        "objective": f"predicted {PILE_CC}",
        "constraints": f"target {TARGET_TOKENS:.3g} tokens, corpus {CORPUS_TOKENS:.3g} split as the prior, "
        f"repetition factor {REPETITION}, kl_reg {KL_REG}",
        "predicted_pile_cc_loss": round(p.predicted_objective, 4),
        "prior_predicted_pile_cc_loss": round(prior_loss, 4),
        "kkt_residual": float(f"{p.kkt_residual:.3g}"),
        "solve_seconds": round(p.seconds, 4),
        "binding_caps": p.binding_caps,
        "mixture": {d: round(v, 4) for d, v in p.mixture.items()},
        "bootstrap": {"replicates": spread.replicates, "failed": spread.failed, "seconds": round(spread.seconds, 2),
                      "cpu_seconds": round(cpu, 2),
                      "mean_interval_width": round(float(np.mean(widths)), 4), "max_interval_width": round(float(np.max(widths)), 4),
                      "predicted_interval": [round(spread.predicted_lower, 4), round(spread.predicted_upper, 4)]},
    }


def default_proposals(loglinear, train) -> dict:
    """The exact proposal a new project makes on this swarm (imported without token counts: no
    caps; the default objective, the mean of the 13 losses; RegMix's prior) with the default
    [propose] settings, and the same with kl_reg = 0: the weights of the smallest domain and of
    Pile-CC, and the largest weight."""
    prior = np.array(PRIOR)
    smallest = train.domains[int(np.argmin(prior))]
    out = {"smallest_domain": smallest, "smallest_prior": round(float(prior.min()), 4)}
    for label, settings in (("default", ProposeSettings()), ("kl_reg_0", ProposeSettings(kl_reg=0.0))):
        p = propose(loglinear, train, prior, None, settings, ObjectiveSettings()).mixture
        out[label] = {"kl_reg": settings.kl_reg, "smallest": round(p[smallest], 4), "pile_cc": round(p["the_pile_pile_cc"], 4),
                      "largest": max(p, key=p.get), "largest_weight": round(max(p.values()), 4)}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "regmix")
    parser.add_argument("--quick", action="store_true", help="small subsets and fast settings (smoke test)")
    parser.add_argument("--regressors", nargs="+", choices=REGRESSORS, default=REGRESSORS,
                        help="the regressors to measure besides loglinear, which the proposer needs (default: all)")
    args = parser.parse_args(argv)
    train = read_tables(args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv")
    test = read_tables(args.data / "test_mixture_1m.csv", args.data / "test_pile_loss_1m.csv")
    if args.quick:
        metrics = [PILE_CC, "the_pile_arxiv_val_loss", "the_pile_github_val_loss"]
        train, test = train.subset(np.arange(96)).select_metrics(metrics), test.subset(np.arange(64)).select_metrics(metrics)
    settings = settings_for(args.quick)
    print(f"RegMix public swarm: {train.n_runs} train / {test.n_runs} test runs, {len(train.domains)} domains, "
          f"{len(train.metric_names)} metrics{' (quick mode)' if args.quick else ''}")

    names = [n for n in REGRESSORS if n in args.regressors or n == "loglinear"]
    results = {}
    for name in names:
        r = evaluate(name, settings, train, test)
        results[name] = r
        print(f"{name:10s} fit {r['fit_seconds']:7.2f}s  test spearman mean {r['test_mean_spearman']:6.2f}  "
              f"pile-cc {r['test_pile_cc_spearman']:6.2f}  | CV spearman {r['cv_spearman']:6.2f}  "
              f"r2 {r['cv_r2']:.4f}  mae {r['cv_mae']:.4f}  ({r['chosen']}; {r['cv_note']})")
    short = {m: m.removeprefix("the_pile_").removesuffix("_val_loss") for m in train.metric_names}
    print("test spearman x100 per metric:")
    print(" " * 18 + "".join(f"{n[:9]:>10s}" for n in names))
    for m in train.metric_names:
        print(f"{short[m][:18]:18s}" + "".join(f"{results[n]['test_spearman'][m]:10.2f}" for n in names))

    best = max(names, key=lambda n: results[n]["test_mean_spearman"])
    floors = {
        "mean_spearman": results[best]["test_mean_spearman"] >= FLOORS["mean_spearman"],
        "pile_cc_spearman": results[best]["test_pile_cc_spearman"] >= FLOORS["pile_cc_spearman"],
        "loglinear_fit_seconds": results["loglinear"]["fit_seconds"] < FLOORS["loglinear_fit_seconds"],
    }
    exact = proposal(results["loglinear"]["model"], train)
    print(f"exact proposer ({exact['constraints']}): predicted pile-cc loss {exact['predicted_pile_cc_loss']} "
          f"(prior {exact['prior_predicted_pile_cc_loss']}), KKT residual {exact['kkt_residual']:.2e}, "
          f"solve {exact['solve_seconds']:.3f}s, binding caps: {', '.join(exact['binding_caps']) or 'none'}")
    print("mixture: " + ", ".join(f"{d.removeprefix('the_pile_')} {v:.3f}" for d, v in exact["mixture"].items() if v >= 0.001))
    b = exact["bootstrap"]
    print(f"bootstrap: {b['replicates']} replicates ({b['failed']} failed) in {b['seconds']}s ({b['cpu_seconds']}s of CPU); "
          f"95% intervals of the "
          f"weights {b['mean_interval_width']} wide on average (at most {b['max_interval_width']}); predicted pile-cc "
          f"loss {b['predicted_interval'][0]}-{b['predicted_interval'][1]}")
    defaults = default_proposals(results["loglinear"]["model"], train)
    for label in ("kl_reg_0", "default"):
        d = defaults[label]
        print(f"exact proposal, no caps, kl_reg {d['kl_reg']}: {defaults['smallest_domain']} (prior "
              f"{defaults['smallest_prior']}) {d['smallest']}, pile_cc {d['pile_cc']}, largest {d['largest']} {d['largest_weight']}")
    shown = {
        "mean_spearman": (results[best]["test_mean_spearman"], best),
        "pile_cc_spearman": (results[best]["test_pile_cc_spearman"], best),
        "loglinear_fit_seconds": (results["loglinear"]["fit_seconds"], "loglinear"),
    }
    for key, floor in FLOORS.items():
        skipped = "quick mode" if args.quick else "not every regressor measured" if names != REGRESSORS and key != "loglinear_fit_seconds" else ""
        verdict = f"skipped ({skipped})" if skipped else ("MET" if floors[key] else "NOT MET")
        value, who = shown[key]
        print(f"floor {key} {'<' if key.endswith('seconds') else '>='} {floor}: {value} ({who}) {verdict}")

    summary = {
        "quick": args.quick,
        "train_runs": train.n_runs,
        "test_runs": test.n_runs,
        "regressors": {n: {k: v for k, v in r.items() if k != "model"} for n, r in results.items()},
        "best_regressor": best,
        "floors": {k: {"floor": FLOORS[k], "met": None if args.quick or (names != REGRESSORS and k != "loglinear_fit_seconds")
                       else floors[k]} for k in FLOORS},
        "exact_proposer": exact,
        "default_proposals": defaults,
    }
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()
