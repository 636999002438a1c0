"""Gaussian-process regression (scikit-learn) on square-root mixture weights.

Per metric: targets standardised to mean 0 / std 1, kernel  s^2 * RBF(ARD length scales) + noise
on features sqrt(x) (which spreads out the many small weights of a swarm). The kernel's
hyperparameters are fitted by scikit-learn's marginal-likelihood optimiser on a seeded subsample of
at most `max_opt_points` runs (the cost grows as n^3 per optimiser step), then the GP is refitted on
all runs with that kernel fixed. BLAS runs on one thread here: these 200-500 point matrices gain
nothing from threads, and on a busy machine threaded BLAS is far slower (docs/benchmarks.md,
"Figures behind constants in the code"). The posterior mean is kept as plain arrays and evaluated
in numpy, in row chunks so that a large candidate set fits in memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from threadpoolctl import threadpool_limits

from engine.regression.base import Regressor, load_arrays, register, save_arrays

PARAMS_FILE = "gp.npz"
PREDICT_CHUNK = 4096


@register
class GPRegressor(Regressor):
    """Posterior mean of a per-metric ARD-RBF Gaussian process on sqrt(x) (see module docstring)."""

    name = "gp"

    def __init__(self, max_opt_points: int = 192, seed: int = 0):
        super().__init__(max_opt_points=max_opt_points, seed=seed)
        self.train = np.zeros((0, 0))  # sqrt features of the training runs [n, m]
        self.scale = np.zeros(0)  # s^2 per metric [k]
        self.length = np.zeros((0, 0))  # ARD length scales [k, m]
        self.alpha = np.zeros((0, 0))  # K^-1 y per metric [k, n]
        self.y_mean = np.zeros(0)
        self.y_std = np.zeros(0)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        F = np.sqrt(X)
        n, m = F.shape
        self.y_mean, self.y_std = Y.mean(0), np.where(Y.std(0) > 0, Y.std(0), 1.0)
        Z = (Y - self.y_mean) / self.y_std
        rng = np.random.default_rng(self.settings["seed"])
        sub = rng.permutation(n)[: self.settings["max_opt_points"]]
        scale, length, alpha = [], [], []
        for i in range(Z.shape[1]):
            with threadpool_limits(1), warnings.catch_warnings():
                kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(m), (1e-2, 1e3)) + WhiteKernel(1e-2, (1e-8, 1.0))
                warnings.simplefilter("ignore", ConvergenceWarning)
                tuned = GaussianProcessRegressor(kernel, random_state=0).fit(F[sub], Z[sub, i]).kernel_
                full = GaussianProcessRegressor(tuned, optimizer=None).fit(F, Z[:, i])
            scale.append(tuned.k1.k1.constant_value)
            length.append(np.broadcast_to(tuned.k1.k2.length_scale, (m,)))
            alpha.append(full.alpha_)
        self.train = F
        self.scale, self.length, self.alpha = np.array(scale), np.array(length), np.array(alpha)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        with threadpool_limits(1):
            return np.concatenate([self._mean(np.sqrt(X[i : i + PREDICT_CHUNK])) for i in range(0, len(X), PREDICT_CHUNK)])

    def _mean(self, F: np.ndarray) -> np.ndarray:
        inv = 1.0 / self.length**2  # [k, m]
        sq = (F**2) @ inv.T  # [a, k]
        sq_train = (self.train**2) @ inv.T  # [n, k]
        cross = np.einsum("am,bm,km->kab", F, self.train, inv)  # [k, a, n]
        dist = np.maximum(sq.T[:, :, None] + sq_train.T[:, None, :] - 2 * cross, 0.0)
        K = self.scale[:, None, None] * np.exp(-0.5 * dist)
        z = np.einsum("kab,kb->ak", K, self.alpha)
        return z * self.y_std + self.y_mean

    def _state(self, folder: Path) -> dict:
        save_arrays(
            folder / PARAMS_FILE, train=self.train, scale=self.scale, length=self.length,
            alpha=self.alpha, y_mean=self.y_mean, y_std=self.y_std,
        )
        return {"file": PARAMS_FILE}

    def _restore(self, folder: Path, info: dict) -> None:
        a = load_arrays(folder / info["file"])
        self.train, self.scale, self.length = a["train"], a["scale"], a["length"]
        self.alpha, self.y_mean, self.y_std = a["alpha"], a["y_mean"], a["y_std"]
