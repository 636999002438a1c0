"""Apportioning sequences to domains, seeded draws and batches of the proxy trainer."""

import numpy as np
import pytest

from engine.errors import DataError
from engine.training.sampler import (
    SequenceBatcher, apportion_sequences, available_windows, draw_sequences, plan_proxy_data,
)


def test_largest_remainder_is_exact():
    # quotas 3.5, 2.1, 1.4: floors 3, 2, 1 and the one leftover goes to the largest remainder
    assert apportion_sequences([0.5, 0.3, 0.2], 7, [100, 100, 100], 10.0).tolist() == [4, 2, 1]
    # ties go to the lower index
    assert apportion_sequences([1, 1, 1], 4, [100, 100, 100], 10.0).tolist() == [2, 1, 1]
    # unnormalised weights are proportions; zero weight gets nothing
    assert apportion_sequences([2, 0, 6], 8, [100, 100, 100], 10.0).tolist() == [2, 0, 6]


def test_counts_always_sum_to_the_request_when_uncapped():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.integers(1, 8)
        w = rng.dirichlet(np.ones(m))
        n = int(rng.integers(0, 1000))
        counts = apportion_sequences(w, n, np.full(m, 10_000), 1.0)
        assert counts.sum() == n
        assert np.all(np.abs(counts - w * n) < 1.0)


def test_capped_domain_is_redistributed_proportionally():
    # domain 0 may use 10 windows (1x of 10); the other 90 split 1:1 between the rest
    assert apportion_sequences([0.8, 0.1, 0.1], 100, [10, 100, 100], 1.0).tolist() == [10, 45, 45]
    # redistribution follows the remaining weights (3:1) and can cap a second domain in turn
    counts = apportion_sequences([0.6, 0.3, 0.1], 100, [5, 40, 1000], 1.0)
    assert counts.tolist() == [5, 40, 55]


def test_fractional_repetition_caps_at_the_floor():
    assert apportion_sequences([1.0, 0.0], 100, [7, 100], 1.5).tolist() == [10, 0]


def test_shortfall_when_every_weighted_domain_is_capped():
    counts = apportion_sequences([0.5, 0.5, 0.0], 100, [10, 10, 1000], 2.0)
    assert counts.tolist() == [20, 20, 0]


def test_bad_weights_raise_a_data_error():
    with pytest.raises(DataError):
        apportion_sequences([0.0, 0.0], 10, [5, 5], 1.0)
    with pytest.raises(DataError):
        apportion_sequences([-1.0, 2.0], 10, [5, 5], 1.0)


def test_draw_repeats_whole_passes_then_a_distinct_subset():
    domains, windows = draw_sequences(np.array([25, 3]), np.array([10, 50]), seed=1)
    assert len(domains) == 28
    uses = np.bincount(windows[domains == 0], minlength=10)
    assert sorted(uses.tolist()) == [2] * 5 + [3] * 5  # two full passes + 5 distinct windows
    assert len(set(windows[domains == 1].tolist())) == 3
    assert not np.array_equal(domains, np.sort(domains))  # domains interleave


def test_batches_are_reproducible_per_seed_and_cut_from_the_arrays():
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 257, size=n).astype(np.uint16) for n in (500, 900)]
    seq_len, batch = 8, 4
    avail = available_windows(arrays, seq_len)
    assert avail.tolist() == [500 // 9, 900 // 9]

    def batches(seed):
        plans = [plan_proxy_data([0.3, 0.7], 20, avail, 1.0, seed + k, batch) for k in range(3)]
        batcher = SequenceBatcher(arrays, seq_len, plans, batch)
        return plans, [batcher.batch(s) for s in range(batcher.steps)]

    plans, first = batches(seed=5)
    _, again = batches(seed=5)
    _, other = batches(seed=6)
    assert len(first) == 5 and first[0].shape == (3, batch, seq_len + 1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    # every row is the window the plan names, in the plan's order
    k, step, row = 2, 3, 1
    i = step * batch + row
    d, w = plans[k].domain_ids[i], plans[k].window_ids[i]
    assert np.array_equal(first[step][k, row], arrays[d][w * (seq_len + 1):(w + 1) * (seq_len + 1)])


def test_plan_trims_to_whole_batches():
    plan = plan_proxy_data([1.0], 10, np.array([7]), 1.0, seed=0, batch_size=4)
    assert plan.n_sequences == 4  # 7 windows available, whole batches of 4
    assert plan.sequences_per_domain(1).tolist() == [4]
