"""K-fold cross-validation of a regressor: per-metric Spearman (x100), R^2 and MAE.

Folds are a seeded permutation of the runs cut into `folds` near-equal parts, so the same inputs
always give the same report. The out-of-fold predictions are kept: averaging them over models gives
the exact cross-validated score of their ensemble without refitting anything.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from engine.errors import DataError
from engine.events import EventSink, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.regression.base import REGRESSORS, check_xy, load_regressors, make_regressor


@dataclass
class CVReport:
    """Cross-validated scores of one regressor; arrays are per metric [k]."""

    regressor: str
    spearman: np.ndarray  # Spearman rank correlation x100 (nan for a constant metric)
    r2: np.ndarray
    mae: np.ndarray
    folds: int
    seed: int
    predictions: np.ndarray | None = None  # out-of-fold predictions [n, k]

    @property
    def mean_spearman(self) -> float:
        return _nanmean(self.spearman)

    @property
    def mean_r2(self) -> float:
        return _nanmean(self.r2)

    @property
    def mean_mae(self) -> float:
        return _nanmean(self.mae)

    def means(self) -> dict[str, float]:
        return {"spearman": self.mean_spearman, "r2": self.mean_r2, "mae": self.mean_mae}


def _nanmean(values: np.ndarray) -> float:
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Spearman correlation x100 per column of [n, k] arrays (nan where either column is constant)."""
    from scipy.stats import rankdata  # here, not at module top: scipy.stats is slow to import

    a, b = rankdata(y_true, axis=0), rankdata(y_pred, axis=0)
    a, b = a - a.mean(0), b - b.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 100.0 * (a * b).sum(0) / np.where(denom > 0, denom, 1.0), np.nan)


def score(regressor: str, Y: np.ndarray, P: np.ndarray, folds: int = 0, seed: int = 0) -> CVReport:
    """Spearman, R^2 and MAE of predictions P against Y (both [n, k])."""
    Y, P = np.asarray(Y, np.float64).reshape(len(Y), -1), np.asarray(P, np.float64).reshape(len(Y), -1)
    ss_tot = ((Y - Y.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ((Y - P) ** 2).sum(0) / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    return CVReport(regressor, spearman(Y, P), r2, np.abs(Y - P).mean(0), folds, seed, P)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold index [n] of every run: a seeded permutation cut into `folds` near-equal parts."""
    if folds < 2 or folds > n:
        raise DataError(f"Cross-validation needs 2 to {n} folds for {n} runs, not {folds}; change folds.")
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return ids


def cross_validate(
    name: str, X: np.ndarray, Y: np.ndarray, folds: int = 5, seed: int = 0, on_event: EventSink = ignore, **settings
) -> CVReport:
    """Fit regressor `name` (with `settings`) on all folds but one, predict the left-out fold, score.

    `seed` cuts the folds and also seeds the regressor when it takes a seed.
    """
    X, Y = check_xy(X, Y)
    load_regressors()
    if name in REGRESSORS and "seed" in inspect.signature(REGRESSORS[name]).parameters:
        settings["seed"] = seed
    ids = fold_ids(len(X), folds, seed)
    P = np.empty_like(Y)
    task = f"cross-validate {name}"
    on_event(TaskStarted(task, total=folds, unit="folds"))
    for f in range(folds):
        test = ids == f
        P[test] = make_regressor(name, **settings).fit(X[~test], Y[~test]).predict(X[test])
        on_event(TaskProgress(task, completed=f + 1))
    report = score(name, Y, P, folds, seed)
    on_event(TaskFinished(task, info=report.means()))
    return report
