"""Regressors, cross-validation and the fit store, on RegMix's real swarm results and synthetic laws."""

import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError, DataError
from engine.mixture_table import MixtureTable, read_tables
from engine.propose import propose
from engine.regression.base import Regressor, load_regressors, make_regressor
from engine.regression.cv import cross_validate
from engine.regression.store import fit_and_store, fit_id, load_fit
from engine.settings import REGRESSOR_NAMES, ObjectiveSettings, ProposeSettings, RegressionSettings
from engine.regression.cv import spearman

REGMIX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "regmix"
METRICS = ["the_pile_pile_cc_val_loss", "the_pile_arxiv_val_loss", "the_pile_github_val_loss"]

FAST = {
    "loglinear": {"inits": 8, "iterations": 60},
    "lightgbm": {"rounds": 300, "learning_rate": 0.05},
    "ridge": {},
    "gp": {"max_opt_points": 64},
    "powerlaw": {"inits": 2, "iterations": 40},
}


@pytest.fixture(scope="module")
def regmix():
    if not REGMIX.is_dir():
        pytest.skip("RegMix swarm results not present")
    train = read_tables(REGMIX / "train_mixture_1m.csv", REGMIX / "train_pile_loss_1m.csv")
    test = read_tables(REGMIX / "test_mixture_1m.csv", REGMIX / "test_pile_loss_1m.csv")
    return train.subset(np.arange(160)).select_metrics(METRICS), test.subset(np.arange(64)).select_metrics(METRICS)


