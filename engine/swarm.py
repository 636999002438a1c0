"""Swarm sampling: the mixtures a swarm of proxy models is trained on.

A swarm is a set of mixtures (rows >= 0 summing to 1) drawn from Dirichlet distributions centred on a
prior, alpha = strength * prior, with one concentration strength per draw taken from a log-spaced grid:
low strengths give near-one-hot mixtures, high strengths mixtures near the prior, so a regression fitted
on the swarm sees both corners and the middle of the simplex. Both presets follow the papers' code:

- ``regmix``: sail-sg/regmix, ``mixture_config/synthesize_mixture.py``, ``generate_weights_dirichlet``.
  Prior = token distribution ** 0.5 (TEMP); each candidate is one Dirichlet draw whose strength is picked
  uniformly among ``np.logspace(log10(0.1), log10(5.0), 15)``; a candidate above a domain's usage bound
  is rejected; weights below MINIMUM = 2e-4 are zeroed, the rest renormalised and rounded to multiples
  of MINIMUM; 100 candidates per wanted mixture (SAMPLE_MULTIPLIER); near-identical rows removed
  (``sort_and_deduplicate``, L1 1e-5). The 512-run 1M swarm RegMix released is flatter than these
  constants give (median entropy 1.32 nats vs 0.79); min_strength 1.0 reproduces it (1.28), see
  tests/test_swarm.py, so the released runs were probably drawn with a higher minimum strength.
- ``olmix``: allenai/olmix, ``olmix/generate/synthesize_mixture.py``, ``generate_weights_dirichlet`` and
  ``ConfigDefaults``. Prior = natural distribution (``manual_prior`` overrides it), temperature 1; each
  round draws one candidate per strength of the same 15-level grid (0.1 to 5.0), keeps those within the
  repetition bounds (``caps = tokens * repetition_factor / max_tokens``) and with every
  ``nonzero_weight`` domain above ``minimum_weight``, picks one of them at random, zeroes weights below
  ``minimum_weight`` = 2e-3, renormalises, rounds to multiples of it, and re-checks the bounds;
  10 rounds per wanted mixture (``sample_multiplier``); duplicates removed (``np.allclose``, 1e-5).

Deliberate differences, the same for both presets:

- Rounding uses the largest-remainder method, so every mixture is a multiple of 1/grid and sums to
  exactly 1 (RegMix's rows sum to 1 +- a few grid steps; Olmix renormalises after rounding and so
  leaves the grid).
- Caps are re-checked after rounding for both samplers (RegMix checks only the raw draw), and a unit
  whose cap is below the smallest weight it could hold is dropped from the Dirichlet instead of having
  every draw that gives it weight rejected: a Dirichlet conditioned on a zero coordinate is the
  Dirichlet of the others, so this is the same distribution at a fraction of the draws.
- Forced domains (Olmix's ``nonzero_weight``) work with both samplers.
- Caps are at proxy scale for both: weight_j * tokens_per_proxy <= max_repetition * train_tokens_j
  (RegMix bounds a domain by its share of the corpus times MAXIMUM_USAGE = 15).
- Olmix samples sources, then topics inside each source; here one Dirichlet is drawn over *units*,
  a unit being a free leaf domain or a frozen group of leaves with fixed internal ratios (Olmix's
  sources with fixed topic weights, used for mixture reuse). A group's total is free, its
  internal ratios are exact in ``Swarm.leaf_weights``.
- Draws come from numpy's ``Generator`` in vectorised rounds (many candidates at once, filter, repeat,
  at most ``_MAX_ROUNDS`` rounds), and Dirichlet rows are made from log-gamma variates, which stay
  exact for the tiny concentrations (strength 0.1 times a 1e-3 prior) where plain gamma draws
  underflow to zero.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from engine.atomic import dumps_json, round_floats
from engine.errors import ConfigError, DataError, InfeasibleError
from engine.settings import MAX_SWARM_RUNS, SwarmSettings

STRENGTH_LEVELS = 15  # both papers: np.logspace(log10(min_strength), log10(max_strength), 15)
SAMPLE_MULTIPLIER = {"regmix": 100, "olmix": 10}  # candidates (olmix: rounds) per wanted mixture
ALGORITHM_VERSION = 1  # part of swarm_id: bump when the same settings would sample differently
_MAX_ROUNDS = 12
_ROUND_ELEMENTS = 3_000_000  # floats drawn per round at most (memory bound)
_DEDUP_BLOCK = 256


@dataclass(frozen=True)
class FrozenGroup:
    """Leaves whose internal ratios are fixed (mixture reuse); the swarm samples only its total."""

    name: str  # e.g. "virtual:unaffected"
    ratios: dict[str, float]  # leaf -> fixed share inside the group, sums to 1


@dataclass
class Swarm:
    """A sampled swarm: one mixture per row, over units and expanded to leaves.

    ``leaf_weights = unit_weights @ expand.T``; unit weights are multiples of 1/grid (when rounding),
    leaf weights inside a frozen group keep the group's ratios exactly.
    """

    units: list[str]  # free leaf domains + group names, in order
    unit_weights: np.ndarray  # [n, u]
    leaves: list[str]
    leaf_weights: np.ndarray  # [n, m]
    expand: np.ndarray  # [m, u]
    strengths: np.ndarray  # [n] Dirichlet strength used per draw
    id: str = ""  # swarm_id of the plan that produced it

    def __len__(self) -> int:
        return len(self.unit_weights)


def strength_levels(settings: SwarmSettings) -> np.ndarray:
    """The log-spaced strengths draws are spread over (one level if the ends are equal)."""
    if settings.min_strength == settings.max_strength:
        return np.array([settings.min_strength])
    return np.geomspace(settings.min_strength, settings.max_strength, STRENGTH_LEVELS)


def unit_layout(leaves: Sequence[str], groups: Sequence[FrozenGroup] = ()) -> tuple[list[str], np.ndarray]:
    """Units (free leaves in leaf order, then groups) and the [m, u] matrix mapping unit to leaf weights."""
    units, expand, _ = _layout(leaves, groups)
    return units, expand


def unit_caps(train_tokens: np.ndarray, expand: np.ndarray, tokens_per_proxy: int, max_repetition: float) -> np.ndarray:
    """Largest weight each unit may take without a leaf repeating more than `max_repetition` times.

    A leaf's cap is min(1, max_repetition * train_tokens / tokens_per_proxy); a group's is the min over
    its leaves of cap_leaf / ratio_leaf, since the group's weight times the ratio is the leaf's weight.
    """
    leaf_caps = np.minimum(max_repetition * np.asarray(train_tokens, float) / tokens_per_proxy, 1.0)
    ratio = np.where(expand > 0, expand, 1.0)
    per_leaf = np.where(expand > 0, leaf_caps[:, None] / ratio, np.inf)
    return np.minimum(per_leaf.min(axis=0), 1.0)


def default_size(settings: SwarmSettings, n_units: int) -> int:
    """`size`, or runs_per_domain per unit when size is 0 (a swarm linear in the number of units);
    more than MAX_SWARM_RUNS runs is a ConfigError."""
    size = settings.size if settings.size > 0 else settings.runs_per_domain * n_units
    if size > MAX_SWARM_RUNS:
        raise ConfigError(f"olmix.toml: [swarm] runs_per_domain {settings.runs_per_domain} x {n_units} units is {size} "
                          f"runs, more than {MAX_SWARM_RUNS}; lower runs_per_domain or set size.")
    return size


def sparsify(weights: np.ndarray, min_weight: float, grid: int) -> np.ndarray:
    """Zero weights below `min_weight`, renormalise, round to multiples of 1/grid summing to exactly 1.

    Rounding is largest remainder: floor every scaled weight, then give the missing grid steps to the
    largest remainders, so zeros stay zero. Rows left with no weight come back all zero.
    """
    kept = np.where(weights < min_weight, 0.0, weights)
    total = kept.sum(axis=1, keepdims=True)
    kept = np.divide(kept, total, out=np.zeros_like(kept), where=total > 0)
    if grid == 0:
        return kept
    scaled = kept * grid
    steps = np.floor(scaled)
    missing = np.where(total[:, 0] > 0, np.rint(grid - steps.sum(axis=1)), 0)
    order = np.argsort(-(scaled - steps), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return (steps + (rank < missing[:, None])) / grid


def swarm_id(
    settings: SwarmSettings,
    leaves: Sequence[str],
    prior: np.ndarray,
    train_tokens: np.ndarray,
    tokens_per_proxy: int,
    groups: Sequence[FrozenGroup] = (),
) -> str:
    """Short content hash of a swarm plan (same arguments as `sample_swarm`): same plan, same id."""
    prior = np.asarray(prior, float)
    payload = {
        "algorithm": ALGORITHM_VERSION,
        "settings": asdict(settings),
        "leaves": list(leaves),
        "prior": (prior / prior.sum()).tolist() if prior.sum() > 0 else prior.tolist(),
        "train_tokens": np.asarray(train_tokens, float).tolist(),
        "tokens_per_proxy": int(tokens_per_proxy),
        "groups": [[g.name, dict(sorted(g.ratios.items()))] for g in groups],
    }
    text = dumps_json(round_floats(payload, 12), indent=None)  # 12 digits: ids survive a save/load of the inputs
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def sample_swarm(
    settings: SwarmSettings,
    leaves: Sequence[str],
    prior: np.ndarray,
    train_tokens: np.ndarray,
    tokens_per_proxy: int,
    groups: Sequence[FrozenGroup] = (),
) -> Swarm:
    """Sample the swarm's mixtures over units (free leaves and frozen groups).

    `prior` is the natural distribution over leaves (token counts or shares), `train_tokens` the
    training tokens per leaf, `tokens_per_proxy` the tokens one proxy run trains on. Raises an
    OlmixError with one sentence when the settings or inputs cannot give a swarm.
    """
    leaves = list(leaves)
    units, expand, owner = _layout(leaves, groups)
    prior = _leaf_vector(prior, leaves, "prior")
    train_tokens = _leaf_vector(train_tokens, leaves, "train_tokens")
    if tokens_per_proxy < 1:
        raise ConfigError(f"tokens_per_proxy is {tokens_per_proxy}; a proxy run must train on at least one token.")
    caps = unit_caps(train_tokens, expand, tokens_per_proxy, settings.max_repetition)
    grid = settings.grid_steps()
    smallest = max(settings.min_weight, 1 / grid if grid else 0.0)
    usable = caps >= smallest if smallest > 0 else caps > 0
    base = _unit_prior(settings, units, prior, owner)
    sampling_prior = np.where(usable, base**settings.temperature, 0.0)
    forced = _forced_mask(settings, units, groups)
    _check_feasible(settings, units, leaves, train_tokens, expand, caps, sampling_prior, forced, smallest, tokens_per_proxy)
    size = default_size(settings, int((sampling_prior > 0).sum()))
    weights, strengths = _draw_until(settings, size, sampling_prior / sampling_prior.sum(), caps, forced, units)
    return Swarm(
        units=units,
        unit_weights=weights,
        leaves=leaves,
        leaf_weights=weights @ expand.T,
        expand=expand,
        strengths=strengths,
        id=swarm_id(settings, leaves, prior, train_tokens, tokens_per_proxy, groups),
    )


def _layout(leaves: list[str], groups: Sequence[FrozenGroup]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Units, expand matrix [m, u] and the unit index owning each leaf; validates groups."""
    if not leaves:
        raise DataError("There are no leaf domains to sample a swarm over; add data domains first.")
    if len(set(leaves)) != len(leaves):
        dup = sorted(x for x, n in Counter(leaves).items() if n > 1)
        raise DataError(f"Leaf domain(s) {', '.join(dup)} appear more than once; give each domain one name.")
    grouped: dict[str, str] = {}
    for g in groups:
        if not g.ratios:
            raise ConfigError(f"Frozen group '{g.name}' has no leaves; give it at least one leaf ratio.")
        if g.name in leaves or g.name in {h.name for h in groups if h is not g}:
            raise ConfigError(f"Frozen group name '{g.name}' is already used by a domain or group; rename it.")
        unknown = sorted(set(g.ratios) - set(leaves))
        if unknown:
            raise ConfigError(f"Frozen group '{g.name}' names unknown leaf domain(s) {', '.join(unknown)}; use existing domains.")
        taken = sorted(x for x in g.ratios if x in grouped)
        if taken:
            raise ConfigError(f"Leaf domain(s) {', '.join(taken)} of group '{g.name}' already belong to group '{grouped[taken[0]]}'; put each leaf in one group.")
        values = np.array(list(g.ratios.values()), float)
        if not np.all(np.isfinite(values)) or np.any(values < 0) or abs(values.sum() - 1) > 1e-6:
            raise ConfigError(f"Frozen group '{g.name}' ratios sum to {values.sum():.6g}, not 1 (each >= 0); fix its ratios.")
        grouped.update({x: g.name for x in g.ratios})
    units = [x for x in leaves if x not in grouped] + [g.name for g in groups]
    index = {u: k for k, u in enumerate(units)}
    owner = np.array([index[grouped.get(x, x)] for x in leaves])
    position = {x: j for j, x in enumerate(leaves)}
    share = np.ones(len(leaves))
    for g in groups:
        ratios = np.array(list(g.ratios.values()), float)
        share[[position[x] for x in g.ratios]] = ratios / ratios.sum()
    expand = np.zeros((len(leaves), len(units)))
    expand[np.arange(len(leaves)), owner] = share
    return units, expand, owner


