"""The olmix-tui command line: every step of the mixing loop, headless, scriptable with --json.

Exit codes: 0 success, 1 a problem with the project or its data (one sentence on stderr saying
what to fix), 2 a usage error.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from engine.domains import Change
from engine.errors import OlmixError
from engine import pipeline
from engine.project import Project
from engine.status import project_status
from olmix_tui import render
from olmix_tui.render import console, count, err_console, pct, print_json, table

app = typer.Typer(
    name="olmix-tui",
    help=(
        "Choose the data mixture of an LM's pretraining corpus (RegMix + Olmix) and keep it right "
        "as the domain set changes.\n\n"
        "Quick start:  olmix-tui run demo --sample stdlib --batch"
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


def user_errors(fn: Callable) -> Callable:
    """Turn an OlmixError into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OlmixError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: finished work is saved; run the command again to resume.")
            raise typer.Exit(130) from None

    return wrapper


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
    console.print(f"created project [bold]{project.settings.project.name}[/] in {project.root} "
                  f"with {len(project.domains)} domains")
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
        print_json(info)
        return
    has_mix = info["current_mixture"] is not None
    cols = ["domain", "train tokens", "val tokens", "bytes/token", "prior"] + (["current"] if has_mix else [])
    rows = [[d["name"], count(d["train_tokens"]), count(d["val_tokens"]),
             None if d["bytes_per_token"] is None else f"{d['bytes_per_token']:.2f}", pct(d["prior"])]
            + ([pct(d["weight"])] if has_mix else []) for d in info["domains"]]
    console.print(table(f"project {info['project']} ({info['root']})", cols, rows))
    if not info["tokenized"]:
        console.print(f"not tokenized yet: run [bold]olmix-tui tokenize {directory}[/]")
    console.print(f"history: {info['history_entries']} entries" + (f", current mixture from {info['last_entry']}" if has_mix else ", no mixture yet"))
    if info["pending"]:
        p = info["pending"]
        console.print("pending update: " + "; ".join(p["changes"]))
        console.print(f"  affected: {', '.join(p['affected']) or '-'}   removed: {', '.join(p['removed']) or '-'}   "
                      f"unaffected: {len(p['unaffected'])} domains")


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


def _stage(directory: Path, change: Change) -> None:
    project = Project.load(directory)
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
):
    """Stage adding a domain.

    Example: [bold]olmix-tui domains add demo web:news 'data/news/*.jsonl'[/]
    """
    _stage(directory, Change("add", name, sources=tuple(sources), format=fmt, text_field=text_field))


@domains_app.command("remove")
@user_errors
def domains_remove(directory: Path = DirArg, name: str = typer.Argument(..., help="Domain to remove.")):
    """Stage removing a domain.

    Example: [bold]olmix-tui domains remove demo data:markup[/]
    """
    _stage(directory, Change("remove", name))


@domains_app.command("revise")
@user_errors
def domains_revise(
    directory: Path = DirArg,
    name: str = typer.Argument(..., help="Domain whose data changed."),
    sources: Optional[List[str]] = typer.Argument(None, help="New files or globs (default: same paths, new content)."),
):
    """Stage a revision: the domain points at new data (its revision is the content hash).

    Example: [bold]olmix-tui domains revise demo prose:docs 'data/docs-v2/*.jsonl'[/]
    """
    _stage(directory, Change("revise", name, sources=tuple(sources or ())))


@domains_app.command("partition")
@user_errors
def domains_partition(
    directory: Path = DirArg,
    name: str = typer.Argument(..., help="Domain to split."),
    parts: List[str] = typer.Option(..., "--part", help="NAME=FILE_OR_GLOB[,FILE_OR_GLOB...]; repeat per part."),
):
    """Stage splitting a domain into named parts that cover its files exactly.

    Example: [bold]olmix-tui domains partition demo code:stdlib --part code:net='data/code/http*.jsonl,data/code/email.jsonl' --part code:rest='data/code/[!he]*.jsonl'[/]
    """
    spec = {}
    for part in parts:
        if "=" not in part:
            raise typer.BadParameter(f"--part {part!r} must look like NAME=GLOB[,GLOB...]")
        pname, globs = part.split("=", 1)
        spec[pname.strip()] = tuple(g.strip() for g in globs.split(",") if g.strip())
    _stage(directory, Change("partition", name, parts=spec))


@domains_app.command("discard")
@user_errors
def domains_discard(directory: Path = DirArg):
    """Drop the pending update.

    Example: [bold]olmix-tui domains discard demo[/]
    """
    Project.load(directory).discard_pending()
    console.print("pending update discarded")


# ---------------------------------------------------------------- data


@app.command()
@user_errors
def tokenize(directory: Path = DirArg, as_json: bool = JsonOpt):
    """Train the project tokenizer if needed and tokenize every domain (cached by content).

    Example: [bold]olmix-tui tokenize demo[/]
    """
    project = Project.load(directory)
    with render.progress(quiet=as_json) as on_event:
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


