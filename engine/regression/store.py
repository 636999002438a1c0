"""Content-addressed regression fits: fits/<id>/ holds one fitted model and its CV scores.

The id is a short sha256 of everything a fit depends on (ratios, metrics, domain and metric names,
regressor and its settings, CV folds and seed), so fitting unchanged inputs again loads the stored
fit instead of refitting. A fit folder holds:

  fit.toml   regressor, what it chose, domains, metrics, settings, source swarm ids, CV means
  cv.csv     per metric: spearman (x100), r2, mae
  model/     the saved regressor (engine.regression.base)

fit.toml is written last, so a folder without it is an interrupted fit and is redone.
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
from engine.config import read_toml
from engine.errors import DataError, OlmixError
from engine.events import EventSink, Message, TaskFinished, TaskStarted, ignore
from engine.mixture_table import MixtureTable
from engine.regression.base import Regressor, make_regressor
from engine.regression.cv import CVReport, cross_validate
from engine.settings import RegressionSettings

FIT_FILE = "fit.toml"
CV_FILE = "cv.csv"
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
) -> FitResult:
    """Fit `regressor` (default settings.regressor) on `table`, or load the identical stored fit."""
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
    if (folder / FIT_FILE).is_file():
        on_event(Message(f"Inputs unchanged: reusing fit {fid}."))
        result = load_fit(folder)
        result.reused = True
        return result

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

    model.save(folder / MODEL_DIR)
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
            "settings": dataclasses.asdict(settings), "seconds": seconds,
            "cv": {"folds": settings.folds, "seed": settings.seed, "cv_of": cv.regressor, **cv.means()},
        },
    )
    on_event(TaskFinished(task, info={"fit_id": fid, "chosen": model.describe(), **cv.means()}))
    return FitResult(
        fid, folder, name, model.describe(), model, list(table.domains), list(table.metric_names),
        cv, list(source_swarms), False, seconds,
    )


@dataclass(frozen=True)
class FitSummary:
    """A stored fit's fit.toml (`info`) and CV scores, read without loading its model."""

    fit_id: str
    folder: Path
    info: dict
    cv: CVReport


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
    except (OlmixError, OSError, KeyError, TypeError, ValueError, csv.Error) as err:
        detail = f"no key {err}" if isinstance(err, KeyError) else str(err).split("; ")[0]
        raise DataError(f"the fit in {folder} is damaged ({detail}); delete the folder and fit again.") from None
    return FitSummary(info["fit_id"], folder, info, cv)


def list_fits(fits_dir: str | os.PathLike) -> list[FitSummary]:
    """Every finished fit under `fits_dir`, oldest first (interrupted ones, without fit.toml, are left out)."""
    folders = [p for p in Path(fits_dir).glob("*") if (p / FIT_FILE).is_file()] if Path(fits_dir).is_dir() else []
    return [read_fit_summary(p) for p in sorted(folders, key=lambda p: (p / FIT_FILE).stat().st_mtime_ns)]


def load_fit(folder: str | os.PathLike) -> FitResult:
    """Load the fit stored in `folder` (a fits/<id> folder), model included."""
    summary = read_fit_summary(folder)
    info = summary.info
    return FitResult(
        info["fit_id"], summary.folder, info["regressor"], info["chosen"], Regressor.load(summary.folder / MODEL_DIR),
        list(info["domains"]), list(info["metrics"]), summary.cv, list(info["source_swarms"]), False,
        float(info["seconds"]),
    )