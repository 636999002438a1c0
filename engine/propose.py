"""Proposers: from a fitted regression to the mixture for the target run.

The objective is a weighted average of predicted metrics (lower is better, e.g. losses or BPB),
plus optionally kl_reg * KL(x || prior) to stay near the natural distribution. Three proposers:

- exact (Olmix): for the log-linear law y_i = exp(c_i) + exp(t_i . z) the problem
      minimise  sum_i w_i exp(t_i . z) + lambda * KL(E z || prior)
      over the simplex, subject to lo <= E z <= hi on the leaf mixture
  is convex; a primal-dual interior-point method with the analytic gradient and Hessian solves it
  to a KKT residual of about 1e-9 (reported with the binding caps).
- simulation (RegMix): seeded Dirichlet candidates around the prior, filtered by the constraints,
  ranked by any regressor's prediction; the proposal is the mean of the top k (feasible, since the
  constraints are convex).
- search: the best observed run of the swarm that meets the constraints.

Mixture reuse: the fit may be over units (some leaf domains frozen into a virtual domain with fixed
internal ratios). z lives on the unit simplex and `expand` [m_leaf, m_unit] (non-negative, columns
summing to 1) maps it to the leaf mixture x = expand @ z, on which caps and bounds are taken. The
KL term is over the leaves against the natural prior, or, given a unit-level centre (a reuse fit:
the frozen group's internal ratios are fixed, so only its total is free), over the units against
that centre, as Olmix's reuse fits take it against their swarm's prior. Caps:
x_j <= repetition_factor * tokens_j / target_tokens (tokens_j: leaf j's available training tokens)
and per-domain [lo, hi] bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from engine.errors import ConfigError, DataError, InfeasibleError
from engine.mixture_table import MixtureTable
from engine.regression.base import Regressor
from engine.settings import ObjectiveSettings, ProposeSettings

FEASIBILITY_TOL = 1e-7
BINDING_TOL = 1e-6
KKT_TOL = 1e-9


def objective_weights(objective: ObjectiveSettings, metric_names: Sequence[str]) -> np.ndarray:
    """The objective's normalised weights [k] over `metric_names` (equal weights when none are set)."""
    return np.array(objective.normalised(list(metric_names)), dtype=np.float64)


@dataclass
class Proposal:
    """A proposed mixture and what the fit predicts for it."""

    proposer: str
    domains: list[str]  # leaf domains
    x: np.ndarray  # leaf mixture
    units: list[str]  # the fit's (possibly collapsed) domains
    z: np.ndarray  # unit mixture, x = expand @ z
    predicted_objective: float  # weighted average of the predicted metrics (without the KL term)
    predicted_metrics: dict[str, float]
    kl: float  # KL(x || prior)
    binding_caps: list[str]  # leaf domains at their upper limit (repetition cap or bound)
    kkt_residual: float | None = None  # exact proposer only
    seconds: float = 0.0
    run_id: str | None = None  # search proposer: the chosen swarm run
    observed_objective: float | None = None  # search proposer: the run's measured objective

    @property
    def mixture(self) -> dict[str, float]:
        return dict(zip(self.domains, self.x.tolist()))


@dataclass(frozen=True)
class KLTerm:
    """weight * KL(matrix @ z || centre) for a unit mixture z: over the leaves (matrix = expand,
    centre = the leaf prior) or over the units (matrix = identity, centre = a unit prior)."""

    weight: float
    matrix: np.ndarray  # [r, u]
    centre: np.ndarray  # [r], sums to 1

    def of(self, Z: np.ndarray) -> np.ndarray:
        """KL(matrix @ z || centre) of unit mixtures Z [..., u]."""
        return kl_divergence(Z @ self.matrix.T, self.centre)

    def leaf_support(self, expand: np.ndarray) -> np.ndarray:
        """Leaves that may take weight when the term is on: those of units the centre gives weight."""
        unit_ok = (self.matrix[self.centre > 0] > 0).any(0)
        return (expand[:, unit_ok] > 0).any(1)

    def unit_centre(self) -> np.ndarray:
        """The centre as a unit mixture (the simulation proposer draws its candidates around it)."""
        return _unit_prior(self.matrix, self.centre)


