"""Mixture reuse: plans for every kind of update, starting mixtures, frozen ratios through a real swarm,
costs, unfreeze suggestions and validation messages."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engine.domains import Domain, DomainSet, affected_set
from engine.errors import ConfigError, DataError, OlmixError
from engine.reuse import (
    RENORMALISE,
    affected_fit_names,
    compare_plans,
    plan_cost,
    plan_update,
    suggest_unfreeze,
)
from engine.settings import PLAN_KINDS, VIRTUAL_NAME, ReuseSettings, SwarmSettings
from engine.swarm import sample_swarm

TOKENS = {"web": 500.0, "code": 200.0, "math": 50.0, "wiki": 150.0, "books": 100.0,
          "news": 120.0, "web:blog": 300.0, "web:forum": 100.0}
CURRENT = {"web": 0.4, "code": 0.25, "math": 0.05, "wiki": 0.2, "books": 0.1}


def dom(name: str, revision: str = "r1", parent: str = "") -> Domain:
    return Domain(name, (f"data/{name}/*.txt",), revision=revision, parent=parent)


def domain_set(*domains: Domain) -> DomainSet:
    return DomainSet(tuple(domains))


BEFORE = domain_set(*(dom(n) for n in CURRENT))


def prior_of(after: DomainSet) -> dict[str, float]:
    total = sum(TOKENS[n] for n in after.names)
    return {n: TOKENS[n] / total for n in after.names}


def changed(add=(), remove=(), revise=(), partition: dict[str, tuple[str, ...]] | None = None) -> DomainSet:
    """BEFORE with domains added, removed, revised (new revision string) and partitioned into parts."""
    doms = {d.name: d for d in BEFORE}
    for name in remove:
        del doms[name]
    for name in revise:
        doms[name] = dom(name, revision="r2")
    for parent, parts in (partition or {}).items():
        del doms[parent]
        doms.update({p: dom(p, parent=parent) for p in parts})
    doms.update({n: dom(n) for n in add})
    return DomainSet(tuple(doms.values()))


def plan_for(after: DomainSet, kind: str = "full_reuse", current=CURRENT, **kw):
    return plan_update(BEFORE, after, current, prior_of(after), kind, **kw)


def ratios(weights: dict[str, float], names) -> dict[str, float]:
    total = sum(weights[n] for n in names)
    return {n: weights[n] / total for n in names}


# --- every update kind ----------------------------------------------------------------------------


def test_add_freezes_unaffected_and_starts_new_domain_at_its_prior_share():
    after = changed(add=["news"])
    plan = plan_for(after)
    assert plan.kind == "full_reuse" and plan.needs_swarm
    assert plan.free == ["news"] and plan.units == ["news", VIRTUAL_NAME]
    assert plan.groups[0].ratios == pytest.approx(CURRENT)
    p_news = prior_of(after)["news"]
    expected = {**CURRENT, "news": p_news}
    assert plan.start == pytest.approx({n: w / (1 + p_news) for n, w in expected.items()})
    assert sum(plan.start.values()) == pytest.approx(1.0)
    assert plan.affected.added == ("news",)


def test_remove_only_renormalises_without_a_swarm():
    after = changed(remove=["books"])
    plan = plan_for(after)
    assert plan.kind == RENORMALISE and not plan.needs_swarm
    assert plan.units == [VIRTUAL_NAME] and plan.free == []
    rest = {n: w for n, w in CURRENT.items() if n != "books"}
    assert plan.start == pytest.approx({n: w / 0.9 for n, w in rest.items()})
    assert "no swarm" in plan.describe() and "remove books" in plan.describe()
    # asking for a full swarm still gets one
    full = plan_for(after, "full")
    assert full.kind == "full" and full.needs_swarm and full.units == after.names


def test_partition_parts_split_parent_weight_by_token_share():
    after = changed(partition={"web": ("web:blog", "web:forum")})
    plan = plan_for(after)
    assert plan.free == ["web:blog", "web:forum"]
    assert plan.groups[0].ratios == pytest.approx(ratios(CURRENT, ["books", "code", "math", "wiki"]))
    # the update moves no weight in or out, so there is nothing to renormalise: parts sum to the parent's weight
    assert plan.start["web:blog"] + plan.start["web:forum"] == pytest.approx(CURRENT["web"], abs=1e-15)
    assert plan.start["web:blog"] / plan.start["web:forum"] == pytest.approx(300 / 100)
    assert {n: plan.start[n] for n in ("code", "math", "wiki", "books")} == pytest.approx(
        {n: CURRENT[n] for n in ("code", "math", "wiki", "books")})
    assert "partition web into web:blog, web:forum" in plan.describe()


def test_revise_keeps_the_current_weight_as_start_and_frees_the_domain():
    after = changed(revise=["code"])
    plan = plan_for(after)
    assert plan.affected.revised == ("code",)
    assert plan.free == ["code"] and plan.units == ["code", VIRTUAL_NAME]
    assert plan.start == pytest.approx(CURRENT)
    assert plan.groups[0].ratios == pytest.approx(ratios(CURRENT, ["books", "math", "web", "wiki"]))


def test_several_changes_at_once():
    after = changed(add=["news"], remove=["books"], revise=["code"], partition={"web": ("web:blog", "web:forum")})
    prior = prior_of(after)
    plan = plan_for(after)
    assert plan.free == ["code", "news", "web:blog", "web:forum"]
    assert plan.groups[0].ratios == pytest.approx(ratios(CURRENT, ["math", "wiki"]))
    raw = {"code": 0.25, "math": 0.05, "wiki": 0.2, "news": prior["news"],
           "web:blog": 0.4 * 0.75, "web:forum": 0.4 * 0.25}
    total = sum(raw.values())  # 1 - 0.1 (books) + prior share of news
    assert total == pytest.approx(0.9 + prior["news"])
    assert plan.start == pytest.approx({n: w / total for n, w in raw.items()})
    assert plan.describe().splitlines()[1] == (
        "update: add news; revise code; partition web into web:blog, web:forum; remove books.")


def test_first_mixture_or_full_kind_is_a_full_swarm_from_the_natural_prior():
    after = changed(add=["news"])
    for plan in (plan_for(after, "partial_reuse", current=None), plan_for(after, "full")):
        assert plan.kind == "full" and plan.groups == [] and plan.free == after.names
        assert plan.start == pytest.approx(prior_of(after))
        assert np.array_equal(plan.expand, np.eye(len(after)))


@pytest.mark.parametrize("kind", ["full_reuse", "partial_reuse"])
def test_frozen_group_ratios_equal_current_ratios(kind):
    after = changed(add=["news"], revise=["wiki"])
    plan = plan_for(after, kind, unfreeze=["books"] if kind == "partial_reuse" else ())
    (group,) = plan.groups
    assert group.name == VIRTUAL_NAME
    assert group.ratios == pytest.approx(ratios(CURRENT, list(group.ratios)))
    # and the start mixture keeps them, so it collapses onto the group exactly
    assert ratios(plan.start, list(group.ratios)) == pytest.approx(group.ratios)


def test_zero_current_weights_in_the_group_fall_back_to_prior_ratios():
    current = {"web": 1.0, "code": 0.0, "math": 0.0, "wiki": 0.0, "books": 0.0}
    plan = plan_for(changed(revise=["web"]), current=current)
    assert plan.groups[0].ratios == pytest.approx(ratios(TOKENS, ["books", "code", "math", "wiki"]))


def test_one_frozen_leaf_is_just_a_free_leaf():
    plan = plan_for(changed(add=["news"]), "partial_reuse", unfreeze=["code", "math", "wiki", "books"])
    assert plan.groups == [] and plan.free == ["books", "code", "math", "news", "web", "wiki"]
    assert plan.unfrozen == ["books", "code", "math", "wiki"]


def test_partial_reuse_unfreezes_what_is_asked():
    plan = plan_for(changed(add=["news"]), "partial_reuse", unfreeze=["math", "wiki", "math"])
    assert plan.kind == "partial_reuse" and plan.unfrozen == ["math", "wiki"]
    assert plan.free == ["math", "news", "wiki"]
    assert plan.units == ["math", "news", "wiki", VIRTUAL_NAME]
    assert plan.groups[0].ratios == pytest.approx(ratios(CURRENT, ["books", "code", "web"]))
    assert "unfrozen on request: math, wiki" in plan.describe()
    # on a removal-only update an unfrozen domain still gets a swarm
    removal = plan_for(changed(remove=["books"]), "partial_reuse", unfreeze=["math"])
    assert removal.kind == "partial_reuse" and removal.needs_swarm and removal.free == ["math"]


def test_full_reuse_ignores_unfreeze():
    plan = plan_for(changed(add=["news"]), "full_reuse", unfreeze=["math"])
    assert plan.free == ["news"] and plan.unfrozen == []
    partial = plan_for(changed(add=["news"]), "partial_reuse")
    assert partial.units == plan.units and "nothing unfrozen" in partial.describe()


def test_to_dict_is_plain_json():
    plan = plan_for(changed(add=["news"], partition={"web": ("web:blog", "web:forum")}), "partial_reuse", unfreeze=["code"])
    data = json.loads(json.dumps(dataclasses.asdict(plan.record())))
    assert data["kind"] == "partial_reuse" and data["unfrozen"] == ["code"]
    assert data["groups"][0]["name"] == VIRTUAL_NAME and data["units"] == plan.units
    assert data["affected"]["partitioned"] == {"web": ["web:blog", "web:forum"]}


# --- units: a real swarm ------------------------------------------------------------------------------


def test_swarm_sampled_over_plan_groups_keeps_frozen_ratios_exactly():
    after = changed(add=["news"], revise=["code"])
    plan = plan_for(after)
    prior = np.array([TOKENS[n] for n in plan.leaves])
    swarm = sample_swarm(SwarmSettings(size=12), plan.leaves, prior, prior * 1e6, 10**6, plan.groups)
    assert swarm.units == plan.units and len(swarm) == 12
    group = plan.groups[0]
    cols = [plan.leaves.index(n) for n in group.ratios]
    target = np.array(list(group.ratios.values()))
    totals = swarm.leaf_weights[:, cols].sum(axis=1)
    assert (totals > 0).any()
    inside = swarm.leaf_weights[totals > 0][:, cols] / totals[totals > 0, None]
    np.testing.assert_allclose(inside, np.broadcast_to(target, inside.shape), rtol=1e-12, atol=0)
    for unit_row, leaf_row in zip(swarm.unit_weights, swarm.leaf_weights):
        assert (plan.expand @ unit_row).tolist() == pytest.approx(leaf_row.tolist(), abs=1e-15)


def test_reuse_swarms_are_much_smaller_than_full_ones():
    names = [f"src{i:02d}" for i in range(20)]
    before = domain_set(*(dom(n) for n in names))
    after = domain_set(*(dom(n) for n in names), dom("new"))
    current = {n: 1 / 20 for n in names}
    prior = {n: 1 / 21 for n in after.names}
    table = compare_plans(before, after, current, prior, SwarmSettings(), 10**6, 6e6, unfreeze=["src03"])
    assert {k: table[k]["units"] for k in PLAN_KINDS} == {"full": 21, "full_reuse": 2, "partial_reuse": 3}
    assert {k: table[k]["runs"] for k in PLAN_KINDS} == {"full": 84, "full_reuse": 8, "partial_reuse": 12}
    assert table["full_reuse"]["tokens"] == 8 * 10**6 and table["full_reuse"]["flops"] == pytest.approx(8 * 6e12)
    assert table["full_reuse"]["saving"] == pytest.approx(1 - 8 / 84) and table["full"]["saving"] == 0
    # removal only: nothing to run for the reuse plans
    removal = compare_plans(before, domain_set(*(dom(n) for n in names[1:])), current,
                            {n: 1 / 19 for n in names[1:]}, SwarmSettings(), 10**6, 6e6)
    assert removal["full_reuse"]["plan"] == RENORMALISE and removal["full_reuse"]["runs"] == 0
    assert removal["full"]["runs"] == 4 * 19


def test_plan_cost():
    assert plan_cost(10, 2_000, 3.0) == {"runs": 10, "tokens": 20_000, "flops": 60_000.0}
    with pytest.raises(ConfigError, match="tokens_per_proxy"):
        plan_cost(10, 0, 3.0)


# --- suggestions ----------------------------------------------------------------------------------------


def synthetic_fit(domains, rng):
    metrics = [f"{d}/{m}" for d in domains for m in ("loss", "bpb")]
    t = rng.normal(scale=0.1, size=(len(metrics), len(domains)))
    return metrics, t


def test_suggestion_picks_the_planted_interaction_in_both_directions():
    rng = np.random.default_rng(1)
    domains = ["web", "code", "math", "wiki", "books"]
    metrics, t = synthetic_fit(domains, rng)
    t[metrics.index("math/loss"), domains.index("code")] = -3.0  # code (affected) moves math's metric
    got = suggest_unfreeze(["code"], ["web", "math", "wiki", "books"], domains, t, metrics, 2)
    assert got[0][0] == "math" and got[0][1] > 3.0 and len(got) == 2 and got[0][1] > got[1][1]
    metrics, t = synthetic_fit(domains, rng)
    t[metrics.index("code/bpb"), domains.index("books")] = 2.5  # books's weight moves code's metric
    assert suggest_unfreeze(["code"], ["web", "math", "wiki", "books"], domains, t, metrics, 1)[0][0] == "books"


def test_suggestion_uses_the_parent_name_of_partition_parts():
    after = changed(add=["news"], partition={"web": ("web:blog", "web:forum")})
    affected = affected_set(BEFORE, after)
    assert affected_fit_names(affected) == ["news", "web"]
    domains = BEFORE.names
    metrics, t = synthetic_fit(domains, np.random.default_rng(2))
    t[metrics.index("wiki/loss"), domains.index("web")] = 4.0
    got = suggest_unfreeze(affected_fit_names(affected), affected.unaffected, domains, t, metrics, 1)
    assert got[0][0] == "wiki"


def test_suggestion_without_usable_metrics_is_empty():
    domains = ["web", "code", "math"]
    t = np.ones((2, 3))
    assert suggest_unfreeze(["code"], ["web", "math"], domains, t, ["hellaswag", "arc"], 1) == []
    assert suggest_unfreeze(["news"], ["web", "math"], domains, t, ["web/loss", "math/loss"], 1) == []
    with pytest.raises(DataError, match="shape"):
        suggest_unfreeze(["code"], ["web"], domains, np.ones((3, 3)), ["web/loss"], 1)


# --- validation -------------------------------------------------------------------------------------------


def test_unknown_kind():
    with pytest.raises(ConfigError, match="'fast' is unknown; use one of full, full_reuse, partial_reuse"):
        plan_for(changed(add=["news"]), "fast")


def test_unfreeze_must_name_an_unaffected_domain():
    with pytest.raises(ConfigError, match=r"unfreeze 'news'.*unaffected domains are books, code, math, web, wiki"):
        plan_for(changed(add=["news"]), "partial_reuse", unfreeze=["news"])
    with pytest.raises(ConfigError, match="unfreeze 'nope'"):
        plan_for(changed(add=["news"]), "partial_reuse", unfreeze=["nope"])


@pytest.mark.parametrize("current, message", [
    ({n: w for n, w in CURRENT.items() if n != "math"} | {"web": 0.45}, "no weight for domain 'math'"),
    ({**CURRENT, "web": 0.5}, "sums to 1.1, not 1"),
    ({**CURRENT, "ghost": 0.0}, "names domain 'ghost'"),
    ({**CURRENT, "web": float("nan")}, "domain 'web' weight nan"),
])
def test_bad_current_mixture_names_the_problem(current, message):
    with pytest.raises(DataError, match=message):
        plan_for(changed(add=["news"]), current=current)


def test_other_errors_name_the_domain():
    after = changed(add=["news"])
    with pytest.raises(DataError, match="natural prior has no weight for domain 'news'"):
        plan_update(BEFORE, after, CURRENT, prior_of(BEFORE), "full_reuse")
    only_books = {"web": 0.0, "code": 0.0, "math": 0.0, "wiki": 0.0, "books": 1.0}
    with pytest.raises(DataError, match=r"removed domain\(s\) books"):
        plan_for(changed(remove=["books"]), current=only_books)
    with pytest.raises(ConfigError, match="'web' is already used"):
        plan_for(after, virtual_name="web")


def test_reuse_settings():
    assert ReuseSettings().plan == "full_reuse" and ReuseSettings().virtual_name == VIRTUAL_NAME
    for kwargs, message in (({"plan": "half"}, "plan 'half' is unknown"), ({"suggest": -1}, "suggest is -1"),
                            ({"virtual_name": "bad name"}, "not valid")):
        with pytest.raises(OlmixError, match=message):
            ReuseSettings(**kwargs)
