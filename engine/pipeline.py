"""The steps of the mixing loop on a project, and the headless main job behind `olmix-tui DIR --batch`.

An *update* is what the project is working on: its pending domain-set changes, or (before any
mixture exists) the first mixture over the current domains. Each step reads and writes the
project folder, so every step can also run alone from the CLI or the app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from engine.atomic import dumps_csv, dumps_json, write_output
from engine.bootstrap import ProposalSpread, bootstrap_proposal
from engine.compare import Comparison, MixtureSide, compare, kl, l1, same_mixture
from engine.data.store import DomainTokens, TokenStore, natural_prior
from engine.domains import Change, DomainSet, affected_set, check_name
from engine.errors import DataError, NotTokenizedError, OlmixError
from engine.events import EventSink, Message, ignore
from engine.executors import jobs, make_executor
from engine.executors.base import run_swarm
from engine.executors.liveness import owner_alive
from engine.export import export_mixture
from engine.history import (CompareRecord, Compute, EntryContent, Evidence, HistoryEntry, Measured, ProposalInfo,
                            UpdateRecord, Verification, current_mixture, read_history, write_entry)
from engine.mixture_table import MixtureTable, read_domain_values, read_tables
from engine.project import Project
from engine.propose import Proposal, objective_weights, propose
from engine.regression.store import FitResult, FitSummary, fit_and_store, list_fits, load_fit
from engine.regression.verdict import UNUSABLE, WEAK
from engine.reuse import (UpdatePlan, affected_fit_names, compare_plans, incumbent_mixture, plan_swarm_settings,
                          plan_update, reuse_prior, suggest_unfreeze, unit_mixture)
from engine.runs import SwarmDir, list_swarms
from engine.settings import EXACT_REGRESSOR, ObjectiveSettings, ProposeSettings, usable_proposer
from engine.swarm import FrozenGroup, Swarm, SwarmSettings, sample_swarm
from engine.swarm_spec import ImportSource, ProxyScale, SwarmData, SwarmSpec


@dataclass
class UpdateContext:
    """The update being worked on: domain sets before/after, current mixture, tokens and prior of the new leaves."""

    before: DomainSet
    after: DomainSet
    current: dict[str, float] | None
    tokens: dict[str, DomainTokens]
    prior: dict[str, float]  # natural distribution over the new leaves
    initial: bool = False  # the first mixture over the current domains, not the pending update
    changes: tuple[Change, ...] = ()  # the staged changes this update applies

    @property
    def leaves(self) -> list[str]:
        return self.after.names


def update_context(project: Project, on_event: EventSink = ignore, initial: bool = False,
                   tokenize: bool = True) -> UpdateContext:
    """The update to work on: the pending changes, or with `initial` the first mixture over the current
    domains. Domains not tokenized yet are tokenized, or with `tokenize=False` refused (reading only:
    the app's plan preview)."""
    after = project.domains if initial else project.staged_domains()
    if tokenize:
        tokens = project.tokens(on_event=on_event)
    else:
        tokens = project.cached_tokens(after)
        missing = [name for name, t in tokens.items() if t is None]
        if missing:
            raise NotTokenizedError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not tokenized yet; run "
                             f"`olmix-tui tokenize {project.root}` (planning a swarm or applying the update tokenizes too).")
    leaf_tokens = {n: tokens[n] for n in after.names}
    current = None if initial else current_mixture(project)
    return UpdateContext(project.domains, after, current, leaf_tokens, natural_prior(leaf_tokens), initial,
                         () if initial else tuple(project.pending))


# ---------------------------------------------------------------- proxy scale


def plan_context(project: Project, on_event: EventSink = ignore, tokenize: bool = True) -> UpdateContext:
    """The update a swarm is planned for: the pending changes, or the first mixture of a project that
    has none; with nothing staged on a project that has a mixture there is nothing to plan."""
    if not project.pending and read_history(project):
        raise OlmixError("nothing to plan: no domain-set update is staged and the current mixture is up to date; "
                         f"stage one first (`olmix-tui domains add|remove|revise|partition {project.root} ...`).")
    return update_context(project, on_event, tokenize=tokenize)


def proxy_scale(project: Project, vocab_size: int) -> ProxyScale:
    """The proxy every run of a swarm shares: [proxy] settings with the preset and token budget
    resolved ("auto" for the hardware [executor] trains on), and the FLOPs per token."""
    from engine.executors import trains_on_gpu
    from engine.training.flops import train_flops_per_token
    from engine.training.presets import resolve_proxy

    s = project.settings
    preset, tokens = resolve_proxy(s.proxy, vocab_size, lambda: trains_on_gpu(s.executor))
    return ProxyScale(**{**dataclasses.asdict(s.proxy), "preset": preset.name, "tokens_per_proxy": tokens},
                      max_repetition=s.swarm.max_repetition,
                      flops_per_token=train_flops_per_token(preset.llama_config(vocab_size), preset.seq_len))


# ---------------------------------------------------------------- plan


def make_plan(project: Project, ctx: UpdateContext, kind: str | None = None, unfreeze: list[str] | None = None) -> UpdatePlan:
    """The update plan of the configured (or given) kind; partial reuse without domains to unfreeze
    unfreezes the ones the last fit suggests."""
    r = project.settings.reuse
    kind = kind or r.plan
    chosen = list(unfreeze) if unfreeze else list(r.unfreeze)
    if kind == "partial_reuse" and not chosen and ctx.current is not None:
        chosen = [name for name, _ in suggested_unfreeze(project, ctx)]
    return plan_update(ctx.before, ctx.after, ctx.current, ctx.prior, kind, chosen, r.virtual_name)


