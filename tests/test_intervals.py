"""Intervals of measured objectives: 95% t-intervals, paired by seed, and how the batch report words them."""

import numpy as np
import pytest
from scipy.stats import t

from engine.compare import paired_gap, t_interval
from engine.history import Measured


def measured(values, seeds):
    return Measured(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, list(values),
                    list(seeds))


def test_t_interval_is_the_students_t_interval_of_the_mean():
    ci = t_interval([1.0, 2.0, 3.0])
    half = t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert (ci.mean, ci.lo, ci.hi, ci.n) == pytest.approx((2.0, 2.0 - half, 2.0 + half, 3))
    assert not ci.excludes_zero and t_interval([1.0, 1.1, 0.9]).excludes_zero
    one = t_interval([0.5])
    assert one.mean == 0.5 and np.isnan(one.lo) and np.isnan(one.hi)


def test_a_paired_gap_cancels_the_seed_and_pairs_by_seed():
    """Seed offsets far larger than the gap: unpaired, nothing is resolved; paired, the gap is."""
    offsets = np.array([0.0, 0.3, -0.2, 0.5])
    a = measured(2.0 + offsets + np.array([0.010, 0.012, 0.008, 0.011]), [0, 1, 2, 3])
    b = measured(2.0 + offsets, [0, 1, 2, 3])
    gap = paired_gap(a, b)
    assert gap.n == 4 and 0.008 < gap.mean < 0.012 and gap.excludes_zero
    unpaired = t_interval(a.values).lo < t_interval(b.values).hi
    assert unpaired
    shuffled = measured(list(reversed(b.values)), [3, 2, 1, 0])  # same runs, listed in another order
    assert paired_gap(a, shuffled) == gap
    assert paired_gap(a, measured(b.values[:1], [0])) is None  # one common seed: no interval
    assert paired_gap(a, Measured(2.0, 0.1, b.values)) is None  # written before seeds were recorded


def test_the_batch_report_words_the_comparison(capsys):
    from olmix_tui import render

    chosen = measured([2.01, 2.31, 1.81], [0, 1, 2])
    full = measured([2.00, 2.30, 1.80], [0, 1, 2])
    incumbent = measured([2.20, 2.10, 2.30], [0, 1, 2])
    with render.console.capture() as captured:
        render.verification_report({"chosen": chosen, "full": full, "incumbent": incumbent})
    text = " ".join(captured.get().split())  # as one line, however wide the terminal
    assert "3 proxies per mixture, the same seeds for each" in text
    assert "chosen - full: +0.0100 [+0.0100, +0.0100], paired by seed: the chosen mixture is worse" in text
    assert "chosen - incumbent" in text and "no difference resolved with 3 seeds" in text
