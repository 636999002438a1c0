"""Two mixtures side by side: per-leaf weights, L1 and KL between them, compute and objectives of each;
and the 95% intervals of objectives measured on verification runs, paired by seed where they can be.

Across a partition (one side has a domain, the other its parts), the parts are added up under
their parent, so that the two mixtures are compared on the same domains.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from engine.history import Compute, Evidence, Measured

CONFIDENCE = 0.95


def l1(a: dict[str, float], b: dict[str, float]) -> float:
    keys = set(a) | set(b)
    return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


def same_mixture(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two mixtures give every domain the same weight (to rounding: L1 under 1e-6)."""
    return l1(a, b) < 1e-6


def kl(a: dict[str, float], b: dict[str, float], eps: float = 1e-12) -> float:
    """KL(a || b) in nats over the union of leaves; b's zeros are floored at eps."""
    return sum(p * math.log(p / max(b.get(k, 0.0), eps)) for k, p in a.items() if p > 0)


@dataclass(frozen=True)
class MixtureSide:
    """One side of a comparison: a history entry (or its full recomputation), its mixture, the
    compute it spent, its predicted objective, the objective measured on verification runs (when
    it was verified), its plan kind, and the evidence behind it (fit verdict, fallback, spread)."""

    label: str
    mixture: dict[str, float]
    compute: Compute = field(default_factory=Compute)
    predicted: float | None = None
    measured: Measured | None = None
    plan: str | None = None
    evidence: Evidence | None = None


@dataclass(frozen=True)
class LeafWeights:
    """One leaf's weight in both mixtures; diff = b - a."""

    domain: str
    a: float
    b: float
    diff: float


@dataclass(frozen=True)
class Comparison:
    """Two mixtures side by side: each side, every leaf of either, L1 and KL both ways."""

    a: MixtureSide
    b: MixtureSide
    leaves: list[LeafWeights]
    l1: float
    kl_ab: float
    kl_ba: float
    parts: dict[str, list[str]] = field(default_factory=dict)
    """Domains of one side that the other has as parts, and those parts (added up in `leaves`)."""

    def to_json(self) -> dict:
        """As `diff --json` prints it (the sides without their mixtures: the leaves hold them)."""
        side = lambda s: {k: v for k, v in dataclasses.asdict(s).items() if k != "mixture"}  # noqa: E731
        return {"a": side(self.a), "b": side(self.b), "leaves": [dataclasses.asdict(x) for x in self.leaves],
                "l1": self.l1, "kl_ab": self.kl_ab, "kl_ba": self.kl_ba, "parts": self.parts}


def compare(a: MixtureSide, b: MixtureSide, partitions: Mapping[str, Sequence[str]] | None = None) -> Comparison:
    """Compare two mixtures. `partitions` maps each domain partitioned between them to its parts
    (nested partitions too): a part missing from one side whose ancestor that side has is added up
    under the ancestor on both sides."""
    under = _aggregation(set(a.mixture), set(b.mixture), partitions or {})
    ma, mb = _aggregate(a.mixture, under), _aggregate(b.mixture, under)
    parts: dict[str, list[str]] = {}
    for part, parent in sorted(under.items()):
        parts.setdefault(parent, []).append(part)
    leaves = sorted(set(ma) | set(mb))
    return Comparison(a, b, [LeafWeights(x, ma.get(x, 0.0), mb.get(x, 0.0), mb.get(x, 0.0) - ma.get(x, 0.0)) for x in leaves],
                      l1(ma, mb), kl(ma, mb), kl(mb, ma), parts)


@dataclass(frozen=True)
class Interval:
    """A mean over n values with its 95% t-interval [lo, hi] (nan bounds for a single value)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def t_interval(values) -> Interval:
    """The mean of `values` and its 95% Student-t interval."""
    from scipy.stats import t  # here, not at module top: scipy.stats is slow to import

    v = np.asarray(values, float)
    mean = float(v.mean())
    if len(v) < 2:
        return Interval(mean, float("nan"), float("nan"), len(v))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Interval(mean, mean - half, mean + half, len(v))


def paired_gap(a: Measured, b: Measured) -> Interval | None:
    """a - b with its 95% interval over the seeds both were measured with, paired: verification runs
    of two mixtures with the same seed share their initialisation, so the seed's own effect cancels
    in the difference. None without two common seeds (or seeds recorded)."""
    b_by_seed = dict(zip(b.seeds, b.values))
    pairs = [(v, b_by_seed[seed]) for seed, v in zip(a.seeds, a.values) if seed in b_by_seed]
    if len(pairs) < 2:
        return None
    return t_interval([x - y for x, y in pairs])


def _aggregation(a: set[str], b: set[str], partitions: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Part -> the ancestor it is added up under: the nearest ancestor that one side has as a domain
    while the other side has the part (or a part of it) instead."""
    parent = {part: whole for whole, parts in partitions.items() for part in parts}
    under = {}
    for leaf in (a ^ b):  # on one side only
        other = b if leaf in a else a
        ancestor = parent.get(leaf)
        while ancestor is not None and ancestor not in other:
            ancestor = parent.get(ancestor)
        if ancestor is not None:
            under[leaf] = ancestor
    return under


def _aggregate(mixture: Mapping[str, float], under: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for leaf, weight in mixture.items():
        key = under.get(leaf, leaf)
        out[key] = out.get(key, 0.0) + weight
    return out
