"""LightGBM per metric, as RegMix (sail-sg/regmix, regression_fitting/regression.ipynb).

RegMix's hyperparameters: gbdt, l2 regression, learning rate 0.01, up to 1000 rounds, early
stopping after 3 rounds without improvement of the validation l2, seed 42. RegMix early-stops on
its evaluation mixtures; here early stopping only ever sees a held-out split (`valid_fraction`) of
the training runs. With `bags` > 1, each bag holds out a different seeded split and predictions are
averaged over bags, so every training run is used by most bags. valid_fraction = 0 trains the full
`rounds` on all runs. Models are kept as LightGBM text model files.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from engine.atomic import write_text
from engine.errors import DataError
from engine.regression.base import Regressor, register

MIN_VALID_RUNS = 4


@register
class LightGBMRegressor(Regressor):
    """One LightGBM regressor per metric (and per bag), averaged over bags."""

    name = "lightgbm"

    def __init__(
        self,
        learning_rate: float = 0.01,
        rounds: int = 1000,
        patience: int = 3,
        valid_fraction: float = 0.125,
        bags: int = 1,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        threads: int = 1,
        seed: int = 42,
    ):
        super().__init__(
            learning_rate=learning_rate, rounds=rounds, patience=patience, valid_fraction=valid_fraction,
            bags=bags, num_leaves=num_leaves, min_child_samples=min_child_samples, threads=threads, seed=seed,
        )
        self.boosters: list[list[lgb.Booster]] = []  # [metric][bag]

    def _params(self, seed: int) -> dict:
        s = self.settings
        return {
            "boosting_type": "gbdt", "objective": "regression", "metric": "l2",
            "learning_rate": s["learning_rate"], "num_leaves": s["num_leaves"],
            "min_child_samples": s["min_child_samples"], "num_threads": s["threads"],
            "seed": seed, "deterministic": True, "force_row_wise": True, "verbosity": -1,
        }

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        s = self.settings
        n = len(X)
        n_valid = int(round(s["valid_fraction"] * n))
        if s["valid_fraction"] > 0 and (n_valid < MIN_VALID_RUNS or n - n_valid < MIN_VALID_RUNS):
            raise DataError(
                f"LightGBM early stopping needs at least {MIN_VALID_RUNS} held-out and {MIN_VALID_RUNS} training runs, "
                f"but {n} runs at valid_fraction {s['valid_fraction']} leave {n_valid}; add runs or set valid_fraction = 0."
            )
        self.boosters = [[] for _ in range(Y.shape[1])]
        for bag in range(s["bags"]):
            seed = s["seed"] + bag
            order = np.random.default_rng(seed).permutation(n)
            valid, train = order[:n_valid], order[n_valid:]
            for i in range(Y.shape[1]):
                data = lgb.Dataset(X[train], Y[train, i], params={"verbosity": -1})
                kwargs = {}
                if n_valid:
                    kwargs = {
                        "valid_sets": [lgb.Dataset(X[valid], Y[valid, i], reference=data)],
                        "callbacks": [lgb.early_stopping(s["patience"], verbose=False)],
                    }
                booster = lgb.train(self._params(seed), data, num_boost_round=s["rounds"], **kwargs)
                text = booster.model_to_string(num_iteration=booster.best_iteration or None)
                self.boosters[i].append(lgb.Booster(model_str=text))

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return np.stack(
            [np.mean([b.predict(X, num_threads=self.settings["threads"]) for b in bags], axis=0) for bags in self.boosters],
            axis=1,
        )

    def _state(self, folder: Path) -> dict:
        files = []
        for i, bags in enumerate(self.boosters):
            files.append([])
            for b, booster in enumerate(bags):
                name = f"lightgbm_{i:03d}_{b:02d}.txt"
                write_text(folder / name, booster.model_to_string())
                files[-1].append(name)
        return {"files": files}

    def _restore(self, folder: Path, info: dict) -> None:
        missing = [f for bags in info["files"] for f in bags if not (folder / f).is_file()]
        if missing:
            raise DataError(f"{folder / missing[0]} is missing; refit the regression.")
        self.boosters = [[lgb.Booster(model_file=str(folder / f)) for f in bags] for bags in info["files"]]
