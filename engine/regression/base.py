"""The regressor interface, the registry of regressors by name, and model-file helpers.

A regressor maps mixtures X [n, m] (rows on the simplex) to metrics Y [n, k]. Every regressor saves
to a folder: `regressor.json` (name, settings, shapes and small per-model state) plus its own model
files (npz arrays or LightGBM text models), all written atomically, so `Regressor.load(folder)`
rebuilds a model that predicts exactly what the saved one did.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.atomic import write_bytes, write_json
from engine.config import read_json
from engine.errors import ConfigError, DataError

META_FILE = "regressor.json"

REGRESSORS: dict[str, type["Regressor"]] = {}
_MODULES = ("gbm", "gp", "linear", "loglinear", "powerlaw", "ensemble")


def load_regressors() -> dict[str, type["Regressor"]]:
    """Import every regressor module, registering them (cheap after the first call); returns the registry."""
    import importlib

    for module in _MODULES:
        importlib.import_module(f"engine.regression.{module}")
    return REGRESSORS


def register(cls: type["Regressor"]) -> type["Regressor"]:
    """Class decorator: make `cls` available to `make_regressor` under `cls.name`."""
    REGRESSORS[cls.name] = cls
    return cls


def make_regressor(name: str, **settings: Any) -> "Regressor":
    """A new, unfitted regressor `name` with `settings` (keyword arguments of its class)."""
    load_regressors()
    if name not in REGRESSORS:
        raise ConfigError(f"Regressor '{name}' is unknown; use one of {', '.join(sorted(REGRESSORS))}.")
    try:
        return REGRESSORS[name](**settings)
    except TypeError as err:
        raise ConfigError(f"Regressor '{name}' got a setting it does not take ({err}); remove it.") from None


def check_xy(X: np.ndarray, Y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """X as float64 [n, m] and Y as float64 [n, k], both finite, with matching rows."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"Mixtures have shape {X.shape}; give at least one run over at least one domain.")
    if not np.all(np.isfinite(X)):
        raise DataError("Some mixture weights are not finite; fix the swarm's ratios.")
    if Y is None:
        return X, None
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != X.shape[0] or Y.shape[1] == 0:
        raise DataError(f"Metrics have shape {Y.shape} for {X.shape[0]} runs; give one row of metrics per run.")
    if not np.all(np.isfinite(Y)):
        raise DataError("Some metrics are not finite; rerun or drop those runs.")
    return X, Y


class Regressor:
    """Base class: subclasses set `name`, take their settings as keyword arguments, and implement
    `_fit`, `predict`, `_state` (arrays + json-able info to save) and `_restore`."""

    name: ClassVar[str] = ""

    def __init__(self, **settings: Any):
        self.settings = dict(settings)
        self.n_domains = 0
        self.n_metrics = 0
        self._notes: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"

    @property
    def fitted(self) -> bool:
        return self.n_metrics > 0

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "Regressor":
        """Fit on mixtures X [n, m] and metrics Y [n, k]; returns self."""
        X, Y = check_xy(X, Y)
        self.n_domains, self.n_metrics = X.shape[1], Y.shape[1]
        self._fit(X, Y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted metrics [n', k] for mixtures X [n', m]."""
        raise NotImplementedError

    def law(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(c [k], t [k, m]) of a log-linear law y = exp(c) + exp(t . x), or None for other models."""
        return None

    def describe(self) -> str:
        """What was fitted, for a status line (e.g. which models an ensemble averages)."""
        return self.name

    def notes(self) -> list[str]:
        """How the last fit adapted its settings to the data (e.g. too few runs to early-stop), one sentence each."""
        return list(self._notes)

    def _check_predict(self, X: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise DataError(f"The {self.name} regressor is not fitted; fit it before predicting.")
        X, _ = check_xy(X)
        if X.shape[1] != self.n_domains:
            raise DataError(
                f"Mixtures have {X.shape[1]} domains but the {self.name} fit has {self.n_domains}; "
                f"predict on the fit's domains."
            )
        return X

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        raise NotImplementedError

    def _state(self, folder: Path) -> dict:
        """Write model files into `folder` and return json-able info needed to restore them."""
        raise NotImplementedError

    def _restore(self, folder: Path, info: dict) -> None:
        raise NotImplementedError

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the fitted model into `folder` (created if needed); returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        info = self._state(folder)
        write_json(
            folder / META_FILE,
            {
                "name": self.name,
                "settings": self.settings,
                "n_domains": self.n_domains,
                "n_metrics": self.n_metrics,
                "state": info,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Regressor":
        """Rebuild the regressor saved in `folder` (of whichever registered class saved it)."""
        folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise DataError(f"{folder} holds no saved regressor ({META_FILE} is missing); refit it.")
        try:
            meta = read_json(meta_path, f"{meta_path} is missing", "refit it.")
            model = make_regressor(meta["name"], **meta["settings"])
            model.n_domains, model.n_metrics = int(meta["n_domains"]), int(meta["n_metrics"])
            model._restore(folder, meta["state"])
        except Exception as err:  # whatever a damaged model file makes its library raise
            if isinstance(err, DataError):
                raise
            detail = f"no key {err}" if isinstance(err, KeyError) else str(err).split("; ")[0]
            raise DataError(f"the saved regressor in {folder} is damaged ({detail}); delete its fit folder and fit again.") from None
        return model


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an .npz file atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (no pickles); a missing or damaged file is a DataError."""
    if not path.is_file():
        raise DataError(f"{path} is missing; refit the regression.")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise DataError(f"{path} is damaged (not an .npz archive of arrays); delete its fit folder and fit again.") from None
