"""Bundled sample projects (sample_projects/<name>/): settings, domains, and a script that builds
their data offline on the user's machine."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

from engine import atomic
from engine.domains import DomainSet, with_revision
from engine.errors import OlmixError
from engine.config import read_toml
from engine.project import DOMAINS_FILE, PENDING_FILE, Project, read_pending
from engine.settings import SETTINGS_FILE, Settings

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "sample_projects"


def available() -> list[str]:
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if (p / SETTINGS_FILE).exists())


def create(root: str | Path, name: str) -> Project:
    """A new project at `root` from sample `name`: its settings and domains, data built locally."""
    source = SAMPLES_DIR / name
    if name not in available():
        raise OlmixError(
            f"there is no sample project '{name}'; available: {', '.join(available()) or 'none (run from a source checkout)'}."
        )
    root = Path(root).resolve()
    if (root / SETTINGS_FILE).exists():
        raise OlmixError(f"{root} already holds a project ({SETTINGS_FILE} exists); pick a new folder.")
    root.mkdir(parents=True, exist_ok=True)
    runpy.run_path(str(source / "build_data.py"), run_name="olmix_sample")["build"](root)
    settings = Settings.from_toml(read_toml(source / SETTINGS_FILE), f"{source / SETTINGS_FILE}")
    domains = DomainSet.from_toml(read_toml(source / DOMAINS_FILE), f"{source / DOMAINS_FILE}")
    domains = DomainSet(tuple(with_revision(root, d) for d in domains))
    for extra in ("README.md", "build_data.py"):
        if (source / extra).exists():
            shutil.copyfile(source / extra, root / extra)
    atomic.write_text(root / ".gitignore", ".olmix/\ndata/\nevals/\n")
    project = Project.init(root, settings, domains)
    if (source / PENDING_FILE).exists():
        for change in read_pending(source / PENDING_FILE):
            project.stage(change)
    return project
