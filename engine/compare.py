"""Two mixtures side by side: per-leaf weights, L1 and KL between them, compute and objectives of each."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from engine.history import Compute, Evidence, Measured


def l1(a: dict[str, float], b: dict[str, float]) -> float:
    keys = set(a) | set(b)
    return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


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

    def to_json(self) -> dict:
        """As `diff --json` prints it (the sides without their mixtures: the leaves hold them)."""
        side = lambda s: {k: v for k, v in dataclasses.asdict(s).items() if k != "mixture"}  # noqa: E731
        return {"a": side(self.a), "b": side(self.b), "leaves": [dataclasses.asdict(x) for x in self.leaves],
                "l1": self.l1, "kl_ab": self.kl_ab, "kl_ba": self.kl_ba}


def compare(a: MixtureSide, b: MixtureSide) -> Comparison:
    """Compare two mixtures."""
    ma, mb = a.mixture, b.mixture
    leaves = sorted(set(ma) | set(mb))
    return Comparison(a, b, [LeafWeights(x, ma.get(x, 0.0), mb.get(x, 0.0), mb.get(x, 0.0) - ma.get(x, 0.0)) for x in leaves],
                      l1(ma, mb), kl(ma, mb), kl(mb, ma))
