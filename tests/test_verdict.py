"""Fit verdicts: real fits on RegMix's released runs (usable; unusable once the metrics are shuffled
away from their mixtures), a law that runs flat over part of the swarm, predictions that do not
move, a verdict judged again for another objective, and the log-linear penalty on a noisy swarm."""

from pathlib import Path

import numpy as np
import pytest

from engine.mixture_table import MixtureTable, read_tables
from engine.regression.base import make_regressor
from engine.regression.store import fit_and_store, read_fit_summary
from engine.regression.verdict import THRESHOLDS, UNUSABLE, USABLE, WEAK, FitEvidence, chance_spearman, judge
from engine.settings import ObjectiveSettings, RegressionSettings

REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"
PILE_CC = "the_pile_pile_cc_val_loss"
needs_regmix = pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").exists(), reason="RegMix data not present")
LOGLINEAR = RegressionSettings(regressor="loglinear", loglinear_inits=16, loglinear_iterations=60)


def regmix(runs: int, metrics=(PILE_CC,)) -> MixtureTable:
    table = read_tables(REGMIX / "train_mixture_1m.csv", REGMIX / "train_pile_loss_1m.csv")
    return table.subset(np.arange(runs)).select_metrics(list(metrics))


@needs_regmix
def test_a_fit_on_regmix_is_usable_and_on_shuffled_metrics_is_not(tmp_path):
    usable = fit_and_store(tmp_path, regmix(160), "loglinear", LOGLINEAR)
    v = usable.verdict
    assert v.verdict == USABLE and v.reasons == [] and v.fix == ""
    assert v.objective_spearman > 80 and v.objective_r2 > 0.5 and v.runs == 160 and v.units == 17
    assert v.weights == {PILE_CC: 1.0}
    assert read_fit_summary(usable.folder).verdict == v  # stored in fit.toml
    for seed in (2, 3):  # runs' losses on other runs' mixtures: no relation left (CV Spearman about -11 +- 12)
        table = regmix(160)
        table.metrics = table.metrics[np.random.default_rng(seed).permutation(160)]
        flat = fit_and_store(tmp_path, table, "loglinear", LOGLINEAR).verdict
        assert flat.verdict in (WEAK, UNUSABLE) and flat.objective_spearman < THRESHOLDS.usable_spearman
        assert flat.fix.startswith("Train the proxies on more tokens")  # enough runs: the hint is the scale
        if flat.objective_spearman < chance_spearman(160):
            assert flat.verdict == UNUSABLE and "no sign of ranking mixtures" in flat.reasons[0]


def _evidence(rng, n=40, law_t=None, fitted=None):
    """Runs over 3 units, an objective that falls with unit 0's weight, and a fit's traces."""
    X = rng.dirichlet(np.ones(3) * 0.7, size=n)
    y = 3.0 - 0.3 * X[:, 0] + rng.normal(0, 0.005, n)
    law = None if law_t is None else (np.array([np.log(2.6)]), np.array([law_t]))
    pred = fitted if fitted is not None else (np.exp(law[0]) + np.exp(X @ law[1].T))[:, 0] if law else y
    return FitEvidence(X, y[:, None], y[:, None] + rng.normal(0, 0.01, (n, 1)), np.asarray(pred)[:, None], law)


def test_a_law_that_runs_flat_over_part_of_the_swarm_is_unusable():
    """The issue's reuse fit: a coefficient of -21.6 on a unit puts every run rich in it at the
    law's floor, although their measured objective differs; the hint names that unit."""
    rng = np.random.default_rng(1)
    ev = _evidence(rng, law_t=[-0.2, -0.9, -21.6])
    v = judge(ev, ["eval/bpb"], ["web", "code", "virtual"], np.array([1.0]), folds=5)
    assert v.verdict == UNUSABLE and v.floor_share >= THRESHOLDS.unusable_floor_share
    assert any("runs flat on" in r and "rich in virtual" in r for r in v.reasons)
    assert "Vary fewer units" in v.fix and "virtual" in v.fix
    calm = judge(_evidence(np.random.default_rng(1), law_t=[-1.2, -0.9, -1.0]), ["eval/bpb"], ["web", "code", "virtual"],
                 np.array([1.0]), folds=5)
    assert calm.floor_share == 0.0 and not any("runs flat" in r for r in calm.reasons)