def suggested_unfreeze(project: Project, ctx: UpdateContext) -> list[tuple[str, float]]:
    """Unaffected domains whose weight most needs to move apart from the frozen group, by the last
    log-linear fit in the history and the project's objective (empty without one)."""
    fit_id = next((e.content.fit for e in reversed(read_history(project)) if e.content.fit), "")
    if not fit_id or not (project.fits_dir / fit_id).is_dir() or ctx.current is None:
        return []
    fit = load_fit(project.fits_dir / fit_id)
    law = fit.model.law()
    if law is None:
        return []
    affected = affected_set(ctx.before, ctx.after)
    start = plan_update(ctx.before, ctx.after, ctx.current, ctx.prior, "full_reuse").start
    groups = {g.name: list(g.ratios) for s in fit.source_swarms if (project.swarms_dir / s).is_dir()
              for g in open_swarm(project, s).spec.groups}
    members = {**{d: groups.get(d, [d]) for d in fit.domains}, **affected.partitioned}
    at = np.array([sum(start.get(x, 0.0) for x in members[d]) for d in fit.domains])
    weights = objective_weights(project.settings.objective, fit.metric_names)
    return suggest_unfreeze(affected_fit_names(affected), affected.unaffected, fit.domains, law, fit.metric_names,
                            project.settings.reuse.suggest, weights, at)


def plan_costs(project: Project, ctx: UpdateContext, unfreeze: list[str] | None = None,
               scale: ProxyScale | None = None) -> dict[str, dict]:
    """What each plan kind would cost for this update (runs, tokens, FLOPs), before anything runs;
    partial reuse unfreezes `unfreeze` (default [reuse] unfreeze). `scale`: the proxy, when known."""
    scale = scale or proxy_scale(project, project.tokenizer().vocab_size)
    r = project.settings.reuse
    return compare_plans(ctx.before, ctx.after, ctx.current, ctx.prior, project.settings.swarm,
                         scale.tokens_per_proxy, scale.flops_per_token, r.unfreeze if unfreeze is None else unfreeze,
                         r.virtual_name, r.swarm)


@dataclass(frozen=True)
class PlanOptions:
    """The choice before planning a swarm or applying an update, as the app offers it: the plan kind
    olmix.toml configures, the unaffected domains partial reuse may unfreeze and those the last fit
    suggests (with their interaction scores), the first mixture's cost when the project has none yet
    (it is computed first), and `costs`, each plan's cost for a set of domains to unfreeze."""

    project: Project
    ctx: UpdateContext
    scale: ProxyScale
    default: str
    unaffected: list[str]
    suggested: list[tuple[str, float]]
    first: dict | None = None

    def costs(self, unfreeze: list[str]) -> dict[str, dict]:
        """Each plan kind's cost (`compare_plans`' table), partial reuse unfreezing `unfreeze`."""
        return plan_costs(self.project, self.ctx, unfreeze, self.scale)


def plan_options(project: Project, for_update: bool = False) -> PlanOptions:
    """The plans of the update at hand, from the token store as it is (nothing is tokenized: an
    untokenized domain is an OlmixError saying so). `for_update`: for applying the update, whose
    first mixture (if none exists yet) is a full swarm over the current domains, computed first."""
    first = None
    if for_update and not read_history(project):
        initial = update_context(project, initial=True, tokenize=False)
        scale = proxy_scale(project, project.tokenizer().vocab_size)
        first = plan_costs(project, initial, scale=scale)["full"]
        if not project.pending:
            return PlanOptions(project, initial, scale, "full", [], [], first)
    ctx = plan_context(project, tokenize=False)
    if first is not None:  # no mixture yet: the update's costs once the first one exists (its ratios do not change them)
        ctx = dataclasses.replace(ctx, current=dict(initial.prior))
    suggested = suggested_unfreeze(project, ctx) if ctx.current is not None else []
    default = project.settings.reuse.plan if ctx.current is not None else "full"
    scale = proxy_scale(project, project.tokenizer().vocab_size)
    return PlanOptions(project, ctx, scale, default, list(affected_set(ctx.before, ctx.after).unaffected), suggested, first)


def _spec_id(parts: dict) -> str:
    return hashlib.sha256(dumps_json(parts, indent=None).encode()).hexdigest()[:12]


def _run_inputs(project: Project, ctx: UpdateContext) -> tuple[ProxyScale, SwarmData]:
    """What every run of a swarm (or of verification runs) shares: the proxy, and the data it trains on."""
    tokenizer = project.tokenizer()
    check_eval_sets(project, project.settings.data.eval_sets)
    data = SwarmData(tokenizer.vocab_size, {x: ctx.tokens[x].key for x in ctx.leaves}, dict(project.settings.data.eval_sets))
    return proxy_scale(project, tokenizer.vocab_size), data


def _create_trained_swarm(project: Project, swarm_id: str, spec: SwarmSpec, unit_weights: np.ndarray, seeds: list[int],
                          labels: list[str] | None = None) -> SwarmDir:
    """Write swarms/<id>/ for a planned swarm or verification runs, under the project lock."""
    with project.lock():
        return SwarmDir.create(project.swarms_dir / swarm_id, spec, unit_weights, seeds, owner_alive, labels)


def _trained_spec(ctx: UpdateContext, purpose: str, plan: str, scale: ProxyScale, data: SwarmData, units: list[str],
                  runs: list[str], groups: list[FrozenGroup] = (), swarm: SwarmSettings | None = None,
                  labels: list[str] = (), start: dict[str, float] | None = None) -> SwarmSpec:
    """The spec of swarms this project trains (planned swarms and verification runs): one builder for both."""
    return SwarmSpec(purpose=purpose, plan=plan, units=list(units), runs=list(runs), leaves=ctx.leaves,
                     groups=list(groups), prior=dict(ctx.prior), swarm=swarm, proxy=scale, data=data, labels=list(labels),
                     start=dict(start or {}))


