"""The project under attack: every bad input of the table below ends in its exit code and one
sentence (no traceback), and no file outside the project changes. docs/bad-inputs.md lists the
table (`python tests/test_bad_inputs.py` rewrites that part; a test fails when they disagree).

Besides the table: the lock under stress (several processes, zero overlaps), path traversal from
every file that names a path, a kill between the history entry and domains.toml, a killed worker's
curve, --out through FIFOs and devices, a full disk and a read-only project.

One real project (a trained swarm of three tiny proxies, its fit, a history entry) is built once
per module and copied for each case; most cases run in-process through typer's CliRunner.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import tomli_w
from typer.testing import CliRunner

from conftest import TINY_PROXY, make_small_data
from engine.domains import Domain, DomainSet, with_revision
from engine.errors import LockedError
from engine.project import Project
from engine.settings import RegressionSettings, Settings, SwarmSettings, TokenizerSettings
from olmix_tui.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
BEGIN, END = "<!-- cases: tests/test_bad_inputs.py -->", "<!-- end of cases -->"
runner = CliRunner()


# ---------------------------------------------------------------- making bad inputs


def set_toml(file: str, table: str, key: str, value) -> Callable[[Path], None]:
    """Set `[table] key = value` in a project TOML file."""
    def make(root: Path) -> None:
        data = tomllib.loads((root / file).read_text())
        data.setdefault(table, {})[key] = value
        (root / file).write_text(tomli_w.dumps(data))
    return make


def write(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return make


def first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def status_file(root: Path) -> Path:
    return first(root, "swarms/*/runs/*/status.json")


def in_status(content: str) -> Callable[[Path], None]:
    return lambda root: status_file(root).write_text(content)


def edit_status(**fields) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        f = status_file(root)
        f.write_text(json.dumps({**json.loads(f.read_text()), **fields}))
    return make


def edit_entry(section: str | None, key: str, value) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        f = first(root, "history/0001-*.toml")
        data = tomllib.loads(f.read_text())
        (data[section] if section else data)[key] = value
        f.write_text(tomli_w.dumps(data))
    return make


def second_entry(root: Path) -> None:
    f = first(root, "history/0001-*.toml")
    for name in ("0002-add.toml", "0002-remove.toml"):
        shutil.copy(f, f.parent / name)


def csv_pair(ratios: str, metrics: str, encoding: str = "utf-8") -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root.parent / "outside" / "r.csv").write_text(ratios, encoding=encoding)
        (root.parent / "outside" / "m.csv").write_text(metrics, encoding=encoding)
    return make


def link_outside(root: Path) -> None:
    (root / "data" / "leak").symlink_to(root.parent / "outside")


def out_link(root: Path) -> None:
    (root / "exports").mkdir()
    (root / "exports" / "mix.json").write_text("old\n")
    (root / "mix-link.json").symlink_to(root / "exports" / "mix.json")


def predict_link(root: Path) -> None:
    (root.parent / "outside" / "candidates.csv").write_text("run,code,decimal,notes\nc1,0.2,0.3,0.5\n")
    (root / "exports").mkdir()
    (root / "predicted-link.csv").symlink_to(root / "exports" / "predicted.csv")


def foreign_lock(root: Path) -> None:
    (root / ".olmix" / "lock").write_text(json.dumps({"pid": 1, "host": "gone-host", "started": None, "since": 0,
                                                     "command": "olmix-tui run --batch"}))


def remote_running(root: Path) -> None:
    edit_status(state="running", pid=4242, host="gone-host", updated=time.time() - 3600)(root)


def both(*makes: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for m in makes:
            m(root)
    return make


def corrupt(pattern: str, content: bytes = b"\x00garbage") -> Callable[[Path], None]:
    return lambda root: first(root, pattern).write_bytes(content)


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """A bad input: how to make it in a copy of the project, the command (``{root}`` is the
    project, ``{out}`` a folder beside it), the exit code, and a fragment of the one sentence."""

    id: str
    input: str  # the bad input, as docs/bad-inputs.md lists it
    make: Callable[[Path], None]
    args: tuple[str, ...]
    code: int
    message: str
    check: Callable[[Path], None] | None = None  # more to assert afterwards (what was written, where)

    def argv(self, root: Path) -> list[str]:
        return [a.format(root=root, out=root.parent / "outside") for a in self.args]


def _link_kept(root: Path) -> None:
    assert (root / "mix-link.json").is_symlink()
    assert '"mixture"' in (root / "exports" / "mix.json").read_text()


def _predictions_kept(root: Path) -> None:
    assert (root / "predicted-link.csv").is_symlink()
    assert (root / "exports" / "predicted.csv").read_text().startswith("run,")


def _nothing_imported(root: Path) -> None:
    assert not list((root / "swarms").glob(".*.importing"))


OK_CSV = "run,a,b\nr1,0.5,0.5\nr2,0.2,0.8\n"
PARTITION = write("pending.toml", "[[changes]]\nkind = 'partition'\ndomain = 'code'\n[changes.parts]\n"
                                  "'code:json' = ['data/code/json.jsonl']\n'code:email' = ['data/code/email.jsonl']\n")
"""A staged update whose plan needs a swarm (partial reuse over the two parts)."""
CASES = [
    # -- olmix.toml: decoded, typed and bounded when the project loads, before anything runs
    Case("toml-binary", "olmix.toml is a binary file", write("olmix.toml", b"\x00\xff\xfe\x01"),
         ("status", "{root}"), 1, "olmix.toml is not UTF-8 text"),
    Case("toml-latin1", "olmix.toml saved as latin-1", write("olmix.toml", b"[project]\nname = 'caf\xe9'\n"),
         ("status", "{root}"), 1, "is not UTF-8 text (byte 0xe9"),
    Case("toml-nesting", "olmix.toml nesting 100000 arrays deep", write("olmix.toml", "a = " + "[" * 100_000),
         ("status", "{root}"), 1, "is not valid TOML"),
    Case("toml-fifo", "olmix.toml a FIFO (it would be read forever)",
         lambda root: ((root / "olmix.toml").unlink(), os.mkfifo(root / "olmix.toml")), ("status", "{root}"), 1,
         "olmix.toml is not a regular file"),
    Case("tokenizer-latin1", "tokenizer.json saved as latin-1",
         both(set_toml("olmix.toml", "tokenizer", "kind", "bpe"), write("tokenizer/tokenizer.json", b"{\"caf\xe9\": 1}")),
         ("tokenize", "{root}"), 1, "tokenizer.json is not UTF-8 text"),
    Case("runs-per-domain-float", "`[swarm] runs_per_domain = 1e9`", set_toml("olmix.toml", "swarm", "runs_per_domain", 1e9),
         ("swarm", "plan", "{root}"), 1, "[swarm].runs_per_domain must be an integer, got 1000000000.0"),
    Case("runs-per-domain-huge", "`[swarm] runs_per_domain = 1000000000`",
         set_toml("olmix.toml", "swarm", "runs_per_domain", 10**9), ("swarm", "plan", "{root}"), 1,
         "runs_per_domain 1000000000 is more than 100000"),
    Case("swarm-size-huge", "`[swarm] runs_per_domain = 40000` on an update of 4 units (160000 runs)",
         both(PARTITION, set_toml("olmix.toml", "swarm", "runs_per_domain", 40_000), set_toml("olmix.toml", "swarm", "size", 0)), ("swarm", "plan", "{root}"), 1,
         "runs_per_domain 40000 x 4 units is 160000 runs, more than 100000"),
    Case("swarm-seed-negative", "`[swarm] seed = -5`", set_toml("olmix.toml", "swarm", "seed", -5),
         ("swarm", "plan", "{root}"), 1, "[swarm] seed is -5; use a seed between 0 and 4294967295"),
    Case("proxy-seed-negative", "`[proxy] seed = -1`", set_toml("olmix.toml", "proxy", "seed", -1),
         ("swarm", "run", "{root}"), 1, "[proxy] seed is -1"),
    Case("poll-negative", "`[executor] poll_seconds = -1`", set_toml("olmix.toml", "executor", "poll_seconds", -1),
         ("swarm", "run", "{root}"), 1, "poll_seconds > 0"),
    Case("poll-huge", "`[executor] poll_seconds = 1e9`", set_toml("olmix.toml", "executor", "poll_seconds", 1e9),
         ("swarm", "run", "{root}"), 1, "poll_seconds is 1000000000.0; use at most 60"),
    Case("loglinear-inits", "`[regression] loglinear_inits = 0`",
         set_toml("olmix.toml", "regression", "loglinear_inits", 0), ("fit", "{root}"), 1,
         "[regression] loglinear_inits is 0; use between 1 and 100000"),
    Case("loglinear-iterations", "`[regression] loglinear_iterations = 0`",
         set_toml("olmix.toml", "regression", "loglinear_iterations", 0), ("propose", "{root}"), 1,
         "loglinear_iterations is 0"),
    Case("kl-reg-huge", "`[propose] kl_reg = 1e300`", set_toml("olmix.toml", "propose", "kl_reg", 1e300),
         ("propose", "{root}"), 1, "[propose] kl_reg is 1e+300; use at most 1000"),
    Case("dtype-float16", "`[proxy] dtype = \"float16\"`", set_toml("olmix.toml", "proxy", "dtype", "float16"),
         ("swarm", "run", "{root}"), 1, "dtype 'float16' is unknown; use one of auto, float32, bfloat16"),
    Case("eval-tokens-negative", "`[proxy] eval_tokens_per_domain = -1`",
         set_toml("olmix.toml", "proxy", "eval_tokens_per_domain", -1), ("swarm", "run", "{root}"), 1,
         "eval_tokens_per_domain must be at least 1"),
    Case("eval-set-missing", "`[data] eval_sets` naming a file that does not exist",
         both(PARTITION, set_toml("olmix.toml", "data", "eval_sets", {"held": "evals/none.jsonl"})),
         ("swarm", "plan", "{root}"), 1,
         "evals/none.jsonl does not exist"),
    Case("eval-set-fifo", "`[data] eval_sets` naming a FIFO (read forever)",
         both(PARTITION, lambda root: os.mkfifo(root / "evals.fifo"),
              set_toml("olmix.toml", "data", "eval_sets", {"held": "evals.fifo"})), ("swarm", "plan", "{root}"), 1,
         "is not a regular file"),
    Case("eval-set-outside", "`[data] eval_sets` naming a file outside the project",
         set_toml("olmix.toml", "data", "eval_sets", {"held": "../outside/secret.txt"}), ("status", "{root}"), 1,
         "is outside the project folder; copy the file into the project or set external_sources = true"),
    Case("tokenizer-path-outside", "`[tokenizer] path = \"../tok\"` (the BPE is written there)",
         both(set_toml("olmix.toml", "tokenizer", "kind", "bpe"), set_toml("olmix.toml", "tokenizer", "path", "../tok")),
         ("tokenize", "{root}"), 1,
         "path '../tok' is not a folder inside the project"),
    # -- domains.toml and pending.toml
    Case("domains-binary", "domains.toml is a binary file", write("domains.toml", b"\xff\xd8\xff\xe0"),
         ("status", "{root}"), 1, "domains.toml is not UTF-8 text"),
    Case("pending-latin1", "pending.toml saved as latin-1",
         write("pending.toml", b"[[changes]]\nkind = 'remove'\ndomain = 'd\xe9cimal'\n"), ("status", "{root}"), 1,
         "pending.toml is not UTF-8 text"),
    Case("pending-parts", "pending.toml: a partition whose parts are not a table",
         write("pending.toml", "[[changes]]\nkind = 'partition'\ndomain = 'code'\nparts = 'code:a'\n"),
         ("status", "{root}"), 1, "'parts' must be a table of part name = [files or globs]"),
    Case("source-absolute", "a domain source outside the project (absolute path)", lambda root: None,
         ("domains", "add", "{root}", "leak", "{out}/secret.txt"), 1, "is outside the project folder"),
    Case("source-dotdot", "a domain source outside the project (`../`)", lambda root: None,
         ("domains", "add", "{root}", "leak", "../outside/*.txt"), 1, "is outside the project folder"),
    Case("source-symlink", "a domain source reaching outside through a symlink", link_outside,
         ("domains", "add", "{root}", "leak", "data/leak/*.txt"), 1, "leads outside the project folder"),
    Case("pending-source-outside", "pending.toml adding a domain from outside the project",
         write("pending.toml", "[[changes]]\nkind = 'add'\ndomain = 'leak'\nsources = ['/etc/hostname']\n"),
         ("tokenize", "{root}"), 1, "source '/etc/hostname' is outside the project folder"),
    Case("source-gz-broken", "a `.gz` source that is not gzip",
         both(write("data/broken/a.txt.gz", b"not gzip at all"),
              write("pending.toml", "[[changes]]\nkind = 'add'\ndomain = 'broken'\nsources = ['data/broken/*.gz']\n")),
         ("tokenize", "{root}"), 1, "a.txt.gz cannot be read (Not a gzipped file"),
    Case("source-changed", "a domain's files changed without `domains revise` (a warning; the tokenized revision is used)",
         lambda root: first(root, "data/notes/*.txt").open("a").write("more text\n"), ("tokenize", "{root}"), 0,
         "changed since revision"),
    Case("partition-parent-name", "partitioning a domain into a part named like the domain", lambda root: None,
         ("domains", "partition", "{root}", "code", "--part", "code=data/code/json.jsonl",
          "--part", "code:email=data/code/email.jsonl"), 1, "is the name of the domain being partitioned"),
    Case("name-too-long", "a domain name of 200 characters", lambda root: None,
         ("domains", "add", "{root}", "d" * 200, "data/notes/*.txt"), 1, "at most 100 characters"),
    # -- history
    Case("history-weight-5", "a history weight of 5.0", edit_entry("mixture", "code", 5.0), ("history", "{root}"), 1,
         "mixture weight code = 5.0 is not between 0 and 1"),
    Case("history-weight-negative", "a history weight of -0.5", edit_entry("mixture", "code", -0.5), ("export", "{root}"), 1,
         "mixture weight code = -0.5 is not between 0 and 1"),
    Case("history-weight-nan", "a history weight of NaN", edit_entry("mixture", "code", math.nan), ("export", "{root}"), 1,
         "mixture weight code = nan is not between 0 and 1"),
    Case("history-two-0002", "two `0002-*` entries after a git merge", second_entry, ("history", "{root}"), 1,
         "history has two entries numbered 0002 (0002-add.toml and 0002-remove.toml)"),
    Case("history-latin1", "a history entry saved as latin-1", write("history/0002-add.toml", b"kind = 'caf\xe9'\n"),
         ("diff", "{root}"), 1, "0002-add.toml is not UTF-8 text"),
    Case("history-symlink", "the history folder a symlink leading outside the project (as a cloned repo may hold)",
         lambda root: (shutil.rmtree(root / "history"), (root / "history").symlink_to(root.parent / "outside")),
         ("status", "{root}"), 1, "leads outside the project"),
    Case("swarm-symlink", "a swarm folder that is a symlink",
         lambda root: (root / "swarms" / "linked").symlink_to(first(root, "swarms/*/swarm.toml").parent),
         ("swarm", "status", "{root}"), 1, "is a symlink; a swarm's files stay in the project"),
    Case("history-fit-traversal", "a history entry whose fit id is a path (`../../x`)",
         edit_entry(None, "fit", "../../x"), ("status", "{root}"), 1, "fit name '../../x' is not valid"),
    # -- run files, fits, the token store
    Case("status-truncated", "a run's status.json truncated", in_status('{"run": "x", "sta'),
         ("swarm", "status", "{root}"), 1, "status.json is damaged (is not valid JSON"),
    Case("status-empty", "a run's status.json empty", in_status(""), ("swarm", "status", "{root}"), 1,
         "status.json is damaged (is empty)"),
    Case("status-list", "a run's status.json holding `[]`", in_status("[]"), ("swarm", "status", "{root}"), 1,
         "holds list, not a run's status"),
    Case("status-state", "a run's status.json with state \"queued\"", edit_status(state="queued"),
         ("swarm", "status", "{root}"), 1, "state 'queued' is unknown"),
    Case("status-pid", "a run's status.json with `pid = \"abc\"`", edit_status(state="running", pid="abc"),
         ("swarm", "status", "{root}"), 1, "'pid' must be an integer, got 'abc'"),
    Case("status-remote-silent", "a run `running` on another host that stopped writing an hour ago",
         remote_running, ("swarm", "status", "{root}"), 0, "interrupted"),
    Case("swarm-toml", "a swarm.toml that is not TOML", corrupt("swarms/*/swarm.toml", b"[[[\n"),
         ("swarm", "status", "{root}"), 1, "swarm.toml is not valid TOML"),
    Case("fit-toml", "a corrupt fit.toml", corrupt("fits/*/fit.toml", b"fit_id = 3\n"), ("fit", "{root}"), 1,
         "is damaged (no key 'cv'); delete the folder and fit again"),
    Case("regressor-json", "a corrupt regressor.json", corrupt("fits/*/model/regressor.json", b"{\"name\": 1"),
         ("fit", "{root}"), 1, "regressor.json is not valid JSON"),
    Case("npz", "a corrupt .npz model file", corrupt("fits/*/model/*.npz"), ("fit", "{root}"), 1,
         ".npz is damaged"),
    Case("token-meta", "a corrupt token-store meta.json", corrupt(".olmix/tokens/code-*/meta.json", b"{\"dtype\": \"int8\"}"),
         ("status", "{root}"), 1, "run `olmix-tui tokenize` to tokenize the domain again"),
    # -- locks and owners
    Case("lock-stale", "a lock file left by a process on a host that is gone", foreign_lock,
         ("tokenize", "{root}"), 0, "token store"),
    # -- import-swarm
    Case("import-traversal", "import-swarm: run id `../../../../pwned`",
         csv_pair("run,a,b\n../../../../pwned,0.5,0.5\n/abs/run,0.4,0.6\n", "run,loss\n../../../../pwned,1\n/abs/run,2\n"),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv"), 0, "imported swarm"),
    Case("import-duplicate-domain", "import-swarm: a domain column twice",
         csv_pair("run,a,a,b\nr1,0.25,0.25,0.5\nr2,0.1,0.1,0.8\n", "run,loss\nr1,1\nr2,2\n"),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv"), 1,
         "has two columns named 'a'", _nothing_imported),
    Case("import-duplicate-metric", "import-swarm: a metric column twice (RegMix prefixes stripped)",
         csv_pair(OK_CSV, "index,metric/loss,loss2,metric/loss\nr1,1,2,3\nr2,2,3,4\n".replace("index", "run")),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv"), 1,
         "has two columns named 'loss'", _nothing_imported),
    Case("import-name-path", "import-swarm `--name ../x`", csv_pair(OK_CSV, "run,loss\nr1,1\nr2,2\n"),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv", "--name", "../x"), 1,
         "swarm name '../x' is not valid"),
    Case("import-latin1", "import-swarm: a latin-1 CSV", csv_pair("run,caf\xe9\nr1,1\n", "run,loss\nr1,1\n", "latin-1"),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv"), 1, "is not UTF-8 text"),
    Case("import-bom", "import-swarm: CSVs saved with a byte-order mark (a spreadsheet's UTF-8)",
         csv_pair(OK_CSV, "run,loss\nr1,1\nr2,2\n", "utf-8-sig"),
         ("import-swarm", "{root}", "--ratios", "{out}/r.csv", "--metrics", "{out}/m.csv"), 0, "imported swarm"),
    Case("import-killed", "a folder left by a killed import (`swarms/.<id>.importing/`)",
         lambda root: shutil.copytree(first(root, "swarms/*/swarm.toml").parent, root / "swarms" / ".dead.importing"),
         ("swarm", "status", "{root}", "--swarm", ".dead"), 1, "swarm '.dead' does not exist"),
    # -- the command line
    Case("seeds-negative", "`--seeds -3` (checked before anything trains)", lambda root: None,
         ("run", "{root}", "--batch", "--compare", "--seeds", "-3"), 2, "Invalid value for '--seeds'"),
    Case("out-symlink", "`export --out` a symlink (written through, kept)", out_link,
         ("export", "{root}", "--out", "{root}/mix-link.json"), 0, "wrote", _link_kept),
    Case("predict-out-symlink", "`predict --out` a symlink (written through, kept)", predict_link,
         ("predict", "{root}", "--mixtures", "{out}/candidates.csv", "--out", "{root}/predicted-link.csv"), 0, "wrote",
         _predictions_kept),
    Case("out-folder", "`export --out` a folder", lambda root: None, ("export", "{root}", "--out", "{root}/data"), 1,
         "is a folder"),
    Case("init-on-file", "`init` on a path that is a file", lambda root: None, ("init", "{out}/secret.txt"), 1,
         "is a file, not a folder"),
]


# ---------------------------------------------------------------- the project every case starts from


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A project with a trained swarm of three tiny proxies, its log-linear fit and history entry 0001."""
    from engine import pipeline

    root = tmp_path_factory.mktemp("base") / "proj"
    root.mkdir()
    make_small_data(root)
    domains = DomainSet(tuple(with_revision(root, d) for d in (
        Domain("code", ("data/code/*.jsonl",)), Domain("notes", ("data/notes/*.txt",)),
        Domain("decimal", ("data/decimal/*.txt",)))))
    settings = Settings(tokenizer=TokenizerSettings(kind="bytes"), proxy=TINY_PROXY, swarm=SwarmSettings(size=3),
                        regression=RegressionSettings(regressor="loglinear", folds=3))
    pipeline.run_batch(Project.init(root, settings, domains))
    return root


