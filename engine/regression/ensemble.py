"""Model choice: an average of regressors, and `auto`, which picks one (or an average) by K-fold CV.

`auto` cross-validates every candidate on the training runs only, ranks them by mean Spearman
across metrics, and also scores the averages of the top 2, 3, ... candidates (from their
out-of-fold predictions, which is exactly the ensembles' CV score). It keeps whichever scores best,
preferring fewer models on ties, and refits it on all runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import ConfigError
from engine.events import EventSink, ignore
from engine.regression.base import REGRESSORS, Regressor, make_regressor, register
from engine.settings import DEFAULT_CANDIDATES
from engine.regression.cv import CVReport, cross_validate, score


@register
class EnsembleRegressor(Regressor):
    """The mean prediction of `members`, each built with its entry of `member_settings`."""

    name = "ensemble"

    def __init__(self, members: list[str], member_settings: dict[str, dict] | None = None):
        member_settings = dict(member_settings or {})
        unknown = [m for m in members if m not in REGRESSORS or m in ("ensemble", "auto")]
        if not members or unknown:
            raise ConfigError(
                f"Ensemble members {unknown or '[]'} are not usable; list some of "
                f"{', '.join(sorted(set(REGRESSORS) - {'ensemble', 'auto'}))}."
            )
        super().__init__(members=list(members), member_settings={m: member_settings.get(m, {}) for m in members})
        self.models = [make_regressor(m, **self.settings["member_settings"][m]) for m in members]

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        for model in self.models:
            model.fit(X, Y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return np.mean([model.predict(X) for model in self.models], axis=0)

    def law(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.models[0].law() if len(self.models) == 1 else None

    def describe(self) -> str:
        return "+".join(self.settings["members"])

    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for model in self.models for note in model.notes()))

    def _state(self, folder: Path) -> dict:
        for model in self.models:
            model.save(folder / model.name)
        return {"members": [m.name for m in self.models]}

    def _restore(self, folder: Path, info: dict) -> None:
        self.models = [Regressor.load(folder / name) for name in info["members"]]


@register
class AutoRegressor(Regressor):
    """Chooses among `candidates` (and averages of the best ones) by `folds`-fold CV (module docstring)."""

    name = "auto"

    def __init__(
        self,
        candidates: list[str] | None = None,
        folds: int = 5,
        seed: int = 0,
        ensemble: bool = True,
        member_settings: dict[str, dict] | None = None,
        on_event: EventSink = ignore,
    ):
        candidates = list(candidates or DEFAULT_CANDIDATES)
        super().__init__(
            candidates=candidates, folds=folds, seed=seed, ensemble=ensemble,
            member_settings={c: dict((member_settings or {}).get(c, {})) for c in candidates},
        )
        EnsembleRegressor(candidates, self.settings["member_settings"])  # validates the names
        self.on_event = on_event
        self.chosen: EnsembleRegressor | None = None
        self.reports: dict[str, CVReport] = {}  # CV of every candidate and scored ensemble, by label
        self.report: CVReport | None = None  # CV of the chosen model

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        s = self.settings
        singles = {
            c: cross_validate(c, X, Y, on_event=self.on_event, **{**s["member_settings"][c], "folds": s["folds"], "seed": s["seed"]})
            for c in s["candidates"]
        }
        ranked = sorted(singles, key=lambda c: -_score(singles[c]))
        options: list[tuple[list[str], CVReport]] = [([c], singles[c]) for c in ranked]
        if s["ensemble"]:
            for j in range(2, len(ranked) + 1):
                members = ranked[:j]
                oof = np.mean([singles[c].predictions for c in members], axis=0)
                options.append((members, score("+".join(members), Y, oof, s["folds"], s["seed"])))
        self.reports = {report.regressor: report for _, report in options}
        best = max(_score(report) for _, report in options)
        members, self.report = min(
            (option for option in options if _score(option[1]) >= best - 1e-9), key=lambda option: len(option[0])
        )
        self.chosen = EnsembleRegressor(members, s["member_settings"]).fit(X, Y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = self._check_predict(X)
        return self.chosen.predict(X)

    def law(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self.chosen.law() if self.chosen is not None else None

    def describe(self) -> str:
        return f"auto: {self.chosen.describe()}" if self.chosen is not None else "auto"

    def notes(self) -> list[str]:
        return self.chosen.notes() if self.chosen is not None else []

    def _state(self, folder: Path) -> dict:
        self.chosen.save(folder / "chosen")
        return {"cv": {label: report.means() for label, report in self.reports.items()}}

    def _restore(self, folder: Path, info: dict) -> None:
        self.chosen = Regressor.load(folder / "chosen")


def _score(report: CVReport) -> float:
    value = report.mean_spearman
    return value if np.isfinite(value) else -np.inf

