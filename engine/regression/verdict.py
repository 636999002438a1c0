"""Fit verdicts: usable, weak or unusable, from the fit's cross-validation on the objective and, for
the log-linear law, from where the law runs flat over the swarm's runs.

A proposal is only as good as the fit it comes from: a fit that cannot rank held-out runs leaves
the KL term alone to choose the mixture. `judge` reads what a fit left behind (`FitEvidence`: the
runs, the measured metrics, the out-of-fold and in-sample predictions, the law's coefficients) and
the objective's weights, and returns a `FitVerdict`: the verdict, a sentence per finding, and one
sentence on what would fix it. Every threshold is in `VerdictThresholds`; docs/verdicts.md says what
each verdict means and why each threshold sits where it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.config import Table
from engine.regression.cv import score

USABLE, WEAK, UNUSABLE = "usable", "weak", "unusable"
VERDICTS = (USABLE, WEAK, UNUSABLE)


@dataclass(frozen=True)
class VerdictThresholds:
    """Where the verdicts change (rationale in docs/verdicts.md).

    chance_z: a fit is unusable when the CV Spearman of the objective is below chance_z / sqrt(n - 1)
        (x100): the level a fit without any signal reaches about 1 time in 20 with n runs.
    usable_spearman: a fit ranks well enough to propose without a warning from this CV Spearman
        (x100) of the objective.
    usable_r2: below this CV R^2 (of the objective, or of one of its metrics) the fit predicts
        held-out runs worse than their mean: weak.
    flat_spread: when the fit's predictions of the objective over the swarm's runs spread (std) less
        than this share of the measured objective's spread, the fit is unusable, or only weak when
        it still ranks held-out runs from usable_spearman up (a law shrunk by its penalty).
    floor_band: a run is at the log-linear law's floor when the law's varying part there is below
        this many standard deviations of the measured objective: the law predicts it, and
        everything near it, the same.
    blind_residual: a law at its floor on runs whose measured objective still misses the
        prediction by this many standard deviations (rms) is blind there.
    weak_floor_share / unusable_floor_share: the share of runs at a blind floor from which the fit
        is weak / unusable.
    runs_per_coefficient: the hint says "more runs" when each CV training fold has fewer runs than
        this per fitted coefficient (units + 1; the reason for [swarm] runs_per_domain = 4).
    """

    chance_z: float = 1.645
    usable_spearman: float = 50.0
    usable_r2: float = 0.0
    flat_spread: float = 0.25
    floor_band: float = 0.1
    blind_residual: float = 0.5
    weak_floor_share: float = 0.1
    unusable_floor_share: float = 0.25
    runs_per_coefficient: float = 3.0


THRESHOLDS = VerdictThresholds()


@dataclass(frozen=True)
class FitEvidence:
    """What a fit leaves for judging it: runs X [n, u], measured metrics Y [n, k], out-of-fold
    predictions [n, k], in-sample predictions [n, k], and the log-linear law (c [k], t [k, u]) or None."""

    ratios: np.ndarray
    metrics: np.ndarray
    oof: np.ndarray
    fitted: np.ndarray
    law: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class FitVerdict(Table):
    """A fit's verdict on an objective: usable | weak | unusable, the findings behind it (one
    sentence each), what would fix it (one sentence; "" when usable), and the figures judged: the
    objective's CV Spearman (x100) and R^2, the Spearman chance reaches with this many runs, the
    spread of the fit's predictions against the measured spread, the share of runs at a blind floor,
    the runs and units, and the objective's weights per metric."""

    finite_floats = False

    verdict: str
    reasons: list[str] = field(default_factory=list)
    fix: str = ""
    objective_spearman: float = float("nan")
    objective_r2: float = float("nan")
    chance_spearman: float = float("nan")
    prediction_spread: float = float("nan")
    floor_share: float = 0.0
    runs: int = 0
    units: int = 0
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line: the verdict and the objective's CV figures."""
        return f"{self.verdict} (objective CV Spearman {self.objective_spearman:.1f}, R^2 {self.objective_r2:.2f})"


def chance_spearman(runs: int, thresholds: VerdictThresholds = THRESHOLDS) -> float:
    """The CV Spearman (x100) a fit with no signal exceeds about 1 time in 20 on `runs` runs."""
    return 100.0 * thresholds.chance_z / math.sqrt(runs - 1) if runs > 1 else math.inf