def _plan_and_sample(project, plan_kind, unfreeze, on_event):
    ctx = pipeline.update_context(project, on_event)
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
               as_json: bool = JsonOpt):
    """Sample the swarm for the pending update (or the first mixture) and show it before any training.

    Example: [bold]olmix-tui swarm plan demo --plan full_reuse[/]
    """
    project = Project.load(directory)
    with render.progress(quiet=as_json) as on_event:
        update_plan, costs, swarm_dir, swarm = _plan_and_sample(project, plan, unfreeze, on_event)
    if as_json:
        print_json({"swarm": swarm_dir.id, "plan": update_plan.to_dict(), "costs": costs, "units": swarm.units,
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
              plan: Optional[str] = PlanOpt, unfreeze: Optional[List[str]] = UnfreezeOpt, as_json: bool = JsonOpt):
    """Train a swarm's unfinished runs (planning it first if needed); resumable and idempotent.

    Workers keep training if this command is interrupted; run it again (or `swarm status`) to re-attach.

    Example: [bold]olmix-tui swarm run demo[/]
    """
    project = Project.load(directory)
    with render.progress(quiet=as_json) as on_event:
        if swarm_id is None:
            _, _, swarm_dir, _ = _plan_and_sample(project, plan, unfreeze, on_event)
        else:
            swarm_dir = pipeline.find_swarm(project, swarm_id)
        counts = pipeline.train_swarm(project, swarm_dir, retry_failed, on_event)
    _show_swarm(swarm_dir, as_json)
    if counts["failed"]:
        raise OlmixError(f"{counts['failed']} run(s) failed (see the error column); fix the cause and run "
                         f"`olmix-tui swarm run {directory} --swarm {swarm_dir.id} --retry-failed`.")


@swarm_app.command("status")
@user_errors
def swarm_status(directory: Path = DirArg, swarm_id: Optional[str] = SwarmOpt, as_json: bool = JsonOpt):
    """Runs of a swarm: state, progress, mixture and final metrics (read from the run files).

    Example: [bold]olmix-tui swarm status demo --json[/]
    """
    _show_swarm(pipeline.find_swarm(Project.load(directory), swarm_id), as_json)


def _show_swarm(swarm_dir, as_json: bool) -> None:
    statuses = swarm_dir.statuses()
    if as_json:
        print_json({"swarm": swarm_dir.id, "counts": swarm_dir.counts(), "units": swarm_dir.units,
                    "runs": [{"run": s.run, "state": s.state, **{k: v for k, v in s.data.items() if k not in ("run", "state")}}
                             for s in statuses]})
        return
    metric_names = render.headline_metrics(statuses)
    rows = []
    for s in statuses:
        w = s.data.get("realised_weights") or s.data["weights"]
        top = ", ".join(f"{u} {100 * v:.0f}%" for u, v in sorted(w.items(), key=lambda kv: -kv[1])[:3] if v > 0)
        progress = f"{100 * s.data.get('progress', 0):.0f}%" if s.state == "running" else ""
        rows.append([s.run, s.state + (f" {progress}" if progress else ""), top,
                     *[s.metrics.get(m) for m in metric_names], s.data.get("error", "")[:60] or ""])
    console.print(table(f"swarm {swarm_dir.id} ({swarm_dir.spec.get('plan', '')})", ["run", "state", "mixture (top 3)",
                        *metric_names, "error"], rows))
    console.print("  ".join(f"{k}: {v}" for k, v in swarm_dir.counts().items() if v))

# ---------------------------------------------------------------- the main job


@app.command()
@user_errors
def run(
    directory: Path = DirArg,
    batch: bool = typer.Option(False, "--batch", help="Run the whole pipeline headless (no TUI)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Create DIR from this sample project first if it does not exist."),
    as_json: bool = JsonOpt,
):
    """Run the mixing pipeline on a project; `olmix-tui DIR --batch` is the same.

    Example: [bold]olmix-tui run demo --sample stdlib --batch[/]
    """
    if not batch:
        raise typer.BadParameter("the interactive app is not available yet; add --batch to run headless.")
    from engine import samples

    if sample and not (directory / "olmix.toml").exists():
        samples.create(directory, sample)
    project = Project.load(directory)
    with render.progress(quiet=as_json) as on_event:
        report = pipeline.run_batch(project, on_event)
    if as_json:
        print_json(report.to_dict())
        return
    console.print(table(f"project {project.settings.project.name}: natural distribution",
                        ["domain", "train tokens", "val tokens", "bytes/token", "prior"],
                        [[d["name"], count(d["train_tokens"]), count(d["val_tokens"]), f"{d['bytes_per_token']:.2f}",
                          pct(d["prior"])] for d in report.domains]))
    console.print(f"tokenizer {report.tokenizer} (vocab {report.vocab_size})")
    _show_swarm(pipeline.find_swarm(project, report.swarm), False)
    console.print(f"done in {report.seconds:.1f}s")


COMMANDS = {"init", "status", "domains", "tokenize", "swarm", "run"}


def main() -> None:
    """Console entry point; `olmix-tui DIR ...` (no subcommand) means `olmix-tui run DIR ...`."""
    argv = sys.argv[1:]
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        argv = ["run", *argv]
    app(args=argv, prog_name="olmix-tui")
