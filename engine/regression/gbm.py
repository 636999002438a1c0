"""LightGBM per metric, as RegMix (sail-sg/regmix, regression_fitting/regression.ipynb).

RegMix's hyperparameters: gbdt, l2 regression, learning rate 0.01, up to 1000 rounds, early
stopping after 3 rounds without improvement of the validation l2, seed 42. RegMix early-stops on
its evaluation mixtures; here early stopping only ever sees a held-out split (`valid_fraction`) of
the training runs. With `bags` > 1, each bag holds out a different seeded split and predictions are
averaged over bags, so every training run is used by most bags. valid_fraction = 0 trains the full
`rounds` on all runs. Models are kept as LightGBM text model files.

Small swarms (a few dozen runs, as on a CPU) adapt instead of failing: too few runs to hold out
MIN_VALID_RUNS on each side train the full `rounds` on every run, and a leaf needs at most a
quarter of the training runs (RegMix's 20 would leave a tree of 16 runs no split at all); each
adaptation is a note (`Regressor.notes`) that fitting reports.
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
        self._notes = []
        if s["valid_fraction"] > 0 and (n_valid < MIN_VALID_RUNS or n - n_valid < MIN_VALID_RUNS):
            self._notes.append(
                f"LightGBM: {n} runs are too few to early-stop ([regression] lightgbm_valid_fraction = "
                f"{s['valid_fraction']:g} holds out {n_valid}, it needs {MIN_VALID_RUNS} on each side); it trained "
                f"all {s['rounds']} rounds ([regression] lightgbm_rounds) on every run.")
            n_valid = 0
        min_child = min(s["min_child_samples"], max(1, (n - n_valid) // 4))
        if min_child < s["min_child_samples"]:
            self._notes.append(f"LightGBM: a leaf holds at least {min_child} runs, not {s['min_child_samples']}: "
                               f"{n - n_valid} training runs.")
        self.boosters = [[] for _ in range(Y.shape[1])]
        for bag in range(s["bags"]):
            seed = s["seed"] + bag
            order = np.random.default_rng(seed).permutation(n)
            valid, train = order[:n_valid], order[n_valid:]
            params = {**self._params(seed), "min_child_samples": min_child}
            for i in range(Y.shape[1]):
                data = lgb.Dataset(X[train], Y[train, i], params={"verbosity": -1})
                kwargs = {}
                if n_valid:
                    kwargs = {
                        "valid_sets": [lgb.Dataset(X[valid], Y[valid, i], reference=data)],
                        "callbacks": [lgb.early_stopping(s["patience"], verbose=False)],
                    }
                booster = lgb.train(params, data, num_boost_round=s["rounds"], **kwargs)
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
