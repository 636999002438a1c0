"""Olmix's log-linear mixing law: per metric y = exp(c) + exp(t . x).

As in Olmix (allenai/olmix, olmix/fit/utils.py), each metric is fitted under a Huber loss (summed
over runs) from many random initialisations, t ~ U(0, 0.1) around a common level except the
metric's own domain, lowered by U(0, 1), and the best initialisation per metric (lowest training
loss) is kept. Olmix ties a metric to a domain by position; here the "own" domain is the one whose
weight is most negatively correlated with the metric in the data, which works for any metric
names. All metrics and initialisations are fitted in one batched Levenberg-Marquardt solve
(engine.regression.lawfit). The fitted (c, t) feed the exact proposer.

Two changes make the fit hold up on the small, noisy swarms of a CPU or of a reuse step, where
Olmix's settings let the law run to saturation (a coefficient of -20 on a unit, so that every
mixture with more than a third of it is predicted the same):

- Olmix's Huber delta is a fixed 0.02; here it is `delta` times the metric's standard deviation s
  over the runs, so that residuals count the same on any metric's scale (a fixed 0.02 treated every
  residual beyond it as an outlier on a metric whose runs spread by 0.1). The fit runs on y / s,
  whose law is y's with log s taken off c and t.
- Olmix starts log c on a fixed grid over [-2, 1.5], so a start whose floor exp(c) lies above the
  metric's smallest value can only fit by driving exp(t . x) to 0. Here every start predicts the
  metric's mean with a floor below its minimum: exp(c) = min(y) - v s for levels v of the varying
  part log-spaced over [0.1, 10] standard deviations, and t at the level that puts the mean
  mixture at mean(y), before the perturbations above.
- A ridge penalty on the law's coefficients as the runs weigh them, lambda * n * mean_runs (t . x)^2
  for the law of y / s (`ridge_penalty`), which pulls the law towards a flat one and keeps it from
  swinging by tens of log units over the runs, with lambda chosen per metric among `ridge` by
  5-fold cross-validation inside the fit: the largest lambda whose held-out Huber loss is within one
  standard error of the lowest (the one-standard-error rule: a simpler law unless the runs clearly
  ask for a freer one; on pure noise the lowest held-out loss is as often a saturated law's, which
  then extrapolates wildly). Every start is fitted at the
  smallest lambda; from the best start of each metric, one batched solve fits every lambda on every
  inner fold and on all runs, so the choice costs about as much again as the starts. On a large
  swarm the choice is lambda = 0 (RegMix's 512 runs), on a few noisy runs a penalty that keeps
  coefficients from running off to -20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.regression.base import Regressor, load_arrays, make_regressor, register, save_arrays
from engine.regression.cv import fold_ids
from engine.regression.lawfit import Penalty, fit_huber, huber
from engine.settings import DEFAULT_RIDGE

PARAMS_FILE = "loglinear.npz"
PENALTY_FOLDS = 5
"""Folds of the inner cross-validation that chooses each metric's ridge penalty."""
MIN_RUNS_FOR_PENALTY_CV = 4
"""Below this many runs the penalty is not cross-validated: the grid's middle value is kept."""
START_LEVELS = (0.1, 10.0)
"""The varying part's size at the best run, in standard deviations of the metric, over the starts."""


