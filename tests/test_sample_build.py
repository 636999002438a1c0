"""The stdlib sample builds on a Python that lacks what distributions package separately.

Debian and Ubuntu ship the test suite, IDLE, tkinter, lib2to3, distutils, ensurepip and the C
headers in other packages, and some conda and uv-managed builds drop parts of them too. The test
makes such a Python for real: a copy (hard links) of this interpreter's standard library without
those parts, run with PYTHONHOME pointing at it, so sysconfig, the import system and the file
system all see the stripped installation. The installed dependencies stay reachable (a
sitecustomize adds this environment's site directories), as they are on any installation.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from engine.data.readers import detect_format, iter_text_documents
from engine.domains import resolve_sources
from engine.project import Project

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_projects" / "stdlib"
SEPARATELY_PACKAGED = {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "lib2to3", "distutils",
                       "ensurepip", "site-packages", "dist-packages", "LICENSE.txt"}


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def stripped_python(root: Path) -> tuple[str, dict[str, str]]:
    """(interpreter, environment) of a Python whose standard library lacks the separately packaged parts
    and whose prefix has no C headers."""
    paths = sysconfig.get_paths()
    stdlib, base = Path(paths["stdlib"]), Path(sys.base_prefix)
    if os.name != "posix" or paths["platstdlib"] != paths["stdlib"] or not stdlib.is_relative_to(base):
        pytest.skip("needs a POSIX Python whose standard library lies under its prefix")
    copy = root / stdlib.relative_to(base)
    shutil.copytree(stdlib, copy, copy_function=link_or_copy, symlinks=True,
                    ignore=lambda _, names: [n for n in names if n in SEPARATELY_PACKAGED or n.startswith("config-")])
    hosts = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    boot = root / "boot"  # whatever the interpreter's site layout (Debian: dist-packages), its sitecustomize adds them
    boot.mkdir()
    (boot / "sitecustomize.py").write_text("import site\n" + "".join(f"site.addsitedir({p!r})\n" for p in hosts))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONHOME=str(root), PYTHONPATH=os.pathsep.join([str(REPO), str(boot)]), PYTHONNOUSERSITE="1")
    return os.path.realpath(sys.executable), env


def test_sample_builds_without_the_test_suite_or_c_headers(tmp_path):
    python, env = stripped_python(tmp_path / "python")

    def run(*args: str) -> str:
        out = subprocess.run([python, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    seen = json.loads(run("-c", "import importlib.util as u, json, sys, sysconfig; p = sysconfig.get_paths(); "
                                "print(json.dumps([sys.prefix, p['stdlib'], p['include'], "
                                "[m for m in ('test', 'idlelib', 'tkinter') if u.find_spec(m)]]))"))
    prefix, stdlib, include, importable = seen
    assert Path(prefix) == tmp_path / "python" and Path(stdlib).is_relative_to(prefix)
    assert not (Path(stdlib) / "test").exists() and not Path(include).exists() and importable == []

    project = tmp_path / "demo"
    assert "with 6 domains" in " ".join(run("-m", "olmix_tui", "init", str(project), "--sample", "stdlib").split())
    listed = json.loads(run("-m", "olmix_tui", "domains", "list", str(project), "--json"))
    assert sorted(d["name"] for d in listed) == ["code:c", "code:stdlib", "code:tests", "data:decimal", "data:markup", "prose:docs"]
    for domain in Project.load(project).staged_domains():  # with prose:notes, which the pending update adds
        files = resolve_sources(project, domain)  # raises on a glob that matches nothing or an empty file
        text = sum(len(doc) for f in files for doc in iter_text_documents(f, detect_format(f, "auto")))
        assert text >= 20_000, f"{domain.name}: {text} characters"
    for eval_set in ("code-completion", "docs-completion"):
        rows = [json.loads(line) for line in (project / "evals" / f"{eval_set}.jsonl").read_text().splitlines()]
        assert len(rows) >= 20 and all(r["context"].strip() and r["continuation"].strip() for r in rows)
    # the README's partition example names shards that exist and cover code:stdlib exactly
    run("-m", "olmix_tui", "domains", "partition", str(project), "code:stdlib",
        "--part", "code:net=data/code/email.jsonl,data/code/http.jsonl",
        "--part", "code:rest=data/code/[!eh]*.jsonl,data/code/encodings.jsonl,data/code/html.jsonl")


def test_sample_draws_on_the_dependencies_pyproject_names():
    """The builder's list of distributions is the tool's required dependencies, no more, no less."""
    import re
    import runpy

    builder = runpy.run_path(str(SAMPLE / "build_data.py"), run_name="olmix_sample")
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(builder["DISTRIBUTIONS"]) == {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in required}
