"""Rendering for the command line: rich progress driven by engine events, tables, JSON."""

from __future__ import annotations

import contextlib
import io
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from engine import pipeline
from engine.atomic import round_floats, write_bytes
from engine.compare import paired_gap, same_mixture, t_interval
from engine.errors import storage_error
from engine.events import Event, Message, TaskFinished, TaskProgress, TaskStarted
from engine.phases import PHASES, TRAIN, SwarmTiming, swarm_timing
from engine.project import Project

console = Console(markup=False, soft_wrap=True)
err_console = Console(stderr=True, markup=False, soft_wrap=True)
"""No markup: what is printed holds engine messages, file names and user strings, whose square
brackets ("[propose]", "[regression] folds") must print as they are; styles are given as Text.
Soft wrap: a sentence is one line however wide (the terminal wraps it; a log keeps paths whole)."""


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain strings and (text, style) pairs, e.g. styled(("error:", "bold red"), " ", message)."""
    return Text.assemble(*parts)


def print_json(data) -> None:
    """Strict JSON on stdout: NaN and infinities (an undefined score, an overflowing prediction) print as null."""
    sys.stdout.write(json.dumps(_finite_or_null(round_floats(data)), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite_or_null(obj):
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


@contextlib.contextmanager
def progress(quiet: bool = False) -> Iterator:
    """An event sink drawing rich progress bars (to stderr, so stdout stays clean for --json)."""
    if quiet:
        yield lambda event: None
        return
    bars = Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}", markup=False), console=err_console, transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, TaskStarted):
            tasks[event.task] = bars.add_task(event.task, total=event.total, info="")
        elif isinstance(event, TaskProgress) and event.task in tasks:
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in event.info.items())
            bars.update(tasks[event.task], completed=event.completed, info=info)
        elif isinstance(event, TaskFinished) and event.task in tasks:
            task = bars.tasks[tasks[event.task]]
            total = task.total if task.total is not None else 1
            bars.update(tasks[event.task], total=total, completed=total)
        elif isinstance(event, Message):
            bars.console.print(styled(("warning: ", "yellow") if event.level == "warning" else "", event.text))

    with bars:
        yield on_event


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(title: str, columns: list[str], rows: list[list], justify_numbers: bool = True) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if justify_numbers and i > 0 else "left")
    for row in rows:
        t.add_row(*["-" if v is None else (_fmt(v) if not isinstance(v, str) else v) for v in row])
    return t


def pct(x) -> str | None:
    return None if x is None else f"{100 * x:.2f}%"


def count(x) -> str | None:
    return None if x is None else f"{x:,}"


def headline_metrics(statuses, limit: int = 3) -> list[str]:
    """The metrics worth a column: the eval sets when there are any, else per-domain BPBs; at most `limit`."""
    names = sorted({k for s in statuses for k in s.metrics})
    evals = [n for n in names if n.startswith("eval:")]
    return (evals or [n for n in names if n.endswith("/bpb")])[:limit]


HISTORY_COLUMNS = ["entry", "changes", "plan", "runs", "FLOPs", "fit", "mixture (top 3)"]
VERDICT_STYLES = {"usable": "green", "weak": "yellow", "unusable": "red"}


def history_rows(entries) -> list[list[str]]:
    """One row per history entry (HISTORY_COLUMNS): what changed, how it was planned, the compute,
    the fit's verdict and what was done with it, the mixture."""
    rows = []
    for e in entries:
        c = e.content.compute
        top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(e.mixture.items(), key=lambda kv: -kv[1])[:3])
        evidence = e.content.evidence.summary if e.content.evidence is not None else "-"
        rows.append([e.label, "; ".join(e.content.changes) or "-", e.content.plan.kind, str(c.runs), f"{c.flops:.3g}",
                     evidence, top])
    return rows


