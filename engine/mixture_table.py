"""Swarm results: the mixture every proxy run trained on and the metrics it reached.

This is the interchange format between proxy training (which writes it) and regression (which
reads it). Two CSV layouts are read:

- Olmix: a run id column `run` or `run_id` (optional `name` / `index` columns are ignored), one
  column per domain in ratios.csv and one column per metric in metrics.csv.
- RegMix: an `index` id column, domain columns `train_<domain>` and metric columns
  `metric/<name>`; the prefixes are stripped.

`write_tables` always writes the Olmix layout (`run`, then domains or metrics, in run order).
Every problem in a file raises a DataError naming the file, the run and the fix.
"""

from __future__ import annotations

import csv
import gc
import math
import operator
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from engine.atomic import write_csv
from engine.errors import DataError

ID_COLUMNS = ("run", "run_id", "index")
IGNORED_COLUMNS = ("name", "index")
REGMIX_DOMAIN_PREFIX = "train_"
REGMIX_METRIC_PREFIX = "metric/"
SUM_TOLERANCE = 0.01


@dataclass
class MixtureTable:
    """One row per proxy run: its mixture over `domains` and the `metrics` it reached.

    ratios is [n, m] float64 (rows on the simplex), metrics is [n, k] float64 (k may be 0).
    """

    run_ids: list[str]
    domains: list[str]
    ratios: np.ndarray
    metric_names: list[str]
    metrics: np.ndarray

    def __post_init__(self) -> None:
        self.ratios = np.asarray(self.ratios, dtype=np.float64).reshape(len(self.run_ids), len(self.domains))
        self.metrics = np.asarray(self.metrics, dtype=np.float64).reshape(len(self.run_ids), len(self.metric_names))

    @property
    def n_runs(self) -> int:
        return len(self.run_ids)

    def subset(self, rows: Sequence[int] | np.ndarray) -> "MixtureTable":
        """The table restricted to `rows` (indices or a boolean mask), in that order."""
        idx = np.arange(self.n_runs)[np.asarray(rows)]
        return MixtureTable(
            [self.run_ids[i] for i in idx], list(self.domains), self.ratios[idx], list(self.metric_names), self.metrics[idx]
        )

    def select_metrics(self, names: Sequence[str]) -> "MixtureTable":
        """The table with only the metrics `names`, in that order."""
        missing = [n for n in names if n not in self.metric_names]
        if missing:
            raise DataError(
                f"Unknown metric(s) {', '.join(missing)}; choose from {', '.join(self.metric_names) or '(none)'}."
            )
        cols = [self.metric_names.index(n) for n in names]
        return MixtureTable(list(self.run_ids), list(self.domains), self.ratios, list(names), self.metrics[:, cols])


@dataclass(frozen=True)
class _Csv:
    """A parsed CSV: where it came from, its id column, and string cells of the value columns."""

    path: Path
    ids: list[str]
    columns: list[str]
    cells: list[list[str]]


