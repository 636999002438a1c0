"""Mixture reuse: plan the swarm for a domain-set update (Olmix, Chen et al. 2026, section on reuse).

When domains are added, removed, partitioned or revised, a full swarm over every leaf domain is
expensive. Olmix instead freezes the ratios among the *unaffected* domains (taken from the current
mixture) into one virtual domain and samples a swarm only over the virtual domain's total and the
affected domains; over five updates this matched full recomputation at 74% less compute. Partial
reuse also unfreezes chosen unaffected domains, e.g. those that interact most with the affected ones
in the last regression fit (`suggest_unfreeze`).

An `UpdatePlan` says which leaves the swarm varies, the frozen group (as an `engine.swarm.FrozenGroup`,
so `sample_swarm` keeps its ratios exactly), the unit layout, and the starting mixture over the new
leaves. `compare_plans` states the cost of the three plans side by side before anything is run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from engine.config import Table
from engine.domains import AffectedRecord, AffectedSet, DomainSet, affected_set
from engine.errors import ConfigError, DataError
from engine.settings import PLAN_KINDS, VIRTUAL_NAME, SwarmSettings
from engine.swarm import FrozenGroup, default_size, unit_layout

RENORMALISE = "renormalise"  # the plan kind of an update that needs no swarm
SUM_TOLERANCE = 1e-3  # a mixture read back from a file may be off by rounding, not by more


@dataclass(frozen=True, eq=False)
class UpdatePlan:
    """What to sample after a domain-set update, and where the mixture starts from.

    kind: full | full_reuse | partial_reuse | renormalise (no swarm: nothing left to recompute).
    leaves: leaf domains of the new set, sorted; free: leaves the swarm varies individually;
    unfrozen: unaffected leaves made free on request (partial reuse); groups: 0 or 1 frozen virtual
    domain whose ratios come from the current mixture; units, expand [m, u]: as
    `engine.swarm.unit_layout(leaves, groups)`; start: the starting mixture over `leaves` (see
    `plan_update`); needs_swarm: False when the plan has a single unit, whose weight is then 1.
    """

    kind: str
    leaves: list[str]
    free: list[str]
    groups: list[FrozenGroup]
    units: list[str]
    expand: np.ndarray
    start: dict[str, float]
    needs_swarm: bool
    affected: AffectedSet
    unfrozen: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Two lines for humans: what gets sampled, then what the update changed."""
        n = len(self.leaves)
        if self.kind == RENORMALISE:
            what = f"{RENORMALISE}: no swarm needed; the {n} remaining domains keep their current ratios."
        elif self.kind == "full":
            what = f"full: swarm over all {n} leaf domains, starting from the natural distribution."
        else:
            parts = [f"{len(self.free)} free ({_names(self.free)})"] if self.free else []
            parts += [f"'{g.name}' freezing {len(g.ratios)} unaffected domains" for g in self.groups]
            unfrozen = f"; unfrozen on request: {_names(self.unfrozen)}" if self.unfrozen else ""
            if self.kind == "partial_reuse" and not self.unfrozen:
                unfrozen = "; nothing unfrozen"
            what = f"{self.kind}: swarm over {len(self.units)} units ({' + '.join(parts)}) instead of {n} leaves{unfrozen}."
        return f"{what}\nupdate: {describe_changes(self.affected)}."

    def record(self) -> "PlanRecord":
        """The plan as history files and --json record it (the expand matrix follows from leaves and groups)."""
        return PlanRecord(self.kind, list(self.leaves), list(self.free), list(self.unfrozen), list(self.groups),
                          list(self.units), dict(self.start), self.needs_swarm, self.affected.record())


@dataclass(frozen=True)
class PlanRecord(Table):
    """An `UpdatePlan` as recorded: its kind, leaves, free and unfrozen leaves, frozen groups, units,
    starting mixture, whether it needed a swarm, and the update's affected set."""

    kind: str
    leaves: list[str] = field(default_factory=list)
    free: list[str] = field(default_factory=list)
    unfrozen: list[str] = field(default_factory=list)
    groups: list[FrozenGroup] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    start: dict[str, float] = field(default_factory=dict)
    needs_swarm: bool = False
    affected: AffectedRecord = field(default_factory=AffectedRecord)


