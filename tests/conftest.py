"""Shared fixtures: small real-text projects built from the Python installation."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from engine.domains import Domain, DomainSet, with_revision
from engine.project import Project
from engine.settings import (ExecutorSettings, ProxySettings, RegressionSettings, Settings, SwarmSettings,
                             TokenizerSettings)
from engine.training.presets import get_preset

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TINY_PROXY = ProxySettings(preset="cpu", tokens_per_proxy=4096, eval_tokens_per_domain=1024, eval_every=0)
"""A few optimiser steps of the cpu preset: real training, seconds per swarm."""


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def make_small_data(root: Path) -> None:
    """Three domains of real text from what every installation has (no test suite, no IDLE): code
    (jsonl, two shards of standard-library modules), notes (the dependencies' descriptions) and
    numeric data (scikit-learn's bundled data sets)."""
    import importlib.metadata

    import sklearn

    mods = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))[:6]
    write_jsonl(root / "data/code/json.jsonl", [p.read_text() for p in mods[:5]])
    write_jsonl(root / "data/code/email.jsonl", [p.read_text() for p in mods[5:]])
    (root / "data/notes").mkdir(parents=True, exist_ok=True)
    for name in ("numpy", "rich", "scipy", "textual", "typer"):
        (root / "data/notes" / f"{name}.txt").write_text(importlib.metadata.metadata(name).get_payload() or name)
    (root / "data/decimal").mkdir(parents=True, exist_ok=True)
    for p in sorted((Path(sklearn.__file__).parent / "datasets" / "data").glob("*.csv")):
        (root / "data/decimal" / (p.stem + ".txt")).write_text(p.read_text(errors="replace"))


@pytest.fixture
def small_project(tmp_path) -> Project:
    """A project with three real-text domains and the byte tokenizer (fast)."""
    root = tmp_path / "proj"
    root.mkdir()
    make_small_data(root)
    domains = DomainSet(tuple(with_revision(root, d) for d in (
        Domain("code", ("data/code/*.jsonl",)),
        Domain("notes", ("data/notes/*.txt",)),
        Domain("decimal", ("data/decimal/*.txt",)),
    )))
    settings = Settings(tokenizer=TokenizerSettings(kind="bytes"), proxy=TINY_PROXY, swarm=SwarmSettings(size=3),
                        regression=RegressionSettings(regressor="loglinear", folds=3))
    return Project.init(root, settings, domains)


def plan_swarm(project: Project):
    """Plan the swarm of the project's next step with its settings: (SwarmDir, swarm)."""
    from engine import pipeline

    ctx = pipeline.update_context(project)
    return pipeline.plan_swarm(project, ctx, pipeline.make_plan(project, ctx))


UNFINISHED_STEPS = 4000
"""Runs this long are stopped long before they could finish, however slowly the test's own process
is scheduled: a shorter swarm finished on a loaded CI machine before the test's signal landed."""


def long_runs(project: Project, steps: int, **executor) -> Project:
    """The project's runs made `steps` optimiser steps long (repeating the tiny data as often as that
    takes), trained by `executor` settings."""
    s = project.settings
    project.settings = dataclasses.replace(
        s, proxy=dataclasses.replace(s.proxy, tokens_per_proxy=get_preset("cpu").tokens_per_step * steps),
        swarm=dataclasses.replace(s.swarm, max_repetition=1e3), executor=ExecutorSettings(poll_seconds=0.2, **executor))
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def start_swarm_run(project: Project, swarm_id: str, log: Path | None = None, ctrl_c: bool = False) -> subprocess.Popen:
    """`olmix-tui swarm run` as the app starts it: detached, output into `log` (if given). With `ctrl_c`, SIGINT
    at its default, as in a terminal's foreground job: a runner that starts the tests in the
    background hands them SIGINT ignored, which children inherit and Python then leaves ignored."""
    cmd = [sys.executable, "-m", "olmix_tui", "swarm", "run", str(project.root), "--swarm", swarm_id]
    reset = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if ctrl_c else None
    with open(log if log is not None else os.devnull, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=reset)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny proxies: one torch thread is as fast, and immune to other processes on the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
