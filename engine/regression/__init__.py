"""Regression from mixtures to metrics: regressors, cross-validation and the content-addressed fit store.

Importing the package registers every regressor with `make_regressor`:
loglinear, lightgbm, ridge, gp, powerlaw, ensemble and auto.
"""

from engine.regression import gbm, gp, linear, loglinear, powerlaw  # noqa: F401  (registration)
from engine.regression.base import REGRESSORS, Regressor, make_regressor
from engine.regression.cv import CVReport, cross_validate
from engine.regression.ensemble import AutoRegressor, EnsembleRegressor
from engine.regression.store import FitResult, RegressionSettings, fit_and_store, fit_id, load_fit

__all__ = [
    "REGRESSORS", "Regressor", "make_regressor", "CVReport", "cross_validate", "AutoRegressor",
    "EnsembleRegressor", "FitResult", "RegressionSettings", "fit_and_store", "fit_id", "load_fit",
]
