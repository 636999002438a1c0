"""Proposers: the exact convex solve against references, constraints, mixture reuse, errors."""

import itertools

import numpy as np
import pytest
from scipy.optimize import minimize

from engine.errors import ConfigError, InfeasibleError
from engine.mixture_table import MixtureTable
from engine.propose import ObjectiveSettings, ProposeSettings, kl_divergence, propose
from engine.regression.base import make_regressor

DOMAINS = ["web", "code", "math", "books"]
METRICS = ["web/bpb", "code/bpb"]
C = np.array([0.3, 0.1])
T = np.array([[-1.2, 0.4, 0.2, -0.3], [0.5, -1.8, -0.4, 0.3]])
PRIOR = np.array([0.5, 0.2, 0.1, 0.2])
TOKENS = np.array([5e9, 1e9, 0.2e9, 2e9])


def law_model(c=C, t=T):
    """A log-linear regressor with known coefficients."""
    model = make_regressor("loglinear")
    model.c, model.t = np.array(c, float), np.array(t, float)
    model.n_metrics, model.n_domains = model.t.shape
    return model


def swarm(model, n=300, seed=0, domains=DOMAINS):
    X = np.random.default_rng(seed).dirichlet(np.ones(len(domains)) * 0.5, size=n)
    return MixtureTable([f"r{i}" for i in range(n)], list(domains), X, METRICS, model.predict(X))


def objective(z, w, lam, expand=None, prior=PRIOR, t=T):
    x = z if expand is None else expand @ z
    return float(w @ (np.exp(C) + np.exp(t @ z)) + lam * kl_divergence(np.maximum(x, 1e-300), prior))


def scipy_reference(w, lam, upper, expand=None, t=T, starts=8):
    """Multi-start SLSQP over the unit simplex with leaf caps: the reference optimum."""
    u = t.shape[1]
    E = np.eye(u) if expand is None else expand
    cons = [{"type": "eq", "fun": lambda z: z.sum() - 1}, {"type": "ineq", "fun": lambda z: upper - E @ z}]
    best = None
    for z0 in np.random.default_rng(1).dirichlet(np.ones(u), size=starts):
        res = minimize(
            lambda z: objective(z, w, lam, E, t=t), z0, method="SLSQP", bounds=[(1e-12, 1)] * u,
            constraints=cons, options={"ftol": 1e-14, "maxiter": 500},
        )
        if res.success and (best is None or res.fun < best.fun):
            best = res
    return best


@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0])
def test_exact_matches_scipy_reference_with_caps(lam):
    model = law_model()
    settings = ProposeSettings(target_tokens=10_000_000_000, repetition_factor=2.0, kl_reg=lam)
    w_obj = ObjectiveSettings({"web/bpb": 1.0, "code/bpb": 2.0})
    p = propose(model, swarm(model), PRIOR, TOKENS, settings, w_obj)
    w = np.array([1 / 3, 2 / 3])
    caps = 2 * TOKENS / 1e10
    ref = scipy_reference(w, lam, caps)
    assert objective(p.z, w, lam) <= ref.fun + 1e-9
    np.testing.assert_allclose(p.x, ref.x, atol=2e-4)
    assert np.all(p.x <= caps + 1e-9) and abs(p.x.sum() - 1) < 1e-9
    assert p.kkt_residual < 1e-7
    assert p.predicted_objective == pytest.approx(w @ model.predict(p.z[None])[0])
    assert set(p.binding_caps) == {d for d, x, cap in zip(DOMAINS, p.x, caps) if x >= cap - 1e-6}


def test_exact_beats_a_brute_force_grid():
    t = T[:, :3]
    model = law_model(t=t)
    table = swarm(model, domains=DOMAINS[:3])
    prior = np.array([0.5, 0.3, 0.2])
    p = propose(model, table, prior, None, ProposeSettings(kl_reg=0.0), ObjectiveSettings())
    steps = 400
    grid = np.array([(i, j, steps - i - j) for i, j in itertools.product(range(steps + 1), repeat=2) if i + j <= steps])
    grid = grid / steps
    values = (np.exp(C) + np.exp(grid @ t.T)).mean(1)
    assert p.predicted_objective <= values.min() + 1e-12
    assert p.predicted_objective >= values.min() - 1e-3  # the grid is fine enough to come close
    assert p.kkt_residual < 1e-7 and p.binding_caps == []


