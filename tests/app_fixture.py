"""What the app's tests share: waiting on a condition, a log of the app's messages, and a project
whose every file the app reads is written here, the same on every machine: domains (not
tokenized), one swarm with runs in each state, a learning curve, two history entries (the second
compared with its full recomputation, each with the evidence behind its mixture: a usable fit with
its bootstrap spread, an unusable one fallen back to the incumbent), a fit with its
cross-validation and verdict, and job records with their logs (a fit running on another machine, a
stopped training job, a finished worker, a failed update), each written through the engine's typed
records (SwarmSpec, RunStatus, EntryContent, Evidence, FitVerdict, JobRecord). Nothing trains: the
fit's scores and verdict are written as they are, and its model is the log-linear law fitted on the
three finished runs (well under a second). The snapshot tests render it."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import TypeVar

import numpy as np

from engine import atomic, pipeline
from engine.compare import kl, l1
from engine.domains import Domain, DomainSet, with_revision
from engine.executors.jobs import JobRecord, jobs_dir
from engine.executors.liveness import owner_alive
from engine.bootstrap import ProposalSpread
from engine.history import CompareRecord, Compute, EntryContent, Evidence, Measured, UpdateRecord, Verification, write_entry
from engine.project import Project
from engine.regression.base import make_regressor
from engine.regression.store import CV_FILE, FIT_FILE, MODEL_DIR
from engine.regression.verdict import FitVerdict
from engine.reuse import PlanRecord
from engine.runs import SwarmDir
from engine.settings import ProxySettings, RegressionSettings, Settings, SwarmSettings, TokenizerSettings
from engine.swarm_spec import SwarmData, SwarmSpec

M = TypeVar("M")


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    """Let the app run until `condition()` holds; fail after `timeout` seconds (generous: the
    tests share the machine with training processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the app did not get there in time"
        await pilot.pause(0.2)


async def open_tab(pilot, key: str, tab: str, timeout: float = 60.0) -> None:
    """Press `key` until the focus is in the tab whose KEY is `tab`, and stays there. A key pressed
    just after the app focused another tab's table can be undone: that focus asks the tabs to show
    its tab, in a message that may still be on its way (pressing again is harmless)."""
    app = pilot.app
    inside = lambda: app.focused is not None and app.focused.parent.id == f"{tab}-tab"  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        await pilot.press(key)
        answered = time.monotonic() + 5
        while not inside() and time.monotonic() < answered:
            await pilot.pause(0.2)
        await pilot.pause(0.5)
        if inside():
            return
        assert time.monotonic() < deadline, f"the {tab} tab did not open"


class MessageLog:
    """A `run_test(message_hook=...)` that keeps every message the app handled (once each, though
    a bubbling message reaches several widgets)."""

    def __init__(self):
        self.messages: list = []
        self._seen: set[int] = set()  # ids of the messages kept (alive, so never reused)

    def __call__(self, message) -> None:
        if id(message) not in self._seen:
            self._seen.add(id(message))
            self.messages.append(message)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.messages if isinstance(m, kind)]

SWARM_ID = "5a3c0f00d1e2"
VERIFY_ID = "9e41f1ed0b2c"
"""The verification runs of the compared update (their measured objectives are in its history entry; the folder is not written)."""
FIT_ID = "f17c0ffee123"
DOMAINS = {"code": ["def f(x):\n    return x + 1\n", "class A:\n    pass\n"], "notes": ["Notes on the loop.\n", "More notes.\n"],
           "decimal": ["add 1 2 -> 3\n", "mul 2 3 -> 6\n"]}
"""Two documents each: enough to tokenize (a held-out one each), as the plan form's snapshot does."""
EVALS = ["eval:code-completion/bpb", "eval:docs-completion/bpb"]
METRICS = [f"{d}/bpb" for d in DOMAINS] + EVALS
WEIGHTS = [[0.70, 0.20, 0.10], [0.10, 0.60, 0.30], [0.34, 0.33, 0.33], [0.05, 0.05, 0.90], [0.50, 0.50, 0.00],
           [0.20, 0.30, 0.50]]
DEAD_PID = 2 ** 30
"""Above any pid_max: the process of a run left `running` by a killed worker."""
TIMING = {"start": 0.4, "imports": 1.1, "device": 0.2, "data": 0.15, "model": 0.05, "warmup": 0.1, "train": 6.0,
          "eval": 0.3, "write": 0.02}
"""A finished run's share of its worker's seconds per phase (engine.phases): 72% training steps."""
FAILURE = ("RuntimeError: the proxy's loss became NaN at step 12 (learning rate 0.003 too high for this "
           "mixture); lower [proxy] lr or retry with f")


