"""How sure is a proposal? Bootstrap the swarm: resample its runs, refit, propose again.

Each replicate draws the swarm's n runs n times with replacement, refits the regression on that
draw and proposes with the same settings. The spread of the replicates' mixtures says how much the
proposal rests on the particular runs the swarm happened to have: per leaf domain the 95% interval
of its weight, the 95% interval of the predicted objective of the proposed mixture itself under the
replicates' fits, and how often each leaf sits at its cap.

A log-linear fit refits all replicates in one batched solve (`LogLinearRegressor.refit`: a
replicate is a row of run weights, the number of times each run was drawn), started from the fit's
law with its penalties held, and only for the metrics the objective weighs. Other regressors refit
replicate by replicate (an `auto` fit refits the model it chose, without choosing again), with
progress events. Neither paper's tool reports this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from engine.config import Table
from engine.errors import OlmixError
from engine.events import EventSink, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.mixture_table import MixtureTable
from engine.propose import Proposal, objective_weights, propose
from engine.regression.base import Regressor, make_regressor
from engine.settings import ObjectiveSettings, ProposeSettings

LEVEL = 0.95
TASK = "bootstrap"


@dataclass(frozen=True)
class ProposalSpread(Table):
    """The bootstrap spread of a proposal: replicates asked for and failed (a refit or proposal that
    raised), per leaf the 95% interval of its weight (`lower`, `upper`), the 95% interval of the
    proposed mixture's predicted objective under the replicates' fits, per leaf the share of
    replicates in which it sits at its cap (leaves that never do are left out), and the seconds taken."""

    finite_floats = False

    replicates: int
    failed: int = 0
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    predicted_lower: float = float("nan")
    predicted_upper: float = float("nan")
    cap_binds: dict[str, float] = field(default_factory=dict)
    level: float = LEVEL
    seconds: float = 0.0


def replicate_weights(runs: int, replicates: int, seed: int) -> np.ndarray:
    """[replicates, runs]: how often each run is drawn in each replicate (each row sums to `runs`)."""
    return np.random.default_rng(seed).multinomial(runs, np.full(runs, 1.0 / runs), size=replicates)


def refits(model: Regressor, table: MixtureTable, weights: np.ndarray, metrics: list[int],
           on_event: EventSink = ignore) -> list[Regressor]:
    """One refit of `model`'s regression per row of run weights: batched for a log-linear fit made
    by this version, else one by one (an `auto` fit's chosen model, not a new choice)."""
    if getattr(model, "refittable", False):
        return model.refit(table.ratios, table.metrics, weights, metrics)
    recipe = getattr(model, "chosen", None) or model
    out = []
    for b, row in enumerate(weights):
        rows = np.repeat(np.arange(table.n_runs), row)
        out.append(make_regressor(recipe.name, **recipe.settings).fit(table.ratios[rows], table.metrics[rows]))
        on_event(TaskProgress(TASK, completed=b + 1, info={"step": "refit"}))
    return out


def bootstrap_proposal(
    point: Proposal,
    model: Regressor,
    table: MixtureTable,
    prior,
    tokens,
    settings: ProposeSettings,
    objective: ObjectiveSettings,
    expand: np.ndarray | None = None,
    domains_leaf: Sequence[str] | None = None,
    on_event: EventSink = ignore,
) -> ProposalSpread:
    """The spread of `point` (proposed from `model` on `table` with these arguments, as
    engine.propose.propose takes them) over settings.bootstrap replicates, seeded by settings.seed."""
    start = time.perf_counter()
    replicates = settings.bootstrap
    on_event(TaskStarted(TASK, total=replicates, unit="replicates"))
    w = objective_weights(objective, table.metric_names)
    weights = replicate_weights(table.n_runs, replicates, settings.seed)
    models = refits(model, table, weights, [int(i) for i in np.flatnonzero(w > 0)], on_event)
    mixtures, predicted, caps, failed = [], [], [], 0
    for b, (row, fitted) in enumerate(zip(weights, models)):
        try:
            with np.errstate(all="ignore"):  # a replicate the solver breaks down on is counted below, not warned about
                p = propose(fitted, table.subset(np.repeat(np.arange(table.n_runs), row)), prior, tokens, settings,
                            objective, expand, domains_leaf)
        except (OlmixError, np.linalg.LinAlgError):  # a replicate with no proposal counts as failed, not as an error
            failed += 1
            continue
        mixtures.append(p.x)
        predicted.append(float(fitted.predict(point.z[None])[0] @ w))
        caps.append(set(p.binding_caps))
        on_event(TaskProgress(TASK, completed=b + 1, info={"step": "propose"}))
    spread = _summarise(point.domains, np.array(mixtures).reshape(-1, len(point.domains)), np.array(predicted), caps,
                        replicates, failed, time.perf_counter() - start)
    on_event(TaskFinished(TASK, info={"replicates": replicates, "failed": failed, "seconds": spread.seconds}))
    return spread


def _summarise(domains: list[str], X: np.ndarray, predicted: np.ndarray, caps: list[set[str]], replicates: int,
               failed: int, seconds: float) -> ProposalSpread:
    if not len(X):
        return ProposalSpread(replicates, failed, seconds=seconds)
    tail = 100 * (1 - LEVEL) / 2
    lower, upper = np.percentile(X, tail, axis=0), np.percentile(X, 100 - tail, axis=0)
    finite = predicted[np.isfinite(predicted)]
    lo, hi = (np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan))
    binds = {d: sum(d in c for c in caps) / len(caps) for d in domains}
    return ProposalSpread(replicates, failed, dict(zip(domains, lower.tolist())), dict(zip(domains, upper.tolist())),
                          float(lo), float(hi), {d: s for d, s in binds.items() if s > 0}, LEVEL, seconds)