def describe_changes(affected: AffectedSet) -> str:
    """The update in words, e.g. 'add code; partition web into web:a, web:b; remove books'."""
    items = [f"add {x}" for x in affected.added] + [f"revise {x}" for x in affected.revised]
    items += [f"partition {p} into {', '.join(parts)}" for p, parts in affected.partitioned.items()]
    items += [f"remove {x}" for x in affected.removed]
    return "; ".join(items) or "no domain changes"


def plan_update(
    before: DomainSet,
    after: DomainSet,
    current: Mapping[str, float] | None,
    natural_prior: Mapping[str, float],
    kind: str,
    unfreeze: Sequence[str] = (),
    virtual_name: str = VIRTUAL_NAME,
) -> UpdatePlan:
    """Plan the swarm for the update `before` -> `after` (several staged changes at once are fine).

    `current` is the current mixture over `before`'s domains (None for a project's first mixture);
    `natural_prior` gives each of `after`'s leaves its token share (entries for other domains are
    ignored); `unfreeze` is used by partial_reuse only.

    - No current mixture, or kind "full": a swarm over every leaf, start = the natural prior.
    - Otherwise the unaffected leaves minus `unfreeze` form one frozen group whose ratios are their
      current weights renormalised (their natural-prior ratios if those weights are all 0, equal
      ratios if those are 0 too); a single frozen leaf is just a free leaf. Affected leaves (added,
      revised, parts of partitions) and unfrozen ones are free.
    - Nothing free (a removal-only update, nothing unfrozen): kind "renormalise", no swarm, start =
      the current mixture without the removed domains, renormalised.

    The starting mixture: unaffected and revised domains keep their current weight; the parts of a
    partitioned domain split its current weight in proportion to their natural-prior shares (equally
    if those are all 0), so they sum to the parent's weight; an added domain gets its natural-prior
    share; removed domains drop out; then everything is divided by its sum (which is 1 minus the
    removed weight plus the added domains' shares). If that sum is 0 the natural prior is used.
    """
    if kind not in PLAN_KINDS:
        raise ConfigError(f"reuse plan '{kind}' is unknown; use one of {', '.join(PLAN_KINDS)}.")
    leaves = after.names
    prior = _checked({x: v for x, v in natural_prior.items() if x in leaves}, leaves, "The natural prior", mixture=False)
    total = sum(prior.values())
    prior = {x: prior[x] / total for x in leaves}
    affected = affected_set(before, after)
    if current is None or kind == "full":
        return _plan("full", leaves, [], prior, affected)
    carried = [*affected.unaffected, *affected.revised, *affected.partitioned]
    current = _checked(current, carried, "The current mixture", known=before.names)
    unfrozen = _checked_unfreeze(unfreeze, affected) if kind == "partial_reuse" else []
    frozen = [x for x in affected.unaffected if x not in unfrozen]
    if not affected.affected and not unfrozen:
        if not sum(current[x] for x in leaves) > 0:
            raise DataError(
                f"The current mixture puts all its weight on the removed domain(s) {', '.join(affected.removed)}, "
                "so nothing is left to renormalise; run the update with plan 'full'."
            )
        kind = RENORMALISE
    groups = []
    if len(frozen) > 1:
        ratios = _normalised(np.array([current[x] for x in frozen]), np.array([prior[x] for x in frozen]))
        groups = [FrozenGroup(virtual_name, dict(zip(frozen, ratios.tolist())))]
    return _plan(kind, leaves, groups, start_mixture(affected, current, prior, leaves), affected, unfrozen)


