"""The README's command blocks, run as written on the sample project it builds: each command must
exit 0 without a traceback.

The blocks run in the order a reader can follow them on one project: the loop step by step (which
builds `demo` with `olmix-tui init demo --sample stdlib`), fitting and proposing, history and
comparison (applying the sample's staged update), the quick start's main job, then the domain-set
updates. Only the proxy scale differs from the sample's (set in olmix.toml right after `init`, so
that the whole README trains in a minute or two); the app's commands need a terminal (the pilot
tests drive the app), and installing or running the test suite is left to CI. The RegMix lines run
where RegMix's CSVs are present (../shared/data/regmix), copied where the README expects them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import read_toml
from engine.atomic import write_toml

ROOT = Path(__file__).resolve().parents[1]
REGMIX = ROOT.parent / "shared" / "data" / "regmix"
REGMIX_FILES = ("train_mixture_1m.csv", "train_pile_loss_1m.csv", "test_mixture_1m.csv")
ORDER = ("## The loop, step by step", "Fitting and proposing", "History, comparison and export", "## Quick start",
         "Domain-set updates are staged")
"""Where each block starts (a heading or the sentence before it), in the order the test runs them."""
NOT_HERE = ("pip install", "python -m pytest")
NEEDS_A_TERMINAL = (["olmix-tui", "demo", "--sample", "stdlib"], ["olmix-tui", "watch", "demo"])
FAST = {"proxy": {"tokens_per_proxy": 8192, "eval_tokens_per_domain": 2048}, "tokenizer": {"train_bytes": 500_000}}
"""The test's proxy scale: 16 optimiser steps per proxy, a BPE trained on 500 kB."""


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(position, commands) of each ```bash block: continued lines joined, comments dropped, && split."""
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
        commands = []
        for line in match.group(1).replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if line]
        blocks.append((match.start(), commands))
    return blocks


def in_order(text: str) -> list[list[str]]:
    """The blocks in ORDER: each is the first block after its marker."""
    blocks = bash_blocks(text)
    starts = [text.index(marker) for marker in ORDER]
    chosen = [next(commands for position, commands in blocks if position > start) for start in starts]
    assert len({id(c) for c in chosen}) == len(ORDER)
    return chosen


def test_every_readme_command_runs_on_the_sample(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = in_order(text)
    listed = {c for _, commands in bash_blocks(text) for c in commands}
    ran_or_skipped: set[str] = set()
    if REGMIX.is_dir():
        for name in REGMIX_FILES:
            shutil.copyfile(REGMIX / name, tmp_path / name)
    for commands in blocks:
        for command in commands:
            ran_or_skipped.add(command)
            argv = shlex.split(command)
            if command.startswith(NOT_HERE) or argv in NEEDS_A_TERMINAL:
                continue
            if any(name in command or "regmix" in argv for name in REGMIX_FILES) and not REGMIX.is_dir():
                continue
            assert argv[0] == "olmix-tui", command
            r = subprocess.run([sys.executable, "-m", "olmix_tui", *argv[1:]], cwd=tmp_path, capture_output=True, text=True)
            assert r.returncode == 0 and "Traceback" not in r.stderr, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            if argv[:2] == ["olmix-tui", "init"]:  # the sample as built, its proxies made tiny
                settings = read_toml(tmp_path / "demo" / "olmix.toml")
                for table, values in FAST.items():
                    settings[table].update(values)
                write_toml(tmp_path / "demo" / "olmix.toml", settings)
    blocks_left = [c for c in listed - ran_or_skipped if not c.startswith(NOT_HERE) and shlex.split(c) not in NEEDS_A_TERMINAL]
    assert not blocks_left, f"README commands in no block the test runs: {blocks_left}"
    history = sorted(p.name for p in (tmp_path / "demo" / "history").glob("*.toml"))
    assert history == ["0001-initial.toml", "0002-add.toml"]


@pytest.mark.parametrize("marker", ORDER)
def test_each_block_the_test_runs_is_in_the_readme(marker):
    assert marker in (ROOT / "README.md").read_text()