def plan_swarm(project: Project, ctx: UpdateContext, plan: UpdatePlan) -> tuple[SwarmDir, Swarm]:
    """Sample the plan's swarm and write it under swarms/<id>/ (the same plan gives the same id)."""
    if not plan.needs_swarm:
        raise OlmixError(f"the staged update needs no swarm: the {len(plan.leaves)} remaining domains keep their current "
                         f"ratios; apply it with `olmix-tui {project.root} --batch`.")
    scale, data = _run_inputs(project, ctx)
    leaves = plan.leaves
    s = project.settings
    settings = plan_swarm_settings(plan, ctx.prior, s.swarm, s.reuse.swarm)
    swarm = sample_swarm(settings, leaves, np.array([ctx.prior[x] for x in leaves]),
                         np.array([ctx.tokens[x].train_tokens for x in leaves]), scale.tokens_per_proxy, plan.groups)
    parts = {"sample": swarm.id, "proxy": dataclasses.asdict(scale), "data": dataclasses.asdict(data)}
    if plan.groups:  # the KL centre of a reuse proposal may be the starting mixture
        parts["start"] = {x: round(w, 10) for x, w in plan.start.items()}
    sid = _spec_id(parts)
    runs = [f"{sid}-{i:04d}" for i in range(len(swarm))]
    spec = _trained_spec(ctx, "swarm", plan.kind, scale, data, swarm.units, runs, plan.groups, settings, start=plan.start)
    folder = _create_trained_swarm(project, sid, spec, swarm.unit_weights, [scale.seed] * len(runs))
    return folder, swarm


def project_swarms(project: Project) -> list[SwarmDir]:
    """Every swarm of the project, by id; a run whose owner is gone reads as interrupted."""
    return list_swarms(project.swarms_dir, owner_alive)


def open_swarm(project: Project, swarm_id: str) -> SwarmDir:
    """The project's swarm `swarm_id` (an exact id: a name, never a path)."""
    check_name(swarm_id, "swarm id", "swarm")
    return SwarmDir(project.swarms_dir / swarm_id, owner_alive)


def find_swarm(project: Project, swarm_id: str | None) -> SwarmDir:
    """A swarm by id (or unique prefix); without an id, the most recently planned (or imported) one
    that is not a set of verification runs."""
    swarms = project_swarms(project)
    candidates = [s for s in swarms if s.spec.purpose != "verify"]
    if not candidates:
        raise OlmixError(f"the project has no swarm yet; plan one with `olmix-tui swarm plan {project.root}`.")
    if swarm_id is None:
        return max(candidates, key=lambda s: (s.path / "swarm.toml").stat().st_mtime_ns)
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
    jobs.note(swarm=swarm.id)
    if swarm.spec.trained_here:
        check_eval_sets(project, swarm.spec.data.eval_sets)
    with project.swarm_lock(swarm.id):  # one scheduler per swarm; the project stays free for staging
        runs = swarm.pending_runs(retry_failed)
        failed = swarm.counts()["failed"]
        if failed and not retry_failed:
            on_event(Message(f"{failed} run(s) failed before and are skipped; add --retry-failed to run them again.",
                             level="warning"))
        return run_swarm(make_executor(s, project.cache / "logs"), swarm, runs, s.max_batch, on_event, s.poll_seconds)


def check_eval_sets(project: Project, eval_sets: dict[str, str]) -> None:
    """The eval sets every run of a swarm scores, checked before any worker starts: each a readable
    file of JSON lines inside the project (unless [data] external_sources allows others)."""
    if not eval_sets:
        return
    from engine.training.evaluate import load_eval_set

    for name, rel in sorted(eval_sets.items()):
        path = project.root / rel
        if not project.external_sources and not path.resolve().is_relative_to(project.root):
            raise DataError(f"eval set '{name}' ({rel}) is outside the project folder; copy it into the project or "
                            "set [data] external_sources = true in olmix.toml.")
        if path.exists() and not path.is_file():  # a FIFO or a device would be read forever
            raise DataError(f"eval set '{name}' ({rel}) is not a regular file; point [data] eval_sets at a file.")
        load_eval_set(path, name)


# ---------------------------------------------------------------- fit, propose, apply


def fit_swarm(project: Project, swarm: SwarmDir, regressor: str | None = None, on_event: EventSink = ignore) -> FitResult:
    """Fit the configured regression on a swarm's finished runs (reusing an identical stored fit)."""
    jobs.note(swarm=swarm.id)
    table = swarm.table()
    skipped = swarm.skipped_runs()
    if skipped:
        on_event(Message(f"{len(skipped)} run(s) with NaN or infinite metrics are left out of the fit: {', '.join(skipped)}",
                         level="warning"))
    with project.lock():
        return fit_and_store(project.fits_dir, table, regressor, project.settings.regression, on_event, [swarm.id],
                             project.settings.objective, "[reuse.swarm]" if swarm.spec.groups else "[swarm]")


def objective_fn(project: Project, metric_names: list[str]):
    """The project's objective (weighted average of metrics) as a function of a run's metrics dict."""
    weights = objective_weights(project.settings.objective, metric_names)
    return lambda metrics: float(sum(w * metrics[m] for w, m in zip(weights, metric_names) if w))


