"""Content-addressed regression fits: fits/<id>/ holds one fitted model and its CV scores.

The id is a short sha256 of everything a fit depends on (ratios, metrics, domain and metric names,
regressor and its settings, CV folds and seed), so fitting unchanged inputs again loads the stored
fit instead of refitting. A fit folder holds:

  fit.toml      regressor, what it chose, domains, metrics, settings, source swarm ids, CV means,
                and the verdict on the project's objective (engine.regression.verdict)
  cv.csv        per metric: spearman (x100), r2, mae
  evidence.npz  what the verdict is judged from: runs, metrics, out-of-fold and in-sample
                predictions, the law's coefficients (so another objective can be judged again)
  model/        the saved regressor (engine.regression.base)

fit.toml is written last, so a folder without it is an interrupted fit and is redone; a folder
without evidence.npz was fitted by an earlier version, which judged no verdict, and is redone too.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.atomic import write_csv, write_toml
from engine.config import load_section, read_toml
from engine.errors import DataError, OlmixError
from engine.events import EventSink, Message, TaskFinished, TaskStarted, ignore
from engine.mixture_table import MixtureTable
from engine.regression.base import Regressor, load_arrays, make_regressor, save_arrays
from engine.regression.cv import CVReport, cross_validate
from engine.regression.verdict import FitEvidence, FitVerdict, judge
from engine.settings import ObjectiveSettings, RegressionSettings

FIT_FILE = "fit.toml"
CV_FILE = "cv.csv"
EVIDENCE_FILE = "evidence.npz"
MODEL_DIR = "model"
ID_LENGTH = 12


@dataclass
class FitResult:
    """A stored fit: the model, its CV scores and where it lives."""

    fit_id: str
    folder: Path
    regressor: str  # as requested (e.g. auto)
    chosen: str  # what was fitted (e.g. "auto: gp+lightgbm")
    model: Regressor
    domains: list[str]
    metric_names: list[str]
    cv: CVReport
    source_swarms: list[str]
    reused: bool  # True when an identical earlier fit was loaded instead of refitting
    seconds: float  # fitting time of the stored fit
    verdict: FitVerdict | None  # on the objective it was fitted (or loaded) for; None: fitted by an earlier version


def check_metrics_finite(table: MixtureTable) -> None:
    """Raise DataError naming the first run and metric whose value is not finite."""
    if not table.metric_names:
        raise DataError("The swarm table has no metrics; train the swarm's runs before fitting.")
    bad = np.argwhere(~np.isfinite(table.metrics))
    if len(bad):
        r, c = bad[0]
        raise DataError(
            f"Run '{table.run_ids[r]}' has metric '{table.metric_names[c]}' = {table.metrics[r, c]}; "
            f"rerun that run or drop it before fitting."
        )


def fit_id(table: MixtureTable, regressor: str, settings: "RegressionSettings") -> str:
    """Short sha256 of the table, the regressor and the settings it uses."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(table.ratios, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(table.metrics, dtype="<f8").tobytes())
    spec = {
        "domains": table.domains, "metrics": table.metric_names, "regressor": regressor,
        "settings": settings.regressor_settings(regressor), "folds": settings.folds, "seed": settings.seed,
    }
    h.update(json.dumps(spec, sort_keys=True).encode())
    return h.hexdigest()[:ID_LENGTH]


def fit_and_store(
    fits_dir: str | os.PathLike,
    table: MixtureTable,
    regressor: str | None = None,
    settings: RegressionSettings = RegressionSettings(),
    on_event: EventSink = ignore,
    source_swarms: Sequence[str] = (),
    objective: ObjectiveSettings = ObjectiveSettings(),
    swarm_table: str = "[swarm]",
) -> FitResult:
    """Fit `regressor` (default settings.regressor) on `table`, or load the identical stored fit;
    either way with its verdict on `objective` (its fix naming `swarm_table`'s settings: the table
    the swarm was drawn with)."""
    name = regressor or settings.regressor
    settings = dataclasses.replace(settings, regressor=name)
    check_metrics_finite(table)
    if table.n_runs < settings.folds:
        raise DataError(
            f"The swarm has {table.n_runs} runs, fewer than the {settings.folds} CV folds; train more runs or lower "
            "[regression] folds."
        )
    fid = fit_id(table, name, settings)
    folder = Path(fits_dir) / fid
    if (folder / FIT_FILE).is_file() and (folder / EVIDENCE_FILE).is_file():
        on_event(Message(f"Inputs unchanged: reusing fit {fid}."))
        return dataclasses.replace(load_fit(folder, objective), reused=True)

    task = f"fit {name}"
    on_event(TaskStarted(task))
    start = time.perf_counter()
    X, Y = table.ratios, table.metrics
    if name == "auto":
        model = make_regressor(name, on_event=on_event, **settings.regressor_settings(name)).fit(X, Y)
        cv = model.report
    else:
        cv = cross_validate(name, X, Y, on_event=on_event, **settings.cv_kwargs(name))
        model = make_regressor(name, **settings.regressor_settings(name)).fit(X, Y)
    seconds = time.perf_counter() - start
    for note in model.notes():
        on_event(Message(note))
    evidence = FitEvidence(X, Y, cv.predictions, model.predict(X), model.law())
    verdict = judge(evidence, table.metric_names, table.domains, np.array(objective.normalised(table.metric_names)),
                    settings.folds, swarm_table=swarm_table)

    model.save(folder / MODEL_DIR)
    law = {} if evidence.law is None else {"law_c": evidence.law[0], "law_t": evidence.law[1]}
    save_arrays(folder / EVIDENCE_FILE, ratios=X, metrics=Y, oof=evidence.oof, fitted=evidence.fitted, **law)
    write_csv(
        folder / CV_FILE,
        ["metric", "spearman", "r2", "mae"],
        ([m, float(s), float(r), float(a)] for m, s, r, a in zip(table.metric_names, cv.spearman, cv.r2, cv.mae)),
    )
    write_toml(
        folder / FIT_FILE,
        {
            "fit_id": fid, "regressor": name, "chosen": model.describe(), "domains": table.domains,
            "metrics": table.metric_names, "n_runs": table.n_runs, "source_swarms": list(source_swarms),
            "swarm_table": swarm_table,
            "settings": dataclasses.asdict(settings), "seconds": seconds,
            "cv": {"folds": settings.folds, "seed": settings.seed, "cv_of": cv.regressor, **cv.means()},
            "verdict": dataclasses.asdict(verdict),
        },
    )
    verdict = read_fit_summary(folder).verdict  # as stored: rounded like every figure in the project's files
    on_event(TaskFinished(task, info={"fit_id": fid, "chosen": model.describe(), **cv.means(), "verdict": verdict.verdict}))
    return FitResult(
        fid, folder, name, model.describe(), model, list(table.domains), list(table.metric_names),
        cv, list(source_swarms), False, seconds, verdict,
    )