def start_mixture(
    affected: AffectedSet, current: Mapping[str, float], prior: Mapping[str, float], leaves: Sequence[str]
) -> dict[str, float]:
    """The starting mixture over `leaves` after an update (the rule is in `plan_update`'s docstring)."""
    carried = {x: current[x] for x in (*affected.unaffected, *affected.revised)}
    for parent, parts in affected.partitioned.items():
        shares = _normalised(np.array([prior[p] for p in parts]))
        carried.update(zip(parts, (current[parent] * shares).tolist()))
    raw = np.array([carried.get(x, prior[x]) for x in leaves])
    return dict(zip(leaves, _normalised(raw, np.array([prior[x] for x in leaves])).tolist()))


def affected_fit_names(affected: AffectedSet) -> list[str]:
    """The affected domains under their names in a fit made before the update: a revised domain keeps
    its name, a partition part is its parent, an added domain its own name (absent from old fits)."""
    return sorted({*affected.added, *affected.revised, *affected.partitioned})


def suggest_unfreeze(
    affected: Sequence[str],
    unaffected: Sequence[str],
    domains: Sequence[str],
    t: np.ndarray,
    metric_names: Sequence[str],
    k: int,
) -> list[tuple[str, float]]:
    """The (at most) k unaffected domains that interact most with the affected ones, with scores.

    From the last log-linear fit y_i = exp(c_i) + exp(t_i . x) over `domains` (t is [metrics, domains],
    metric i belongs to domain d when its name starts with d + "/"), an unaffected domain j scores

        sum over metrics i of j, affected a:   |t[i, a]|   (the affected weights move j's metrics)
      + sum over metrics i of affected a:      |t[i, j]|   (j's weight moves the affected metrics)

    `affected` uses the names of the old fit (`affected_fit_names`); affected or unaffected domains the
    fit does not cover are skipped. Ranked by score, ties by name; domains scoring 0 are left out.
    Returns [] when no affected domain is in the fit or no metric belongs to a domain that counts.
    """
    domains = list(domains)
    t = np.asarray(t, float)
    if t.shape != (len(metric_names), len(domains)):
        raise DataError(
            f"The fit's t matrix has shape {t.shape}, not ({len(metric_names)} metrics, {len(domains)} domains); "
            "refit the regression."
        )
    if not np.all(np.isfinite(t)):
        raise DataError("The fit's t matrix has non-finite coefficients; refit the regression.")
    column = {d: j for j, d in enumerate(domains)}
    is_affected = np.isin(domains, [a for a in affected if a in column])
    candidates = [u for u in unaffected if u in column and not is_affected[column[u]]]
    owner = np.array([column.get(name.split("/", 1)[0], -1) if "/" in name else -1 for name in metric_names], int)
    owns = np.zeros(t.shape, bool)  # owns[i, j]: metric i belongs to domain j
    owns[np.flatnonzero(owner >= 0), owner[owner >= 0]] = True
    counted = is_affected | np.isin(domains, candidates)
    if not is_affected.any() or not candidates or not owns[:, counted].any():
        return []
    size = np.abs(t)
    affected_col = is_affected.astype(float)
    scores = owns.T @ (size @ affected_col) + size.T @ (owns @ affected_col)
    ranked = sorted(((u, float(scores[column[u]])) for u in candidates), key=lambda p: (-p[1], p[0]))
    return [(u, s) for u, s in ranked if s > 0][:k]


def plan_cost(n_runs: int, tokens_per_proxy: int, flops_per_token: float) -> dict:
    """Proxy runs, training tokens and training FLOPs of a swarm of `n_runs` proxies."""
    if n_runs < 0 or tokens_per_proxy < 1 or not flops_per_token >= 0:
        raise ConfigError(
            f"Cost needs runs >= 0, tokens_per_proxy >= 1 and flops_per_token >= 0 "
            f"(got {n_runs}, {tokens_per_proxy}, {flops_per_token}); fix the proxy settings."
        )
    tokens = int(n_runs) * int(tokens_per_proxy)
    return {"runs": int(n_runs), "tokens": tokens, "flops": tokens * float(flops_per_token)}


