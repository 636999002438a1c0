"""The steps of the mixing loop on a project, and the headless main job behind `olmix-tui DIR --batch`.

An *update* is what the project is working on: its pending domain-set changes, or (before any
mixture exists) the first mixture over the current domains. Each step reads and writes the
project folder, so every step can also run alone from the CLI (and, next, the TUI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass

import numpy as np

from engine.atomic import dumps_json
from engine.data.store import DomainTokens, natural_prior
from engine.domains import DomainSet
from engine.errors import OlmixError
from engine.events import EventSink, Message, ignore
from engine.executors.base import run_swarm
from engine.executors.local import LocalExecutor
from engine.history import current_mixture
from engine.project import Project
from engine.reuse import UpdatePlan, compare_plans, plan_update
from engine.runs import SwarmDir, list_swarms
from engine.swarm import Swarm, sample_swarm


@dataclass
class UpdateContext:
    """The update being worked on: domain sets before/after, current mixture, tokens and prior of the new leaves."""

    before: DomainSet
    after: DomainSet
    current: dict[str, float] | None
    tokens: dict[str, DomainTokens]
    prior: dict[str, float]  # natural distribution over the new leaves

    @property
    def leaves(self) -> list[str]:
        return self.after.names


def update_context(project: Project, on_event: EventSink = ignore) -> UpdateContext:
    after = project.staged_domains()
    tokens = project.tokens(on_event=on_event)
    leaf_tokens = {n: tokens[n] for n in after.names}
    return UpdateContext(project.domains, after, current_mixture(project), leaf_tokens, natural_prior(leaf_tokens))


# ---------------------------------------------------------------- proxy scale


def proxy_scale(project: Project, vocab_size: int) -> dict:
    """The proxy spec every run of a swarm shares: settings, resolved token budget, FLOPs per token."""
    from engine.training.flops import train_flops_per_token
    from engine.training.presets import get_preset, tokens_per_proxy

    s = project.settings
    preset = get_preset(s.proxy.preset)
    return {
        **dataclasses.asdict(s.proxy),
        "tokens_per_proxy": tokens_per_proxy(s.proxy, preset, vocab_size),
        "max_repetition": s.swarm.max_repetition,
        "flops_per_token": train_flops_per_token(preset.llama_config(vocab_size), preset.seq_len),
    }


# ---------------------------------------------------------------- plan


def make_plan(project: Project, ctx: UpdateContext, kind: str | None = None, unfreeze: list[str] | None = None) -> UpdatePlan:
    """The update plan of the configured (or given) kind."""
    r = project.settings.reuse
    return plan_update(ctx.before, ctx.after, ctx.current, ctx.prior, kind or r.plan,
                       unfreeze if unfreeze is not None else r.unfreeze, r.virtual_name)


def plan_costs(project: Project, ctx: UpdateContext) -> dict[str, dict]:
    """What each plan kind would cost for this update (runs, tokens, FLOPs), before anything runs."""
    scale = proxy_scale(project, project.tokenizer().vocab_size)
    r = project.settings.reuse
    return compare_plans(ctx.before, ctx.after, ctx.current, ctx.prior, project.settings.swarm,
                         scale["tokens_per_proxy"], scale["flops_per_token"], r.unfreeze, r.virtual_name)


def _spec_id(parts: dict) -> str:
    return hashlib.sha256(dumps_json(parts, indent=None).encode()).hexdigest()[:12]


def plan_swarm(project: Project, ctx: UpdateContext, plan: UpdatePlan) -> tuple[SwarmDir, Swarm]:
    """Sample the plan's swarm and write it under swarms/<id>/ (the same plan gives the same id)."""
    if not plan.needs_swarm:
        raise OlmixError(f"the {plan.kind} plan needs no swarm: {plan.describe().splitlines()[0]}")
    tokenizer = project.tokenizer()
    scale = proxy_scale(project, tokenizer.vocab_size)
    leaves = plan.leaves
    swarm = sample_swarm(project.settings.swarm, leaves, np.array([ctx.prior[x] for x in leaves]),
                         np.array([ctx.tokens[x].train_tokens for x in leaves]), scale["tokens_per_proxy"], plan.groups)
    spec = {
        "purpose": "swarm",
        "plan": plan.kind,
        "leaves": leaves,
        "groups": [{"name": g.name, "ratios": dict(g.ratios)} for g in plan.groups],
        "prior": dict(ctx.prior),
        "swarm": dataclasses.asdict(project.settings.swarm),
        "proxy": scale,
        "data": {"vocab_size": tokenizer.vocab_size, "keys": {x: ctx.tokens[x].key for x in leaves},
                 "eval_sets": dict(project.settings.data.eval_sets)},
    }
    sid = _spec_id({"sample": swarm.id, "proxy": scale, "data": spec["data"]})
    runs = [f"{sid}-{i:04d}" for i in range(len(swarm))]
    with project.lock():
        folder = SwarmDir.create(project.swarms_dir / sid, spec, runs, swarm.units, swarm.unit_weights,
                                 [project.settings.proxy.seed] * len(runs))
    return folder, swarm


