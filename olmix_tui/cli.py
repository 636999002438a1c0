"""The olmix-tui command line: every step of the mixing loop, headless, scriptable with --json.

Exit codes: 0 success, 1 a problem with the project or its data (one sentence on stderr saying
what to fix), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer

from engine.atomic import write_output
from engine.domains import Change, parse_parts
from engine.errors import OlmixError, storage_error
from engine import pipeline
from engine.executors import jobs
from engine.executors.stop import run_owners, stop as stop_jobs
from engine.export import FORMATS as EXPORT_FORMATS
from engine.history import read_history
from engine.project import Project
from engine.status import project_status
from olmix_tui import render
from olmix_tui.render import console, count, err_console, pct, print_json, styled, table

app = typer.Typer(
    name="olmix-tui",
    help=(
        "Choose the data mixture of an LM's pretraining corpus (RegMix + Olmix) and keep it right "
        "as the domain set changes.\n\n"
        "Quick start:  olmix-tui demo --sample stdlib  (the app; add --batch to run headless)"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
swarm_app = typer.Typer(help="Plan a swarm of proxy runs for the update, train it, and watch it.", no_args_is_help=True)
domains_app = typer.Typer(help="List the domains and stage a domain-set update (add, remove, partition, revise).",
                          no_args_is_help=True)
app.add_typer(domains_app, name="domains")
app.add_typer(swarm_app, name="swarm")

DirArg = typer.Argument(..., help="The project folder.", show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
BreakLockOpt = typer.Option(False, "--break-lock", help="First break the project's lock (for swarm run, the swarm's "
                            "too) if a process that is gone, or runs on a machine that is gone, holds it; says what it broke.")


class Stopped(KeyboardInterrupt):
    """SIGTERM (`olmix-tui stop`, a scheduler): unwinds like Ctrl-C, so that locks and job records are released."""


def _stopped(signum, frame) -> None:
    raise Stopped()


def user_errors(fn: Callable) -> Callable:
    """Turn an OlmixError, or a failed write (a full disk, a read-only project), into one line on
    stderr and exit code 1 (no traceback); Ctrl-C and SIGTERM into a line saying what was kept."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OlmixError, OSError) as err:
            problem = storage_error(err) if isinstance(err, OSError) else err
            if problem is None:
                raise
            err_console.print(styled(("error:", "bold red"), f" {problem}"), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Stopped:
            err_console.print(styled(("stopped", "yellow"), ": finished work is saved; run the command again to resume."))
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            err_console.print(styled(("interrupted", "yellow"), ": finished work is saved; run the command again to resume."))
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def workers_told(project: Project) -> Iterator[None]:
    """On Ctrl-C, say which workers of the project go on training and how to stop them (or that Ray stops
    this command's tasks with it), then let the interrupt end the command."""
    try:
        yield
    except Stopped:
        raise
    except KeyboardInterrupt:
        me = f"{os.getpid()}@{socket.gethostname()}"
        owners = run_owners((s.id, s.statuses()) for s in pipeline.project_swarms(project))
        going = [o for o in owners if o.ident != me]
        if len(going) < len(owners):
            err_console.print("Ray stops this command's tasks as it exits: their runs count as interrupted.")
        if going:
            swarms = sorted({o.swarm for o in going})
            err_console.print("These go on training: " + "; ".join(o.describe() for o in going) + ".")
            only = f" --swarm {swarms[0]}" if len(swarms) == 1 else ""
            err_console.print(f"Stop them with `olmix-tui stop {project.root}{only}`; "
                              f"`olmix-tui swarm run {project.root} --swarm {swarms[0]}` re-attaches.")
        raise


def load(directory: Path, break_lock: bool = False) -> Project:
    """The project at `directory`; with `break_lock`, its lock broken first if its holder is gone."""
    project = Project.load(directory)
    if break_lock:
        _say_broken(project.break_lock())
    return project


def _say_broken(sentence: str) -> None:
    err_console.print(styled(("warning:", "yellow"), f" {sentence}."), highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- init / status


@app.command()
@user_errors
def init(
    directory: Path = DirArg,
    sample: Optional[str] = typer.Option(None, "--sample", help="Create a ready sample project (e.g. 'stdlib')."),
):
    """Create a project folder: olmix.toml, domains.toml, history/, .gitignore.

    Example: [bold]olmix-tui init demo --sample stdlib[/]
    """
    from engine import samples

    project = samples.create(directory, sample) if sample else Project.init(directory)
    console.print(styled("created project ", (project.settings.project.name, "bold"),
                         f" in {project.root} with {len(project.domains)} domains"))
    if project.pending:
        console.print(f"staged update: {'; '.join(c.describe() for c in project.pending)} (the sample's domain-set update; "
                      f"`olmix-tui {directory} --batch` computes the first mixture, then applies it; "
                      f"`olmix-tui domains discard {directory}` drops it)")
    if not len(project.domains):
        console.print(f"next: olmix-tui domains add {directory} NAME 'data/*.jsonl'")


@app.command()
@user_errors
def status(directory: Path = DirArg, as_json: bool = JsonOpt):
    """Domains with token counts and prior weight, the current mixture, and the pending update.

    Example: [bold]olmix-tui status demo --json[/]
    """
    info = project_status(Project.load(directory))
    if as_json:
        print_json(info.to_json())
        return
    has_mix = info.current_mixture is not None
    cols = ["domain", "train tokens", "val tokens", "bytes/token", "prior"] + (["current"] if has_mix else [])
    rows = [[d.name, count(d.train_tokens), count(d.val_tokens),
             None if d.bytes_per_token is None else f"{d.bytes_per_token:.2f}", pct(d.prior)]
            + ([pct(d.weight)] if has_mix else []) for d in info.domains]
    console.print(table(f"project {info.project} ({info.root})", cols, rows))
    if not info.tokenized:
        console.print(styled("not tokenized yet: run ", (f"olmix-tui tokenize {directory}", "bold")))
    console.print(f"history: {info.history_entries} entries" + (f", current mixture from {info.last_entry}" if has_mix else ", no mixture yet"))
    if info.pending:
        p = info.pending
        console.print("pending update: " + "; ".join(p.changes))
        console.print(f"  affected: {', '.join(p.affected) or '-'}   removed: {', '.join(p.removed) or '-'}   "
                      f"unaffected: {len(p.unaffected)} domains")


# ---------------------------------------------------------------- domains


@domains_app.command("list")
@user_errors
def domains_list(directory: Path = DirArg,
                 staged: bool = typer.Option(False, "--staged", help="Show the domain set after the pending update."),
                 as_json: bool = JsonOpt):
    """The domains (current, or after the pending update with --staged).

    Example: [bold]olmix-tui domains list demo --staged[/]
    """
    project = Project.load(directory)
    domains = project.staged_domains() if staged else project.domains
    if as_json:
        print_json([{"name": d.name, **d.to_toml()} for d in domains])
        return
    console.print(table("domains" + (" (staged)" if staged else ""), ["domain", "sources", "revision", "parent"],
                        [[d.name, ", ".join(d.sources), d.revision, d.parent or ""] for d in domains], justify_numbers=False))


def _stage(directory: Path, change: Change, break_lock: bool) -> None:
    project = load(directory, break_lock)
    project.stage(change)
    affected = project.affected()
    console.print(f"staged: {change.describe()}  ({len(project.pending)} change(s) pending)")
    console.print(f"affected: {', '.join(affected.affected) or '-'}; removed: {', '.join(affected.removed) or '-'}; "
                  f"unaffected: {len(affected.unaffected)}")


@domains_app.command("add")
@user_errors
def domains_add(
    directory: Path = DirArg,
    name: str = typer.Argument(..., help="New domain name, e.g. 'web:news'."),
    sources: List[str] = typer.Argument(..., help="Files or globs, relative to the project folder."),
    fmt: str = typer.Option("auto", "--format", help="auto (by extension) | jsonl | text | tokens."),
    text_field: str = typer.Option("text", "--text-field", help="JSON-lines field holding the text."),
    break_lock: bool = BreakLockOpt,
):
    """Stage adding a domain.

    Example: [bold]olmix-tui domains add demo web:news 'data/news/*.jsonl'[/]
    """
    _stage(directory, Change("add", name, sources=tuple(sources), format=fmt, text_field=text_field), break_lock)


@domains_app.command("remove")
@user_errors
def domains_remove(directory: Path = DirArg, name: str = typer.Argument(..., help="Domain to remove."),
                   break_lock: bool = BreakLockOpt):
    """Stage removing a domain.

    Example: [bold]olmix-tui domains remove demo data:markup[/]
    """
    _stage(directory, Change("remove", name), break_lock)


@domains_app.command("revise")
@user_errors
def domains_revise(
    directory: Path = DirArg,
    name: str = typer.Argument(..., help="Domain whose data changed."),
    sources: Optional[List[str]] = typer.Argument(None, help="New files or globs (default: same paths, new content)."),
    break_lock: bool = BreakLockOpt,
):
    """Stage a revision: the domain points at new data (its revision is the content hash).

    Example: [bold]olmix-tui domains revise demo prose:docs 'data/docs-v2/*.jsonl'[/]
    """
    _stage(directory, Change("revise", name, sources=tuple(sources or ())), break_lock)


@domains_app.command("partition")
@user_errors
def domains_partition(
    directory: Path = DirArg,
    name: str = typer.Argument(..., help="Domain to split."),
    parts: List[str] = typer.Option(..., "--part", help="NAME=FILE_OR_GLOB[,FILE_OR_GLOB...]; repeat per part."),
    break_lock: bool = BreakLockOpt,
):
    """Stage splitting a domain into named parts that cover its files exactly.

    Example: [bold]olmix-tui domains partition demo code:stdlib --part code:net='data/code/http.jsonl,data/code/email.jsonl' --part code:rest='data/code/[!eh]*.jsonl,data/code/encodings.jsonl,data/code/html.jsonl'[/]
    """
    try:
        spec = parse_parts(parts)
    except OlmixError as err:
        raise typer.BadParameter(str(err)) from None
    _stage(directory, Change("partition", name, parts=spec), break_lock)


@domains_app.command("discard")
@user_errors
def domains_discard(directory: Path = DirArg, break_lock: bool = BreakLockOpt):
    """Drop the pending update.

    Example: [bold]olmix-tui domains discard demo[/]
    """
    load(directory, break_lock).discard_pending()
    console.print("pending update discarded")


# ---------------------------------------------------------------- data


@app.command()
@user_errors
def tokenize(directory: Path = DirArg, as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Train the project tokenizer if needed and tokenize every domain (cached by content).

    Example: [bold]olmix-tui tokenize demo[/]
    """
    project = load(directory, break_lock)
    with jobs.job(project.root, "tokenize", "tokenizing the domains"), render.progress(quiet=as_json) as on_event:
        tokens = project.tokens(on_event=on_event)
    rows = {n: {"train_tokens": t.train_tokens, "val_tokens": t.val_tokens, "train_bytes": t.train_bytes,
                "bytes_per_token": t.bytes_per_token} for n, t in tokens.items()}
    if as_json:
        print_json(rows)
    else:
        console.print(table("token store", ["domain", "train tokens", "val tokens", "bytes/token"],
                            [[n, count(r["train_tokens"]), count(r["val_tokens"]), f"{r['bytes_per_token']:.2f}"] for n, r in rows.items()]))



# ---------------------------------------------------------------- swarms

PlanOpt = typer.Option(None, "--plan", help="full | full_reuse | partial_reuse (default: [reuse] plan in olmix.toml).")
UnfreezeOpt = typer.Option(None, "--unfreeze", help="partial_reuse: an unaffected domain to vary too; repeat.")
SwarmOpt = typer.Option(None, "--swarm", help="Swarm id or prefix (default: the latest planned swarm).")
FitOpt = typer.Option(None, "--fit", help="Fit id or prefix (default: the swarm's latest fit; none yet: a new fit).")


def _plan_and_sample(project, plan_kind, unfreeze, on_event):
    ctx = pipeline.plan_context(project, on_event)
    plan = pipeline.make_plan(project, ctx, plan_kind, unfreeze)
    costs = pipeline.plan_costs(project, ctx)
    swarm_dir, swarm = pipeline.plan_swarm(project, ctx, plan)
    return plan, costs, swarm_dir, swarm


def _print_costs(costs: dict, chosen: str) -> None:
    rows = [[("* " if k == chosen else "  ") + k, c["plan"], str(c["units"]), str(c["runs"]), count(c["tokens"]),
             f"{c['flops']:.3g}", pct(c["saving"])] for k, c in costs.items()]
    console.print(table("cost of each plan", ["plan", "planned as", "units", "runs", "tokens", "FLOPs", "saving"], rows))


@swarm_app.command("plan")
@user_errors
def swarm_plan(directory: Path = DirArg, plan: Optional[str] = PlanOpt, unfreeze: Optional[List[str]] = UnfreezeOpt,
               as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Sample the swarm for the pending update (or the first mixture) and show it before any training.

    Example: [bold]olmix-tui swarm plan demo --plan full_reuse[/]
    """
    project = load(directory, break_lock)
    with jobs.job(project.root, "plan", "planning a swarm"), render.progress(quiet=as_json) as on_event:
        update_plan, costs, swarm_dir, swarm = _plan_and_sample(project, plan, unfreeze, on_event)
    if as_json:
        print_json({"swarm": swarm_dir.id, "plan": dataclasses.asdict(update_plan.record()), "costs": costs, "units": swarm.units,
                    "mixtures": {r: dict(zip(swarm.units, w)) for r, w in zip(swarm_dir.run_ids, swarm.unit_weights.tolist())}})
        return
    console.print(update_plan.describe())
    _print_costs(costs, update_plan.kind)
    console.print(table(f"swarm {swarm_dir.id}: {len(swarm)} mixtures over {len(swarm.units)} units",
                        ["run", *swarm.units], [[r, *[f"{w:.3f}" for w in ws]] for r, ws in zip(swarm_dir.run_ids, swarm.unit_weights)]))
    console.print(render.stacked_bars(swarm.unit_weights, swarm.units, "mixture of each run"))
    console.print(f"next: olmix-tui swarm run {directory} --swarm {swarm_dir.id}")


@swarm_app.command("run")
@user_errors
def swarm_run(directory: Path = DirArg, swarm_id: Optional[str] = SwarmOpt,
              retry_failed: bool = typer.Option(False, "--retry-failed", help="Train failed runs again."),
              plan: Optional[str] = PlanOpt, unfreeze: Optional[List[str]] = UnfreezeOpt, as_json: bool = JsonOpt,
              break_lock: bool = BreakLockOpt):
    """Train a swarm's unfinished runs (planning it first if needed); resumable and idempotent.

    Where is olmix.toml's \\[executor]: worker processes here, Slurm jobs or Ray tasks.

    Local workers and Slurm jobs keep training if this command is interrupted (it names them, and
    `olmix-tui stop DIR --swarm ID` stops them); Ray stops its tasks with it. Run it again (or
    `swarm status`) to re-attach.

    Example: [bold]olmix-tui swarm run demo[/]
    """
    project = load(directory, break_lock)
    with jobs.job(project.root, "train", "training a swarm") as job, workers_told(project), \
            render.progress(quiet=as_json) as on_event:
        if swarm_id is None:
            _, _, swarm_dir, _ = _plan_and_sample(project, plan, unfreeze, on_event)
        else:
            swarm_dir = pipeline.find_swarm(project, swarm_id)
        job.note(label=f"training swarm {swarm_dir.id}" + (" (retrying failed runs)" if retry_failed else ""))
        if break_lock:
            _say_broken(project.break_lock(swarm_dir.id))
        counts = pipeline.train_swarm(project, swarm_dir, retry_failed, on_event)
    render.show_swarm(swarm_dir, as_json)
    if counts["failed"]:
        raise OlmixError(f"{counts['failed']} run(s) failed (see the error column); fix the cause and run "
                         f"`olmix-tui swarm run {directory} --swarm {swarm_dir.id} --retry-failed`.")


@swarm_app.command("status")
@user_errors
def swarm_status(directory: Path = DirArg, swarm_id: Optional[str] = SwarmOpt, as_json: bool = JsonOpt,
                 timing: bool = typer.Option(False, "--timing", help="Where the workers' time went, phase by phase.")):
    """Runs of a swarm: state, progress, mixture and final metrics (read from the run files), the
    share of its workers' time that was not training steps, and the verdict of each of its fits.

    Example: [bold]olmix-tui swarm status demo --timing[/]
    """
    project = Project.load(directory)
    render.show_swarm(pipeline.find_swarm(project, swarm_id), as_json, timing, project)


@app.command()
@user_errors
def watch(directory: Path = DirArg):
    """The app, opened on its Swarms tab: runs, progress, loss, mixtures and curves, read live from the run files.

    Train the highlighted swarm from here (t; f also retries failed runs) or with `olmix-tui swarm run`
    in another terminal. Quit (q) at any time: training goes on in its own processes, and watching
    again re-attaches. In scripts, use `olmix-tui swarm status DIR --json` instead.

    Example: [bold]olmix-tui watch demo[/]
    """
    project = Project.load(directory)
    require_terminal(directory)
    open_app(project, "swarms", ())


def require_terminal(directory: Path) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise OlmixError(f"the app needs an interactive terminal; in scripts add --batch, or use "
                         f"`olmix-tui swarm status {directory} --json`.")


def open_app(project: Project, tab: str, apply_args: tuple[str, ...]) -> None:
    """Run the Textual app on `project`, opened on `tab`; `apply_args` go with `--batch` when it applies the update."""
    from olmix_tui.app import MixingApp

    MixingApp(project, tab, apply_args).run()


# ---------------------------------------------------------------- fit, propose, predict, import


@app.command("import-swarm")
@user_errors
def import_swarm(directory: Path = DirArg,
                 ratios: Path = typer.Option(..., "--ratios", help="Mixtures CSV (Olmix or RegMix layout)."),
                 metrics: Path = typer.Option(..., "--metrics", help="Metrics CSV joined on the run id."),
                 name: Optional[str] = typer.Option(None, "--name", help="Swarm id (default: a content hash)."),
                 prior: Optional[Path] = typer.Option(None, "--prior", help="CSV of domain,weight lines: the prior the KL "
                                                      "term pulls towards (default: the token shares of --tokens, else the swarm's mean)."),
                 tokens: Optional[Path] = typer.Option(None, "--tokens", help="CSV of domain,tokens lines: each domain's "
                                                       "available training tokens, for the repetition caps (and the prior)."),
                 as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Import swarm results trained elsewhere (Olmix's ratios.csv/metrics.csv or RegMix's CSVs).

    Example: [bold]olmix-tui import-swarm demo --ratios train_mixture_1m.csv --metrics train_pile_loss_1m.csv --tokens regmix_tokens.csv --name regmix[/]
    """
    project = load(directory, break_lock)
    swarm_dir = pipeline.import_swarm(project, ratios, metrics, name, prior, tokens)
    table = swarm_dir.table()
    caveats = pipeline.proposal_caveats(swarm_dir, project.settings.propose, project.settings.objective)
    if as_json:
        print_json({"swarm": swarm_dir.id, "runs": table.n_runs, "domains": table.domains, "metrics": table.metric_names,
                    "prior": swarm_dir.spec.prior, "tokens": swarm_dir.spec.tokens, "caveats": caveats})
        return
    console.print(styled("imported swarm ", (swarm_dir.id, "bold"),
                         f": {table.n_runs} runs, {len(table.domains)} domains, {len(table.metric_names)} metrics"))
    source = "--prior" if prior else "the token shares of --tokens" if tokens else ""
    if source:
        console.print(f"prior: {source}" + ("; repetition caps from --tokens" if tokens else ""))
    for text in caveats:
        console.print(styled(("note:", "yellow"), f" {text}"))
    console.print(f"next: olmix-tui fit {directory} --swarm {swarm_dir.id}")


@app.command()
@user_errors
def fit(directory: Path = DirArg, swarm_id: Optional[str] = SwarmOpt,
        regressor: Optional[str] = typer.Option(None, "--regressor", help="loglinear | lightgbm | ridge | gp | powerlaw | ensemble | auto."),
        as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Fit a regression from mixtures to metrics on a swarm's finished runs; prints the cross-validation table and the fit's verdict (usable, weak or unusable for proposing; docs/verdicts.md).

    Example: [bold]olmix-tui fit demo --regressor auto[/]
    """
    project = load(directory, break_lock)
    swarm_dir = pipeline.find_swarm(project, swarm_id)
    label = f"fitting {regressor or project.settings.regression.regressor} on swarm {swarm_dir.id}"
    with jobs.job(project.root, "fit", label, swarm_dir.id), render.progress(quiet=as_json) as on_event:
        result = pipeline.fit_swarm(project, swarm_dir, regressor, on_event)
    cv = result.cv
    if as_json:
        print_json({"fit": result.fit_id, "regressor": result.regressor, "chosen": result.chosen, "reused": result.reused,
                    "swarm": swarm_dir.id, "cv": {"means": cv.means(), "per_metric": {
                        m: {"spearman": float(a), "r2": float(b), "mae": float(c)}
                        for m, a, b, c in zip(result.metric_names, cv.spearman, cv.r2, cv.mae)}},
                    "verdict": dataclasses.asdict(result.verdict)})
        return
    rows = [[m, float(a), float(b), float(c)] for m, a, b, c in zip(result.metric_names, cv.spearman, cv.r2, cv.mae)]
    rows.append(["mean", cv.mean_spearman, cv.mean_r2, cv.mean_mae])
    console.print(table(f"fit {result.fit_id}: {result.chosen} on swarm {swarm_dir.id} ({cv.folds}-fold CV)"
                        + (" [reused]" if result.reused else ""), ["metric", "spearman x100", "R^2", "MAE"], rows))
    plot = render.predicted_vs_true(project, result, swarm_dir)
    console.print(plot)
    for line in render.verdict_lines(result.verdict):
        console.print(line)
    console.print(f"next: olmix-tui propose {directory} --fit {result.fit_id}")


ForceOpt = typer.Option(False, "--force", help="Propose even from an unusable fit (recorded as forced) instead of falling back.")


@app.command()
@user_errors
def propose(directory: Path = DirArg, swarm_id: Optional[str] = SwarmOpt, fit_id: Optional[str] = FitOpt,
            proposer: Optional[str] = typer.Option(None, "--proposer", help="exact | simulation | search."),
            bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Bootstrap replicates for the intervals "
                                                    "(default: \\[propose] bootstrap; 0 = none)."),
            force: bool = ForceOpt, as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Propose the mixture a fit predicts best, under repetition caps and KL to the prior, with the fit's verdict and the proposal's bootstrap intervals.

    On an unusable fit it proposes nothing: it shows the fallback (the incumbent mixture, or for a first mixture the natural distribution) and what would fix the fit; --force proposes anyway.

    The fit is --fit, else the swarm's latest (a fit that is not log-linear proposes with the
    simulation proposer, and says so). Example: [bold]olmix-tui propose demo --proposer exact[/]
    """
    project = load(directory, break_lock)
    settings = project.settings.propose
    if proposer:
        settings = dataclasses.replace(settings, proposer=proposer)
    if bootstrap is not None:
        settings = dataclasses.replace(settings, bootstrap=bootstrap)
    with render.progress(quiet=as_json) as on_event:
        preview = pipeline.propose_with_fit(project, swarm_id, settings, fit_id, force, on_event)
    proposal, prior, result, evidence = preview.proposal, preview.prior, preview.fit, preview.evidence
    if as_json:
        print_json({"swarm": preview.swarm, "fit": result.fit_id, "note": preview.note, "mixture": preview.mixture, "prior": prior,
                    "evidence": dataclasses.asdict(evidence),
                    **({} if proposal is None else {
                        "proposer": proposal.proposer, "predicted_objective": proposal.predicted_objective,
                        "predicted_metrics": proposal.predicted_metrics, "kl": proposal.kl,
                        "binding_caps": proposal.binding_caps, "kkt_residual": proposal.kkt_residual})})
        return
    mix = preview.mixture
    if preview.note:
        console.print(styled(("note:", "yellow"), f" {preview.note.strip()}"))
    domains = list(mix)
    what = f"{proposal.proposer} proposal" if proposal is not None else f"fallback ({evidence.fallback})"
    if evidence.spread is not None:
        console.print(render.spread_table(f"{what} from fit {result.fit_id}", domains, mix, prior, evidence.spread))
        console.print(render.spread_line(evidence.spread))
    else:
        rows = [[d, pct(prior.get(d)), pct(mix[d]), "cap" if proposal and d in proposal.binding_caps else ""] for d in domains]
        console.print(table(f"{what} from fit {result.fit_id}", ["domain", "prior", "mixture", "binding"], rows))
    if proposal is not None:
        plot_file = result.folder / "plots" / f"proposed_vs_prior-{proposal.proposer}"
        console.print(render.bars_vs(domains, [prior.get(d, 0.0) for d in domains], [mix[d] for d in domains], "prior",
                                     "proposed", save_as=(project, plot_file)))
        line = f"predicted objective {proposal.predicted_objective:.4f}   KL(proposed || prior) {proposal.kl:.4f}"
        if proposal.kkt_residual is not None:
            line += f"   KKT residual {proposal.kkt_residual:.2e}"
        console.print(line)
        console.print(f"plots saved under {result.folder / 'plots'}")
    for line in render.evidence_lines(evidence, warnings=False):  # the warnings were shown as the proposal was made
        console.print(line)


@app.command()
@user_errors
def predict(directory: Path = DirArg,
            mixtures: Path = typer.Option(..., "--mixtures", help="Candidate mixtures CSV (Olmix or RegMix layout)."),
            out: Optional[Path] = typer.Option(None, "--out", help="Write the predictions to this CSV (or a FIFO, /dev/stdout...)."),
            swarm_id: Optional[str] = SwarmOpt, fit_id: Optional[str] = FitOpt, as_json: bool = JsonOpt, break_lock: bool = BreakLockOpt):
    """Predicted metrics for candidate mixtures, one column per metric, in input order.

    The fit is --fit, else the swarm's latest. Example: [bold]olmix-tui predict demo --mixtures candidates.csv --out predicted.csv[/]
    """
    project = load(directory, break_lock)
    with render.progress(quiet=as_json) as on_event:
        _, result = pipeline.chosen_fit(project, swarm_id, fit_id, on_event=on_event)
    table = pipeline.predict_mixtures(result, mixtures, out)
    if as_json:
        print_json({"fit": result.fit_id, "predictions": {r: dict(zip(table.metric_names, map(float, row)))
                                                          for r, row in zip(table.run_ids, table.metrics)}})
        return
    shown = table.metric_names[:6]
    console.print(table_view(table, shown, result))
    if out:
        console.print(f"wrote {out}")


def table_view(t, shown, fit):
    cols = [t.metric_names.index(m) for m in shown]
    return table(f"predicted by fit {fit.fit_id} ({fit.chosen})" + (f" (first {len(shown)} of {len(t.metric_names)} metrics)"
                                                 if len(shown) < len(t.metric_names) else ""),
                 ["run", *shown], [[r, *[float(row[c]) for c in cols]] for r, row in zip(t.run_ids, t.metrics)])


# ---------------------------------------------------------------- history, export, diff


@app.command()
@user_errors
def history(directory: Path = DirArg, as_json: bool = JsonOpt):
    """The mixture history: one entry per applied update, the current mixture last.

    Example: [bold]olmix-tui history demo --json[/]
    """
    entries = read_history(Project.load(directory))
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    console.print(table("history", render.HISTORY_COLUMNS, render.history_rows(entries), justify_numbers=False))


ExportFormat = enum.Enum("ExportFormat", {name: name for name in EXPORT_FORMATS}, type=str)
"""The formats `export` writes (a usage error names them)."""


@app.command()
@user_errors
def export(directory: Path = DirArg,
           fmt: ExportFormat = typer.Option("json", "--format", help="The file format."),
           out: Optional[Path] = typer.Option(None, "--out", help="Write to this file (or a FIFO, /dev/stdout...) instead of stdout.")):
    """The current mixture as JSON, an OLMo-core style source mix, or a RegMix style YAML.

    Example: [bold]olmix-tui export demo --format olmo --out mix.yaml[/]
    """
    text = pipeline.export_current(Project.load(directory), fmt.value)
    if out:
        write_output(out, text)
        err_console.print(f"wrote {out}")
    else:
        sys.stdout.write(text)


@app.command()
@user_errors
def diff(directory: Path = DirArg,
         a: Optional[str] = typer.Argument(None, help="History entry (number or label); default: the last."),
         b: Optional[str] = typer.Argument(None, help="History entry to compare A with; default: A's full recomputation."),
         as_json: bool = JsonOpt):
    """Two mixtures side by side: weights, L1, KL, compute, predicted and measured objective.

    Across a partition, the parts are added up under the domain they were split from. With one entry (default: the last): its mixture against its full recomputation when the update
    ran with --compare, else against the entry before it. Example: [bold]olmix-tui diff demo 1 2[/]
    """
    result = pipeline.diff_entries(Project.load(directory), a, b)
    if as_json:
        print_json(result.to_json())
        return
    ra, rb = result.a, result.b
    console.print(table(f"{ra.label}  vs  {rb.label}", ["domain", ra.label, rb.label, "diff"],
                        [[x.domain, pct(x.a), pct(x.b), f"{100 * x.diff:+.2f}%"] for x in result.leaves]))
    for parent, parts in result.parts.items():
        console.print(f"{parent}: {' + '.join(parts)} added up (partitioned between the two)")
    console.print(f"L1 {result.l1:.4f}   KL(a||b) {result.kl_ab:.4f}   KL(b||a) {result.kl_ba:.4f}")
    rows = []
    for r in (ra, rb):
        m = r.measured
        rows.append([r.label, str(r.compute.runs), f"{r.compute.flops:.3g}",
                     None if r.predicted is None else f"{r.predicted:.4f}",
                     f"{m.mean:.4f} ± {m.std:.4f} (n={len(m.values)})" if m else "-"])
    console.print(table("compute and objective", ["mixture", "runs", "FLOPs", "predicted", "measured (mean ± std)"], rows))
    for r in (ra, rb):
        if r.evidence is not None:
            console.print(f"{r.label}:")
            for line in render.evidence_lines(r.evidence, "  "):
                console.print(line)

# ---------------------------------------------------------------- the main job


@app.command()
@user_errors
def run(
    directory: Path = DirArg,
    batch: bool = typer.Option(False, "--batch", help="Run the whole pipeline headless (without it: the app)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Create DIR from this sample project first if it does not exist."),
    compare: bool = typer.Option(False, "--compare", help="Also recompute the pending update in full and check both mixtures on verification proxies."),
    seeds: int = typer.Option(3, "--seeds", min=1, max=100, help="Verification proxies per mixture (seed repeats) with --compare."),
    plan: Optional[str] = PlanOpt, unfreeze: Optional[List[str]] = UnfreezeOpt,
    force: bool = ForceOpt,
    as_json: bool = JsonOpt,
    break_lock: bool = BreakLockOpt,
):
    """Run the mixing pipeline on a project (`olmix-tui DIR` is the same): with --batch headless, else in the app.

    The pipeline computes the first mixture if the project has none (full swarm, fit, propose), then applies the pending domain-set update with the configured plan (reuse by default), each written to history/ with its fit's verdict.

    An unusable fit proposes nothing: the update keeps the incumbent mixture (a first mixture takes the natural distribution) and the report says what would fix the fit; --force proposes anyway.

    The app opens on its Domains tab: stage changes there and apply them (u), which runs this command with --batch (and --compare/--seeds/--force as given here) in the background.

    Example: [bold]olmix-tui run demo --sample stdlib --batch --compare[/]
    """
    from engine import samples

    if not batch:
        require_terminal(directory)
    if sample and not (directory / "olmix.toml").exists():
        samples.create(directory, sample)
    project = load(directory, break_lock)
    if not batch:
        open_app(project, "domains", (("--compare", "--seeds", str(seeds)) if compare else ()) + (("--force",) if force else ()))
        return
    label = "applying the update" if read_history(project) else "computing the first mixture" + (
        ", then applying the update" if project.pending else "")
    with jobs.job(project.root, "update", label), workers_told(project), render.progress(quiet=as_json) as on_event:
        report = pipeline.run_batch(project, compare, seeds, on_event, plan, unfreeze, force)
    if as_json:
        print_json(report.to_dict())
        return
    render.batch_report(report, project)


# ---------------------------------------------------------------- stopping


@app.command()
@user_errors
def stop(directory: Path = DirArg,
         swarm_id: Optional[str] = typer.Option(None, "--swarm", help="Only the jobs and workers of this swarm (id or prefix)."),
         as_json: bool = JsonOpt):
    """Stop what runs on the project: the update, training, fitting (their job records under .olmix/jobs/),
    and the workers training its runs (local processes, Slurm jobs, Ray tasks).

    Stopped runs count as interrupted and the next `swarm run` trains them again; finished runs are
    kept. Example: [bold]olmix-tui stop demo --swarm 41530ec8cb4f[/]
    """
    project = Project.load(directory)
    swarm = pipeline.find_swarm(project, swarm_id).id if swarm_id else None
    report = stop_jobs(project.root, swarm)
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    console.print(report.describe())


COMMANDS = {"init", "status", "domains", "tokenize", "swarm", "watch", "import-swarm", "fit", "propose", "predict",
            "history", "export", "diff", "run", "stop"}


def main() -> None:
    """Console entry point; `olmix-tui DIR ...` (no subcommand) means `olmix-tui run DIR ...`.
    SIGTERM unwinds like Ctrl-C (Stopped), releasing the lock and ending the job record."""
    signal.signal(signal.SIGTERM, _stopped)
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv = ["run", *argv]
    app(args=argv, prog_name="olmix-tui")