@dataclass(frozen=True)
class Constraints:
    """lower <= expand @ z <= upper on the leaves, z on the unit simplex."""

    domains: list[str]
    expand: np.ndarray  # [m_leaf, m_unit]
    lower: np.ndarray  # [m_leaf]
    upper: np.ndarray  # [m_leaf]

    @property
    def free(self) -> np.ndarray:
        """Units that may be positive: those feeding no leaf capped at 0."""
        return ~((self.expand > 0) & (self.upper[:, None] <= 0)).any(0)

    def feasible(self, Z: np.ndarray, tol: float = FEASIBILITY_TOL) -> np.ndarray:
        """Mask [N] of unit mixtures Z [N, u] whose leaf mixtures meet every constraint."""
        X = Z @ self.expand.T
        return np.all((X <= self.upper + tol) & (X >= self.lower - tol), axis=1) & np.all(Z >= -tol, axis=1)

    def binding(self, x: np.ndarray) -> list[str]:
        at_cap = (self.upper < 1) & (x >= self.upper - BINDING_TOL)
        return [d for d, b in zip(self.domains, at_cap) if b]


def _leaf_vector(values, domains: Sequence[str], what: str) -> np.ndarray:
    if isinstance(values, Mapping):
        missing = [d for d in domains if d not in values]
        if missing:
            raise DataError(f"{what} has no value for domain '{missing[0]}'; give one for every leaf domain.")
        values = [values[d] for d in domains]
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(domains),):
        raise DataError(f"{what} has {arr.size} values for {len(domains)} leaf domains; give one per domain.")
    if not np.isfinite(arr).all() or np.any(arr < 0):
        raise DataError(f"{what} has negative or non-finite values; fix them.")
    return arr


def build_constraints(
    settings: ProposeSettings, domains: Sequence[str], expand: np.ndarray, kl_support: np.ndarray, tokens: np.ndarray | None
) -> Constraints:
    """Leaf bounds from repetition caps, [lo, hi] bounds and (with kl_reg > 0) the leaves outside the
    KL centre's support (`kl_support`); InfeasibleError naming the binding domains when no mixture
    can meet them."""
    domains = list(domains)
    unknown = [d for d in settings.bounds if d not in domains]
    if unknown:
        raise ConfigError(f"bounds name unknown domain '{unknown[0]}'; the leaf domains are {', '.join(domains)}.")
    lower = np.array([settings.bounds.get(d, [0.0, 1.0])[0] for d in domains], dtype=np.float64)
    upper = np.array([settings.bounds.get(d, [0.0, 1.0])[1] for d in domains], dtype=np.float64)
    if settings.target_tokens > 0:
        if tokens is None:
            raise DataError("Repetition caps need each leaf domain's available tokens; pass tokens or set [propose] target_tokens = 0.")
        upper = np.minimum(upper, settings.repetition_factor * tokens / settings.target_tokens)
    if settings.kl_reg > 0:
        upper = np.where(kl_support, upper, 0.0)  # the KL term is finite only where its centre is > 0
    upper = np.minimum(upper, 1.0)
    if upper.sum() < 1 - FEASIBILITY_TOL:
        capped = np.argsort(upper)[: max(1, int(np.sum(upper < 1)))]
        raise InfeasibleError(
            f"The caps allow at most {upper.sum():.4f} of the mixture (capped: "
            f"{', '.join(f'{domains[j]} {upper[j]:.4g}' for j in capped[:8])}); raise [propose] repetition_factor, "
            f"lower [propose] target_tokens or loosen [propose] bounds."
        )
    if lower.sum() > 1 + FEASIBILITY_TOL:
        raised = np.flatnonzero(lower > 0)
        raise InfeasibleError(
            f"Lower bounds add up to {lower.sum():.4f} > 1 ({', '.join(domains[j] for j in raised[:8])}); lower them."
        )
    bad = np.flatnonzero(lower > upper + FEASIBILITY_TOL)
    if len(bad):
        j = bad[0]
        raise InfeasibleError(
            f"Domain {domains[j]} has lower bound {lower[j]:.4g} above its cap {upper[j]:.4g}; lower the bound or raise the cap."
        )
    constraints = Constraints(domains, expand, lower, upper)
    _interior_point(constraints)  # raises when the collapsed mixture cannot meet the leaf constraints
    return constraints