def own_domain(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Per metric [k], the domain whose weight correlates most negatively with it."""
    Xc = X - X.mean(0)
    Yc = Y - Y.mean(0)
    norms = np.linalg.norm(Xc, axis=0)[:, None] * np.linalg.norm(Yc, axis=0)[None, :]
    corr = (Xc.T @ Yc) / np.where(norms > 0, norms, 1.0)
    return corr.argmin(axis=0)


def metric_spread(Y: np.ndarray) -> np.ndarray:
    """Per metric [k], the standard deviation over the runs (1 for a constant metric): the unit of
    the Huber delta and of the fit's residuals."""
    s = Y.std(axis=0)
    return np.where(s > 0, s, 1.0)


def ridge_penalty(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """R [B, m + 1, m + 1] with P^T R_b P = the mean over the runs X, weighted by weights[b], of
    (t . x)^2, for P = [c, t] fitted to y / s: the squared log of the law's varying part at each run,
    in standard deviations of the metric. It is 0 for the flat law whose varying part is one standard
    deviation at every run, it grows as the law swings over the swarm's runs (a law running to
    saturation swings by tens of log units), and it weighs each coefficient by how much weight its
    unit has in the runs, as ridge regression weighs standardised features. c is free."""
    R = np.zeros((len(weights), X.shape[1] + 1, X.shape[1] + 1))
    R[:, 1:, 1:] = np.einsum("bn,ni,nj->bij", weights, X, X) / weights.sum(1)[:, None, None]
    return R


class _LogLinearLaw:
    """y = exp(P0) + exp(P[1:] . x), with its normal equations in closed form (no Jacobian tensor)."""

    def __init__(self, X: torch.Tensor):
        self.outer = (X[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1)  # [n, m*m]

    def predict(self, X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        return torch.exp(P[:, :1]) + torch.exp(P[:, 1:] @ X.T)

    def normal(self, X, P, w, wr):
        B, m = P.shape[0], X.shape[1]
        ec = torch.exp(P[:, 0])
        e = torch.exp(P[:, 1:] @ X.T)  # [B, n]
        grad = torch.cat([(ec * wr.sum(1))[:, None], (wr * e) @ X], dim=1)
        H = torch.empty(B, m + 1, m + 1, dtype=P.dtype)
        H[:, 0, 0] = ec**2 * w.sum(1)
        H[:, 0, 1:] = ec[:, None] * ((w * e) @ X)
        H[:, 1:, 0] = H[:, 0, 1:]
        H[:, 1:, 1:] = ((w * e * e) @ self.outer).reshape(B, m, m)
        return grad, H


@register
class LogLinearRegressor(Regressor):
    """y_i = exp(c_i) + exp(t_i . x) per metric: Huber fit from `inits` starts, with a ridge penalty
    on t chosen per metric by inner cross-validation over `ridge` (module docstring)."""

    name = "loglinear"

    def __init__(self, inits: int = 32, delta: float = 1.0, ridge: list[float] | None = None, iterations: int = 100,
                 seed: int = 0):
        super().__init__(inits=inits, delta=delta, ridge=list(DEFAULT_RIDGE if ridge is None else ridge),
                         iterations=iterations, seed=seed)
        self.c = np.zeros(0)
        self.t = np.zeros((0, 0))
        self.spread = np.zeros(0)  # per metric: the unit of the residuals (metric_spread)
        self.penalty = np.zeros(0)  # per metric: the ridge weight chosen, per run

    def _initial_params(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Starts [k, inits, m + 1] for metrics Z = y / s (module docstring)."""
        k, m, inits = Z.shape[1], X.shape[1], self.settings["inits"]
        rng = np.random.default_rng(self.settings["seed"])
        low, mean = Z.min(0)[:, None], Z.mean(0)[:, None]
        level = np.geomspace(*START_LEVELS, 10)[np.arange(inits) % 10][None, :]
        floor = np.maximum(low - level, 1e-3 * low)  # exp(c) > 0 even for a metric near 0
        P = np.empty((k, inits, m + 1))
        P[:, :, 0] = np.log(floor)
        P[:, :, 1:] = np.log(mean - floor)[:, :, None] + rng.random((k, inits, m)) * 0.1
        P[np.arange(k), :, 1 + own_domain(X, Z)] -= rng.random((k, inits))
        return P

    def _solve(self, X: np.ndarray, Z: np.ndarray, P0: np.ndarray, weights: np.ndarray, penalty: np.ndarray,
               iterations: int) -> tuple[np.ndarray, np.ndarray]:
        """Batched fit of B problems: targets Z [B, n], starts P0 [B, m + 1], run weights [B, n], ridge
        weights per run [B]; returns (P [B, m + 1], Huber loss of each run [B, n])."""
        Xt, targets, P0, weights = (torch.from_numpy(np.ascontiguousarray(a)) for a in (X, Z, P0, weights))
        law = _LogLinearLaw(Xt)
        lam = torch.from_numpy(penalty) * weights.sum(1)
        R = torch.from_numpy(ridge_penalty(X, weights.numpy()))
        P, _ = fit_huber(law, Xt, targets, P0, self.settings["delta"], iterations, weights=weights,
                         penalty=Penalty(R, lam))
        run_loss = torch.nan_to_num(huber(law.predict(Xt, P) - targets, self.settings["delta"]), nan=np.inf)
        return P.numpy(), run_loss.numpy()

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        n, m, k, inits = X.shape[0], X.shape[1], Y.shape[1], self.settings["inits"]
        grid = np.array(self.settings["ridge"], dtype=np.float64)
        self.spread = metric_spread(Y)
        Z = Y / self.spread
        # every start, at the grid's smallest penalty: the best start of each metric
        low = grid.min()
        P, run_loss = self._solve(X, np.repeat(Z.T, inits, axis=0), self._initial_params(X, Z).reshape(k * inits, m + 1),
                                  np.ones((k * inits, n)), np.full(k * inits, low), self.settings["iterations"])
        R = ridge_penalty(X, np.ones((1, n)))[0]
        loss = run_loss.sum(1) + low * n * np.einsum("bp,pq,bq->b", P, R, P)
        best = P.reshape(k, inits, m + 1)[np.arange(k), np.nan_to_num(loss, nan=np.inf).reshape(k, inits).argmin(1)]
        self.penalty = np.full(k, low)
        if len(grid) > 1 and n >= MIN_RUNS_FOR_PENALTY_CV:
            best, self.penalty = self._choose_penalty(X, Z, best, grid)
        self.c, self.t = best[:, 0] + np.log(self.spread), best[:, 1:] + np.log(self.spread)[:, None]

    def _choose_penalty(self, X: np.ndarray, Z: np.ndarray, best: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per metric, the penalty of `grid` with the lowest held-out Huber loss over `PENALTY_FOLDS`
        folds (each fold's fit starts from `best`), and the fit on all runs with it."""
        n, k, g = len(X), Z.shape[1], len(grid)
        folds = fold_ids(n, min(PENALTY_FOLDS, n), self.settings["seed"])
        masks = np.vstack([np.ones(n), *[(folds != f).astype(np.float64) for f in range(folds.max() + 1)]])  # [F + 1, n]
        f1 = len(masks)
        shape = (k, g, f1)  # problems: metric, penalty, fold (0 = every run)
        P, run_loss = self._solve(
            X, np.broadcast_to(Z.T[:, None, None, :], (*shape, n)).reshape(-1, n),
            np.broadcast_to(best[:, None, None, :], (*shape, best.shape[1])).reshape(-1, best.shape[1]),
            np.broadcast_to(masks[None, None], (*shape, n)).reshape(-1, n),
            np.broadcast_to(grid[None, :, None], shape).reshape(-1), self.settings["iterations"])
        held_out = (run_loss.reshape(*shape, n)[:, :, 1:] * (1 - masks[None, None, 1:])).sum(2)  # [k, g, n]: each run once
        with np.errstate(over="ignore", invalid="ignore"):  # a penalty whose fit overflows on a held-out run loses
            mean, se = np.nan_to_num(held_out.mean(2), nan=np.inf), np.nan_to_num(held_out.std(2) / np.sqrt(n), nan=np.inf)
        best = mean.argmin(1)
        # the one-standard-error rule: the largest penalty whose held-out loss is within one standard error of the best
        within = mean <= (mean[np.arange(k), best] + se[np.arange(k), best])[:, None]
        choice = np.where(within & (grid[None, :] >= grid[best][:, None]), np.arange(g)[None, :], -1).max(1)
        return P.reshape(*shape, -1)[np.arange(k), choice, 0], grid[choice]

    @property
    def refittable(self) -> bool:
        """Whether `refit` can run: fitted by this version, which keeps each metric's spread and penalty."""
        return self.spread.shape == self.c.shape and self.fitted

    def refit(self, X: np.ndarray, Y: np.ndarray, weights: np.ndarray, metrics: list[int]) -> list["LogLinearRegressor"]:
        """One refit per row of run weights [B, n] (bootstrap replicates: how often each run was drawn),
        all in one batched solve started from this fit's law, with its spreads and penalties held;
        metrics not in `metrics` keep this fit's law. Returns B regressors."""
        if not self.refittable:
            raise ValueError("this log-linear fit was made by an earlier version; refit it in full")
        B, k, u = len(weights), len(metrics), X.shape[1]
        log_s = np.log(self.spread[metrics])
        start = np.hstack([(self.c[metrics] - log_s)[:, None], self.t[metrics] - log_s[:, None]])  # [k, u + 1]
        P, _ = self._solve(X, np.tile((Y[:, metrics] / self.spread[metrics]).T, (B, 1)), np.tile(start, (B, 1)),
                           np.repeat(weights.astype(np.float64), k, axis=0), np.tile(self.penalty[metrics], B),
                           self.settings["iterations"])
        P = P.reshape(B, k, u + 1) + log_s[None, :, None]
        models = []
        for b in range(B):
            model = make_regressor(self.name, **self.settings)
            model.n_domains, model.n_metrics = self.n_domains, self.n_metrics
            model.c, model.t, model.spread, model.penalty = self.c.copy(), self.t.copy(), self.spread, self.penalty
            model.c[metrics], model.t[metrics] = P[b, :, 0], P[b, :, 1:]
            models.append(model)
        return models

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions [n, k]; inf where a mixture far from the fitted runs overflows exp(t . x)."""
        X = self._check_predict(X)
        with np.errstate(over="ignore"):
            return np.exp(self.c)[None, :] + np.exp(X @ self.t.T)

    def law(self) -> tuple[np.ndarray, np.ndarray]:
        return self.c.copy(), self.t.copy()

    def _state(self, folder: Path) -> dict:
        save_arrays(folder / PARAMS_FILE, c=self.c, t=self.t, spread=self.spread, penalty=self.penalty)
        return {"file": PARAMS_FILE}

    def _restore(self, folder: Path, info: dict) -> None:
        arrays = load_arrays(folder / info["file"])
        self.c, self.t = arrays["c"], arrays["t"]
        self.spread, self.penalty = arrays.get("spread", np.zeros(0)), arrays.get("penalty", np.zeros(0))