def run_update(project: Project, ctx: UpdateContext, kind: str | None = None, on_event: EventSink = ignore,
               unfreeze: list[str] | None = None, force: bool = False) -> UpdateRecord:
    """Plan (`kind`, default [reuse] plan; `unfreeze` for partial reuse), train, fit and choose the
    mixture for the update (nothing is applied yet): the proposal, or on an unusable fit the
    fallback (`choose_mixture`; `force` proposes anyway)."""
    plan = make_plan(project, ctx, kind, unfreeze)
    on_event(Message(plan.describe()))
    if not plan.needs_swarm:
        return UpdateRecord(plan.record(), dict(plan.start))
    swarm_dir, _ = plan_swarm(project, ctx, plan)
    counts = train_swarm(project, swarm_dir, on_event=on_event)
    if counts["failed"]:
        raise OlmixError(f"{counts['failed']} run(s) of swarm {swarm_dir.id} failed; see `olmix-tui swarm status "
                         f"{project.root} --swarm {swarm_dir.id}` and rerun with `swarm run --retry-failed`.")
    fit = fit_swarm(project, swarm_dir, on_event=on_event)
    settings, chosen_by = update_proposer(project, ctx, plan)
    chosen = choose_mixture(project, swarm_dir, fit, settings, force, on_event)
    done = [s for s in swarm_dir.statuses() if s.state == "done"]
    compute = Compute(len(done), int(sum(s.tokens or 0 for s in done)), float(sum(s.flops or 0.0 for s in done)))
    proposal, info = chosen.proposal, None
    if proposal is not None:
        info = ProposalInfo(proposal.proposer, proposal.predicted_objective, proposal.kl, proposal.binding_caps,
                            proposal.kkt_residual, fit.cv.mean_spearman, chosen_by, kl_centre_kind(swarm_dir.spec, project))
    return UpdateRecord(plan.record(), chosen.mixture, swarm_dir.id, fit.fit_id,
                        None if proposal is None else proposal.predicted_objective, info, compute, chosen.evidence)


def update_proposer(project: Project, ctx: UpdateContext, plan: UpdatePlan) -> tuple[ProposeSettings, str]:
    """[propose] with the proposer for this update: [reuse.proposer]'s for the update's kinds when
    the plan freezes a group, else [propose] proposer; and the setting that chose it."""
    settings = project.settings.propose
    if not plan.groups:
        return settings, "[propose] proposer"
    name, chosen_by = project.settings.reuse.proposer.proposer_for(affected_set(ctx.before, ctx.after).kinds,
                                                                   settings.proposer)
    return dataclasses.replace(settings, proposer=name), chosen_by


def kl_centre_kind(spec: SwarmSpec, project: Project) -> str:
    """What a proposal from this swarm takes its KL term against: "prior", "natural" or "current" over
    the units for a swarm with a frozen group ([reuse.proposer] kl_centre), "" (the leaves' natural
    distribution) for any other."""
    return project.settings.reuse.proposer.kl_centre if spec.trained_here and spec.groups else ""


def kl_centre(spec: SwarmSpec, project: Project) -> np.ndarray | None:
    """The unit-level KL centre of a proposal from this swarm (None: KL over the leaves against the prior).

    "prior": the prior the reuse swarm was drawn around (for a swarm planned before reuse swarms
    had one, `reuse_prior` with [reuse.swarm] virtual_share); "natural": the natural distribution
    collapsed onto the units; "current": the mixture the update started from, collapsed onto the
    units (the natural distribution, if the swarm did not record it)."""
    kind = kl_centre_kind(spec, project)
    if not kind:
        return None
    natural = np.array([spec.prior[x] for x in spec.leaves])
    if kind == "current" and spec.start:
        return unit_mixture(spec.expand, np.array([spec.start.get(x, 0.0) for x in spec.leaves]))
    if kind != "prior":
        return unit_mixture(spec.expand, natural)
    if spec.swarm is not None and set(spec.swarm.prior) == set(spec.units):
        return np.array([spec.swarm.prior[u] for u in spec.units])
    prior = reuse_prior(spec.units, spec.groups, spec.expand, natural, project.settings.reuse.swarm.virtual_share)
    return np.array([prior[u] for u in spec.units])


def history_kind(ctx: UpdateContext, has_history: bool) -> str:
    if not has_history:
        return "initial"
    affected = affected_set(ctx.before, ctx.after)
    return "+".join(affected.kinds) or "update"


def apply_update(project: Project, ctx: UpdateContext, record: UpdateRecord,
                 compared: CompareRecord | None = None) -> HistoryEntry:
    """Record the update in history (mixture over leaves, plan, swarm, fit, compute) and make it
    current: the entry, domains.toml and pending.toml in one step. Changes staged while the update
    ran stay staged for the next one; if the changes it planned are no longer staged (discarded or
    replaced meanwhile), nothing is applied."""
    with project.lock():
        content = EntryContent(**{f.name: getattr(record, f.name) for f in dataclasses.fields(UpdateRecord)},
                               kind=history_kind(ctx, bool(read_history(project))),
                               changes=[c.describe() for c in ctx.changes],
                               domains={d.name: d.revision for d in ctx.after}, compare=compared)
        if ctx.initial:
            return write_entry(project, content)
        staged = project.on_disk_pending()
        if staged[:len(ctx.changes)] != list(ctx.changes):
            raise OlmixError(f"the pending update changed while this update ran (it planned: "
                             f"{'; '.join(c.describe() for c in ctx.changes)}), so nothing was applied; run "
                             f"`olmix-tui {project.root} --batch` again (finished runs and fits are reused).")
        project.pending = staged[len(ctx.changes):]
        return write_entry(project, content, ctx.after, project.pending_text())


@dataclass(frozen=True)
class ProposalInputs:
    """What proposing from a swarm needs besides the fit: the prior over its leaves, the leaves'
    available tokens (None when unknown: no repetition caps), and what the user should know about
    them (`proposal_caveats`)."""

    prior: dict[str, float]
    tokens: dict[str, float] | None
    caveats: list[str]


