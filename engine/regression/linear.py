"""Ridge regression on the raw mixture weights (RegMix's linear baseline, with a ridge penalty).

scikit-learn's RidgeCV picks the penalty per metric by efficient leave-one-out error over a log
grid; the fitted coefficients are kept as plain arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from engine.regression.base import Regressor, load_arrays, register, save_arrays

PARAMS_FILE = "ridge.npz"


@register
class RidgeRegressor(Regressor):
    """y = b + w . x per metric, penalty chosen by leave-one-out over `alphas`."""

    name = "ridge"

    def __init__(self, alphas: list[float] | None = None):
        super().__init__(alphas=list(alphas) if alphas is not None else np.logspace(-6, 2, 17).tolist())
        self.coef = np.zeros((0, 0))
        self.intercept = np.zeros(0)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        model = RidgeCV(alphas=self.settings["alphas"], alpha_per_target=True).fit(X, Y)
        self.coef = np.asarray(model.coef_, dtype=np.float64).reshape(Y.shape[1], X.shape[1])
        self.intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(Y.shape[1])

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return X @ self.coef.T + self.intercept[None, :]

    def _state(self, folder: Path) -> dict:
        save_arrays(folder / PARAMS_FILE, coef=self.coef, intercept=self.intercept)
        return {"file": PARAMS_FILE}

    def _restore(self, folder: Path, info: dict) -> None:
        arrays = load_arrays(folder / info["file"])
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