def _interior_point(c: Constraints) -> tuple[np.ndarray, float]:
    """The unit mixture maximising the smallest constraint slack (an LP over the free units), and that slack."""
    free = np.flatnonzero(c.free)
    E = c.expand[:, free]
    u = len(free)
    rows_up = np.flatnonzero((c.upper < 1) & (E.sum(1) > 0))
    rows_lo = np.flatnonzero(c.lower > 0)
    A_ub = np.vstack(
        [
            np.hstack([-np.eye(u), np.ones((u, 1))]),  # s - z <= 0
            np.hstack([E[rows_up], np.ones((len(rows_up), 1))]),  # E z + s <= upper
            np.hstack([-E[rows_lo], np.ones((len(rows_lo), 1))]),  # -E z + s <= -lower
        ]
    )
    b_ub = np.concatenate([np.zeros(u), c.upper[rows_up], -c.lower[rows_lo]])
    from scipy.optimize import linprog  # here, not at module top: reading a project needs no solver

    res = linprog(
        np.r_[np.zeros(u), -1.0], A_ub=A_ub, b_ub=b_ub, A_eq=np.r_[np.ones(u), 0.0][None], b_eq=[1.0],
        bounds=[(0, 1)] * u + [(None, 1.0)], method="highs",
    )
    if u == 0 or res.status != 0 or -res.fun < -FEASIBILITY_TOL:
        z = res.x[:u] if u and res.x is not None else np.full(u, 1.0 / max(u, 1))
        x = E @ z if u else np.zeros(len(c.domains))
        tight = [
            d for d, xj, lo, hi in zip(c.domains, x, c.lower, c.upper)
            if (hi < 1 and xj >= hi - 1e-6) or (lo > 0 and xj <= lo + 1e-6)
        ]
        raise InfeasibleError(
            f"No mixture over the fit's domains meets the caps and bounds (binding: {', '.join(tight[:8]) or 'all'}); "
            f"loosen those caps or bounds."
        )
    full = np.zeros(len(c.free))
    full[free] = res.x[:u]
    return full, -res.fun