def _read_csv(path: Path, prefix: str) -> _Csv:
    """Read `path`, find its id column and keep the value columns (those starting with `prefix`
    when any does, RegMix layout; otherwise all non-id columns, Olmix layout)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; point to the swarm's CSV file.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark is not a column
            rows = [row for row in csv.reader(f) if "".join(row).strip()]
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (at byte {err.start}); save it as UTF-8 CSV.") from None
    except (csv.Error, OSError) as err:
        raise DataError(f"{path} is not a readable CSV file ({err}); fix or re-export it.") from None
    if len(rows) < 2:
        raise DataError(f"{path} is empty; it needs a header line and one line per run.")
    header = [h.strip() for h in rows[0]]
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    if id_col is None:
        raise DataError(f"{path} has no run id column; add a column named 'run' (or 'run_id' or 'index').")
    id_pos = header.index(id_col)
    prefixed = [i for i, h in enumerate(header) if h.startswith(prefix)]
    if prefixed:
        keep = prefixed
        names = [header[i][len(prefix):] for i in keep]
    else:
        keep = [i for i, h in enumerate(header) if i != id_pos and h not in IGNORED_COLUMNS]
        names = [header[i] for i in keep]
    duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if duplicate is not None:
        raise DataError(f"{path} has two columns named '{duplicate}' (after the RegMix prefixes are removed); "
                        "keep one column per name.")
    width = len(header)
    body = [row if len(row) >= width else row + [""] * (width - len(row)) for row in rows[1:]]
    ids = [row[id_pos].strip() for row in body]
    for row_no, run in enumerate(ids, start=2):
        if not run:
            raise DataError(f"{path} line {row_no} has an empty run id; give every run an id.")
    seen: set[str] = set()
    for run in ids:
        if run in seen:
            raise DataError(f"{path} lists run '{run}' twice; keep one line per run.")
        seen.add(run)
    pick = operator.itemgetter(*keep) if keep else (lambda row: ())
    return _Csv(path, ids, names, [list(pick(row)) if len(keep) > 1 else [pick(row)] if keep else [] for row in body])


def _numbers(table: _Csv, what: str) -> np.ndarray:
    """Parse the value cells as finite floats, naming the run and column of the first bad cell."""
    try:  # all at once; the slow loop below only runs to name a bad cell
        out = np.array(table.cells, dtype=np.float64).reshape(len(table.ids), len(table.columns))
        if np.isfinite(out).all():
            return out
    except ValueError:
        pass
    out = np.empty((len(table.ids), len(table.columns)))
    for r, (run, row) in enumerate(zip(table.ids, table.cells)):
        for c, (name, cell) in enumerate(zip(table.columns, row)):
            cell = cell.strip()
            if not cell:
                raise DataError(f"{table.path} run '{run}' has an empty {what} '{name}'; fill in a number.")
            try:
                value = float(cell)
            except ValueError:
                raise DataError(
                    f"{table.path} run '{run}' has {what} '{name}' = '{cell}', which is not a number; write a number."
                ) from None
            if not math.isfinite(value):
                raise DataError(
                    f"{table.path} run '{run}' has {what} '{name}' = {cell}; "
                    f"rerun or drop that run, every value must be finite."
                )
            out[r, c] = value
    return out


def _check_ratios(table: _Csv, ratios: np.ndarray) -> None:
    negative = np.argwhere(ratios < 0)
    if len(negative):
        r, c = negative[0]
        raise DataError(
            f"{table.path} run '{table.ids[r]}' has a negative weight for '{table.columns[c]}'; "
            f"weights must be >= 0."
        )
    sums = ratios.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if len(bad):
        r = bad[0]
        raise DataError(
            f"{table.path} run '{table.ids[r]}' has weights summing to {sums[r]:.4f}; "
            f"make each run's weights sum to 1 (within {SUM_TOLERANCE})."
        )


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Parsing a large CSV makes millions of small acyclic objects; the cyclic collector's passes
    over them took over half of the time of reading a 110k-run swarm (docs/benchmarks.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_tables(ratios_csv: str | os.PathLike, metrics_csv: str | os.PathLike | None = None) -> MixtureTable:
    """Read a swarm's ratios (and optionally metrics) CSV in the Olmix or RegMix layout.

    Rows keep the order of the ratios file; metrics rows are joined on the run id.
    """
    with _without_cyclic_gc():
        return _read_tables(ratios_csv, metrics_csv)


def _read_tables(ratios_csv: str | os.PathLike, metrics_csv: str | os.PathLike | None) -> MixtureTable:
    ratios_file = _read_csv(Path(ratios_csv), REGMIX_DOMAIN_PREFIX)
    if not ratios_file.columns:
        raise DataError(f"{ratios_file.path} has no domain columns; add one column of weights per domain.")
    ratios = _numbers(ratios_file, "weight")
    _check_ratios(ratios_file, ratios)
    if metrics_csv is None:
        return MixtureTable(ratios_file.ids, ratios_file.columns, ratios, [], np.empty((len(ratios_file.ids), 0)))

    metrics_file = _read_csv(Path(metrics_csv), REGMIX_METRIC_PREFIX)
    metrics = _numbers(metrics_file, "metric")
    position = {run: i for i, run in enumerate(metrics_file.ids)}
    missing = [run for run in ratios_file.ids if run not in position]
    if missing:
        raise DataError(
            f"{metrics_file.path} has no line for run '{missing[0]}' (of {len(missing)} missing runs) "
            f"listed in {ratios_file.path}; add its metrics or drop it from the ratios file."
        )
    known = set(ratios_file.ids)
    extra = [run for run in metrics_file.ids if run not in known]
    if extra:
        raise DataError(
            f"{metrics_file.path} has run '{extra[0]}' (of {len(extra)} unmatched runs) that "
            f"{ratios_file.path} does not list; add its mixture or drop it from the metrics file."
        )
    order = [position[run] for run in ratios_file.ids]
    return MixtureTable(ratios_file.ids, ratios_file.columns, ratios, metrics_file.columns, metrics[order])


def write_tables(
    table: MixtureTable, ratios_csv: str | os.PathLike, metrics_csv: str | os.PathLike | None = None
) -> None:
    """Write `table` in the Olmix layout (atomic, run order kept)."""
    write_csv(
        ratios_csv,
        ["run", *table.domains],
        ([run, *map(float, row)] for run, row in zip(table.run_ids, table.ratios)),
    )
    if metrics_csv is not None:
        write_csv(
            metrics_csv,
            ["run", *table.metric_names],
            ([run, *map(float, row)] for run, row in zip(table.run_ids, table.metrics)),
        )


def read_domain_values(path: str | os.PathLike, domains: Sequence[str], what: str) -> dict[str, float]:
    """A CSV of `domain,value` lines (a header line is allowed) giving every one of `domains` a
    finite value >= 0, not all 0; e.g. the prior or the token counts of an imported swarm. A RegMix
    domain may be written with its `train_` prefix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; point to a CSV of domain,{what} lines.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if any(cell.strip() for cell in row)]
    values: dict[str, float] = {}
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise DataError(f"{path} line {line} has {len(row)} cells; write one domain,{what} pair per line.")
        name, cell = row
        if name not in domains:
            name = name.removeprefix(REGMIX_DOMAIN_PREFIX)
        try:
            value = float(cell)
        except ValueError:
            if line == 1:
                continue  # a header
            raise DataError(f"{path} line {line} gives '{name}' the {what} '{cell}', which is not a number; write one.") from None
        if name not in domains:
            raise DataError(f"{path} line {line} names '{name}', which is not a domain of the swarm; use one of "
                            f"{', '.join(domains)}.")
        if name in values or not math.isfinite(value) or value < 0:
            raise DataError(f"{path} line {line}: '{name}' is listed twice or has a negative or non-finite {what}; "
                            "give each domain one value >= 0.")
        values[name] = value
    missing = [d for d in domains if d not in values]
    if missing or not sum(values.values()) > 0:
        raise DataError(f"{path} gives no {what} for {', '.join(missing[:5]) or 'any domain above 0'}; give every "
                        f"domain of the swarm a {what}, not all 0.")
    return {d: values[d] for d in domains}