def proposal_caveats(swarm: SwarmDir, settings: ProposeSettings, objective: ObjectiveSettings) -> list[str]:
    """What a proposal from `swarm` with `settings` should say about its objective, prior and caps:
    an imported swarm whose metrics the objective does not name, or without a prior or token counts,
    and a proposal with neither a KL pull nor caps."""
    spec, notes = swarm.spec, []
    if not spec.trained_here and objective.weights and objective.names_none_of(swarm.table().metric_names):
        notes.append("[objective] weights name none of the imported swarm's metrics, so the objective is the "
                     "mean of all of them")
    if not spec.trained_here and not spec.prior:
        notes.append("the prior, which the KL term pulls towards, is the imported swarm's mean mixture: it was "
                     "imported without --prior or --tokens")
    no_counts = not spec.trained_here and not spec.tokens
    if no_counts:
        notes.append("repetition caps are off: the imported swarm has no token counts; import it with --tokens FILE")
    if (no_counts or not settings.target_tokens) and not settings.kl_reg and not settings.bounds:
        notes.append("the proposal runs with neither a KL pull to the prior (kl_reg = 0) nor caps (no token counts, "
                     "target_tokens or bounds), so any domain, however small, may get any weight; set [propose] "
                     "kl_reg (Olmix uses 0.05 to 0.1) or target_tokens")
    return notes


def proposal_inputs(project: Project, swarm: SwarmDir, settings: ProposeSettings | None = None) -> ProposalInputs:
    """The prior, tokens and caveats of proposing from `swarm` (with [propose], or `settings`). An
    imported swarm has the prior and token counts it was imported with; without a prior, its mean
    mixture is the prior."""
    spec = swarm.spec
    caveats = proposal_caveats(swarm, settings or project.settings.propose, project.settings.objective)
    if not spec.trained_here:
        if spec.prior:
            prior = dict(spec.prior)
        else:
            table = swarm.table()
            mean = table.ratios.mean(axis=0)
            prior = dict(zip(table.domains, (mean / mean.sum()).tolist()))
        return ProposalInputs(prior, dict(spec.tokens) or None, caveats)
    store = TokenStore.of_project(project.root)
    tokens = {}
    for leaf in spec.leaves:
        t = store.load(leaf, spec.data.keys[leaf])
        if t is None:
            raise OlmixError(f"the token store has no entry for domain '{leaf}' as planned; run `olmix-tui tokenize {project.root}`.")
        tokens[leaf] = t.train_tokens
    return ProposalInputs(dict(spec.prior), tokens, caveats)


def propose_for_swarm(project: Project, swarm: SwarmDir, fit: FitResult, settings: ProposeSettings | None = None,
                      on_event: EventSink = ignore) -> tuple[Proposal, ProposalInputs, ProposalSpread | None]:
    """Propose from a swarm's fit (with [propose], or `settings`): leaf caps and KL through the
    swarm's frozen groups; with settings.bootstrap, also the proposal's bootstrap spread."""
    settings = settings or project.settings.propose
    inputs = proposal_inputs(project, swarm, settings)
    if inputs.tokens is None and settings.target_tokens:
        settings = dataclasses.replace(settings, target_tokens=0)
    leaves = swarm.spec.leaves if swarm.spec.trained_here else swarm.units
    args = (fit.model, swarm.table(), inputs.prior, inputs.tokens, settings, project.settings.objective)
    where = {"expand": swarm.spec.expand, "domains_leaf": leaves, "kl_centre": kl_centre(swarm.spec, project)}
    proposal = propose(*args, **where)
    spread = None
    if settings.bootstrap:
        spread = bootstrap_proposal(proposal, *args, **where, on_event=on_event)
    return proposal, inputs, spread


def fallback_mixture(project: Project, leaves: list[str], prior: dict[str, float]) -> tuple[str, dict[str, float]]:
    """What an unusable fit falls back to: the incumbent, which is the current mixture when it is
    over `leaves`, or for the pending update the current mixture carried onto the new domain set with
    the added domains at 0 (`engine.reuse.incumbent_mixture`, the mixture `--compare` measures as the
    incumbent: no share of new data is committed without a fit that supports it); else, for a first
    mixture (or an imported swarm), the natural distribution `prior`. Returns ("incumbent" |
    "natural", mixture)."""
    current = current_mixture(project)
    if current is not None:
        if set(current) == set(leaves):
            return "incumbent", {x: current[x] for x in leaves}
        staged = project.staged_domains()
        if project.pending and set(staged.names) == set(leaves):
            return "incumbent", incumbent_mixture(affected_set(project.domains, staged), current, prior, leaves)
    return "natural", {x: prior[x] for x in leaves}


@dataclass(frozen=True)
class ProposalPreview:
    """The mixture a fit leads to, not yet applied: the proposal (None when an unusable fit fell
    back), the mixture to record (the proposal's, or the fallback), the prior it is shown beside,
    the fit and swarm it came from, the evidence (verdict, action, warnings, bootstrap spread), and
    why its proposer differs from the one asked for ("" if it does not)."""

    proposal: Proposal | None
    mixture: dict[str, float]
    prior: dict[str, float]
    fit: FitResult
    swarm: str
    evidence: Evidence
    note: str = ""