def _unit_prior(expand: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Unit weights of the leaf prior: each leaf's mass shared among its units by the expand row."""
    rows = expand.sum(1, keepdims=True)
    z = (prior[:, None] * expand / np.where(rows > 0, rows, 1.0)).sum(0)
    return z / z.sum()


def kl_divergence(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """KL(x || prior) for leaf mixtures x [..., m] (inf where x > 0 = prior)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(x > 0, x * np.log(x / prior), 0.0)
    return terms.sum(-1)


def _solve_exact(t: np.ndarray, w: np.ndarray, kl: KLTerm, cons: Constraints) -> tuple[np.ndarray, float]:
    """Primal-dual interior-point solve of the exact problem; returns (z, KKT residual).

    The constants exp(c_i) do not move the optimum. Units feeding a leaf capped at 0 are fixed at 0;
    the rest start from the LP's most interior point and follow Newton steps on the perturbed KKT
    system (centring 0.1, fraction-to-boundary 0.99, backtracking on the residual norm).
    """
    E = cons.expand
    u = E.shape[1]
    lam = kl.weight
    free = np.flatnonzero(cons.free)  # a unit feeding a leaf capped at 0 stays 0
    Ef, tf = E[:, free], t[:, free]
    live = Ef.sum(1) > 0  # leaves some free unit feeds
    Mf = kl.matrix[:, free]
    kl_rows = (Mf.sum(1) > 0) & (kl.centre > 0) if lam > 0 else np.zeros(len(kl.centre), bool)
    Ek, pk = Mf[kl_rows], kl.centre[kl_rows]
    up, lo = np.flatnonzero(live & (cons.upper < 1)), np.flatnonzero(live & (cons.lower > 0))
    G = np.vstack([-np.eye(len(free)), Ef[up], -Ef[lo]])
    h = np.concatenate([np.zeros(len(free)), cons.upper[up], -cons.lower[lo]])
    n = len(free)

    def grad_hess(z):
        e = w * np.exp(tf @ z)
        g = tf.T @ e
        H = (tf.T * e) @ tf
        if lam > 0:
            x = Ek @ z
            g = g + lam * Ek.T @ (np.log(x / pk) + 1.0)
            H = H + lam * (Ek.T / x) @ Ek
        return g, H

    z0, slack = _interior_point(cons)
    if slack <= 1e-9:
        raise InfeasibleError(
            "The caps and bounds pin the mixture down exactly, leaving the exact proposer no interior to work in; "
            "loosen them slightly."
        )
    z = z0[free]
    s = h - G @ z
    mu = 1.0 / s
    nu = 0.0

    def residuals(z, mu, nu, tau):
        g, _ = grad_hess(z)
        s = h - G @ z
        return g + nu + G.T @ mu, mu * s - tau, z.sum() - 1.0, s

    for _ in range(200):
        s = h - G @ z
        gap = mu @ s
        tau = 0.1 * gap / len(s)
        g, H = grad_hess(z)
        r_dual = g + nu + G.T @ mu
        kkt = max(np.abs(r_dual).max(), gap, abs(z.sum() - 1.0))
        if kkt < KKT_TOL:
            break
        D = mu / s
        K = np.zeros((n + 1, n + 1))
        K[:n, :n] = H + (G.T * D) @ G
        K[:n, n] = K[n, :n] = 1.0
        rhs = -np.r_[g + nu + G.T @ (tau / s), z.sum() - 1.0]
        try:
            step = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(K, rhs, rcond=None)[0]
        dz, dnu = step[:n], step[n]
        ds = -G @ dz
        dmu = (tau - mu * s - mu * ds) / s
        alpha = 1.0
        for v, dv in ((s, ds), (mu, dmu)):
            neg = dv < 0
            if neg.any():
                alpha = min(alpha, 0.99 * np.min(-v[neg] / dv[neg]))
        norm0 = np.linalg.norm(np.r_[r_dual, mu * s - tau, z.sum() - 1.0])
        for _ in range(50):
            zn, mun, nun = z + alpha * dz, mu + alpha * dmu, nu + alpha * dnu
            if lam == 0 or np.all(Ek @ zn > 0):
                rd, rc, rp, _ = residuals(zn, mun, nun, tau)
                if np.linalg.norm(np.r_[rd, rc, rp]) <= (1 - 0.01 * alpha) * norm0:
                    break
            alpha *= 0.5
        z, mu, nu = zn, mun, nun
    s = h - G @ z
    g, _ = grad_hess(z)
    kkt = float(max(np.abs(g + nu + G.T @ mu).max(), np.max(mu * s), abs(z.sum() - 1.0), max(0.0, -s.min())))
    full = np.zeros(u)
    full[free] = np.maximum(z, 0.0)
    return full / full.sum(), kkt


def propose(
    model: Regressor,
    table: MixtureTable,
    prior,
    tokens,
    settings: ProposeSettings = ProposeSettings(),
    objective: ObjectiveSettings = ObjectiveSettings(),
    expand: np.ndarray | None = None,
    domains_leaf: Sequence[str] | None = None,
    kl_centre: np.ndarray | None = None,
) -> Proposal:
    """Propose the target run's mixture from a fit over `table`'s domains (units) and metrics.

    prior and tokens are per leaf domain (mapping or array in `domains_leaf` order; tokens may be
    None when target_tokens is 0). expand [m_leaf, m_unit] maps units to leaves (None: identity).
    kl_centre: a distribution over the units that the KL term is taken against, over the units
    (None: over the leaves, against `prior`).
    """
    start = time.perf_counter()
    units, metric_names = list(table.domains), list(table.metric_names)
    if model.n_domains != len(units) or model.n_metrics != len(metric_names):
        raise DataError(
            f"The fit covers {model.n_domains} domains and {model.n_metrics} metrics but the swarm table has "
            f"{len(units)} and {len(metric_names)}; propose from the fit of this swarm."
        )
    if expand is None:
        expand = np.eye(len(units))
        domains_leaf = list(domains_leaf) if domains_leaf is not None else units
    elif domains_leaf is None:
        raise DataError("An expand matrix needs the leaf domain names; pass domains_leaf.")
    expand = np.asarray(expand, dtype=np.float64)
    domains_leaf = list(domains_leaf)
    if expand.shape != (len(domains_leaf), len(units)) or np.any(expand < 0) or not np.allclose(expand.sum(0), 1.0):
        raise DataError(
            f"The expand matrix must be non-negative, shaped ({len(domains_leaf)} leaves, {len(units)} units), "
            f"with columns summing to 1; rebuild it from the reuse plan."
        )
    prior = _leaf_vector(prior, domains_leaf, "The prior")
    if abs(prior.sum() - 1) > 0.01:
        raise DataError(f"The prior sums to {prior.sum():.4f}; give a distribution summing to 1.")
    prior = prior / prior.sum()
    tokens = None if tokens is None else _leaf_vector(tokens, domains_leaf, "The available tokens")
    w = objective_weights(objective, metric_names)
    if kl_centre is None:
        kl = KLTerm(settings.kl_reg, expand, prior)
    else:
        centre = _leaf_vector(kl_centre, units, "The KL centre")
        if not centre.sum() > 0:
            raise DataError("The KL centre sums to 0; give a distribution over the fit's domains.")
        kl = KLTerm(settings.kl_reg, np.eye(len(units)), centre / centre.sum())
    cons = build_constraints(settings, domains_leaf, expand, kl.leaf_support(expand), tokens)

    kkt, run_id, observed = None, None, None
    if settings.proposer == "exact":
        law = model.law()
        if law is None:
            raise ConfigError(
                f"The exact proposer needs a log-linear fit, but this fit is {model.describe()}; "
                f"refit with regressor = 'loglinear' or use proposer = 'simulation'."
            )
        z, kkt = _solve_exact(law[1], w, kl, cons)
    elif settings.proposer == "simulation":
        z = _simulate(model, w, kl, cons, settings)
    else:
        z, run_id, observed = _search(table, w, kl, cons)

    x = expand @ z
    predicted = model.predict(z[None])[0]
    return Proposal(
        settings.proposer, domains_leaf, x, units, z, float(predicted @ w),
        dict(zip(metric_names, predicted.tolist())), float(kl.of(z)), cons.binding(x),
        kkt, time.perf_counter() - start, run_id, observed,
    )


def _simulate(model: Regressor, w: np.ndarray, kl: KLTerm, cons: Constraints, settings: ProposeSettings) -> np.ndarray:
    rng = np.random.default_rng(settings.seed)
    u = cons.expand.shape[1]
    centre = np.where(cons.free, np.maximum(kl.unit_centre(), 1e-3 / u), 0.0)
    strength = u * 10.0 ** rng.uniform(-0.5, 1.5, size=(settings.simulation_candidates, 1))
    Z = rng.gamma(strength * centre[None, :])
    Z = Z[Z.sum(1) > 0]
    Z /= Z.sum(1, keepdims=True)
    Z = Z[cons.feasible(Z)]
    if len(Z) == 0:
        raise InfeasibleError(
            f"None of {settings.simulation_candidates} simulated mixtures meets the caps and bounds; "
            f"raise [propose] simulation_candidates or use [propose] proposer = 'exact'."
        )
    scores = model.predict(Z) @ w
    if kl.weight > 0:
        scores = scores + kl.weight * kl.of(Z)
    top = Z[np.argsort(scores, kind="stable")[: settings.top_k]]
    z = top.mean(0)
    if not cons.feasible(z[None])[0]:
        raise AssertionError("the mean of feasible mixtures left the (convex) feasible set")
    return z


def _search(table: MixtureTable, w: np.ndarray, kl: KLTerm, cons: Constraints) -> tuple[np.ndarray, str, float]:
    ok = cons.feasible(table.ratios, tol=1e-6)
    if not ok.any():
        raise InfeasibleError("No swarm run meets the caps and bounds; loosen them or use proposer = 'exact'.")
    scores = table.metrics @ w
    if kl.weight > 0:
        scores = scores + kl.weight * kl.of(table.ratios)
    scores = np.where(ok, scores, np.inf)
    best = int(np.argmin(scores))
    return table.ratios[best] / table.ratios[best].sum(), table.run_ids[best], float(table.metrics[best] @ w)