def build_fixture_project(root: Path) -> Project:
    """Write the fixture project into the new folder `root`."""
    for domain, texts in DOMAINS.items():
        for i, text in enumerate(texts):
            atomic.write_text(root / "data" / domain / f"part{i}.txt", text)
    domains = DomainSet(tuple(with_revision(root, Domain(d, (f"data/{d}/*.txt",))) for d in DOMAINS))
    proxy = ProxySettings(preset="cpu", tokens_per_proxy=4096, eval_tokens_per_domain=1024, eval_every=8)
    settings = Settings(tokenizer=TokenizerSettings(kind="bytes"), proxy=proxy, swarm=SwarmSettings(size=len(WEIGHTS)),
                        regression=RegressionSettings(regressor="loglinear", folds=3))
    project = Project.init(root, settings, domains)
    _write_swarm(project)
    _write_history(project)
    _write_fit(project)
    _write_jobs(project)
    return project


def _write_swarm(project: Project) -> None:
    names = list(DOMAINS)
    prior = {"code": 0.5, "notes": 0.3, "decimal": 0.2}
    runs = [f"{SWARM_ID}-{i:04d}" for i in range(len(WEIGHTS))]
    data = SwarmData(vocab_size=256, keys={d: f"{d}-key" for d in names})
    spec = SwarmSpec(purpose="swarm", plan="full", units=names, runs=runs, leaves=names, prior=prior,
                     swarm=project.settings.swarm, proxy=pipeline.proxy_scale(project, data.vocab_size), data=data)
    swarm = SwarmDir.create(project.swarms_dir / SWARM_ID, spec, np.array(WEIGHTS), [0] * len(runs), owner_alive)
    for i, run in enumerate(runs[:3]):  # done, with final metrics and a curve
        metrics = {m: round(1.5 + 0.1 * i + 0.01 * j, 4) for j, m in enumerate(METRICS)}
        swarm.write_status(run, state="done", progress=1.0, final_train_loss=round(2.0 - 0.1 * i, 4), metrics=metrics,
                           realised_weights=dict(zip(names, WEIGHTS[i])), error="", timing=TIMING)
        for step in (8, 16, 24, 32):
            swarm.append_metrics(run, {"step": step, "tokens": step * 128, "train/loss": round(4.0 - step / 16, 4),
                                       **{f"{d}/bpb": round(3.0 - step / 32, 4) for d in names}})
    swarm.write_status(runs[3], state="running", progress=0.4, loss=3.2, tokens_per_s=1000.0, pid=DEAD_PID,
                       host=socket.gethostname())  # its worker was killed: interrupted
    swarm.write_status(runs[4], state="failed", progress=0.1, error=FAILURE)
    # runs[5] stays pending


WEIGHTS_JUDGED = {m: 1 / len(METRICS) for m in METRICS}
VERDICT = FitVerdict("weak", ["it ranks held-out runs only loosely: the CV Spearman of the objective is 46.0 (usable from 50)"],
                     "Train the proxies on more tokens ([proxy] tokens_per_proxy): with this many runs the fit still "
                     "finds little signal, so seed noise likely swamps the mixture's effect at this scale.",
                     46.0, 0.21, 40.0, 0.8, 0.0, 18, 3, WEIGHTS_JUDGED)
"""The fit's verdict as fit.toml holds it (fixed figures: the fixture's fit is not cross-validated)."""


def _write_history(project: Project) -> None:
    first = {"code": 0.5, "notes": 0.3, "decimal": 0.2}
    second = {"code": 0.45, "notes": 0.25, "decimal": 0.3}
    full = {"code": 0.42, "notes": 0.28, "decimal": 0.3}
    swarm_compute, reuse_compute = Compute(runs=6, flops=2.4e10), Compute(runs=3, flops=1.2e10)
    usable = dataclasses.replace(VERDICT, verdict="usable", reasons=[], fix="", objective_spearman=88.0)
    spread = ProposalSpread(200, 0, {"code": 0.41, "notes": 0.22, "decimal": 0.15}, {"code": 0.58, "notes": 0.36, "decimal": 0.27},
                            1.58, 1.64, {"decimal": 0.12}, seconds=1.5)
    write_entry(project, EntryContent(PlanRecord("full", needs_swarm=True), first, SWARM_ID, FIT_ID, 1.61,
                                      compute=swarm_compute, evidence=Evidence(usable, spread=spread), kind="initial"))
    measured = {"chosen": Measured(1.59, 0.01, [1.58, 1.59, 1.6]), "full": Measured(1.575, 0.005, [1.57, 1.575, 1.58])}
    compared = CompareRecord(UpdateRecord(PlanRecord("full", needs_swarm=True), full, SWARM_ID, FIT_ID, 1.57,
                                          compute=swarm_compute, evidence=Evidence(VERDICT, warnings=[
                                              f"the fit is weak: {VERDICT.reasons[0]}. {VERDICT.fix}"])),
                             Verification(VERIFY_ID, 3, measured), l1(second, full), kl(second, full))
    unusable = dataclasses.replace(VERDICT, verdict="unusable", objective_spearman=12.0, reasons=[
        "it shows no sign of ranking mixtures: the CV Spearman of the objective is 12.0, below the 40 that chance "
        "reaches 1 time in 20 with 18 runs"])
    write_entry(project, EntryContent(PlanRecord("full_reuse", needs_swarm=True), second, SWARM_ID, FIT_ID, None,
                                      compute=reuse_compute, evidence=Evidence(unusable, "fallback", "incumbent",
                                                                               f"the fit is unusable: {unusable.reasons[0]}"),
                                      kind="add", changes=["add decimal"], compare=compared))


