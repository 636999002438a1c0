"""Shared set-up of the benchmarks that train real proxies on the stdlib sample project."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from engine import samples
from engine.project import Project


def sample_project(folder: Path | None, tokens_per_proxy: int, runs_per_domain: int) -> Project:
    """A fresh stdlib sample project (in a temporary folder unless `folder` is given), at the given proxy scale."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="olmix-bench-")) / "stdlib"
    project = samples.create(folder, "stdlib")
    s = project.settings
    project.settings = dataclasses.replace(
        s,
        proxy=dataclasses.replace(s.proxy, tokens_per_proxy=tokens_per_proxy, eval_every=0),
        swarm=dataclasses.replace(s.swarm, runs_per_domain=runs_per_domain),
    )
    with project.lock():
        project.save_settings()
    return Project.load(project.root)


def spread_line(label: str, m: dict) -> str:
    return f"{label:>10}: {m['mean']:.4f} ± {m['std']:.4f}  (seeds: {', '.join(f'{v:.4f}' for v in m['values'])})"