@dataclass(frozen=True)
class FitSummary:
    """A stored fit's fit.toml (`info`), CV scores and verdict (None for a fit by an earlier
    version), read without loading its model."""

    fit_id: str
    folder: Path
    info: dict
    cv: CVReport
    verdict: FitVerdict | None = None

    def verdict_on(self, objective: ObjectiveSettings) -> FitVerdict | None:
        """The verdict on `objective`: the stored one when it was judged on the same weights, else
        judged again from the fit's evidence.npz (cheap: no refitting)."""
        if self.verdict is None:
            return None
        metrics = list(self.info["metrics"])
        weights = np.array(objective.normalised(metrics))
        wanted = {m: float(x) for m, x in zip(metrics, weights) if x > 0}
        stored = self.verdict.weights
        if set(wanted) == set(stored) and all(abs(wanted[m] - stored[m]) < 1e-6 for m in wanted):
            return self.verdict
        a = load_arrays(self.folder / EVIDENCE_FILE)
        law = (a["law_c"], a["law_t"]) if "law_c" in a else None
        return judge(FitEvidence(a["ratios"], a["metrics"], a["oof"], a["fitted"], law), metrics,
                     list(self.info["domains"]), weights, int(self.info["cv"]["folds"]),
                     swarm_table=self.info.get("swarm_table", "[swarm]"))


def read_fit_summary(folder: str | os.PathLike) -> FitSummary:
    """fit.toml and cv.csv of a fits/<id> folder."""
    folder = Path(folder)
    if not (folder / FIT_FILE).is_file():
        raise DataError(f"{folder} holds no finished fit ({FIT_FILE} is missing); fit the swarm again.")
    try:
        info = read_toml(folder / FIT_FILE)
        with open(folder / CV_FILE, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        cv = CVReport(
            str(info["cv"]["cv_of"]),
            np.array([float(r["spearman"]) for r in rows]),
            np.array([float(r["r2"]) for r in rows]),
            np.array([float(r["mae"]) for r in rows]),
            int(info["cv"]["folds"]),
            int(info["cv"]["seed"]),
        )
        if not isinstance(info["fit_id"], str) or not all(isinstance(info[k], list) for k in ("domains", "metrics", "source_swarms")):
            raise ValueError("a key has the wrong type")
        verdict = load_section(FitVerdict, info["verdict"], str(folder / FIT_FILE), "verdict") if "verdict" in info else None
    except (OlmixError, OSError, KeyError, TypeError, ValueError, csv.Error) as err:
        detail = f"no key {err}" if isinstance(err, KeyError) else str(err).split("; ")[0]
        raise DataError(f"the fit in {folder} is damaged ({detail}); delete the folder and fit again.") from None
    return FitSummary(info["fit_id"], folder, info, cv, verdict)


def list_fits(fits_dir: str | os.PathLike) -> list[FitSummary]:
    """Every finished fit under `fits_dir`, oldest first (interrupted ones, without fit.toml, are left out)."""
    folders = [p for p in Path(fits_dir).glob("*") if (p / FIT_FILE).is_file()] if Path(fits_dir).is_dir() else []
    return [read_fit_summary(p) for p in sorted(folders, key=lambda p: (p / FIT_FILE).stat().st_mtime_ns)]


def load_fit(folder: str | os.PathLike, objective: ObjectiveSettings = ObjectiveSettings()) -> FitResult:
    """Load the fit stored in `folder` (a fits/<id> folder), model included, with its verdict on
    `objective` (None for a fit by an earlier version, which judged none)."""
    summary = read_fit_summary(folder)
    info = summary.info
    verdict = summary.verdict_on(objective)
    return FitResult(
        info["fit_id"], summary.folder, info["regressor"], info["chosen"], Regressor.load(summary.folder / MODEL_DIR),
        list(info["domains"]), list(info["metrics"]), summary.cv, list(info["source_swarms"]), False,
        float(info["seconds"]), verdict,
    )