def verdict_lines(verdict, indent: str = "") -> list[Text]:
    """A fit's verdict as styled lines: the verdict with its figures, each finding, the fix."""
    lines = [styled(f"{indent}fit verdict: ", (verdict.verdict, f"bold {VERDICT_STYLES.get(verdict.verdict, '')}"),
                    f" - objective CV Spearman {verdict.objective_spearman:.1f} (chance reaches "
                    f"{verdict.chance_spearman:.0f}), R^2 {verdict.objective_r2:.3g}; {verdict.runs} runs over "
                    f"{verdict.units} units")]
    lines += [styled(f"{indent}  - {reason}") for reason in verdict.reasons]
    if verdict.fix:
        lines.append(styled(f"{indent}  fix: {verdict.fix}"))
    return lines


def evidence_lines(evidence, indent: str = "", warnings: bool = True) -> list[Text]:
    """What a recorded mixture rests on, as styled lines: verdict, fallback or force, and (unless
    they were shown already, as events) the warnings."""
    lines = verdict_lines(evidence.verdict, indent)
    if evidence.action == "fallback":
        kept = ("the incumbent mixture (the current one, new domains at 0)" if evidence.fallback == "incumbent"
                else "the natural distribution")
        lines.append(styled(indent, ("fell back", "bold red"), f" to {kept}: the fit is unusable; `--force` proposes anyway"))
    elif evidence.action == "forced":
        lines.append(styled(indent, ("forced", "bold red"), ": proposed from an unusable fit because --force was given"))
    lines += [styled(indent, ("warning:", "yellow"), f" {w}") for w in evidence.warnings
              if warnings and not w.startswith(("the fit is weak", "the fit is unusable"))]
    return lines


def interval_bar(value: float, lower: float, upper: float, scale: float, width: int) -> Text:
    """One weight as a bar with its interval: solid up to the lower end, shaded to the value, a
    whisker to the upper end."""
    cells = []
    for i in range(width):
        x = (i + 0.5) * scale / width
        cells.append("█" if x < lower else "▒" if x <= value else "─" if x <= upper else " ")
    end = min(width - 1, int(upper / scale * width)) if scale > 0 else 0
    if scale > 0 and end > int(value / scale * width):  # a whisker only where the high end shows past the weight
        cells[end] = "┤"
    return Text("".join(cells), style="green")


def spread_table(title: str, domains: list[str], mixture: dict, prior: dict, spread, width: int = 40) -> Table:
    """The proposal beside the prior with its bootstrap spread: per domain the 95% interval, how often
    it sits at its cap, and a bar with the interval as whiskers."""
    t = Table(title=title, title_justify="left")
    for name, justify in (("domain", "left"), ("prior", "right"), ("mixture", "right"),
                          (f"{100 * spread.level:.0f}% interval", "right"), ("at cap", "right"),
                          ("the interval as a bar: █ to its low end, ▒ to the weight, ─┤ to its high end", "left")):
        t.add_column(name, justify=justify)
    scale = max([spread.upper.get(d, 0.0) for d in domains] + [mixture[d] for d in domains]) or 1.0
    for d in domains:
        lo, hi = spread.lower.get(d, mixture[d]), spread.upper.get(d, mixture[d])
        t.add_row(d, pct(prior.get(d)), pct(mixture[d]), f"{100 * lo:.1f}-{100 * hi:.1f}%",
                  pct(spread.cap_binds[d]) if d in spread.cap_binds else "", interval_bar(mixture[d], lo, hi, scale, width))
    return t


def spread_line(spread) -> str:
    return (f"bootstrap: {spread.replicates} replicates ({spread.failed} failed), {spread.seconds:.1f}s; predicted "
            f"objective {100 * spread.level:.0f}% interval {spread.predicted_lower:.4f}-{spread.predicted_upper:.4f}")