def _write_fit(project: Project) -> None:
    """fit.toml and cv.csv as engine.regression.store writes them (fixed scores, the same on every
    machine), and the log-linear law on the finished runs as its model, so that proposing from it works."""
    folder = project.fits_dir / FIT_ID
    done = [s for s in pipeline.open_swarm(project, SWARM_ID).statuses() if s.state == "done"]
    ratios = np.array([[s.realised_weights[d] for d in DOMAINS] for s in done])
    metrics = np.array([[s.metrics[m] for m in METRICS] for s in done])
    regression = project.settings.regression
    make_regressor("loglinear", **regression.regressor_settings("loglinear")).fit(ratios, metrics).save(folder / MODEL_DIR)
    cv = [(m, 80.0 - 10 * i, 0.9 - 0.35 * i, 0.01 + 0.005 * i) for i, m in enumerate(METRICS)]
    atomic.write_csv(folder / CV_FILE, ["metric", "spearman", "r2", "mae"], ([*row] for row in cv))
    means = {"spearman": float(np.mean([c[1] for c in cv])), "r2": float(np.mean([c[2] for c in cv])),
             "mae": float(np.mean([c[3] for c in cv]))}
    atomic.write_toml(folder / FIT_FILE, {
        "fit_id": FIT_ID, "regressor": "loglinear", "chosen": "loglinear", "domains": list(DOMAINS), "metrics": METRICS,
        "n_runs": len(done), "source_swarms": [SWARM_ID], "settings": dataclasses.asdict(regression), "seconds": 0.5,
        "cv": {"folds": regression.folds, "seed": regression.seed, "cv_of": "loglinear", **means},
        "verdict": dataclasses.asdict(VERDICT),
    })


STARTED = 1767268800
"""2026-01-01 12:00 UTC: when the fixture's jobs started (the snapshot tests show times in UTC)."""
ELSEWHERE = "node7"
"""The machine the running job runs on: another one, so it counts as running without a process here."""
JOB_LOGS = {
    "fit.log": "cross-validate loglinear  5/5\ncross-validate lightgbm  2/5\n",
    "supervisor.log": f"swarm {SWARM_ID}  3/6\nstopped: finished work is saved; run the command again to resume.\n",
    f"{SWARM_ID}-0000.log": f"worker 4100 on {ELSEWHERE}: training 3 run(s) of swarm {SWARM_ID} together on cpu (2 threads)\n"
                            + "".join(f"{SWARM_ID}-000{i}: done, 4,096 tokens in 2.0s (trained with 2 other(s)), final "
                                      f"train loss {2.0 - 0.1 * i:.4f}\n" for i in range(3)),
    "pipeline.log": "error: The swarm has 3 runs, fewer than the 5 CV folds; train more runs or lower [regression] folds.\n",
}


def _write_jobs(project: Project) -> None:
    """A fit running elsewhere, and jobs that ended: a stopped training job, its finished worker, a failed update."""
    logs = project.cache / "logs"
    for name, text in JOB_LOGS.items():
        atomic.write_text(logs / (SWARM_ID if name != "pipeline.log" else "") / name, text)
    records = [
        JobRecord("update", "applying the update", 4000, ELSEWHERE, STARTED, log=str(logs / "pipeline.log"),
                  ended=STARTED + 40, exit_code=1),
        JobRecord("train", f"training swarm {SWARM_ID}", 4050, ELSEWHERE, STARTED + 60,
                  log=str(logs / SWARM_ID / "supervisor.log"), swarm=SWARM_ID, ended=STARTED + 200, exit_code=130),
        JobRecord("worker", f"worker training 3 run(s) of swarm {SWARM_ID}", 4100, ELSEWHERE, STARTED + 62,
                  log=str(logs / SWARM_ID / f"{SWARM_ID}-0000.log"), swarm=SWARM_ID, runs=[f"{SWARM_ID}-000{i}" for i in range(3)],
                  ended=STARTED + 180, exit_code=0),
        JobRecord("fit", f"fitting auto on swarm {SWARM_ID}", 4200, ELSEWHERE, STARTED + 300,
                  log=str(logs / SWARM_ID / "fit.log"), swarm=SWARM_ID),
    ]
    for record in records:
        atomic.write_json(jobs_dir(project.root) / f"{record.key}.json", dataclasses.asdict(record))