def judge(evidence: FitEvidence, metric_names: list[str], units: list[str], weights: np.ndarray, folds: int,
          thresholds: VerdictThresholds = THRESHOLDS) -> FitVerdict:
    """The verdict of a fit on the objective `weights` (normalised, one per metric)."""
    X, Y, w = evidence.ratios, evidence.metrics, np.asarray(weights, dtype=np.float64)
    n, u = X.shape
    measured = Y @ w
    with np.errstate(invalid="ignore", over="ignore"):
        cv = score("objective", measured[:, None], (evidence.oof @ w)[:, None])
        fitted = evidence.fitted @ w
    sp, r2 = float(cv.spearman[0]), float(cv.r2[0])
    chance = chance_spearman(n, thresholds)
    sd = float(measured.std())
    spread = float(np.std(fitted) / sd) if sd > 0 and np.all(np.isfinite(fitted)) else float("nan")
    unusable, weak = [], []
    if sd == 0:
        unusable.append("the measured objective is the same on every run, so there is nothing to fit")
    elif not sp >= chance:
        unusable.append(f"it shows no sign of ranking mixtures: the CV Spearman of the objective is {sp:.1f}, "
                        f"below the {chance:.0f} that chance reaches 1 time in 20 with {n} runs")
    elif sp < thresholds.usable_spearman:
        weak.append(f"it ranks held-out runs only loosely: the CV Spearman of the objective is {sp:.1f} "
                    f"(usable from {thresholds.usable_spearman:.0f})")
    if sd > 0 and not spread >= thresholds.flat_spread:
        flat = (f"its predictions barely move over the swarm: their spread is {spread:.0%} of the measured objective's"
                if math.isfinite(spread) else "its predictions overflow on some runs")
        (weak if sp >= thresholds.usable_spearman else unusable).append(flat)
    if sd > 0 and not r2 >= thresholds.usable_r2:
        weak.append(f"it predicts the objective of held-out runs worse than their mean (CV R^2 {r2:.3g})")
    weighed = np.flatnonzero(w > 0)
    if len(weighed) > 1:
        r2_metric = score("metrics", Y[:, weighed], evidence.oof[:, weighed]).r2
        poor = [(r, metric_names[i]) for r, i in sorted(zip(r2_metric, weighed)) if r < thresholds.usable_r2]
        if poor:
            shown = ", ".join(f"{name} ({r:.3g})" for r, name in poor[:3]) + (f" and {len(poor) - 3} more" if len(poor) > 3 else "")
            weak.append(f"on held-out runs it predicts {len(poor)} of the objective's {len(weighed)} metrics worse than "
                        f"their mean (CV R^2: {shown})")
    floor_share, floor_unit = 0.0, ""
    if evidence.law is not None and sd > 0:
        floor_share, floor_unit, blind = _blind_floor(X, measured, fitted, evidence.law, w, sd, units, thresholds)
        if floor_share >= thresholds.weak_floor_share:
            text = (f"the law runs flat on {floor_share:.0%} of the runs (those rich in {floor_unit}): it predicts them "
                    f"all at its floor while their measured objective misses it by {blind:.1f} standard deviations")
            (unusable if floor_share >= thresholds.unusable_floor_share else weak).append(text)
    verdict = UNUSABLE if unusable else WEAK if weak else USABLE
    reasons = unusable + weak
    fix = "" if verdict == USABLE else _fix(n, u, folds, floor_share >= thresholds.weak_floor_share, floor_unit, thresholds)
    return FitVerdict(verdict, reasons, fix, sp, r2, chance, spread, floor_share, n, u,
                      {m: float(x) for m, x in zip(metric_names, w) if x > 0})


def _blind_floor(X, measured, fitted, law, w, sd, units, thresholds) -> tuple[float, str, float]:
    """Share of runs where the law's varying part sum_i w_i exp(t_i . x) is within floor_band
    standard deviations of 0 (the prediction sits at the law's floor) and the measured objective
    there misses the prediction by at least blind_residual (rms); the unit those runs are richest
    in; and that rms miss."""
    c, t = law
    with np.errstate(over="ignore"):
        varying = np.exp(X @ t.T) @ w
    at_floor = varying < thresholds.floor_band * sd
    if not at_floor.any():
        return 0.0, "", 0.0
    miss = float(np.sqrt(np.mean((measured[at_floor] - fitted[at_floor]) ** 2)) / sd)
    unit = units[int(np.argmax(X[at_floor].mean(0) - X.mean(0)))]
    return (float(at_floor.mean()) if miss >= thresholds.blind_residual else 0.0), unit, miss


def _fix(runs: int, units: int, folds: int, floor: bool, floor_unit: str, thresholds: VerdictThresholds) -> str:
    """One sentence on what would most likely fix the fit, from what the verdict saw."""
    coefficients = units + 1
    per_fold = runs * (folds - 1) / folds
    if per_fold / coefficients < thresholds.runs_per_coefficient:
        needed = math.ceil(thresholds.runs_per_coefficient * coefficients * folds / (folds - 1))
        return (f"Train more runs: {runs} runs for {units} units leave {per_fold / coefficients:.1f} per fitted "
                f"coefficient in each CV fold; {needed} runs ([swarm] runs_per_domain = {math.ceil(needed / units)}) "
                f"would leave {thresholds.runs_per_coefficient:g}.")
    if floor:
        return (f"Vary fewer units at once (unfreeze fewer domains, or reuse the current mixture) or spread the runs "
                f"more evenly ([swarm] min_strength): the law runs flat on the runs rich in {floor_unit}.")
    return ("Train the proxies on more tokens ([proxy] tokens_per_proxy): with this many runs the fit still finds "
            "little signal, so seed noise likely swamps the mixture's effect at this scale.")