def stacked_bars(weights, units: list[str], title: str, width: int = 100, height: int = 18) -> Text:
    """A terminal stacked-bar chart of mixtures (one bar per row of `weights`)."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    x = list(range(1, len(weights) + 1))
    plt.stacked_bar(x, [list(map(float, weights[:, j])) for j in range(len(units))], labels=units)
    plt.title(title)
    plt.xlabel("run")
    return Text.from_ansi(plt.build())


def _plot(build, save_as: tuple[Project, Path] | None = None) -> Text:
    """Build a plotext figure; with `save_as` (a project and a path in it, without suffix) also save
    it as .txt and .html there, written through engine.atomic under the project lock."""
    import plotext as plt

    plt.clear_figure()
    build(plt)
    text = Text.from_ansi(plt.build())
    if save_as is not None:
        project, path = save_as
        with tempfile.TemporaryDirectory() as tmp:  # plotext writes files itself: into a scratch folder first
            figures = {}
            for suffix, colors in ((".html", True), (".txt", False)):
                with contextlib.redirect_stdout(io.StringIO()):  # its "text saved in ..." (in colour, even in a pipe)
                    plt.save_fig(str(Path(tmp) / f"figure{suffix}"), keep_colors=colors)
                figures[path.with_suffix(suffix)] = (Path(tmp) / f"figure{suffix}").read_bytes()
        try:
            with project.lock():
                for target, data in figures.items():
                    write_bytes(target, data)
        except OSError as err:  # a full disk or a read-only project: the figure is shown, not saved
            problem = storage_error(err)
            if problem is None:
                raise
            err_console.print(styled(("warning:", "yellow"), f" the plot was not saved: {problem}"), highlight=False)
    return text


def bars_vs(names: list[str], a: list[float], b: list[float], label_a: str, label_b: str, width: int = 100,
            save_as=None) -> Text:
    """Two mixtures as grouped horizontal bars (e.g. prior vs proposed)."""
    def build(plt):
        plt.plotsize(width, max(8, 3 * len(names) + 4))
        plt.multiple_bar(names, [a, b], labels=[label_a, label_b], orientation="horizontal")
        plt.title(f"{label_b} vs {label_a}")
    return _plot(build, save_as)


def scatter_true_pred(y_true, y_pred, title: str, width: int = 70, height: int = 20, save_as=None) -> Text:
    def build(plt):
        plt.plotsize(width, height)
        plt.scatter(list(map(float, y_true)), list(map(float, y_pred)), marker="dot")
        lo, hi = float(min(min(y_true), min(y_pred))), float(max(max(y_true), max(y_pred)))
        plt.plot([lo, hi], [lo, hi], marker="braille")
        plt.xlabel("true")
        plt.ylabel("predicted")
        plt.title(title)
    return _plot(build, save_as)


def predicted_vs_true(project, result, swarm_dir) -> Text:
    """Predicted vs true of the objective's heaviest metric (out-of-fold when the fit was just made),
    also saved as text and HTML under the fit folder."""
    import numpy as np

    from engine.errors import ConfigError
    from engine.propose import objective_weights

    table = swarm_dir.table()
    try:
        j = int(np.argmax(objective_weights(project.settings.objective, table.metric_names)))
    except ConfigError:  # an imported swarm's metrics need not be the project's objective
        j = 0
    oof = result.cv.predictions
    pred = oof[:, j] if oof is not None else result.model.predict(table.ratios)[:, j]
    kind = "out-of-fold" if oof is not None else "in-sample"
    return scatter_true_pred(table.metrics[:, j], pred, f"{table.metric_names[j]}: {kind} predicted vs true",
                             save_as=(project, result.folder / "plots" / "predicted_vs_true"))


def batch_report(report, project) -> None:
    """The main job's closing report: domains, then each update's plan, compute and mixture."""
    console.print(table(f"project {project.settings.project.name}: domains", ["domain", "train tokens", "val tokens",
                        "bytes/token", "prior"],
                        [[d["name"], count(d["train_tokens"]), count(d["val_tokens"]), f"{d['bytes_per_token']:.2f}",
                          pct(d["prior"])] for d in report.domains]))
    prior = {d["name"]: d["prior"] for d in report.domains}
    for u in report.updates:
        r, c, cmp = u.record, u.record.compute, u.compared
        console.print(styled("\n", (u.entry, "bold"), f": {r.plan.kind} plan, {c.runs} proxy runs, "
                             f"{count(c.tokens)} tokens, {c.flops:.3g} FLOPs" + (f", swarm {r.swarm}, fit {r.fit}" if r.swarm else "")))
        cols = ["domain", "prior", "mixture"] + (["full recomputation", "incumbent"] if cmp else [])
        rows = [[x, pct(prior.get(x)), pct(w)] + ([pct(cmp.full.mixture.get(x)), pct(cmp.incumbent.get(x))] if cmp else [])
                for x, w in r.mixture.items()]
        if r.swarm:
            show_swarm(pipeline.open_swarm(project, r.swarm))
        console.print(table(u.entry, cols, rows))
        if r.evidence is not None:
            for line in evidence_lines(r.evidence):
                console.print(line)
            if r.evidence.spread is not None:
                console.print(spread_table(f"{u.entry}: bootstrap spread", list(r.mixture), r.mixture, prior, r.evidence.spread))
                console.print(spread_line(r.evidence.spread))
        if r.predicted is not None and r.proposal is not None:
            p = r.proposal
            console.print(f"predicted objective {r.predicted:.4f}; binding caps: {', '.join(p.binding_caps) or 'none'}")
        if cmp:
            fc = cmp.full.compute
            share = c.flops / fc.flops if fc.flops else float("nan")
            console.print(f"full recomputation: {fc.runs} runs, {fc.flops:.3g} FLOPs; this plan spent "
                          f"{100 * share:.0f}% of it. L1 between the mixtures {cmp.l1:.3f}")
            if cmp.full.evidence is not None:
                console.print("full recomputation's fit:")
                for line in evidence_lines(cmp.full.evidence, "  "):
                    console.print(line)
            twins = {o for o, mix in (("full", cmp.full.mixture), ("incumbent", cmp.incumbent)) if same_mixture(r.mixture, mix)}
            verification_report(cmp.verification.measured, twins)
    console.print(f"\ndone in {report.seconds:.1f}s; see `olmix-tui history {project.root}` and `olmix-tui diff {project.root}`")


def verification_report(measured, same_as_chosen: set[str] = frozenset()) -> None:
    """Each verified mixture's measured objective with its 95% interval over seeds, then the chosen
    mixture against the others, paired by seed, in words (or, for those in `same_as_chosen`, that
    they are the chosen mixture itself, trained once)."""
    seeds = max((len(m.values) for m in measured.values()), default=0)
    console.print(f"verification: {seeds} proxies per mixture, the same seeds for each (lower is better; 95% intervals)")
    for label, m in measured.items():
        ci = t_interval(m.values)
        console.print(f"  measured objective ({label}): {ci.mean:.4f} [{ci.lo:.4f}, {ci.hi:.4f}]")
    chosen = measured.get("chosen")
    for other in ("full", "incumbent"):
        if other in same_as_chosen:
            console.print(f"  chosen - {other}: the same mixture, trained once")
            continue
        gap = paired_gap(chosen, measured[other]) if chosen and other in measured else None
        if gap is None:
            continue
        words = ("the chosen mixture is better" if gap.hi < 0 else "the chosen mixture is worse" if gap.lo > 0
                 else f"no difference resolved with {gap.n} seeds")
        console.print(f"  chosen - {other}: {gap.mean:+.4f} [{gap.lo:+.4f}, {gap.hi:+.4f}], paired by seed: {words}")


MAX_SHOWN_RUNS = 500
"""A swarm table longer than this (an imported swarm of 100k runs) shows its first rows only."""


def swarm_fits(project, swarm_dir) -> list[tuple]:
    """(fit summary, verdict on the project's objective) of every stored fit of the swarm."""
    from engine.regression.store import list_fits

    return [(f, f.verdict_on(project.settings.objective)) for f in list_fits(project.fits_dir)
            if swarm_dir.id in f.info["source_swarms"]]


def show_swarm(swarm_dir, as_json: bool = False, timing: bool = False, project=None) -> None:
    """A swarm's runs: state, progress, top of the mixture, headline metrics, error; the share of its
    workers' time that was not training steps (with `timing`, where that time went, phase by phase);
    with `project`, the verdict of each fit of the swarm."""
    statuses = swarm_dir.statuses()
    phases = swarm_timing(s.timing for s in statuses)
    fits = swarm_fits(project, swarm_dir) if project is not None else []
    if as_json:
        print_json({"swarm": swarm_dir.id, "counts": swarm_dir.counts(), "units": swarm_dir.units,
                    "runs": [{**s.to_json(), "state": s.state} for s in statuses],
                    "timing": None if phases is None else {"runs": phases.runs, "totals": phases.totals,
                                                           "mean": phases.mean, "overhead_share": phases.overhead_share},
                    "fits": [{"fit": f.fit_id, "chosen": f.info["chosen"],
                              "verdict": None if v is None else dataclasses.asdict(v)} for f, v in fits]})
        return
    metric_names = headline_metrics(statuses)
    errors = any(s.error for s in statuses)
    prefix = f"{swarm_dir.id}-"
    rows = []
    for s in statuses[:MAX_SHOWN_RUNS]:
        top = ", ".join(f"{u} {100 * v:.0f}%" for u, v in sorted(s.trained_weights.items(), key=lambda kv: -kv[1])[:3]
                        if v >= 0.005)
        progress = f" {100 * s.progress:.0f}%" if s.shown_state == "running" else ""
        where = f" ({s.where})" if s.where else ""
        rows.append([s.run.removeprefix(prefix), s.shown_state + progress + where, top,
                     *[s.metrics.get(m) for m in metric_names]] + ([s.error[:60]] if errors else []))
    proxy = swarm_dir.spec.proxy
    scale = f", preset {proxy.preset}, {proxy.tokens_per_proxy:,} tokens per proxy" if proxy else ""
    console.print(table(f"swarm {swarm_dir.id} ({swarm_dir.spec.plan}{scale}): runs {prefix}*",
                        ["run", "state", "mixture (top 3)", *metric_names] + (["error"] if errors else []), rows))
    if len(statuses) > MAX_SHOWN_RUNS:
        console.print(f"the first {MAX_SHOWN_RUNS} of {len(statuses)} runs are shown; --json lists them all")
    console.print("  ".join(f"{k}: {v}" for k, v in swarm_dir.counts().items() if v))
    if phases is not None:
        console.print(overhead_line(phases))
        if timing:
            console.print(timing_table(phases))
    elif timing:
        console.print("no run of this swarm records its phases yet (a run records them when it finishes).")
    for f, verdict in fits:
        console.print(f"fit {f.fit_id} ({f.info['chosen']}):" + ("" if verdict else " fitted by an earlier version, no verdict"))
        for line in verdict_lines(verdict, "  ") if verdict else []:
            console.print(line)


def overhead_line(phases: SwarmTiming) -> str:
    """The swarm's overhead share in one line."""
    return (f"workers' time: {phases.total:.1f} s over {phases.runs} run(s), {phases.totals.get(TRAIN, 0.0):.1f} s "
            f"of it training steps: overhead {phases.overhead_share:.0%}")


def timing_table(phases: SwarmTiming) -> Table:
    """Per phase: what it covers, the mean per run, the total over the runs and the share of the total."""
    mean = phases.mean
    rows = [[name, PHASES.get(name, ""), f"{mean[name]:.3f}", f"{seconds:.2f}", f"{seconds / phases.total:.1%}"]
            for name, seconds in phases.totals.items()]
    rows.append(["all", "", f"{phases.total / phases.runs:.3f}", f"{phases.total:.2f}", "100.0%"])
    return table(f"where the workers' time went ({phases.runs} runs; seconds)",
                 ["phase", "what", "mean per run", "total", "share"], rows)