def synthetic(n=60, m=4, seed=0, noise=0.0):
    """Mixtures from a Dirichlet and metrics from a known log-linear law (plus optional noise)."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(m) * 0.7, size=n)
    c = np.array([0.5, 0.2])
    t = np.array([[-2.0, 0.3, 0.1, 0.0], [0.2, -1.5, 0.4, 0.1]])[:, :m]
    Y = np.exp(c)[None] + np.exp(X @ t.T) + noise * rng.standard_normal((n, 2))
    return X, Y, c, t


def test_registry_lists_every_regressor_and_rejects_unknown_names():
    assert set(load_regressors()) == set(REGRESSOR_NAMES) == {"loglinear", "lightgbm", "ridge", "gp", "powerlaw", "ensemble", "auto"}
    with pytest.raises(ConfigError, match="use one of"):
        make_regressor("xgboost")
    with pytest.raises(ConfigError, match="does not take"):
        make_regressor("ridge", depth=3)


@pytest.mark.parametrize("name", sorted(FAST))
def test_regressor_beats_mean_on_regmix_and_round_trips(name, regmix, tmp_path):
    train, test = regmix
    model = make_regressor(name, **FAST[name]).fit(train.ratios, train.metrics)
    pred = model.predict(test.ratios)
    assert pred.shape == (test.n_runs, len(METRICS))
    mse = ((pred - test.metrics) ** 2).mean(0)
    mse_mean = ((train.metrics.mean(0) - test.metrics) ** 2).mean(0)
    assert np.all(mse < mse_mean), (name, mse, mse_mean)
    assert np.nanmean(spearman(test.metrics, pred)) > 60
    back = Regressor.load(model.save(tmp_path / name))
    np.testing.assert_array_equal(back.predict(test.ratios), pred)


def test_loglinear_recovers_a_known_law():
    """Without the ridge penalty the fit recovers an exact law; the default penalty (its smallest
    value at least, 1e-5 per run) moves it by no more than 1e-3."""
    X, Y, c, t = synthetic()
    np.testing.assert_allclose(make_regressor("loglinear", inits=8, iterations=150).fit(X, Y).predict(X), Y, atol=1e-3)
    model = make_regressor("loglinear", inits=8, iterations=150, ridge=[0.0]).fit(X, Y)
    fitted_c, fitted_t = model.law()
    np.testing.assert_allclose(model.predict(X), Y, atol=1e-4)
    assert fitted_c.shape == (2,) and fitted_t.shape == (2, 4)
    # Only exp(c) + exp(t.x) on the simplex is identified: compare predictions on fresh mixtures.
    Xn = np.random.default_rng(5).dirichlet(np.ones(4), size=50)
    np.testing.assert_allclose(model.predict(Xn), np.exp(c)[None] + np.exp(Xn @ t.T), rtol=1e-3)


def test_loglinear_fits_all_regmix_metrics_quickly():
    if not REGMIX.is_dir():
        pytest.skip("RegMix swarm results not present")
    table = read_tables(REGMIX / "train_mixture_1m.csv", REGMIX / "train_pile_loss_1m.csv")
    start = time.perf_counter()
    model = make_regressor("loglinear", **RegressionSettings().regressor_settings("loglinear")).fit(table.ratios, table.metrics)
    assert time.perf_counter() - start < 30
    # the exact proposer solves the fitted law to optimality, and beats the swarm's mean mixture on it
    prior = table.ratios.mean(axis=0)
    p = propose(model, table, prior, None, ProposeSettings(kl_reg=0.05), ObjectiveSettings({METRICS[0]: 1.0}))
    assert p.kkt_residual < 1e-7
    assert p.predicted_objective < model.predict(prior[None])[0, table.metric_names.index(METRICS[0])]


def test_ensemble_averages_members_and_auto_picks_best_cv_option(tmp_path):
    X, Y, _, _ = synthetic(n=50, noise=0.01)
    ens = make_regressor("ensemble", members=["ridge", "loglinear"], member_settings={"loglinear": FAST["loglinear"]})
    ens.fit(X, Y)
    ridge = make_regressor("ridge").fit(X, Y)
    loglin = make_regressor("loglinear", **FAST["loglinear"]).fit(X, Y)
    np.testing.assert_allclose(ens.predict(X), (ridge.predict(X) + loglin.predict(X)) / 2)
    auto = make_regressor(
        "auto", candidates=["ridge", "loglinear"], folds=3, member_settings={"loglinear": FAST["loglinear"]}
    ).fit(X, Y)
    assert set(auto.reports) == {"ridge", "loglinear", "loglinear+ridge"}
    assert auto.report.mean_spearman == max(r.mean_spearman for r in auto.reports.values())
    assert auto.describe() == "auto: loglinear"  # the data follow the law exactly
    law_c, law_t = auto.law()  # the chosen member's law, as fitted on its own
    np.testing.assert_allclose(law_c, loglin.law()[0])
    np.testing.assert_allclose(law_t, loglin.law()[1])
    back = Regressor.load(auto.save(tmp_path / "auto"))
    np.testing.assert_array_equal(back.predict(X), auto.predict(X))


def test_cross_validation_is_deterministic_and_scores_correctly():
    X, Y, _, _ = synthetic(n=40, noise=0.02)
    a = cross_validate("ridge", X, Y, folds=4, seed=1)
    b = cross_validate("ridge", X, Y, folds=4, seed=1)
    c = cross_validate("ridge", X, Y, folds=4, seed=2)
    np.testing.assert_array_equal(a.predictions, b.predictions)
    assert not np.array_equal(a.predictions, c.predictions)
    assert a.spearman.shape == a.r2.shape == a.mae.shape == (2,)
    np.testing.assert_allclose(a.mae, np.abs(a.predictions - Y).mean(0))
    assert set(a.means()) == {"spearman", "r2", "mae"}
    with pytest.raises(DataError, match="folds"):
        cross_validate("ridge", X, Y, folds=1)


def _table(X, Y):
    return MixtureTable([f"r{i}" for i in range(len(X))], [f"d{j}" for j in range(X.shape[1])], X, ["m0", "m1"], Y)


def test_fit_store_writes_fit_and_reuses_it(tmp_path):
    X, Y, _, _ = synthetic(n=40, noise=0.01)
    table = _table(X, Y)
    settings = RegressionSettings(regressor="loglinear", folds=3, loglinear_inits=4, loglinear_iterations=40)
    events = []
    first = fit_and_store(tmp_path, table, settings=settings, on_event=events.append, source_swarms=["s1"])
    assert not first.reused and events
    assert first.fit_id == fit_id(table, "loglinear", settings)
    assert (first.folder / "fit.toml").is_file() and (first.folder / "cv.csv").is_file()
    text = (first.folder / "fit.toml").read_text()
    assert 'source_swarms = [\n    "s1",\n]' in text and "spearman" in text
    stamp = (first.folder / "fit.toml").stat().st_mtime_ns
    again = fit_and_store(tmp_path, table, settings=settings)
    assert again.reused and again.fit_id == first.fit_id
    assert (first.folder / "fit.toml").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.model.predict(X), first.model.predict(X))
    np.testing.assert_allclose(again.cv.spearman, first.cv.spearman)
    loaded = load_fit(first.folder)
    assert loaded.domains == table.domains and loaded.source_swarms == ["s1"]
    other = fit_and_store(tmp_path, table, regressor="ridge", settings=settings)
    assert other.fit_id != first.fit_id and not other.reused


def test_fit_store_rejects_non_finite_metrics(tmp_path):
    X, Y, _, _ = synthetic(n=20)
    Y[7, 1] = np.nan
    with pytest.raises(DataError, match="Run 'r7' has metric 'm1'"):
        fit_and_store(tmp_path, _table(X, Y), settings=RegressionSettings(regressor="ridge"))


def test_settings_validate_names():
    with pytest.raises(ConfigError, match="unknown"):
        RegressionSettings(regressor="forest")
    with pytest.raises(ConfigError, match="not usable"):
        RegressionSettings(candidates=["auto"])


@pytest.mark.parametrize("name", ["lightgbm", "ensemble", "auto"])
def test_lightgbm_adapts_to_a_small_swarm_and_says_how(name, tmp_path):
    """16 runs, as a CPU swarm has: too few to hold out runs for early stopping, and too few for
    RegMix's 20 runs per leaf. LightGBM (alone, in an ensemble, chosen or not by auto) trains anyway,
    learns something, and fitting reports each adaptation with the real key name."""
    X, Y, _, _ = synthetic(n=16)
    settings = RegressionSettings(regressor=name, folds=4, candidates=["lightgbm", "ridge"])
    events = []
    result = fit_and_store(tmp_path / "fits", MixtureTable([f"r{i}" for i in range(16)], list("abcd"), X, ["y0", "y1"], Y),
                           None, settings, events.append)
    notes = [e.text for e in events if type(e).__name__ == "Message"]
    if "lightgbm" in result.chosen or name != "auto":
        assert any("[regression] lightgbm_valid_fraction = 0.125" in n for n in notes), notes
    gbm = make_regressor("lightgbm", rounds=200).fit(X, Y)
    assert np.all(spearman(Y, gbm.predict(X)) > 50)  # not a constant: the trees split
    assert [n for n in gbm.notes() if "a leaf holds at least 4 runs" in n]