def test_expand_identity_equals_leaf_path():
    model = law_model()
    table = swarm(model)
    settings = ProposeSettings(target_tokens=10_000_000_000, repetition_factor=2.0, kl_reg=0.1)
    leaf = propose(model, table, PRIOR, TOKENS, settings)
    same = propose(model, table, PRIOR, TOKENS, settings, expand=np.eye(4), domains_leaf=DOMAINS)
    np.testing.assert_allclose(same.x, leaf.x, atol=1e-12)
    assert same.binding_caps == leaf.binding_caps


def test_collapsed_fit_takes_caps_and_kl_on_leaves():
    # Units: web, code, and a virtual domain holding math:books at fixed ratios 0.25:0.75.
    units = ["web", "code", "virtual"]
    expand = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.25], [0, 0, 0.75]], float)
    t_units = np.array([[-1.0, 0.4, -0.2], [0.5, -1.5, -0.6]])
    model = law_model(t=t_units)
    table = swarm(model, domains=units)
    tokens = np.array([5e9, 5e9, 0.4e9, 5e9])  # math caps the virtual domain at 0.04 / 0.25 = 0.16
    settings = ProposeSettings(target_tokens=10_000_000_000, repetition_factor=1.0, kl_reg=0.05)
    p = propose(model, table, PRIOR, tokens, settings, expand=expand, domains_leaf=DOMAINS)
    np.testing.assert_allclose(p.x, expand @ p.z)
    assert p.x[2] <= 0.04 + 1e-9 and p.mixture["math"] == pytest.approx(p.x[2])
    assert p.x[3] / p.x[2] == pytest.approx(3.0)
    assert "math" in p.binding_caps and p.kkt_residual < 1e-7
    ref = scipy_reference(np.array([0.5, 0.5]), 0.05, tokens / 1e10, expand=expand, t=t_units)
    assert objective(p.z, np.array([0.5, 0.5]), 0.05, expand, t=t_units) <= ref.fun + 1e-9


REUSE_UNITS = ["web", "code", "virtual"]
REUSE_EXPAND = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0.25], [0, 0, 0.75]], float)  # math:books frozen 1:3


def test_a_reuse_fit_takes_the_kl_term_over_its_units():
    """With a unit-level centre (the reuse swarm's prior), the KL term is KL(z || centre) over the
    units, not over the leaves against the natural prior: the exact solve matches a reference."""
    t_units = np.array([[-1.0, 0.4, -0.2], [0.5, -1.5, -0.6]])
    model = law_model(t=t_units)
    table = swarm(model, domains=REUSE_UNITS)
    centre = np.array([0.1, 0.15, 0.75])
    settings = ProposeSettings(kl_reg=0.5)
    p = propose(model, table, PRIOR, None, settings, expand=REUSE_EXPAND, domains_leaf=DOMAINS, kl_centre=centre)
    w = np.array([0.5, 0.5])
    ref = minimize(lambda z: float(w @ np.exp(t_units @ z) + 0.5 * kl_divergence(np.maximum(z, 1e-300), centre)),
                   centre, method="SLSQP", bounds=[(1e-12, 1)] * 3, constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1}],
                   options={"ftol": 1e-14, "maxiter": 500})
    np.testing.assert_allclose(p.z, ref.x, atol=2e-4)
    assert p.kkt_residual < 1e-7 and p.kl == pytest.approx(float(kl_divergence(p.z, centre)))
    leaf = propose(model, table, PRIOR, None, settings, expand=REUSE_EXPAND, domains_leaf=DOMAINS)
    assert np.abs(leaf.z - p.z).sum() > 0.1  # against the leaves' prior the answer is another


@pytest.mark.parametrize("proposer", ["exact", "simulation", "search"])
def test_on_a_flat_law_every_proposer_follows_the_unit_centre(proposer):
    model = law_model(c=[0.0, 0.0], t=np.zeros((2, 3)))
    table = swarm(model, domains=REUSE_UNITS)
    centre = np.array([0.05, 0.15, 0.8])
    p = propose(model, table, PRIOR, None, ProposeSettings(proposer=proposer, kl_reg=0.1), expand=REUSE_EXPAND,
                domains_leaf=DOMAINS, kl_centre=centre)
    if proposer == "search":
        assert p.run_id == table.run_ids[int(np.argmin(kl_divergence(table.ratios, centre)))]
    else:
        np.testing.assert_allclose(p.z, centre, atol=1e-6 if proposer == "exact" else 0.03)


