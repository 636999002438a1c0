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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.regression.base import Regressor, load_arrays, register, save_arrays
from engine.regression.lawfit import fit_huber

PARAMS_FILE = "loglinear.npz"
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
    """y_i = exp(c_i) + exp(t_i . x), Huber-fitted per metric from `inits` random starts."""

    name = "loglinear"

    def __init__(self, inits: int = 64, delta: float = 1.0, iterations: int = 200, seed: int = 0):
        super().__init__(inits=inits, delta=delta, iterations=iterations, seed=seed)
        self.c = np.zeros(0)
        self.t = np.zeros((0, 0))

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

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        k, m, inits = Y.shape[1], X.shape[1], self.settings["inits"]
        spread = metric_spread(Y)
        P0 = self._initial_params(X, Y / spread)
        targets = torch.from_numpy(np.repeat((Y / spread).T, inits, axis=0))
        Xt = torch.from_numpy(X)
        P, loss = fit_huber(_LogLinearLaw(Xt), Xt, targets, torch.from_numpy(P0.reshape(k * inits, m + 1)),
                            self.settings["delta"], self.settings["iterations"])
        loss = torch.nan_to_num(loss.reshape(k, inits), nan=np.inf)
        best = P.reshape(k, inits, m + 1)[torch.arange(k), loss.argmin(1)].numpy() + np.log(spread)[:, None]
        self.c, self.t = best[:, 0].copy(), best[:, 1:].copy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions [n, k]; inf where a mixture far from the fitted runs overflows exp(t . x)."""
        X = self._check_predict(X)
        with np.errstate(over="ignore"):
            return np.exp(self.c)[None, :] + np.exp(X @ self.t.T)

    def law(self) -> tuple[np.ndarray, np.ndarray]:
        return self.c.copy(), self.t.copy()

    def _state(self, folder: Path) -> dict:
        save_arrays(folder / PARAMS_FILE, c=self.c, t=self.t)
        return {"file": PARAMS_FILE}

    def _restore(self, folder: Path, info: dict) -> None:
        arrays = load_arrays(folder / info["file"])
        self.c, self.t = arrays["c"], arrays["t"]