def _leaf_vector(values: np.ndarray, leaves: list[str], what: str) -> np.ndarray:
    out = np.asarray(values, float).reshape(-1)
    if out.shape != (len(leaves),):
        raise DataError(f"{what} has {out.size} values for {len(leaves)} leaf domains; give one per domain.")
    bad = [x for x, v in zip(leaves, out) if not (np.isfinite(v) and v >= 0)]
    if bad:
        raise DataError(f"{what} of domain(s) {', '.join(bad)} is negative or not a number; fix the counts.")
    return out


def _unit_prior(settings: SwarmSettings, units: list[str], prior: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Natural prior summed per unit, or the manual prior (which must name every unit and nothing else)."""
    if settings.prior:
        unknown = sorted(set(settings.prior) - set(units))
        missing = [u for u in units if u not in settings.prior]
        if unknown:
            raise ConfigError(f"[swarm] prior names unknown domain(s) {', '.join(unknown)}; use: {', '.join(units)}.")
        if missing:
            raise ConfigError(f"[swarm] prior is missing domain(s) {', '.join(missing)}; give every domain a value.")
        values = np.array([settings.prior[u] for u in units], float)
        bad = [u for u, v in zip(units, values) if not (np.isfinite(v) and v >= 0)]
        if bad:
            raise ConfigError(f"[swarm] prior of domain(s) {', '.join(bad)} is negative or not a number; use values >= 0.")
        source = "[swarm] prior"
    else:
        values = np.bincount(owner, weights=prior, minlength=len(units))
        source = "The natural prior"
    if not values.sum() > 0:
        raise ConfigError(f"{source} sums to {values.sum():g} over {', '.join(units)}; give at least one domain a positive value.")
    return values / values.sum()


def _forced_mask(settings: SwarmSettings, units: list[str], groups: Sequence[FrozenGroup]) -> np.ndarray:
    """Boolean mask of forced units; a forced name must be a unit (not a leaf inside a group)."""
    for name in settings.forced:
        if name in units:
            continue
        owner = next((g.name for g in groups if name in g.ratios), None)
        if owner is not None:
            raise ConfigError(f"[swarm] forced domain '{name}' is inside frozen group '{owner}'; force '{owner}' instead.")
        raise ConfigError(f"[swarm] forced domain '{name}' is unknown; use one of: {', '.join(units)}.")
    return np.isin(units, settings.forced)


def _check_feasible(
    settings: SwarmSettings,
    units: list[str],
    leaves: list[str],
    train_tokens: np.ndarray,
    expand: np.ndarray,
    caps: np.ndarray,
    sampling_prior: np.ndarray,
    forced: np.ndarray,
    smallest: float,
    tokens_per_proxy: int,
) -> None:
    """Raise InfeasibleError naming the domain(s) when no mixture can meet the constraints."""
    for k in np.flatnonzero(forced):
        empty = [leaves[j] for j in np.flatnonzero(expand[:, k] > 0) if train_tokens[j] == 0]
        if empty:
            inside = "" if empty == [units[k]] else f" (leaf {', '.join(empty)})"
            raise InfeasibleError(f"Forced domain '{units[k]}' has no training tokens{inside}; remove it from [swarm] forced or add data.")
        if caps[k] < smallest:
            raise InfeasibleError(
                f"Forced domain '{units[k]}' may take at most {caps[k]:.3g} of a proxy run under max_repetition "
                f"{settings.max_repetition:g}, below the minimum weight {smallest:.3g}; raise [swarm] max_repetition or lower [proxy] tokens_per_proxy."
            )
        if sampling_prior[k] == 0:
            raise InfeasibleError(f"Forced domain '{units[k]}' has prior 0, so no draw gives it weight; give it a positive [swarm] prior.")
    if forced.sum() * settings.min_weight > 1:
        raise InfeasibleError(
            f"{int(forced.sum())} forced domains at min_weight {settings.min_weight:g} each need more than the whole mixture; force fewer domains or lower [swarm] min_weight."
        )
    active = np.flatnonzero(sampling_prior > 0)
    if caps[active].sum() < 1:
        total = caps[active].sum()
        named = ", ".join(f"{units[k]} {caps[k]:.3g}" for k in active[np.argsort(caps[active])][:8])
        more = f" and {len(active) - 8} more" if len(active) > 8 else ""
        raise InfeasibleError(
            f"Repetition caps of the sampled domains sum to {total:.3g} < 1 ({named}{more}); raise [swarm] max_repetition "
            f"to at least {settings.max_repetition / total:.3g} or lower [proxy] tokens_per_proxy to at most {int(tokens_per_proxy * total)}."
        )


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Dirichlet rows for alpha [n, u] >= 0 (zero alpha = zero weight), from log-gamma variates.

    Gamma(a) = Gamma(a + 1) * U^(1/a); taking logs keeps tiny concentrations from underflowing to 0.
    """
    positive = alpha > 0
    safe = np.where(positive, alpha, 1.0)
    log_g = np.log(rng.standard_gamma(safe + 1.0)) + np.log1p(-rng.random(alpha.shape)) / safe
    log_g = np.where(positive, log_g, -np.inf)
    w = np.exp(log_g - log_g.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def _violations(w: np.ndarray, caps: np.ndarray, forced: np.ndarray, min_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry cap violations and forced-domain shortfalls, both [n, u]."""
    over = w > caps
    short = forced & ((w < min_weight) | (w <= 0))
    return over, short


def _draw_until(
    settings: SwarmSettings, size: int, prior: np.ndarray, caps: np.ndarray, forced: np.ndarray, units: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw candidate rounds, filter and deduplicate until `size` mixtures are accepted."""
    rng = np.random.default_rng(settings.seed)
    levels = strength_levels(settings)
    block = len(levels) if settings.sampler == "olmix" else 1
    grid = settings.grid_steps()
    per_round = min(size * SAMPLE_MULTIPLIER[settings.sampler], max(1, _ROUND_ELEMENTS // (len(prior) * block)))
    accepted = np.zeros((0, len(prior)))
    strengths = np.zeros(0)
    over_count = np.zeros(len(prior), int)
    short_count = np.zeros(len(prior), int)
    passed = drawn = 0
    for _ in range(_MAX_ROUNDS):
        if settings.sampler == "olmix":
            s = np.tile(levels, per_round)
        else:
            s = levels[rng.integers(len(levels), size=per_round)]
        raw = _dirichlet(rng, s[:, None] * prior[None, :])
        drawn += len(raw)
        over, short = _violations(raw, caps, forced, settings.min_weight)
        over_count += over.sum(axis=0)
        short_count += short.sum(axis=0)
        ok = ~(over | short).any(axis=1)
        rows = _pick_per_block(rng, ok, block)
        w = sparsify(raw[rows], settings.min_weight, grid)
        over, short = _violations(w, caps, forced, settings.min_weight)
        below = (w > 0) & (w < settings.min_weight)
        good = w.sum(axis=1) > 0.5
        good &= ~(over | short | below).any(axis=1)
        w, s = w[good], s[rows][good]
        passed += len(w)
        keep = _distinct_rows(accepted, w, size - len(accepted), settings.dedup_tolerance)
        accepted = np.vstack([accepted, w[keep]])
        strengths = np.concatenate([strengths, s[keep]])
        if len(accepted) == size:
            return accepted, strengths
    if passed >= size:
        raise InfeasibleError(
            f"Only {len(accepted)} distinct mixtures of the {size} asked for were found in {drawn} draws "
            f"(dedup_tolerance {settings.dedup_tolerance:g}); lower [swarm] size or dedup_tolerance, or add domains."
        )
    k = int(np.argmax(np.maximum(over_count, short_count)))
    reason = f"its repetition cap {caps[k]:.3g}" if over_count[k] >= short_count[k] else "being forced"
    raise InfeasibleError(
        f"Only {len(accepted)} of {size} mixtures met the constraints in {drawn} draws, most often broken by "
        f"'{units[k]}' ({reason}); raise max_repetition, lower tokens_per_proxy or size, or relax forced."
    )


def _pick_per_block(rng: np.random.Generator, ok: np.ndarray, block: int) -> np.ndarray:
    """Row indices kept: every valid row (RegMix), or one valid row at random per block of strengths (Olmix)."""
    if block == 1:
        return np.flatnonzero(ok)
    valid = ok.reshape(-1, block)
    keys = np.where(valid, rng.random(valid.shape), -1.0)
    pick = keys.argmax(axis=1)
    has = valid.any(axis=1)
    return np.flatnonzero(has) * block + pick[has]


def _distinct_rows(pool: np.ndarray, fresh: np.ndarray, needed: int, tol: float) -> np.ndarray:
    """Indices of up to `needed` rows of `fresh`, in order, none within L1 `tol` of `pool` or of an earlier row."""
    from scipy.spatial.distance import cdist  # here, not at module top: scipy is slow to import

    if tol > 0:
        _, first = np.unique(fresh, axis=0, return_index=True)
        candidates = np.sort(first)
    else:
        candidates = np.arange(len(fresh))
    chosen: list[np.ndarray] = []
    kept = pool
    start = 0
    while needed > 0 and start < len(candidates):
        idx = candidates[start : start + max(needed, _DEDUP_BLOCK)]
        start += len(idx)
        rows = fresh[idx]
        ok = np.ones(len(idx), bool)
        if tol > 0:
            if len(kept):
                ok &= cdist(rows, kept, "cityblock").min(axis=1) >= tol
            ok &= ~np.triu(cdist(rows, rows, "cityblock") < tol, k=1).any(axis=0)
        take = idx[ok][:needed]
        chosen.append(take)
        kept = np.vstack([kept, fresh[take]])
        needed -= len(take)
    return np.concatenate(chosen) if chosen else np.zeros(0, int)

