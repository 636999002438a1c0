"""What the app's tests share: waiting on a condition, a log of the app's messages, and a project
whose every file the app reads is written here, the same on every machine: domains (not
tokenized), one swarm with runs in each state, a learning curve, two history entries (the second
compared with its full recomputation) and a fit with its cross-validation. Nothing trains; the
snapshot tests render it."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import TypeVar

import numpy as np

from engine import atomic
from engine.data.tokenizer import TokenizerSettings
from engine.domains import Domain, DomainSet, with_revision
from engine.history import write_entry
from engine.project import Project, Settings
from engine.regression.store import CV_FILE, FIT_FILE, RegressionSettings
from engine.runs import SwarmDir
from engine.swarm import SwarmSettings
from engine.training.presets import ProxySettings

M = TypeVar("M")


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    """Let the app run until `condition()` holds; fail after `timeout` seconds (generous: the
    tests share the machine with training processes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the app did not get there in time"
        await pilot.pause(0.2)


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
FIT_ID = "f17c0ffee123"
DOMAINS = {"code": ["def f(x):\n    return x + 1\n", "class A:\n    pass\n"], "notes": ["Notes on the loop.\n"],
           "decimal": ["add 1 2 -> 3\n"]}
EVALS = ["eval:code-completion/bpb", "eval:docs-completion/bpb"]
METRICS = [f"{d}/bpb" for d in DOMAINS] + EVALS
WEIGHTS = [[0.70, 0.20, 0.10], [0.10, 0.60, 0.30], [0.34, 0.33, 0.33], [0.05, 0.05, 0.90], [0.50, 0.50, 0.00],
           [0.20, 0.30, 0.50]]
DEAD_PID = 2 ** 30
"""Above any pid_max: the process of a run left `running` by a killed worker."""
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
    return project


def _write_swarm(project: Project) -> None:
    names = list(DOMAINS)
    prior = {"code": 0.5, "notes": 0.3, "decimal": 0.2}
    spec = {"purpose": "swarm", "plan": "full", "leaves": names, "groups": [], "prior": prior,
            "proxy": {"preset": "cpu", "eval_every": 8, "tokens_per_proxy": 4096, "flops_per_token": 1.0e6},
            "data": {"vocab_size": 256, "keys": {d: f"{d}-key" for d in names}, "eval_sets": {}}}
    runs = [f"{SWARM_ID}-{i:04d}" for i in range(len(WEIGHTS))]
    swarm = SwarmDir.create(project.swarms_dir / SWARM_ID, spec, runs, names, np.array(WEIGHTS), [0] * len(runs))
    for i, run in enumerate(runs[:3]):  # done, with final metrics and a curve
        metrics = {m: round(1.5 + 0.1 * i + 0.01 * j, 4) for j, m in enumerate(METRICS)}
        swarm.write_status(run, state="done", progress=1.0, final_train_loss=round(2.0 - 0.1 * i, 4), metrics=metrics,
                           realised_weights=dict(zip(names, WEIGHTS[i])), error="")
        for step in (8, 16, 24, 32):
            swarm.append_metrics(run, {"step": step, "tokens": step * 128, "train/loss": round(4.0 - step / 16, 4),
                                       **{f"{d}/bpb": round(3.0 - step / 32, 4) for d in names}})
    swarm.write_status(runs[3], state="running", progress=0.4, loss=3.2, tokens_per_s=1000.0, pid=DEAD_PID,
                       host=socket.gethostname())  # its worker was killed: interrupted
    swarm.write_status(runs[4], state="failed", progress=0.1, error=FAILURE)
    # runs[5] stays pending


def _write_history(project: Project) -> None:
    first = {"code": 0.5, "notes": 0.3, "decimal": 0.2}
    second = {"code": 0.45, "notes": 0.25, "decimal": 0.3}
    full = {"code": 0.42, "notes": 0.28, "decimal": 0.3}
    write_entry(project, "initial", {"changes": [], "plan": {"kind": "full"}, "swarm": SWARM_ID, "fit": FIT_ID,
                                     "mixture": first, "predicted": 1.61, "compute": {"runs": 6, "flops": 2.4e10}})
    write_entry(project, "add", {
        "changes": ["add decimal"], "plan": {"kind": "full_reuse"}, "swarm": SWARM_ID, "fit": FIT_ID, "mixture": second,
        "predicted": 1.58, "compute": {"runs": 3, "flops": 1.2e10},
        "compare": {"full": {"mixture": full, "predicted": 1.57, "compute": {"runs": 6, "flops": 2.4e10}},
                    "verification": {"measured": {"chosen": {"mean": 1.59, "std": 0.01, "values": [1.58, 1.59, 1.6]},
                                                  "full": {"mean": 1.575, "std": 0.005, "values": [1.57, 1.575, 1.58]}}}},
    })


def _write_fit(project: Project) -> None:
    folder = project.fits_dir / FIT_ID
    cv = [(m, 80.0 - 10 * i, 0.9 - 0.35 * i, 0.01 + 0.005 * i) for i, m in enumerate(METRICS)]
    atomic.write_csv(folder / CV_FILE, ["metric", "spearman", "r2", "mae"], ([*row] for row in cv))
    means = {"spearman": float(np.mean([c[1] for c in cv])), "r2": float(np.mean([c[2] for c in cv])),
             "mae": float(np.mean([c[3] for c in cv]))}
    atomic.write_toml(folder / FIT_FILE, {
        "fit_id": FIT_ID, "regressor": "loglinear", "chosen": "loglinear", "domains": list(DOMAINS), "metrics": METRICS,
        "n_runs": 3, "source_swarms": [SWARM_ID], "settings": {}, "seconds": 0.5,
        "cv": {"folds": 3, "seed": 0, "cv_of": "loglinear", **means},
    })
