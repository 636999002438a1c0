import multiprocessing as mp
import subprocess
import sys
import textwrap

import pytest

from engine import atomic
from engine.errors import ConfigError, LockedError
from engine.project import Project


def test_init_creates_layout(tmp_path):
    p = Project.init(tmp_path / "p")
    for name in ("olmix.toml", "domains.toml", ".gitignore", "history", "swarms", "fits"):
        assert (p.root / name).exists()
    assert ".olmix/" in (p.root / ".gitignore").read_text()
    q = Project.load(p.root)
    assert q.settings == p.settings and len(q.domains) == 0


def test_init_refuses_existing_project(tmp_path):
    Project.init(tmp_path / "p")
    with pytest.raises(Exception, match="already holds a project"):
        Project.init(tmp_path / "p")


@pytest.mark.parametrize("text, message", [
    ("[tokenizer]\nvocab_sise = 10\n", r"unknown key \[tokenizer\].vocab_sise"),
    ("[tokenizer]\nvocab_size = 'big'\n", r"\[tokenizer\].vocab_size must be an integer"),
    ("[tokenizer]\nkind = 'wordpiece'\n", "kind 'wordpiece' is unknown"),
    ("[nonsense]\n", r"unknown table \[nonsense\]"),
    ("[data]\nval_fraction = 0.9\n", "val_fraction must be between"),
    ("tokenizer = 3\n", "must be a table"),
    ("[tokenizer\n", "not valid TOML"),
    ("[regression]\nregressor = 'gp'\n", 'proposer = "exact" needs'),
    ("[swarm]\nsampler = 'uniform'\n", "sampler 'uniform' is unknown"),
])
def test_bad_settings_name_file_and_key(tmp_path, text, message):
    p = Project.init(tmp_path / "p")
    (p.root / "olmix.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        Project.load(p.root)
    assert "olmix.toml" in str(err.value)


@pytest.mark.parametrize("text, message", [
    ('[domains.a]\nsources = []\n', "non-empty list"),
    ('[domains.a]\nsources = ["x"]\ncolour = "red"\n', "unknown key 'colour'"),
    ('[domains.a]\nsources = ["x"]\nformat = "csv"\n', "format 'csv' is unknown"),
    ('[stuff]\n', "unknown top-level key"),
])
def test_bad_domains_file(tmp_path, text, message):
    p = Project.init(tmp_path / "p")
    (p.root / "domains.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Project.load(p.root)


def test_missing_project(tmp_path):
    with pytest.raises(ConfigError, match="olmix-tui init"):
        Project.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="missing"):
        Project.load(tmp_path / "empty")


def test_writes_are_deterministic(small_project):
    p = small_project
    before = (p.root / "domains.toml").read_bytes(), (p.root / "olmix.toml").read_bytes()
    with p.lock():
        p.save_domains()
        p.save_settings()
    assert before == ((p.root / "domains.toml").read_bytes(), (p.root / "olmix.toml").read_bytes())


def _hold_lock(root, ready, release):
    p = Project.load(root)
    with p.lock():
        ready.set()
        release.wait(20)


def test_lock_names_holder_pid(small_project):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(small_project.root, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            with Project.load(small_project.root).lock():
                pass
    finally:
        release.set()
        proc.join(10)
    with Project.load(small_project.root).lock():  # free again
        pass


def test_stale_lock_of_killed_process_is_taken_over(small_project):
    code = textwrap.dedent(f"""
        import os, signal
        from engine.project import Project
        p = Project.load({str(small_project.root)!r})
        with p.lock():
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code])
    assert (small_project.root / ".olmix/lock").exists()
    with Project.load(small_project.root).lock():
        pass


def test_atomic_write_leaves_old_content_on_failure(tmp_path):
    target = tmp_path / "f.toml"
    atomic.write_toml(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic.write_toml(target, {"a": Boom()})
    assert target.read_text() == "a = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.toml"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_get_the_umasks_mode(tmp_path, umask):
    """A project on a shared filesystem: files are as readable as the user's umask makes new files,
    in a subprocess so that the test's own umask stays as it was."""
    code = textwrap.dedent(f"""
        import os, sys
        from engine import atomic
        os.umask({umask})
        path = atomic.write_text(sys.argv[1], "x")
        print(oct(os.stat(path).st_mode & 0o777))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.txt")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == oct(0o666 & ~umask)


def test_floats_are_stable(tmp_path):
    text = atomic.dumps_toml({"w": {"b": 0.1 + 0.2, "a": 1 / 3}})
    assert text == "[w]\na = 0.33333333\nb = 0.3\n"


def test_read_jsonl_skips_torn_line(tmp_path):
    f = tmp_path / "m.jsonl"
    atomic.append_jsonl(f, {"step": 1})
    with open(f, "a") as fh:
        fh.write('{"step": 2, "lo')
    assert atomic.read_jsonl(f) == [{"step": 1}]
