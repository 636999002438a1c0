"""Regression from mixtures to metrics: regressors, cross-validation and the content-addressed fit store.

Regressors (loglinear, lightgbm, ridge, gp, powerlaw, ensemble, auto) register themselves when
`engine.regression.base.load_regressors()` first imports them (`make_regressor` does), so that
reading a project's settings never pays for importing torch, LightGBM and scikit-learn.
"""
