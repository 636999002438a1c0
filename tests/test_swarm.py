"""Swarm sampling: reproducibility, sparsification, caps, frozen groups, forced domains, strength
spread, dedup, infeasible settings, presets, and a comparison with RegMix's released swarm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import ks_2samp

from engine.errors import ConfigError, InfeasibleError, OlmixError
from engine.swarm import (
    STRENGTH_LEVELS,
    FrozenGroup,
    SwarmSettings,
    default_size,
    sample_swarm,
    sparsify,
    swarm_id,
    unit_caps,
    unit_layout,
)

# The Pile prior RegMix used for its 17 domains (mixture_config/synthesize_mixture.py).
PILE = np.array([
    0.11328527, 0.07960865, 0.00391349, 0.1853759, 0.05108136, 0.01596293, 0.10175077, 0.00370752,
    0.06652935, 0.00175077, 0.02708548, 0.23686921, 0.01184346, 0.00792997, 0.00803296, 0.03882595,
    0.04644696,
])
PILE = PILE / PILE.sum()
PILE_LEAVES = [f"pile_{i:02d}" for i in range(len(PILE))]
REGMIX_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "regmix" / "train_mixture_1m.csv"


def entropy(rows: np.ndarray) -> np.ndarray:
    safe = np.where(rows > 0, rows, 1.0)
    return -(rows * np.log(safe)).sum(axis=1)


def pile_swarm(**overrides):
    """RegMix's setting: 1B-token proxies, caps = 15 x each domain's share of a 1B-token corpus."""
    tokens = 10**9
    settings = SwarmSettings.preset(**{"sampler": "regmix", "size": 96, **overrides})
    return sample_swarm(settings, PILE_LEAVES, PILE, PILE * tokens, tokens)


def small_plan():
    leaves = ["web", "code", "math", "wiki", "books"]
    prior = np.array([50.0, 20.0, 5.0, 15.0, 10.0])
    train = np.array([5e6, 2e6, 5e5, 1.5e6, 1e6])
    return leaves, prior, train


# --- reproducibility and basic shape -------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["olmix", "regmix"])
def test_same_seed_same_swarm_other_seed_other_swarm(sampler):
    leaves, prior, train = small_plan()
    settings = SwarmSettings.preset(sampler, size=40, seed=7)
    a = sample_swarm(settings, leaves, prior, train, 10**6)
    b = sample_swarm(settings, leaves, prior, train, 10**6)
    c = sample_swarm(SwarmSettings.preset(sampler, size=40, seed=8), leaves, prior, train, 10**6)
    assert np.array_equal(a.unit_weights, b.unit_weights) and np.array_equal(a.strengths, b.strengths)
    assert a.id == b.id
    assert not np.array_equal(a.unit_weights, c.unit_weights)
    assert a.id != c.id


@pytest.mark.parametrize("sampler", ["olmix", "regmix"])
def test_rows_are_distributions_on_the_grid_with_min_weight(sampler):
    sw = pile_swarm(sampler=sampler, min_weight=0.01)
    assert len(sw) == 96 and sw.unit_weights.shape == (96, 17)
    assert np.all(sw.unit_weights >= 0) and np.all(sw.leaf_weights >= 0)
    assert np.allclose(sw.unit_weights.sum(axis=1), 1.0, atol=1e-12)
    steps = sw.unit_weights * 100  # grid 0 -> 1/min_weight = 100
    assert np.allclose(steps, np.rint(steps), atol=1e-9)
    assert np.rint(steps).sum(axis=1).tolist() == [100] * 96  # exactly 1 in grid steps
    nonzero = sw.unit_weights[sw.unit_weights > 0]
    assert nonzero.min() >= 0.01 - 1e-12
    assert (sw.unit_weights == 0).any()  # the sparsification did zero some weights


def test_sparsify_largest_remainder_and_min_weight():
    w = np.array([[1 / 3, 1 / 3, 1 / 3], [0.0005, 0.4995, 0.5], [0.26, 0.26, 0.48]])
    out = sparsify(w, min_weight=0.001, grid=10)
    # row 0: floors 3,3,3 and one step left for the (tied, first) largest remainder
    assert np.allclose(out[0], [0.4, 0.3, 0.3])
    # row 1: 0.0005 is zeroed, the rest renormalised (0.49975, 0.50025) and rounded
    assert out[1][0] == 0 and np.allclose(out[1], [0.0, 0.5, 0.5])
    assert np.allclose(out[2], [0.3, 0.2, 0.5])  # floors 2,2,4 then +1 to the larger remainder
    assert np.allclose(out.sum(axis=1), 1.0)
    # no grid: only zeroing and renormalising
    plain = sparsify(np.array([[0.05, 0.45, 0.5]]), min_weight=0.1, grid=0)
    assert np.allclose(plain, [[0.0, 0.45 / 0.95, 0.5 / 0.95]])


def test_explicit_grid_finer_than_min_weight():
    sw = pile_swarm(min_weight=0.005, grid=1000, size=48)
    steps = sw.unit_weights * 1000
    assert np.allclose(steps, np.rint(steps), atol=1e-9)
    assert sw.unit_weights[sw.unit_weights > 0].min() >= 0.005 - 1e-12


# --- caps and frozen groups ----------------------------------------------------------------------


def test_caps_respected_at_leaf_level_and_bind():
    leaves, prior, train = small_plan()
    tokens_per_proxy = 4 * 10**6
    settings = SwarmSettings.preset("olmix", size=60, max_repetition=1.0)
    sw = sample_swarm(settings, leaves, prior, train, tokens_per_proxy)
    leaf_caps = np.minimum(train / tokens_per_proxy, 1.0)
    assert np.all(sw.leaf_weights <= leaf_caps + 1e-12)
    # math's cap (0.125) binds: a free Dirichlet at strength 0.1 gives it more than that often
    assert sw.leaf_weights[:, leaves.index("math")].max() > 0.06


def test_group_caps_ratios_and_unit_prior():
    leaves, prior, train = small_plan()
    group = FrozenGroup("virtual:unaffected", {"web": 0.6, "wiki": 0.3, "books": 0.1})
    units, expand = unit_layout(leaves, [group])
    assert units == ["code", "math", "virtual:unaffected"]
    assert np.allclose(expand.sum(axis=0), 1.0)
    tokens_per_proxy = 4 * 10**6
    caps = unit_caps(train, expand, tokens_per_proxy, 1.0)
    leaf_caps = train / tokens_per_proxy
    expected_group = min(leaf_caps[0] / 0.6, leaf_caps[3] / 0.3, leaf_caps[4] / 0.1)
    assert caps[2] == pytest.approx(min(expected_group, 1.0))
    assert caps[1] == pytest.approx(leaf_caps[2])

    settings = SwarmSettings.preset("regmix", size=50, max_repetition=1.0, min_weight=1e-3)
    sw = sample_swarm(settings, leaves, prior, train, tokens_per_proxy, [group])
    assert sw.units == units and sw.unit_weights.shape == (50, 3)
    assert np.allclose(sw.leaf_weights, sw.unit_weights @ sw.expand.T)
    assert np.all(sw.leaf_weights <= np.minimum(leaf_caps, 1.0) + 1e-12)  # caps through the group
    total = sw.unit_weights[:, 2]
    inside = total > 0
    assert inside.sum() > 10
    for leaf, ratio in group.ratios.items():
        got = sw.leaf_weights[inside, leaves.index(leaf)] / total[inside]
        assert np.allclose(got, ratio, rtol=0, atol=1e-12)
    assert np.allclose(sw.leaf_weights.sum(axis=1), 1.0)


def test_unit_prior_of_a_group_is_the_sum_of_its_leaves():
    leaves, prior, train = small_plan()
    group = FrozenGroup("g", {"code": 0.5, "math": 0.5})
    # min = max strength = 2000: draws sit on the prior, so the swarm mean is the unit prior
    settings = SwarmSettings.preset("olmix", size=40, min_strength=2000.0, max_strength=2000.0, dedup_tolerance=0,
                                    max_repetition=100.0)
    sw = sample_swarm(settings, leaves, prior, train, 10**6, [group])
    mean = sw.unit_weights.mean(axis=0)
    expected = np.array([50, 15, 10, 25]) / 100  # web, wiki, books, g = code + math
    assert np.allclose(mean, expected, atol=0.01)


def test_temperature_is_an_exponent_on_the_prior():
    settings = SwarmSettings.preset("regmix", size=40, min_strength=3000.0, max_strength=3000.0, dedup_tolerance=0,
                                    max_repetition=1000.0)
    sw = sample_swarm(settings, PILE_LEAVES, PILE, PILE * 1e9, 10**9)
    tempered = PILE**0.5 / (PILE**0.5).sum()
    assert np.allclose(sw.unit_weights.mean(axis=0), tempered, atol=0.01)
    assert not np.allclose(sw.unit_weights.mean(axis=0), PILE, atol=0.01)


# --- forced, strengths, dedup --------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["olmix", "regmix"])
def test_forced_domains_get_at_least_min_weight(sampler):
    small = PILE_LEAVES[9]  # enron, prior 0.0018
    common = {"sampler": sampler, "min_weight": 0.002, "max_repetition": 15.0, "temperature": 0.5}
    free = pile_swarm(**common)
    assert (free.unit_weights[:, 9] == 0).any()
    forced = pile_swarm(**common, forced=[small, PILE_LEAVES[7]])
    assert np.all(forced.unit_weights[:, [7, 9]] >= 0.002)


def test_strengths_log_spaced_and_swarm_spans_one_hot_to_prior():
    sw = pile_swarm(size=300, min_strength=0.1, max_strength=300.0)
    levels = np.unique(sw.strengths)
    assert len(levels) == STRENGTH_LEVELS
    assert levels[0] == pytest.approx(0.1) and levels[-1] == pytest.approx(300.0)
    assert np.allclose(np.diff(np.log(levels)), np.log(3000) / (STRENGTH_LEVELS - 1))
    h = entropy(sw.unit_weights)
    low, high = h[sw.strengths == levels[0]].mean(), h[sw.strengths == levels[-1]].mean()
    tempered = PILE**0.5 / (PILE**0.5).sum()
    assert low < 0.5 and high > entropy(tempered[None])[0] - 0.2  # dedup thins repeated one-hots
    assert sw.unit_weights.max(axis=1).max() >= 0.95  # a near-one-hot mixture
    assert np.abs(sw.unit_weights - tempered).sum(axis=1).min() < 0.25  # a near-prior mixture


def test_default_strength_grid_spreads_entropy():
    sw = pile_swarm(sampler="olmix", size=120)
    h = entropy(sw.unit_weights)
    assert np.percentile(h, 90) - np.percentile(h, 10) > 1.0
    assert np.unique(sw.strengths).size == STRENGTH_LEVELS


def test_dedup_tolerance_keeps_accepted_mixtures_apart():
    sw = pile_swarm(size=80, dedup_tolerance=0.3)
    d = np.abs(sw.unit_weights[:, None, :] - sw.unit_weights[None, :, :]).sum(axis=2)
    assert d[np.triu_indices(len(d), 1)].min() >= 0.3
    # without dedup, a coarse grid over two domains repeats mixtures
    settings = SwarmSettings.preset("regmix", size=30, grid=4, min_weight=0.0, dedup_tolerance=0.0)
    twin = sample_swarm(settings, ["a", "b"], np.array([0.5, 0.5]), np.array([1e9, 1e9]), 10**6)
    assert len(np.unique(twin.unit_weights, axis=0)) < 30


def test_too_few_distinct_mixtures_is_infeasible():
    settings = SwarmSettings.preset("regmix", size=30, grid=4, min_weight=0.0, dedup_tolerance=1e-5)
    with pytest.raises(InfeasibleError, match="distinct mixtures.*dedup_tolerance"):
        sample_swarm(settings, ["a", "b"], np.array([0.5, 0.5]), np.array([1e9, 1e9]), 10**6)


# --- sizes, presets, ids, rows -------------------------------------------------------------------


def test_default_size_is_linear_in_units_and_skips_units_without_data():
    s = SwarmSettings()
    assert [default_size(s, u) for u in (1, 5, 17, 40)] == [4, 20, 68, 160]
    assert default_size(SwarmSettings(runs_per_domain=3), 10) == 30
    assert default_size(SwarmSettings(size=7), 100) == 7
    leaves, prior, train = small_plan()
    train[3] = 0  # wiki has no data: never sampled, not counted
    sw = sample_swarm(SwarmSettings(max_repetition=50.0), leaves, prior, train, 10**6)
    assert len(sw) == 4 * 4
    assert np.all(sw.unit_weights[:, 3] == 0)


def test_presets_follow_the_papers():
    regmix, olmix = SwarmSettings.preset("regmix"), SwarmSettings.preset("olmix")
    assert (regmix.temperature, regmix.min_strength, regmix.max_strength, regmix.min_weight) == (0.5, 0.1, 5.0, 2e-4)
    assert regmix.max_repetition == 15.0 and regmix.seed == 42
    assert (olmix.temperature, olmix.min_strength, olmix.max_strength, olmix.min_weight) == (1.0, 0.1, 5.0, 2e-3)
    assert olmix == SwarmSettings()
    assert SwarmSettings.preset("regmix", seed=3).seed == 3
    with pytest.raises(ConfigError, match="sampler 'doremi'"):
        SwarmSettings.preset("doremi")
    with pytest.raises(ConfigError, match="unknown key.*strenght"):
        SwarmSettings.preset("olmix", strenght=2)


@pytest.mark.parametrize("sampler", ["olmix", "regmix"])
def test_both_samplers_run_with_groups_forced_and_manual_prior(sampler):
    leaves, prior, train = small_plan()
    group = FrozenGroup("virtual:rest", {"wiki": 0.5, "books": 0.5})
    settings = SwarmSettings.preset(
        sampler, forced=["math"], prior={"web": 0.4, "code": 0.3, "math": 0.1, "virtual:rest": 0.2}, max_repetition=4.0
    )
    sw = sample_swarm(settings, leaves, prior, train, 2 * 10**6, [group])
    assert len(sw) == 16 and np.all(sw.unit_weights[:, sw.units.index("math")] >= settings.min_weight)
    assert np.allclose(sw.leaf_weights.sum(axis=1), 1.0)


def test_swarm_id_is_a_content_hash_of_the_plan():
    leaves, prior, train = small_plan()
    s = SwarmSettings(size=10)
    base = swarm_id(s, leaves, prior, train, 10**6)
    assert len(base) == 12 and base == swarm_id(s, leaves, prior, train, 10**6)
    assert base == swarm_id(s, leaves, prior * 3, train, 10**6)  # same distribution, same swarm
    assert base != swarm_id(SwarmSettings(size=10, seed=1), leaves, prior, train, 10**6)
    assert base != swarm_id(s, leaves, prior, train, 2 * 10**6)
    assert base != swarm_id(s, leaves, prior, train, 10**6, [FrozenGroup("g", {"web": 0.5, "code": 0.5})])
    sw = sample_swarm(s, leaves, prior, train, 10**6)
    assert sw.id == base


# --- infeasible settings: one sentence naming the domain -----------------------------------------


def _message(exc_info) -> str:
    text = str(exc_info.value)
    assert text.count(". ") == 0 and text.endswith("."), text  # one sentence
    return text


def test_caps_below_one_name_domains_and_fix():
    leaves, prior, train = small_plan()
    with pytest.raises(InfeasibleError) as e:
        sample_swarm(SwarmSettings(max_repetition=1.0), leaves, prior, train, 2 * 10**7)
    text = _message(e)
    assert "web 0.25" in text and "math 0.025" in text and "max_repetition to at least 2" in text
    assert "tokens_per_proxy to at most 10000000" in text


def test_forced_domain_without_tokens():
    leaves, prior, train = small_plan()
    train[2] = 0
    with pytest.raises(InfeasibleError) as e:
        sample_swarm(SwarmSettings(forced=["math"]), leaves, prior, train, 10**6)
    assert "'math' has no training tokens" in _message(e)


def test_forced_leaf_inside_a_group_and_unknown_forced():
    leaves, prior, train = small_plan()
    group = FrozenGroup("g", {"wiki": 0.5, "books": 0.5})
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(forced=["wiki"]), leaves, prior, train, 10**6, [group])
    assert "'wiki' is inside frozen group 'g'" in _message(e)
    with pytest.raises(ConfigError, match="'poetry' is unknown"):
        sample_swarm(SwarmSettings(forced=["poetry"]), leaves, prior, train, 10**6)


def test_manual_prior_unknown_missing_and_zero():
    leaves, prior, train = small_plan()
    full = dict(zip(leaves, [1.0] * 5))
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(prior={**full, "poetry": 1.0}), leaves, prior, train, 10**6)
    assert "unknown domain(s) poetry" in _message(e)
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(prior={k: v for k, v in full.items() if k != "code"}), leaves, prior, train, 10**6)
    assert "missing domain(s) code" in _message(e)
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(prior=dict.fromkeys(leaves, 0.0)), leaves, prior, train, 10**6)
    assert "sums to 0" in _message(e) and "web" in str(e.value)
    with pytest.raises(OlmixError, match="sums to 0"):
        sample_swarm(SwarmSettings(), leaves, np.zeros(5), train, 10**6)


def test_group_ratios_must_sum_to_one_and_name_known_leaves():
    leaves, prior, train = small_plan()
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(), leaves, prior, train, 10**6, [FrozenGroup("g", {"web": 0.5, "code": 0.3})])
    assert "'g' ratios sum to 0.8" in _message(e)
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(), leaves, prior, train, 10**6, [FrozenGroup("g", {"web": 0.5, "poetry": 0.5})])
    assert "unknown leaf domain(s) poetry" in _message(e)


def test_size_smaller_than_one():
    leaves, prior, train = small_plan()
    with pytest.raises(ConfigError) as e:
        sample_swarm(SwarmSettings(size=-2), leaves, prior, train, 10**6)
    assert "size -2 is smaller than 1" in _message(e)


def test_constraints_met_too_rarely_name_the_domain():
    settings = SwarmSettings.preset("regmix", size=20, min_strength=5.0, max_strength=5.0, max_repetition=1.0)
    leaves = ["big", "a", "b"]
    prior = np.array([0.998, 0.001, 0.001])
    train = np.array([1e4, 1e9, 1e9])  # big may take at most 1% of a 1M-token proxy run
    with pytest.raises(InfeasibleError) as e:
        sample_swarm(settings, leaves, prior, train, 10**6)
    assert "'big' (its repetition cap 0.01)" in _message(e)


# --- real data: RegMix's released swarm ----------------------------------------------------------


@pytest.mark.skipif(not REGMIX_DATA.exists(), reason="RegMix swarm data not available")
def test_regmix_sampler_against_released_swarm():
    """The released 512 mixtures are matched by the RegMix sampler with min_strength 1.0, not 0.1."""
    released = np.loadtxt(REGMIX_DATA, delimiter=",", skiprows=1)[:, 1:]
    assert released.shape == (512, 17)
    h_released = entropy(released)
    h_code = entropy(pile_swarm(size=512).unit_weights)
    h_matched = entropy(pile_swarm(size=512, min_strength=1.0).unit_weights)
    assert ks_2samp(h_released, h_matched).pvalue > 0.01
    assert ks_2samp(h_released, h_code).pvalue < 1e-6
    assert abs(np.median(h_matched) - np.median(h_released)) < 0.15