def test_prior_zeros_are_kept_at_zero_only_with_kl():
    model = law_model()
    prior = np.array([0.6, 0.0, 0.2, 0.2])  # code would help code/bpb, but the prior has none
    with_kl = propose(model, swarm(model), prior, None, ProposeSettings(kl_reg=0.01))
    assert with_kl.x[1] == 0.0 and np.isfinite(with_kl.kl) and with_kl.kkt_residual < 1e-7
    without = propose(model, swarm(model), prior, None, ProposeSettings(kl_reg=0.0))
    assert without.x[1] > 0.1 and without.kl == np.inf


def test_infeasible_caps_name_the_domains():
    model = law_model()
    settings = ProposeSettings(target_tokens=100_000_000_000, repetition_factor=1.0)
    with pytest.raises(InfeasibleError, match=r"at most 0\.0820.*math.*code.*raise \[propose\] repetition_factor"):
        propose(model, swarm(model), PRIOR, TOKENS, settings)
    with pytest.raises(InfeasibleError, match=r"Lower bounds add up to 1\.2.*web, code"):
        propose(model, swarm(model), PRIOR, None, ProposeSettings(bounds={"web": [0.6, 1.0], "code": [0.6, 1.0]}))


def test_bounds_are_respected_and_bind():
    model = law_model()
    settings = ProposeSettings(bounds={"web": [0.3, 0.4], "books": [0.0, 0.05]})
    p = propose(model, swarm(model), PRIOR, None, settings)
    assert 0.3 - 1e-9 <= p.x[0] <= 0.4 + 1e-9 and p.x[3] <= 0.05 + 1e-9
    assert p.kkt_residual < 1e-7


@pytest.mark.parametrize("regressor", ["loglinear", "ridge"])
def test_simulation_respects_caps_with_any_regressor(regressor):
    truth = law_model()
    table = swarm(truth, n=200)
    model = truth if regressor == "loglinear" else make_regressor("ridge").fit(table.ratios, table.metrics)
    settings = ProposeSettings(
        proposer="simulation", target_tokens=10_000_000_000, repetition_factor=2.0, simulation_candidates=20_000,
        top_k=50, seed=3,
    )
    p = propose(model, table, PRIOR, TOKENS, settings)
    assert np.all(p.x <= 2 * TOKENS / 1e10 + 1e-9) and abs(p.x.sum() - 1) < 1e-9
    again = propose(model, table, PRIOR, TOKENS, settings)
    np.testing.assert_array_equal(p.x, again.x)
    if regressor == "loglinear":
        exact = propose(model, table, PRIOR, TOKENS, ProposeSettings(target_tokens=10_000_000_000, repetition_factor=2.0))
        assert exact.predicted_objective <= p.predicted_objective + 1e-12


def test_search_picks_best_feasible_observed_run():
    model = law_model()
    table = swarm(model, n=300)
    settings = ProposeSettings(proposer="search", bounds={"web": [0.0, 0.3]}, kl_reg=0.0)
    p = propose(model, table, PRIOR, None, settings)
    ok = table.ratios[:, 0] <= 0.3 + 1e-6
    observed = table.metrics.mean(1)
    assert p.run_id == table.run_ids[int(np.argmin(np.where(ok, observed, np.inf)))]
    assert p.observed_objective == pytest.approx(observed[ok].min()) and p.x[0] <= 0.3
    with pytest.raises(InfeasibleError, match="No swarm run"):
        propose(model, table, PRIOR, None, ProposeSettings(proposer="search", bounds={"web": [0.999, 1.0]}))


def test_objective_and_settings_errors_list_what_exists():
    model = law_model()
    table = swarm(model, n=20)
    with pytest.raises(ConfigError, match="unknown metric 'loss'.*web/bpb, code/bpb"):  # a typo beside a known metric
        propose(model, table, PRIOR, None, objective=ObjectiveSettings({"web/bpb": 1.0, "loss": 1.0}))
    elsewhere = propose(model, table, PRIOR, None, objective=ObjectiveSettings({"eval:other/bpb": 1.0}))
    assert elsewhere.x == pytest.approx(propose(model, table, PRIOR, None).x)  # names none of them: the mean
    with pytest.raises(ConfigError, match="unknown domain 'wiki'.*web, code, math, books"):
        propose(model, table, PRIOR, None, ProposeSettings(bounds={"wiki": [0, 1]}))
    ridge = make_regressor("ridge").fit(table.ratios, table.metrics)
    with pytest.raises(ConfigError, match="needs a log-linear fit"):
        propose(ridge, table, PRIOR, None)
    with pytest.raises(ConfigError, match="proposer 'best'"):
        ProposeSettings(proposer="best")
