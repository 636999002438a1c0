"""BiMix-style power law in the domain weights.

BiMix (Ge et al., "BiMix: A Bivariate Data Mixing Law for Language Model Pretraining") models the
loss of domain i at a fixed training length as L_i = A_i / r_i^alpha_i, a power law in that
domain's own proportion r_i. A metric here need not belong to one domain, so, like Olmix's BiMix
baseline, the law sums one such term per domain and adds a constant floor:

    y = C + sum_j F_j * (x_j + eps)^(-alpha_j),   F_j = exp(f_j) > 0,  alpha_j = exp(g_j) > 0,

with eps (default 1e-3) keeping zero weights finite. C, f and g (2m + 1 numbers per metric) are
fitted under a Huber loss from a few random starts per metric, all at once with
engine.regression.lawfit; the start with the lowest training loss is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.regression.base import Regressor, load_arrays, register, save_arrays
from engine.regression.lawfit import fit_huber, normal_from_jacobian

PARAMS_FILE = "powerlaw.npz"


class _PowerLaw:
    """y = P0 + sum_j exp(f_j - exp(g_j) log(x_j + eps)) with P = [C, f, g]."""

    def __init__(self, eps: float):
        self.eps = eps

    def _terms(self, X: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = X.shape[1]
        log_u = torch.log(X + self.eps)  # [n, m]
        alpha = torch.exp(P[:, 1 + m :])  # [B, m]
        return torch.exp(P[:, None, 1 : 1 + m] - alpha[:, None, :] * log_u[None]), alpha, log_u  # terms [B, n, m]

    def predict(self, X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        return P[:, :1] + self._terms(X, P)[0].sum(-1)

    def normal(self, X, P, w, wr):
        terms, alpha, log_u = self._terms(X, P)
        J = torch.cat(
            [torch.ones_like(terms[..., :1]), terms, -terms * alpha[:, None, :] * log_u[None]], dim=-1
        )
        return normal_from_jacobian(J, w, wr)


@register
class PowerLawRegressor(Regressor):
    """y = C + sum_j F_j (x_j + eps)^-alpha_j per metric (see module docstring)."""

    name = "powerlaw"

    def __init__(self, inits: int = 8, eps: float = 1e-3, delta: float = 0.02, iterations: int = 100, seed: int = 0):
        super().__init__(inits=inits, eps=eps, delta=delta, iterations=iterations, seed=seed)
        self.params = np.zeros((0, 0))

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        k, m, inits = Y.shape[1], X.shape[1], self.settings["inits"]
        rng = np.random.default_rng(self.settings["seed"])
        P0 = np.empty((k, inits, 2 * m + 1))
        floor = Y.min(0)[:, None]
        spread = (Y.max(0) - Y.min(0) + 1e-6)[:, None, None]
        P0[:, :, 0] = floor * rng.uniform(0.5, 1.0, (k, inits))
        P0[:, :, 1 : 1 + m] = np.log(spread / m * rng.uniform(0.1, 1.0, (k, inits, m)))
        P0[:, :, 1 + m :] = np.log(rng.uniform(0.05, 0.5, (k, inits, m)))
        P, loss = fit_huber(
            _PowerLaw(self.settings["eps"]),
            torch.from_numpy(X),
            torch.from_numpy(np.repeat(Y.T, inits, axis=0)),
            torch.from_numpy(P0.reshape(k * inits, -1)),
            self.settings["delta"],
            self.settings["iterations"],
        )
        loss = torch.nan_to_num(loss.reshape(k, inits), nan=np.inf)
        self.params = P.reshape(k, inits, -1)[torch.arange(k), loss.argmin(1)].numpy().copy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        m = X.shape[1]
        log_u = np.log(X + self.settings["eps"])
        F, alpha = self.params[:, 1 : 1 + m], np.exp(self.params[:, 1 + m :])
        return self.params[:, 0][None, :] + np.exp(F[None] - alpha[None] * log_u[:, None, :]).sum(-1)

    def _state(self, folder: Path) -> dict:
        save_arrays(folder / PARAMS_FILE, params=self.params)
        return {"file": PARAMS_FILE}

    def _restore(self, folder: Path, info: dict) -> None:
        self.params = load_arrays(folder / info["file"])["params"]
