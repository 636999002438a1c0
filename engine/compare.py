"""Two mixtures side by side: per-leaf weights, L1 and KL between them, compute and objectives of each."""

from __future__ import annotations

import math


def l1(a: dict[str, float], b: dict[str, float]) -> float:
    keys = set(a) | set(b)
    return sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys)


def kl(a: dict[str, float], b: dict[str, float], eps: float = 1e-12) -> float:
    """KL(a || b) in nats over the union of leaves; b's zeros are floored at eps."""
    return sum(p * math.log(p / max(b.get(k, 0.0), eps)) for k, p in a.items() if p > 0)


def compare(a: dict, b: dict) -> dict:
    """Compare two mixture records {label, mixture, compute?, predicted?, measured?}."""
    ma, mb = a["mixture"], b["mixture"]
    leaves = sorted(set(ma) | set(mb))
    return {
        "a": {k: v for k, v in a.items() if k != "mixture"},
        "b": {k: v for k, v in b.items() if k != "mixture"},
        "leaves": [{"domain": x, "a": ma.get(x, 0.0), "b": mb.get(x, 0.0), "diff": mb.get(x, 0.0) - ma.get(x, 0.0)}
                   for x in leaves],
        "l1": l1(ma, mb),
        "kl_ab": kl(ma, mb),
        "kl_ba": kl(mb, ma),
    }
