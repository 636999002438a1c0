"""Which training sequences each proxy sees: apportioning, seeded draws, batches.

A domain's train tokens are cut into non-overlapping windows of seq_len + 1 tokens (inputs plus
shifted targets). A proxy with mixture weights w over m domains trains on n whole windows:
`apportion_sequences` splits n by the largest-remainder method under per-domain repetition caps
(OLMo-core's source mixture does the same), `draw_sequences` picks the windows with a seeded
generator and shuffles their order, and `SequenceBatcher` gathers the [K, B, seq_len + 1] batch
of every step for all K proxies with numpy fancy indexing into the (memory-mapped) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.errors import DataError


def available_windows(train_arrays: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
    """Whole windows of seq_len + 1 tokens in each domain's train array [m]."""
    return np.array([len(a) // (seq_len + 1) for a in train_arrays], dtype=np.int64)


def apportion_sequences(weights: Sequence[float] | np.ndarray, n_sequences: int,
                        available_sequences: Sequence[int] | np.ndarray, max_repetition: float) -> np.ndarray:
    """Split `n_sequences` among domains in proportion to `weights`, each capped at repetition.

    Largest-remainder method: every domain gets the floor of its exact quota, the leftover
    sequences go to the largest fractional parts (ties to the lower index). A domain may not use
    more than floor(max_repetition * available) sequences; a domain whose quota exceeds its cap
    is fixed at the cap and the rest is re-apportioned among the uncapped domains in proportion
    to their weights. If all positive-weight domains hit their caps the counts sum to less than
    `n_sequences` (the caller trains fewer sequences and reports it). Returns int64 counts [m].
    """
    w = np.asarray(weights, dtype=np.float64)
    avail = np.asarray(available_sequences, dtype=np.int64)
    if w.ndim != 1 or w.shape != avail.shape:
        raise ValueError(f"weights {w.shape} and available_sequences {avail.shape} must be 1-D of equal length")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise DataError("Mixture weights must be finite, non-negative and not all zero; fix the mixture.")
    if n_sequences < 0 or max_repetition < 0:
        raise ValueError("n_sequences and max_repetition must be >= 0")
    caps = np.floor(max_repetition * avail + 1e-9).astype(np.int64)
    counts = np.zeros_like(avail)
    active = w > 0
    remaining = int(n_sequences)
    while remaining > 0 and active.any():
        quota = remaining * w * active / w[active].sum()
        over = active & (quota > caps)
        if not over.any():
            floors = np.floor(quota).astype(np.int64)
            leftover = remaining - int(floors.sum())
            order = np.lexsort((np.arange(len(w)), -(quota - floors)))  # largest remainder, then index
            order = order[active[order]]
            floors[order[:leftover]] += 1
            counts += floors
            break
        counts[over] = caps[over]
        remaining -= int(caps[over].sum())
        active &= ~over
    return counts


def draw_sequences(counts: np.ndarray, available: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded choice and order of windows: (domain ids [S], window ids [S]) with S = counts.sum().

    Domain j contributes counts[j] windows: whole shuffled passes over its `available[j]`
    windows while counts exceed them (repetition), then a distinct random subset for the rest.
    The combined list is shuffled, so domains interleave through training.
    """
    rng = np.random.default_rng(seed)
    domains, windows = [], []
    for j, (count, avail) in enumerate(zip(counts.tolist(), available.tolist())):
        if count == 0:
            continue
        passes, rest = divmod(count, avail)
        picks = [rng.permutation(avail) for _ in range(passes)]
        picks.append(rng.choice(avail, size=rest, replace=False))
        windows.append(np.concatenate(picks))
        domains.append(np.full(count, j, dtype=np.int64))
    domain_ids = np.concatenate(domains) if domains else np.zeros(0, np.int64)
    window_ids = np.concatenate(windows).astype(np.int64) if windows else np.zeros(0, np.int64)
    order = rng.permutation(len(domain_ids))
    return domain_ids[order], window_ids[order]


@dataclass(frozen=True)
class ProxyDataPlan:
    """The sequences of one proxy, in training order, and what they add up to."""

    domain_ids: np.ndarray  # [S] domain of each sequence
    window_ids: np.ndarray  # [S] window index within its domain

    @property
    def n_sequences(self) -> int:
        return len(self.domain_ids)

    def sequences_per_domain(self, n_domains: int) -> np.ndarray:
        return np.bincount(self.domain_ids, minlength=n_domains)


def plan_proxy_data(weights: Sequence[float] | np.ndarray, n_sequences: int, available: np.ndarray,
                    max_repetition: float, seed: int, batch_size: int) -> ProxyDataPlan:
    """Apportion, draw and order one proxy's sequences, trimmed to whole batches of `batch_size`."""
    counts = apportion_sequences(weights, n_sequences, available, max_repetition)
    domain_ids, window_ids = draw_sequences(counts, available, seed)
    usable = len(domain_ids) // batch_size * batch_size
    return ProxyDataPlan(domain_ids[:usable], window_ids[:usable])


class SequenceBatcher:
    """Gathers the step-s batch [K, B, seq_len + 1] of K proxies from per-domain token arrays."""

    def __init__(self, train_arrays: Sequence[np.ndarray], seq_len: int, plans: Sequence[ProxyDataPlan],
                 batch_size: int):
        steps = {p.n_sequences // batch_size for p in plans}
        if len(steps) != 1:
            raise ValueError("all proxies of one batched run must have the same number of steps")
        self.arrays = list(train_arrays)
        self.window = seq_len + 1
        self.batch_size = batch_size
        self.steps = steps.pop()
        self.domain_ids = np.stack([p.domain_ids for p in plans])  # [K, S]
        self.window_ids = np.stack([p.window_ids for p in plans])
        self.offsets = np.arange(self.window, dtype=np.int64)

    def batch(self, step: int) -> np.ndarray:
        """Token ids [K, B, seq_len + 1] (int64) of optimiser step `step`."""
        cols = slice(step * self.batch_size, (step + 1) * self.batch_size)
        dom, win = self.domain_ids[:, cols], self.window_ids[:, cols]
        out = np.empty(dom.shape + (self.window,), dtype=np.int64)
        for j, array in enumerate(self.arrays):
            mask = dom == j
            if mask.any():
                out[mask] = array[win[mask][:, None] * self.window + self.offsets]
        return out