def choose_mixture(project: Project, swarm: SwarmDir, fit: FitResult, settings: ProposeSettings, force: bool = False,
                   on_event: EventSink = ignore) -> ProposalPreview:
    """The gate between a fit and a mixture. A usable fit proposes; a weak one proposes with a
    warning; an unusable one falls back (`fallback_mixture`) and says what would fix it, unless
    `force`, which proposes anyway and records it. The search proposer, which picks the best
    measured run, does not rest on the fit and proposes with a warning. Every path records the
    verdict and its warnings (docs/verdicts.md)."""
    verdict = fit.verdict
    if verdict is None:
        raise OlmixError(f"fit {fit.fit_id} was made by an earlier version, which judged no verdict; fit the swarm "
                         f"again with `olmix-tui fit {project.root} --swarm {swarm.id}`.")
    proposer, note = usable_proposer(settings.proposer, fit.regressor, fit.chosen)
    settings = dataclasses.replace(settings, proposer=proposer)
    warnings = proposal_caveats(swarm, settings, project.settings.objective)
    unusable = verdict.verdict == UNUSABLE
    if unusable and proposer != "search" and not force:
        inputs = proposal_inputs(project, swarm, settings)
        kind, mixture = fallback_mixture(project, swarm.spec.leaves if swarm.spec.trained_here else swarm.units,
                                         inputs.prior)
        reason = verdict.reasons[0]
        evidence = Evidence(verdict, "fallback", kind, f"the fit is unusable: {reason}", warnings)
        instead = ("kept the incumbent mixture (the current one, added domains at 0)"
                   if kind == "incumbent" else "fell back to the natural distribution")
        on_event(Message(f"fit {fit.fit_id} is unusable ({reason}), so the proposal {instead} instead of following "
                         f"the KL term. {verdict.fix} (--force proposes anyway.)", level="warning"))
        return ProposalPreview(None, mixture, inputs.prior, fit, swarm.id, evidence, note)
    if verdict.verdict == WEAK:
        warnings.insert(0, f"the fit is weak: {'; '.join(verdict.reasons)}. {verdict.fix}")
    elif unusable:
        warnings.insert(0, f"the fit is unusable ({'; '.join(verdict.reasons)}), but "
                        + ("--force was given" if proposer != "search" else
                           "the search proposer picks the best measured run, which does not rest on the fit"))
    for text in warnings:
        on_event(Message(text, level="warning"))
    proposal, inputs, spread = propose_for_swarm(project, swarm, fit, settings, on_event)
    evidence = Evidence(verdict, "forced" if unusable and proposer != "search" else "proposed", "", "", warnings, spread)
    return ProposalPreview(proposal, proposal.mixture, inputs.prior, fit, swarm.id, evidence, note)


def preview_proposal(project: Project, fit: FitResult, settings: ProposeSettings, swarm: SwarmDir | None = None,
                     force: bool = False, on_event: EventSink = ignore) -> ProposalPreview:
    """The mixture `fit` leads to (on `swarm`, default the swarm it was fitted on) with `settings`,
    through the gate (`choose_mixture`); the proposer is the one asked for where the fit allows it
    (`engine.settings.usable_proposer`)."""
    if swarm is None:
        if not fit.source_swarms:
            raise OlmixError(f"fit {fit.fit_id} names no swarm to propose from; fit a swarm again with "
                             f"`olmix-tui fit {project.root}`.")
        swarm = open_swarm(project, fit.source_swarms[0])
    return choose_mixture(project, swarm, fit, settings, force, on_event)


def swarm_fits(project: Project, swarm: SwarmDir) -> list[FitSummary]:
    """The stored fits of `swarm`, oldest first."""
    return [f for f in list_fits(project.fits_dir) if swarm.id in f.info.get("source_swarms", [])]


def find_fit(project: Project, fit_id: str) -> FitResult:
    """A stored fit by id (or unique prefix)."""
    fits = list_fits(project.fits_dir)
    matches = [f for f in fits if f.fit_id.startswith(fit_id)]
    if len(matches) != 1:
        known = ", ".join(f.fit_id for f in fits) or "none yet (fit one with `olmix-tui fit`)"
        raise OlmixError(f"fit '{fit_id}' {'is ambiguous' if matches else 'does not exist'}; known fits: {known}.")
    return load_fit(matches[0].folder)


def chosen_fit(project: Project, swarm_id: str | None = None, fit_id: str | None = None, regressor: str | None = None,
               on_event: EventSink = ignore) -> tuple[SwarmDir, FitResult]:
    """The swarm and the fit that predicts and proposes for it: fit `fit_id` when given (on its own
    swarm unless `swarm_id` names one), else the swarm's latest stored fit (the one made last), else
    a new fit with `regressor` (default [regression]). Without `swarm_id`, the latest planned swarm."""
    if fit_id is not None:
        fit = find_fit(project, fit_id)
        if swarm_id is None and not fit.source_swarms:
            raise OlmixError(f"fit {fit.fit_id} names no swarm; give one with --swarm.")
        swarm = find_swarm(project, swarm_id or fit.source_swarms[0])
        if swarm.id not in fit.source_swarms:
            raise OlmixError(f"fit {fit.fit_id} was fitted on swarm {', '.join(fit.source_swarms) or '(none)'}, "
                             f"not {swarm.id}; leave out --swarm, or pick one of that swarm's fits.")
        return swarm, fit
    swarm = find_swarm(project, swarm_id)
    fits = swarm_fits(project, swarm)
    if fits:
        on_event(Message(f"fit {fits[-1].fit_id} ({fits[-1].info['chosen']}), the latest of swarm {swarm.id}; "
                         "--fit ID picks another"))
        return swarm, load_fit(fits[-1].folder)
    return swarm, fit_swarm(project, swarm, regressor, on_event)


def propose_with_fit(project: Project, swarm_id: str | None, settings: ProposeSettings, fit_id: str | None = None,
                     force: bool = False, on_event: EventSink = ignore) -> ProposalPreview:
    """Preview the proposal of the chosen fit (`chosen_fit`; with no fit yet, a new one with the
    regressor the proposer needs: the log-linear law for exact, else [regression])."""
    regressor = EXACT_REGRESSOR if settings.proposer == "exact" else None
    swarm, fit = chosen_fit(project, swarm_id, fit_id, regressor, on_event)
    return preview_proposal(project, fit, settings, swarm, force, on_event)


# ---------------------------------------------------------------- the main job


@dataclass(frozen=True)
class AppliedUpdate:
    """An update the main job applied: its history entry, its record, and its comparison with full recomputation."""

    entry: str
    record: UpdateRecord
    compared: CompareRecord | None = None

    def to_json(self) -> dict:
        out = {"entry": self.entry, **dataclasses.asdict(self.record)}
        if self.compared is not None:
            out["compare"] = dataclasses.asdict(self.compared)
        return out