def test_predictions_that_do_not_move_are_unusable_unless_they_rank_well():
    """A fit whose predictions barely move over the runs: unusable when it ranks held-out runs only
    loosely, weak when it ranks them well (a law its penalty shrank); few runs ask for more."""
    rng = np.random.default_rng(2)
    ev = _evidence(rng, n=12, fitted=np.full(12, 2.9))
    y = ev.metrics[:, 0]
    loose = FitEvidence(ev.ratios, ev.metrics, (y + rng.normal(0, 4 * y.std(), 12))[:, None], ev.fitted)
    v = judge(loose, ["eval/bpb"], ["a", "b", "c"], np.array([1.0]), folds=5)
    assert v.objective_spearman < THRESHOLDS.usable_spearman
    assert v.verdict == UNUSABLE and any("barely move" in r for r in v.reasons)
    assert v.fix.startswith("Train more runs: 12 runs for 3 units")
    shrunk = FitEvidence(ev.ratios, ev.metrics, ev.metrics + 0.05 * (y - y.mean())[:, None], ev.metrics * 0.1 + 2.6)
    v = judge(shrunk, ["eval/bpb"], ["a", "b", "c"], np.array([1.0]), folds=5)
    assert v.objective_spearman > 95 and v.verdict == WEAK and any("barely move" in r for r in v.reasons)


def test_a_weak_fit_ranks_but_misses_one_of_the_objective_metrics(tmp_path):
    """One metric follows the law, the other is noise: the objective still ranks, but the fit
    predicts the noisy metric worse than its mean on held-out runs."""
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), size=24)
    Y = 1.5 + np.exp(X @ np.array([[-1.0, 0.5, 0.2], [0.3, -1.2, 0.1]]).T)
    Y[:, 1] = Y[:, 1].mean() + rng.normal(0, 0.1, 24)
    table = MixtureTable([f"r{i}" for i in range(24)], ["web", "code", "books"], X, ["web/bpb", "code/bpb"], Y)
    fit = fit_and_store(tmp_path, table, "loglinear", LOGLINEAR)
    assert fit.verdict.verdict == WEAK and fit.verdict.objective_spearman >= THRESHOLDS.usable_spearman
    assert any("code/bpb" in r and "worse than their mean" in r for r in fit.verdict.reasons)
    # judged again, from the stored evidence, for an objective on web/bpb alone: nothing weak left
    summary = read_fit_summary(fit.folder)
    web = summary.verdict_on(ObjectiveSettings({"web/bpb": 1.0}))
    assert web.weights == {"web/bpb": 1.0} and web.verdict == USABLE
    assert summary.verdict_on(ObjectiveSettings()) == fit.verdict  # the stored one, not judged again


def test_the_penalty_keeps_a_fit_on_few_noisy_runs_from_saturating():
    """24 runs over three units and a metric of pure noise: without the penalty the law's varying
    part swings by many log units over the runs (a coefficient near -60: it saturates); the penalty
    the inner CV chooses (its largest here) keeps it flat, as the data say it is."""
    rng = np.random.default_rng(2)
    X = rng.dirichlet(np.ones(3), size=24)
    y = 2.9 + rng.normal(0, 0.05, (24, 1))
    free = make_regressor("loglinear", inits=16, iterations=100, ridge=[0.0]).fit(X, y)
    held = make_regressor("loglinear", inits=16, iterations=100).fit(X, y)
    assert np.var(X @ free.t.T) > 10 and np.abs(free.t).max() > 20
    assert np.var(X @ held.t.T) < 0.01 and held.penalty[0] == max(RegressionSettings().loglinear_ridge)
