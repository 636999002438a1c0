"""Shared fixtures: small real-text projects built from the Python installation."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from engine.domains import Domain, DomainSet, with_revision
from engine.project import Project
from engine.settings import ProxySettings, RegressionSettings, Settings, SwarmSettings, TokenizerSettings

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny proxies: one torch thread is as fast, and immune to other processes on the cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