@dataclass
class BatchReport:
    domains: list[dict]
    tokenizer: str
    vocab_size: int
    updates: list[AppliedUpdate]
    seconds: float

    def to_dict(self) -> dict:
        return {"domains": self.domains, "tokenizer": self.tokenizer, "vocab_size": self.vocab_size,
                "updates": [u.to_json() for u in self.updates], "seconds": self.seconds}


def run_batch(project: Project, compare: bool = False, verify_seeds: int = 3, on_event: EventSink = ignore,
              plan: str | None = None, unfreeze: list[str] | None = None, force: bool = False) -> BatchReport:
    """The main job: the first mixture if the project has none, then the pending update (if any),
    each planned, trained, fitted, proposed (or, on an unusable fit, fallen back: `force` proposes
    anyway) and written to history; the update with `plan` and `unfreeze` (default: olmix.toml's
    [reuse]). With `compare`, the pending update is also recomputed in full and both mixtures are
    checked on verification proxies. Local workers train the batches of every swarm of the job
    (engine.executors.local.shared_workers)."""
    from engine.executors.local import shared_workers

    if compare and not 1 <= verify_seeds <= 100:
        raise OlmixError(f"--seeds is {verify_seeds}; give between 1 and 100 verification runs per mixture.")
    start = time.perf_counter()
    with project.lock():  # taking it completes what a killed command left half-applied (the journal)
        on_event(Message(f"project {project.settings.project.name}: {len(project.domains)} domains, "
                         f"{len(project.pending)} pending change(s)"))
    updates = []
    with shared_workers():
        if not read_history(project):
            ctx = update_context(project, on_event, initial=True)
            record = run_update(project, ctx, "full", on_event, force=force)
            updates.append(AppliedUpdate(apply_update(project, ctx, record).label, record))
        if project.pending:
            ctx = update_context(project, on_event)
            record = run_update(project, ctx, plan, on_event, unfreeze, force)
            compared = compare_with_full(project, ctx, record, verify_seeds, on_event, force) if compare else None
            updates.append(AppliedUpdate(apply_update(project, ctx, record, compared).label, record, compared))
    tokens = project.tokens(project.domains)
    prior = natural_prior(tokens)
    tokenizer = project.tokenizer()
    domains = [{"name": n, "train_tokens": t.train_tokens, "val_tokens": t.val_tokens,
                "bytes_per_token": t.bytes_per_token, "prior": prior[n]} for n, t in tokens.items()]
    return BatchReport(domains, tokenizer.fingerprint, tokenizer.vocab_size, updates, time.perf_counter() - start)


def compare_with_full(project: Project, ctx: UpdateContext, record: UpdateRecord, seeds: int,
                      on_event: EventSink = ignore, force: bool = False) -> CompareRecord:
    """Recompute the update in full (through the same gate: an unusable full fit falls back to the
    incumbent), train verification proxies (the same seeds for each) on both mixtures and on the
    incumbent (the mixture the project had, added domains at 0), and compare them. A mixture equal to
    an earlier one (the incumbent a fallback kept, a full plan's own recomputation) is trained once and
    measured under both labels."""
    full = record if record.plan.kind == "full" else run_update(project, ctx, "full", on_event, force=force)
    incumbent = incumbent_mixture(affected_set(ctx.before, ctx.after), ctx.current, ctx.prior, ctx.leaves)
    mixtures = {"chosen": record.mixture, "full": full.mixture, "incumbent": incumbent}
    twins = {label: next(t for t in mixtures if same_mixture(mixtures[t], mix)) for label, mix in mixtures.items()}
    verify = plan_verification(project, ctx, {label: mixtures[label] for label in set(twins.values())}, seeds)
    train_swarm(project, verify, on_event=on_event)
    trained = measured_objective(verify, objective_fn(project, verify.table().metric_names))
    measured = {label: trained[twin] for label, twin in twins.items() if twin in trained}
    return CompareRecord(full, Verification(verify.id, seeds, measured), l1(record.mixture, full.mixture),
                         kl(record.mixture, full.mixture), incumbent)


# ---------------------------------------------------------------- verification


def plan_verification(project: Project, ctx: UpdateContext, mixtures: dict[str, dict[str, float]], seeds: int) -> SwarmDir:
    """A swarm of verification runs: each labelled leaf mixture trained with `seeds` seeds (no groups)."""
    scale, data = _run_inputs(project, ctx)
    leaves = ctx.leaves
    labels = sorted(mixtures)
    weights = np.array([[mixtures[label].get(x, 0.0) for x in leaves] for label in labels])
    sid = _spec_id({"verify": weights.round(8).tolist(), "labels": labels, "seeds": seeds,
                    "proxy": dataclasses.asdict(scale), "data": dataclasses.asdict(data)})
    base = scale.seed
    runs = [f"{sid}-{i:02d}-s{base + s}" for i in range(len(labels)) for s in range(seeds)]
    spec = _trained_spec(ctx, "verify", "verify", scale, data, leaves, runs, labels=labels)
    return _create_trained_swarm(project, sid, spec, np.repeat(weights, seeds, axis=0),
                                 [base + s for _ in labels for s in range(seeds)], [x for x in labels for _ in range(seeds)])


def measured_objective(swarm: SwarmDir, objective) -> dict[str, Measured]:
    """Per label of a verification swarm: the objective of each seed's run (by seed), their mean and spread (std)."""
    out: dict[str, Measured] = {}
    for label in swarm.spec.labels:
        runs = sorted((s.seed, objective(s.metrics)) for s in swarm.statuses() if s.state == "done" and s.label == label)
        values = [v for _, v in runs]
        if values:
            out[label] = Measured(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                  values, [seed for seed, _ in runs])
    return out


# ---------------------------------------------------------------- import, predict, export, diff