def compare_plans(
    before: DomainSet,
    after: DomainSet,
    current: Mapping[str, float] | None,
    natural_prior: Mapping[str, float],
    swarm_settings: SwarmSettings,
    tokens_per_proxy: int,
    flops_per_token: float,
    unfreeze: Sequence[str] = (),
    virtual_name: str = VIRTUAL_NAME,
) -> dict[str, dict]:
    """Each plan kind's cost for this update, side by side, before anything runs.

    kind -> {plan: the kind actually planned (e.g. "full" without a current mixture, "renormalise"
    for a removal), units, runs, tokens, flops, saving: 1 - flops / full plan's flops, describe}.
    Runs are `default_size(swarm_settings, units)` (0 when no swarm is needed); the sampler may use
    fewer units when repetition caps rule some out. `unfreeze` applies to partial_reuse.
    """
    table = {}
    for kind in PLAN_KINDS:
        plan = plan_update(before, after, current, natural_prior, kind, unfreeze, virtual_name)
        runs = default_size(swarm_settings, len(plan.units)) if plan.needs_swarm else 0
        table[kind] = {"plan": plan.kind, "units": len(plan.units), **plan_cost(runs, tokens_per_proxy, flops_per_token),
                       "describe": plan.describe()}
    full = table["full"]["flops"]
    for row in table.values():
        row["saving"] = 1 - row["flops"] / full if full > 0 else 0.0
    return table


def _plan(
    kind: str, leaves: list[str], groups: list[FrozenGroup], start: dict[str, float], affected: AffectedSet,
    unfrozen: list[str] | None = None,
) -> UpdatePlan:
    units, expand = unit_layout(leaves, groups)
    grouped = {x for g in groups for x in g.ratios}
    return UpdatePlan(
        kind=kind,
        leaves=list(leaves),
        free=[x for x in leaves if x not in grouped],
        groups=groups,
        units=units,
        expand=expand,
        start=start,
        needs_swarm=len(units) > 1,
        affected=affected,
        unfrozen=unfrozen or [],
    )


def _checked_unfreeze(unfreeze: Sequence[str], affected: AffectedSet) -> list[str]:
    """`unfreeze` sorted and deduplicated; every name must be an unaffected leaf of the update."""
    for name in unfreeze:
        if name not in affected.unaffected:
            raise ConfigError(
                f"Cannot unfreeze '{name}': it is not an unaffected domain of this update; "
                f"the unaffected domains are {', '.join(affected.unaffected) or '(none)'}."
            )
    return sorted(set(unfreeze))


def _checked(
    values: Mapping[str, float],
    required: Sequence[str],
    what: str,
    known: Sequence[str] | None = None,
    mixture: bool = True,
) -> dict[str, float]:
    """`values` as floats, with every `required` name, no name outside `known` (None: extras allowed),
    each finite and >= 0; a mixture must sum to 1 (within SUM_TOLERANCE), anything else to more than 0."""
    missing = [x for x in required if x not in values]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{what} has no weight for domain '{missing[0]}'{more}; give every domain a weight.")
    unknown = sorted(set(values) - set(known)) if known is not None else []
    if unknown:
        raise DataError(f"{what} names domain '{unknown[0]}', which is not one of {', '.join(known)}; remove it.")
    out = {str(x): float(v) for x, v in values.items()}
    bad = [x for x, v in out.items() if not (np.isfinite(v) and v >= 0)]
    if bad:
        raise DataError(f"{what} gives domain '{bad[0]}' weight {out[bad[0]]!r}; weights must be finite and >= 0.")
    total = sum(out.values())
    if mixture and abs(total - 1) > SUM_TOLERANCE:
        raise DataError(f"{what} sums to {total:.6g}, not 1; renormalise it.")
    if not total > 0:
        raise DataError(f"{what} sums to 0; give at least one domain a positive value.")
    return out


def _normalised(values: np.ndarray, *fallbacks: np.ndarray) -> np.ndarray:
    """`values` divided by their sum; if that is 0, the first fallback with a positive sum; else equal shares."""
    for v in (values, *fallbacks):
        if v.sum() > 0:
            return v / v.sum()
    return np.full(len(values), 1 / len(values))


def _names(names: Sequence[str], shown: int = 6) -> str:
    """'a, b, c' with at most `shown` names, then 'and N more'."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