def find_swarm(project: Project, swarm_id: str | None) -> SwarmDir:
    """A swarm by id (or unique prefix); without an id, the most recently planned one."""
    swarms = list_swarms(project.swarms_dir)
    if not swarms:
        raise OlmixError(f"the project has no swarm yet; plan one with `olmix-tui swarm plan {project.root}`.")
    if swarm_id is None:
        return max(swarms, key=lambda s: (s.path / "swarm.toml").stat().st_mtime_ns)
    matches = [s for s in swarms if s.id.startswith(swarm_id)]
    if len(matches) != 1:
        known = ", ".join(s.id for s in swarms)
        raise OlmixError(f"swarm '{swarm_id}' {'is ambiguous' if matches else 'does not exist'}; known swarms: {known}.")
    return matches[0]


# ---------------------------------------------------------------- train


def train_swarm(project: Project, swarm: SwarmDir, retry_failed: bool = False, on_event: EventSink = ignore) -> dict[str, int]:
    """Train the swarm's unfinished runs with the configured executor; returns its state counts.

    Idempotent and resumable: finished runs are kept, interrupted ones start again, failed ones
    only with `retry_failed`.
    """
    s = project.settings.executor
    runs = swarm.pending_runs(retry_failed)
    failed = swarm.counts()["failed"]
    if failed and not retry_failed:
        on_event(Message(f"{failed} run(s) failed before and are skipped; add --retry-failed to run them again.", level="warning"))
    with project.lock():
        return run_swarm(LocalExecutor(s, project.cache / "logs"), swarm, runs, s.max_batch, on_event, s.poll_seconds)


# ---------------------------------------------------------------- the main job


@dataclass
class BatchReport:
    domains: list[dict]
    prior: dict[str, float]
    tokenizer: str
    vocab_size: int
    plan: dict
    swarm: str
    runs: list[dict]
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run_batch(project: Project, on_event: EventSink = ignore) -> BatchReport:
    """Tokenize, plan the update's swarm with the configured plan, and train it."""
    start = time.perf_counter()
    on_event(Message(f"project {project.settings.project.name}: {len(project.domains)} domains, "
                     f"{len(project.pending)} pending change(s)"))
    ctx = update_context(project, on_event)
    tokenizer = project.tokenizer()
    domains = [{"name": n, "train_tokens": t.train_tokens, "val_tokens": t.val_tokens,
                "bytes_per_token": t.bytes_per_token, "prior": ctx.prior[n]} for n, t in ctx.tokens.items()]
    plan = make_plan(project, ctx)
    on_event(Message(plan.describe()))
    swarm_dir, _ = plan_swarm(project, ctx, plan)
    train_swarm(project, swarm_dir, on_event=on_event)
    runs = [{"run": s.run, "state": s.state, "weights": s.data.get("realised_weights") or s.data["weights"],
             "metrics": s.metrics, "error": s.data.get("error", "")} for s in swarm_dir.statuses()]
    return BatchReport(domains, ctx.prior, tokenizer.fingerprint, tokenizer.vocab_size, plan.to_dict(), swarm_dir.id,
                       runs, time.perf_counter() - start)


# ---------------------------------------------------------------- verification


def plan_verification(project: Project, ctx: UpdateContext, mixtures: dict[str, dict[str, float]], seeds: int) -> SwarmDir:
    """A swarm of verification runs: each labelled leaf mixture trained with `seeds` seeds (no groups)."""
    tokenizer = project.tokenizer()
    scale = proxy_scale(project, tokenizer.vocab_size)
    leaves = ctx.leaves
    labels = sorted(mixtures)
    weights = np.array([[mixtures[label].get(x, 0.0) for x in leaves] for label in labels])
    spec = {
        "purpose": "verify",
        "plan": "verify",
        "labels": labels,
        "leaves": leaves,
        "groups": [],
        "prior": dict(ctx.prior),
        "proxy": scale,
        "data": {"vocab_size": tokenizer.vocab_size, "keys": {x: ctx.tokens[x].key for x in leaves},
                 "eval_sets": dict(project.settings.data.eval_sets)},
    }
    base = project.settings.proxy.seed
    sid = _spec_id({"verify": weights.round(8).tolist(), "labels": labels, "seeds": seeds, "proxy": scale, "data": spec["data"]})
    runs = [f"{sid}-{i:02d}-s{base + s}" for i in range(len(labels)) for s in range(seeds)]
    with project.lock():
        return SwarmDir.create(project.swarms_dir / sid, spec, runs, leaves, np.repeat(weights, seeds, axis=0),
                               [base + s for _ in labels for s in range(seeds)], [x for x in labels for _ in range(seeds)])


def measured_objective(swarm: SwarmDir, objective) -> dict[str, dict]:
    """Per label of a verification swarm: the objective of each seed's run, their mean and spread (std)."""
    out: dict[str, dict] = {}
    for label in swarm.spec["labels"]:
        values = [objective(s.metrics) for s in swarm.statuses() if s.state == "done" and s.data.get("label") == label]
        if values:
            out[label] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                          "values": values}
    return out