def import_swarm(project: Project, ratios_csv, metrics_csv, name: str | None = None, prior_csv=None,
                 tokens_csv=None) -> SwarmDir:
    """Store swarm results trained elsewhere as a finished swarm (Olmix or RegMix CSV layout): its
    spec and its table, checked on the way in; run ids stay values in the table, never paths. With
    the prior (`prior_csv`: domain,weight lines) and the domains' available training tokens
    (`tokens_csv`: domain,tokens lines, which also give the prior when `prior_csv` is not given)."""
    if name is not None:
        check_name(name, "--name", "swarm")
    table = read_tables(ratios_csv, metrics_csv)
    tokens = read_domain_values(tokens_csv, table.domains, "tokens") if tokens_csv is not None else {}
    given = read_domain_values(prior_csv, table.domains, "weight") if prior_csv is not None else tokens
    prior = {d: v / sum(given.values()) for d, v in given.items()}
    digest = hashlib.sha256()
    for array in (table.ratios, table.metrics):
        digest.update(np.ascontiguousarray(array.round(10), dtype="<f8").tobytes())
    digest.update(dumps_json([table.run_ids, table.domains, table.metric_names], indent=None).encode())
    sid = name or digest.hexdigest()[:12]
    folder = project.swarms_dir / sid
    if (folder / "swarm.toml").exists():
        raise OlmixError(f"a swarm named '{sid}' exists already; pick another --name.")
    spec = SwarmSpec(purpose="import", plan="import", units=list(table.domains), prior=prior,
                     source=ImportSource(str(ratios_csv), str(metrics_csv)), tokens=tokens)
    with project.lock():
        for left in project.swarms_dir.glob(".*.importing"):  # what killed imports left behind
            shutil.rmtree(left, ignore_errors=True)
        staging = project.swarms_dir / f".{sid}.importing"
        SwarmDir.create_imported(staging, spec, table, owner_alive)
        os.replace(staging, folder)  # the swarm appears whole or not at all
    return open_swarm(project, sid)


def predict_mixtures(fit: FitResult, mixtures_csv, out_csv=None) -> MixtureTable:
    """Predicted metrics of candidate mixtures (columns matched to the fit's domains by name)."""
    candidates = read_tables(mixtures_csv)
    missing = [d for d in fit.domains if d not in candidates.domains]
    extra = [d for d in candidates.domains if d not in fit.domains]
    if missing or extra:
        raise OlmixError(f"{mixtures_csv} has domains that do not match the fit's: missing {missing or '-'}, "
                         f"unknown {extra or '-'}; give one column per fit domain ({', '.join(fit.domains)}).")
    X = candidates.ratios[:, [candidates.domains.index(d) for d in fit.domains]]
    table = MixtureTable(candidates.run_ids, fit.domains, X, fit.metric_names, fit.model.predict(X))
    if out_csv is not None:  # the user's file: a symlink, a FIFO or /dev/stdout is written through, not replaced
        write_output(out_csv, dumps_csv(["run", *table.metric_names],
                                        ([r, *map(float, row)] for r, row in zip(table.run_ids, table.metrics))))
    return table


def export_current(project: Project, fmt: str) -> str:
    entries = read_history(project)
    if not entries:
        raise OlmixError(f"the project has no mixture yet; run `olmix-tui {project.root} --batch` first.")
    last = entries[-1]
    tokens = {n: t.train_tokens for n, t in project.cached_tokens().items() if t is not None}
    sources = {d.name: list(d.sources) for d in project.domains}
    p = project.settings.propose
    return export_mixture(fmt, last.mixture, last.label, sources, tokens, p.target_tokens, p.repetition_factor)


def _entry(entries: list[HistoryEntry], key: str) -> HistoryEntry:
    for e in entries:
        if key in (e.label, str(e.number), f"{e.number:04d}"):
            return e
    raise OlmixError(f"no history entry '{key}'; entries are {', '.join(e.label for e in entries) or '(none)'}.")


def _side(label: str, record: UpdateRecord, measured: Measured | None = None) -> MixtureSide:
    return MixtureSide(label, record.mixture, record.compute, record.predicted, measured, record.plan.kind,
                       record.evidence)


def diff_entries(project: Project, a: str | None, b: str | None) -> Comparison:
    """Compare two history entries; or one entry (default: the last) with its full recomputation
    when the update was compared (`--compare`), else with the entry before it."""
    entries = read_history(project)
    if not entries:
        raise OlmixError(f"the project has no history yet; run `olmix-tui {project.root} --batch` first.")
    if b is not None:
        if a is None:
            raise OlmixError("give two history entries (e.g. `diff DIR 1 2`), one, or none.")
        ea, eb = _entry(entries, a), _entry(entries, b)
    else:
        entry = entries[-1] if a is None else _entry(entries, a)
        compared = entry.content.compare
        if compared is not None:
            measured = compared.verification.measured
            return compare(_side(f"{entry.label} ({entry.content.plan.kind})", entry.content, measured.get("chosen")),
                           _side(f"{entry.label} (full)", compared.full, measured.get("full")))
        at = entries.index(entry)
        if at == 0:
            raise OlmixError(f"{entry.label} is the first entry and was not compared with a full recomputation; "
                             "name two entries (e.g. `diff DIR 1 2`).")
        ea, eb = entries[at - 1], entry
    return compare(_side(ea.label, ea.content), _side(eb.label, eb.content), _partitions_between(entries, ea, eb))


def _partitions_between(entries: list[HistoryEntry], a: HistoryEntry, b: HistoryEntry) -> dict[str, list[str]]:
    """Every partition the updates after the earlier entry up to the later one applied (parent -> parts)."""
    first, last = sorted((entries.index(a), entries.index(b)))
    out: dict[str, list[str]] = {}
    for entry in entries[first + 1:last + 1]:
        out.update(entry.content.plan.affected.partitioned)
    return out