def copy_project(base: Path, tmp_path: Path) -> Path:
    """A copy of the base project at tmp_path/proj, with tmp_path/outside/secret.txt beside it."""
    root = tmp_path / "proj"
    shutil.copytree(base, root, symlinks=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("not the project's\n")
    return root


def outside_snapshot(root: Path) -> dict[str, tuple]:
    """Every path under the project's parent folder but outside the project, with its kind and content."""
    out = {}
    for path in sorted(root.parent.rglob("*")):
        if path == root or root in path.parents:
            continue
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file" if path.is_file() else "other"
        out[str(path.relative_to(root.parent))] = (kind, path.read_bytes() if kind == "file" else None)
    return out


def run_cli(argv: list[str]):
    result = runner.invoke(app, argv)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"{argv} raised {result.exception!r}"
    assert "Traceback" not in result.output, result.output
    return result


def assert_one_sentence(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    text = lines[0].removeprefix("error: ")
    assert text.endswith(".") and not re.search(r"\.\s+[A-Z]", text), text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base, tmp_path):
    root = copy_project(base, tmp_path)
    case.make(root)
    before = outside_snapshot(root)
    result = run_cli(case.argv(root))
    assert result.exit_code == case.code, result.output
    assert case.message in " ".join(result.output.split()), result.output
    if case.code == 1:
        assert_one_sentence(result.stderr)
    assert outside_snapshot(root) == before, "a file outside the project changed"
    if case.check is not None:
        case.check(root)


# ---------------------------------------------------------------- the lock


def _hammer(root: str, seconds: float, marker: str, counts) -> None:
    """Take the project lock as often as possible for `seconds`; count acquisitions and overlaps
    (another holder's marker present while this process holds the lock)."""
    project = Project.load(root)
    deadline = time.monotonic() + seconds
    taken = overlaps = 0
    while time.monotonic() < deadline:
        try:
            with project.lock():
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlaps += 1
                    continue
                time.sleep(0.0005)
                os.close(fd)
                os.unlink(marker)
                taken += 1
        except LockedError:
            pass
    counts.put((taken, overlaps))


def test_lock_under_stress_is_mutual_exclusion(base, tmp_path):
    root = copy_project(base, tmp_path)
    ctx = mp.get_context("spawn")
    counts = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(root), 4.0, str(tmp_path / "held"), counts)) for _ in range(4)]
    for proc in procs:
        proc.start()
    results = [counts.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert sum(taken for taken, _ in results) > 50, results
    assert sum(overlaps for _, overlaps in results) == 0, results
    assert (root / ".olmix" / "lock").exists()  # never deleted


def _hold(root: str, ready, release) -> None:
    with Project.load(root).lock():
        ready.set()
        release.wait(60)


def test_a_held_lock_names_its_holder_and_break_lock_says_what_it_breaks(base, tmp_path):
    root = copy_project(base, tmp_path)
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(root), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        result = run_cli(["domains", "remove", str(root), "decimal"])
        assert result.exit_code == 1 and f"the project is locked by pid {holder.pid} on " in result.output
        assert "wait for it to finish or stop it" in result.output
        result = run_cli(["domains", "remove", str(root), "decimal", "--break-lock"])  # a live holder here: refused
        assert result.exit_code == 1 and f"still runs on this machine; stop it (kill {holder.pid})" in result.output
        lock = root / ".olmix" / "lock"
        info = json.loads(lock.read_text())
        lock.write_text(json.dumps({**info, "host": "gone-host"}))  # as a holder on another machine writes it
        result = run_cli(["domains", "remove", str(root), "decimal"])
        assert result.exit_code == 1 and "which this machine cannot see running; if it is gone" in result.output
        result = run_cli(["domains", "remove", str(root), "decimal", "--break-lock"])
        assert result.exit_code == 0, result.output
        said = " ".join(result.stderr.split())
        assert f"broke the lock of the project held by pid {holder.pid} on gone-host" in said
        assert "staged: remove decimal" in result.stdout
    finally:
        release.set()
        holder.join(30)


# ---------------------------------------------------------------- paths confined to the project

TRAVERSALS = ["../../../../pwned", "/tmp/olmix-pwned", "..", "a/../../b", "x" * 300]


def test_no_name_from_a_file_or_an_option_becomes_a_path_outside(base, tmp_path):
    """Run ids, swarm and fit ids, --name, --swarm and sources that try to leave the project."""
    root = copy_project(base, tmp_path)
    before = outside_snapshot(root)
    for bad in TRAVERSALS:
        rows = "".join(f"{bad}{i},0.5,0.5\n" for i in range(2))
        (tmp_path / "outside" / "r.csv").write_text("run,a,b\n" + rows)
        (tmp_path / "outside" / "m.csv").write_text("run,loss\n" + rows.replace(",0.5,0.5", ",1"))
        before = outside_snapshot(root)
        imported = run_cli(["import-swarm", str(root), "--ratios", str(tmp_path / "outside" / "r.csv"),
                            "--metrics", str(tmp_path / "outside" / "m.csv"), "--json"])
        assert imported.exit_code == 0, imported.output  # run ids are values of the table, not paths
        assert f"{bad}0" in run_cli(["swarm", "status", str(root), "--swarm", json.loads(imported.stdout)["swarm"],
                                     "--json"]).stdout
        for args in (["import-swarm", str(root), "--ratios", str(tmp_path / "outside" / "r.csv"), "--metrics",
                      str(tmp_path / "outside" / "m.csv"), "--name", bad],
                     ["swarm", "status", str(root), "--swarm", bad],
                     ["domains", "add", str(root), "leak", bad],
                     ["domains", "add", str(root), bad, "data/notes/*.txt"]):
            assert run_cli(args).exit_code == 1, args
        for key in ("fit", "swarm"):
            entry = first(root, "history/0001-*.toml")
            saved = entry.read_text()
            edit_entry(None, key, bad)(root)
            assert run_cli(["diff", str(root)]).exit_code == 1
            entry.write_text(saved)
        fit_toml = first(root, "fits/*/fit.toml")
        saved = fit_toml.read_text()
        fit_toml.write_text(saved.replace("source_swarms = [", f"source_swarms = [{json.dumps(bad)}, "))
        from engine import pipeline
        from engine.errors import OlmixError
        from engine.regression.store import load_fit

        project = Project.load(root)
        with pytest.raises(OlmixError, match="swarm name .* is not valid"):
            pipeline.preview_proposal(project, load_fit(fit_toml.parent), project.settings.propose)
        fit_toml.write_text(saved)
        assert outside_snapshot(root) == before, bad
    assert not Path("/tmp/olmix-pwned").exists()


# ---------------------------------------------------------------- the history entry and domains.toml as one step


def test_a_kill_between_the_history_entry_and_domains_toml_is_completed_by_the_next_command(base, tmp_path):
    root = copy_project(base, tmp_path)
    assert run_cli(["domains", "remove", str(root), "decimal"]).exit_code == 0
    killer = textwrap.dedent(f"""
        import os, signal
        from engine import atomic, pipeline
        from engine.project import Project
        write_text = atomic.write_text
        def dying(path, text):
            if str(path).endswith("domains.toml"):  # the entry is written: die before domains.toml
                os.kill(os.getpid(), signal.SIGKILL)
            return write_text(path, text)
        atomic.write_text = dying
        pipeline.run_batch(Project.load({str(root)!r}))
    """)
    assert subprocess.run([sys.executable, "-c", killer], cwd=Path(__file__).parents[1]).returncode == -signal.SIGKILL
    assert (root / "history" / "0002-remove.toml").exists() and (root / ".olmix" / "journal.json").exists()
    assert "decimal" in tomllib.loads((root / "domains.toml").read_text())["domains"]  # not written yet
    # readers see the update applied, and write nothing
    info = json.loads(run_cli(["status", str(root), "--json"]).stdout)
    assert [d["name"] for d in info["domains"]] == ["code", "notes"] and info["pending"] is None
    assert info["last_entry"] == "0002-remove" and (root / ".olmix" / "journal.json").exists()
    # the next writer completes it, and the loop goes on
    result = run_cli(["run", str(root), "--batch"])
    assert result.exit_code == 0, result.output
    assert not (root / ".olmix" / "journal.json").exists() and not (root / "pending.toml").exists()
    assert sorted(tomllib.loads((root / "domains.toml").read_text())["domains"]) == ["code", "notes"]
    assert [p.name for p in sorted((root / "history").glob("*.toml"))] == ["0001-initial.toml", "0002-remove.toml"]


def test_changes_staged_while_an_update_runs_stay_staged(base, tmp_path):
    """The update applies only the changes it planned; one staged meanwhile (from another process:
    the app, a second terminal) is kept; if its changes were discarded meanwhile, nothing is applied."""
    from engine import pipeline
    from engine.errors import OlmixError

    root = copy_project(base, tmp_path)
    assert run_cli(["domains", "remove", str(root), "decimal"]).exit_code == 0
    project = Project.load(root)
    ctx = pipeline.update_context(project)
    record = pipeline.run_update(project, ctx)  # a removal: renormalised, no swarm
    staged = run_cli(["domains", "partition", str(root), "code", "--part", "code:json=data/code/json.jsonl",
                      "--part", "code:email=data/code/email.jsonl"])
    assert staged.exit_code == 0 and "(2 change(s) pending)" in staged.output
    entry = pipeline.apply_update(project, ctx, record)
    assert entry.label == "0002-remove"
    assert [c.describe() for c in Project.load(root).pending] == ["partition code into code:email, code:json"]
    assert sorted(Project.load(root).domains.names) == ["code", "notes"]
    # planned changes discarded meanwhile: refused, nothing written
    project = Project.load(root)
    ctx = pipeline.update_context(project)
    assert run_cli(["domains", "discard", str(root)]).exit_code == 0
    with pytest.raises(OlmixError, match="the pending update changed while this update ran"):
        pipeline.apply_update(project, ctx, pipeline.UpdateRecord(record.plan, {"code": 0.5, "notes": 0.5}))
    assert len(list((root / "history").glob("*.toml"))) == 2


# ---------------------------------------------------------------- run owners, attempts and curves


def test_a_running_run_of_a_reused_pid_or_a_silent_host_is_interrupted(base, tmp_path):
    from engine import pipeline
    from engine.executors.liveness import process_start

    root = copy_project(base, tmp_path)
    swarm = pipeline.find_swarm(Project.load(root), None)
    run = swarm.run_ids[0]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        swarm.write_status(run, state="running", pid=sleeper.pid, host=socket.gethostname(),
                           started=process_start(sleeper.pid))
        assert swarm.status(run).state == "running"
        swarm.write_status(run, started="another-boot:12345")  # the same pid, another process
        assert swarm.status(run).state == "interrupted"
    finally:
        sleeper.kill()
        sleeper.wait()
    swarm.write_status(run, state="running", pid=4242, host="gone-host", started=None)
    assert swarm.status(run).state == "running"  # it wrote just now: trusted


def test_swarm_run_says_what_it_waits_for_and_takes_over_from_a_silent_host(base, tmp_path, monkeypatch):
    from engine import pipeline
    from engine.events import Message
    from engine.executors import liveness

    root = copy_project(base, tmp_path)
    project = Project.load(root)
    swarm = pipeline.find_swarm(project, None)
    run = swarm.run_ids[0]
    attempt = swarm.status(run).attempt
    swarm.write_status(run, state="running", pid=4242, host="gone-host", progress=0.5)
    monkeypatch.setattr(liveness, "STALE_SECONDS", 3.0)
    stop = threading.Event()

    def remote_worker() -> None:  # writes the run's status, as a live worker on gone-host does, until stopped
        while not stop.wait(0.5):
            swarm.write_status(run, progress=0.6)

    beat = threading.Thread(target=remote_worker)
    beat.start()
    said = []

    def on_event(event) -> None:
        if isinstance(event, Message):
            said.append(event.text)
            if "waiting for" in event.text:  # gone-host goes silent
                stop.set()
                beat.join()

    try:
        counts = pipeline.train_swarm(project, swarm, on_event=on_event)
    finally:
        stop.set()
        beat.join()
    assert counts["done"] == 3
    assert any("waiting for 1 run(s) trained by another scheduler: worker 4242 on gone-host, which this machine "
               "cannot check" in text for text in said), said
    assert swarm.status(run).attempt == attempt + 1 and swarm.status(run).host != "gone-host"


def new_swarm(root: Path, steps: int, eval_every: int = 0):
    """A new swarm of three runs of `steps` steps (a full recomputation after removing a domain)."""
    from engine import pipeline
    from engine.training.presets import get_preset

    set_toml("olmix.toml", "proxy", "tokens_per_proxy", get_preset("cpu").tokens_per_step * steps)(root)
    set_toml("olmix.toml", "proxy", "eval_every", eval_every)(root)
    set_toml("olmix.toml", "reuse", "plan", "full")(root)
    assert run_cli(["domains", "remove", str(root), "decimal"]).exit_code == 0
    project = Project.load(root)
    ctx = pipeline.update_context(project)
    return project, pipeline.plan_swarm(project, ctx, pipeline.make_plan(project, ctx))[0]


def test_a_worker_killed_under_a_live_swarm_run_leaves_its_runs_failed(base, tmp_path):
    """As docs/bad-inputs.md says: the scheduler that sees its worker die marks the runs failed
    (with the exit code), and `--retry-failed` trains them again."""
    from engine import pipeline

    # Long enough runs that the kill lands mid-batch even when this thread is starved for seconds.
    project, swarm = new_swarm(copy_project(base, tmp_path), steps=400)
    counts = {}
    scheduler = threading.Thread(target=lambda: counts.update(pipeline.train_swarm(project, swarm)))
    scheduler.start()
    deadline = time.monotonic() + 120
    training = []
    while time.monotonic() < deadline and not training:
        training = [s for s in swarm.statuses() if s.state == "running" and s.pid and s.progress > 0]
        time.sleep(0.02)
    victim = training[0]
    os.kill(victim.pid, signal.SIGKILL)
    scheduler.join(300)
    assert counts["failed"] >= 1
    assert swarm.status(victim.run).state == "failed"
    assert swarm.status(victim.run).error.startswith(f"worker exit code {-signal.SIGKILL}")
    assert pipeline.train_swarm(project, swarm, retry_failed=True)["done"] == 3


def test_a_retried_attempt_replaces_the_killed_attempt_s_curve(base, tmp_path):
    from engine import pipeline
    from engine.runs import CURVE_FILE

    # a point every 20 steps, killed after the second: 160 steps of margin for a starved test thread
    project, swarm = new_swarm(copy_project(base, tmp_path), steps=200, eval_every=20)
    run = swarm.run_ids[0]
    curve = swarm.path / "runs" / run / CURVE_FILE
    worker = subprocess.Popen([sys.executable, "-m", "engine.executors.worker", str(swarm.path), "--device", "cpu",
                               "--threads", "1", run], cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(swarm.curve(run)) < 2 and worker.poll() is None:
        time.sleep(0.05)
    worker.kill()
    worker.wait()
    dead = swarm.curve(run)
    assert len(dead) >= 2 and swarm.status(run).state == "interrupted", dead
    with open(curve, "a") as f:
        f.write('{"step": 99, "lo')  # the killed worker's last line, torn
    pipeline.train_swarm(project, swarm)
    status = swarm.status(run)
    assert status.state == "done" and status.attempt == 2
    points = swarm.curve(run)
    assert [p["step"] for p in points] == sorted({p["step"] for p in points}) and points[-1]["step"] == 200
    assert all(p["attempt"] == 2 for p in points)
    lines = curve.read_text().splitlines()
    assert '{"step": 99, "lo' in lines  # the torn line stays a line of its own, skipped by readers
    assert len(lines) == len(dead) + 1 + len(points)


# ---------------------------------------------------------------- --out through FIFOs and devices


def test_out_writes_through_a_fifo_and_dev_stdout(base, tmp_path):
    root = copy_project(base, tmp_path)
    fifo = tmp_path / "outside" / "mix.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert run_cli(["export", str(root), "--out", str(fifo)]).exit_code == 0
    reader.join(30)
    assert '"mixture"' in got[0] and not fifo.is_file() and fifo.exists()
    log = tmp_path / "outside" / "log.txt"
    log.write_text("before\n")
    with open(log, "a") as out:  # `>> log.txt`: what was there stays
        subprocess.run([sys.executable, "-m", "olmix_tui", "export", str(root), "--out", "/dev/stdout"], stdout=out,
                       check=True, cwd=Path(__file__).parents[1])
    text = log.read_text()
    assert text.startswith("before\n") and '"mixture"' in text


# ---------------------------------------------------------------- a full disk, a read-only project


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs mounted at tmp_path/fs (needs root and permission to mount; skipped otherwise)."""
    mount = tmp_path / "fs"
    mount.mkdir()

    def mount_fs(size_kb: int, *options: str) -> None:
        opts = ",".join([f"size={size_kb}k", *options])
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")

    def remount(*options: str) -> None:
        subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(mount)], check=True)

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    yield mount, mount_fs, remount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _size_kb(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) // 1024


def test_a_full_disk_ends_in_one_sentence_and_loses_nothing(base, small_fs):
    mount, mount_fs, _ = small_fs
    mount_fs(_size_kb(base) + 2048)
    root = mount / "proj"
    shutil.copytree(base, root, symlinks=True)
    shutil.rmtree(root / ".olmix" / "tokens")  # tokenizing writes again
    filler = fill(mount / "filler")
    result = run_cli(["tokenize", str(root)])
    assert result.exit_code == 1 and "there is no space left on the device holding" in result.output
    assert_one_sentence(result.stderr)
    assert not list((root / ".olmix" / "tokens").rglob("*.tmp"))  # no half-written token files left
    filler.unlink()
    assert run_cli(["tokenize", str(root)]).exit_code == 0
    assert run_cli(["history", str(root)]).exit_code == 0


def test_a_disk_that_fills_under_swarm_run_ends_in_one_sentence_and_the_swarm_resumes(base, small_fs):
    mount, mount_fs, _ = small_fs
    mount_fs(_size_kb(base) + 4096)
    root = mount / "proj"
    shutil.copytree(base, root, symlinks=True)
    project, swarm = new_swarm(root, steps=12)
    filler = fill(mount / "filler")
    result = run_cli(["swarm", "run", str(root), "--swarm", swarm.id])
    assert result.exit_code == 1 and "there is no space left on the device holding" in result.output, result.output
    assert_one_sentence(result.stderr)
    filler.unlink()
    deadline = time.monotonic() + 60  # workers it started find the disk full too, and end
    while any(s.state == "running" for s in swarm.statuses()) and time.monotonic() < deadline:
        time.sleep(0.2)
    result = run_cli(["swarm", "run", str(root), "--swarm", swarm.id, "--retry-failed"])
    assert result.exit_code == 0, result.output
    assert swarm.counts()["done"] == 3


def fill(filler: Path) -> Path:
    """Fill the file system holding `filler` to the last block."""
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_read_only_project_reads_fits_and_proposes_and_refuses_writes_in_one_sentence(base, small_fs):
    mount, mount_fs, remount = small_fs
    mount_fs(_size_kb(base) + 4096)
    root = mount / "proj"
    shutil.copytree(base, root, symlinks=True)
    remount("ro")
    for args in (["status", root], ["history", root], ["export", root], ["diff", root, "1", "1"],
                 ["swarm", "status", root], ["tokenize", root], ["fit", root]):
        result = run_cli([str(a) for a in args])
        assert result.exit_code == 0, (args, result.output)
    result = run_cli(["propose", str(root), "--force"])  # the base's fit is too small to be usable
    assert result.exit_code == 0 and "the plot was not saved" in " ".join(result.output.split())
    result = run_cli(["domains", "remove", str(root), "decimal"])
    assert result.exit_code == 1 and "is on a read-only file system" in result.output
    assert_one_sentence(result.stderr)


# ---------------------------------------------------------------- docs/bad-inputs.md lists the table


def doc_table() -> str:
    rows = ["| input | command | exit | answer (a fragment) |", "| --- | --- | --- | --- |"]
    for c in CASES:
        command = " ".join(["olmix-tui", *(a if len(a) <= 40 else a[:20] + "..." for a in c.args)])
        command = command.replace("{root}", "DIR").replace("{out}", "OUT").replace("|", "\\|")
        answer = c.message.replace("|", "\\|") or "(succeeds)"
        rows.append(f"| {c.input} | `{command}` | {c.code} | {answer} |")
    return "\n".join(rows)


def doc_block(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def test_docs_list_every_case():
    assert doc_block(DOC.read_text()) == doc_table(), "run `python tests/test_bad_inputs.py` to update docs/bad-inputs.md"


if __name__ == "__main__":
    text = DOC.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n\n" + doc_table() + "\n\n" + text[end:])
    print(f"wrote {len(CASES)} cases into {DOC}")
