"""The mixing project folder: settings, domain set, staged update, lock, and the token store.

Layout (everything but .olmix/ is meant for git):
  olmix.toml      settings, one table per concern (see `Settings`)
  domains.toml    the current domain set
  pending.toml    the staged domain-set update (changes), if any
  tokenizer/      the project's trained tokenizer
  history/        one file per applied update (the mixture over leaf domains)
  swarms/ fits/   swarm runs and fitted regressions
  .olmix/         not in git: token store, logs, locks, the journal of a multi-file write
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engine import atomic
from engine.config import parse_toml, read_json, read_toml
from engine.data.store import DomainTokens, TokenStore, changed_sources, sample_texts, store_key
from engine.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_file, train_bpe
from engine.domains import AffectedSet, Change, DomainSet, affected_set, apply_change, outside_project
from engine.errors import ConfigError, DataError, LockedError, OlmixError
from engine.events import EventSink, Message, ignore
from engine.executors.liveness import pid_alive, process_start
from engine.settings import SETTINGS_FILE, Settings, read_settings

DOMAINS_FILE = "domains.toml"
PENDING_FILE = "pending.toml"
JOURNAL_FILE = "journal.json"
GITIGNORE = ".olmix/\n"


def read_pending(path: Path, text: str | None = None) -> list[Change]:
    """The staged changes of a pending.toml file (or of its `text`)."""
    data = read_toml(path) if text is None else parse_toml(text, path)
    unknown = sorted(set(data) - {"changes"})
    if unknown:
        raise ConfigError(f"{PENDING_FILE}: unknown key '{unknown[0]}'; only [[changes]] entries belong here.")
    changes = data.get("changes", [])
    if not isinstance(changes, list):
        raise ConfigError(f"{PENDING_FILE}: 'changes' must be an array of tables ([[changes]]).")
    return [Change.from_toml(c, PENDING_FILE, i) for i, c in enumerate(changes)]


# ---------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock, as it wrote into the lock file (shown in messages; the lock itself is the
    kernel's flock on the file, which ends with the process)."""

    pid: int
    host: str
    started: str | None
    since: float
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} (`{self.command}`, since {when})"

    def runs_here(self) -> bool:
        """Whether the holder is a live process of this machine (the same one, not a reused pid)."""
        return self.host == socket.gethostname() and pid_alive(self.pid, started=self.started)


class FileLock:
    """An exclusive lock on `path` (fcntl.flock), re-entrant within its owner; the file is never
    deleted, so contending processes always lock the same file (until `--break-lock` replaces it).

    The holder writes who it is into the file for messages. On a read-only file system, where no
    process can write the project anyway, locking is skipped.
    """

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what  # "the project", "swarm <id>": the start of a LockedError
        self.fd: int | None = None
        self.depth = 0

    def holder(self) -> LockHolder | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return LockHolder(int(data["pid"]), str(data["host"]), data.get("started"), float(data["since"]),
                              str(data["command"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def _open(self) -> int | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
        try:  # a lock file that cannot be written can still be locked (another user's, a read-only mount)
            return os.open(self.path, os.O_RDONLY)
        except OSError:
            return None  # a read-only project without a lock file: nobody can write it

    def acquire(self) -> None:
        if self.depth:
            self.depth += 1
            return
        fd = self._open()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(self._busy_message()) from None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": process_start(os.getpid()),
                  "since": round(time.time(), 3), "command": shlex.join(["olmix-tui", *sys.argv[1:4]])}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
            except OSError:
                pass  # who holds it is for messages only
        self.fd, self.depth = fd, 1

    def _busy_message(self) -> str:
        holder = self.holder()
        if holder is None:
            return f"{self.what} is locked by another olmix-tui process; wait for it to finish or stop it."
        if holder.runs_here():
            return f"{self.what} is locked by {holder.describe()}; wait for it to finish or stop it."
        return (f"{self.what} is locked by {holder.describe()}, which this machine cannot see running; if it is "
                "gone, run the command again with --break-lock.")

    def release(self) -> None:
        self.depth -= 1
        if self.depth or self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no holder any more
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def busy(self) -> bool:
        """Whether another process (or another lock object of this one) holds the lock now."""
        if self.depth:
            return False
        fd = self._open()
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def break_(self) -> str:
        """Break the lock if another process holds it (replacing the lock file); what was broken, or ""."""
        if not self.busy():
            return ""
        holder = self.holder()
        if holder is not None and holder.runs_here():
            raise LockedError(f"{self.what} is locked by {holder.describe()}, which still runs on this machine; "
                              f"stop it (kill {holder.pid}) instead of breaking its lock.")
        atomic.write_text(self.path, "")  # a new file: the old holder's flock is on the one it replaces
        who = holder.describe() if holder is not None else "an unknown process"
        return (f"broke the lock of {self.what} held by {who}; if that process still runs somewhere, stop it: "
                "two writers can damage the project")


# ---------------------------------------------------------------- the project


class Project:
    """A loaded project folder. Mutating methods must run under `lock()`."""

    def __init__(self, root: Path, settings: Settings, domains: DomainSet, pending: list[Change],
                 journal: dict[str, str | None] | None = None):
        self.root = root
        self.settings = settings
        self.domains = domains
        self.pending = pending
        self.journal = dict(journal or {})
        self._locks: dict[str, FileLock] = {}

    # ------------------------------------------------------------ loading and creating
    @classmethod
    def load(cls, root: str | os.PathLike) -> "Project":
        """The project at `root`, as it is once an interrupted multi-file write (the journal) is
        complete; nothing is written (the next command that takes the lock completes it on disk)."""
        root = Path(root).resolve()
        if not root.is_dir():
            raise ConfigError(f"{root} is not a project folder; create one with `olmix-tui init {root}`.")
        settings = read_settings(root)
        folders = ["history", "swarms", "fits"] + ([settings.tokenizer.path] if settings.tokenizer.kind == "bpe" else [])
        for name in folders:
            if (root / name).exists() and not (root / name).resolve().is_relative_to(root):
                raise ConfigError(f"{root / name} leads outside the project (to {(root / name).resolve()}), where the "
                                  "tool would write; replace the symlink with a folder.")
        journal = read_journal(root)
        domains = DomainSet.from_toml(_project_toml(root, DOMAINS_FILE, journal), DOMAINS_FILE)
        if PENDING_FILE in journal:
            text = journal[PENDING_FILE]
            pending = [] if text is None else read_pending(root / PENDING_FILE, text)
        else:
            pending = read_pending(root / PENDING_FILE) if (root / PENDING_FILE).exists() else []
        return cls(root, settings, domains, pending, journal)

    @classmethod
    def init(cls, root: str | os.PathLike, settings: Settings | None = None, domains: DomainSet | None = None) -> "Project":
        """Create a new project folder (refuses to overwrite an existing project)."""
        root = Path(root).resolve()
        if root.exists() and not root.is_dir():
            raise OlmixError(f"{root} is a file, not a folder; pick a new folder for the project.")
        if (root / SETTINGS_FILE).exists():
            raise OlmixError(f"{root} already holds a project ({SETTINGS_FILE} exists); pick a new folder.")
        root.mkdir(parents=True, exist_ok=True)
        project = cls(root, settings or Settings(), domains or DomainSet(), [])
        with project.lock():
            for sub in ("history", "swarms", "fits"):
                (root / sub).mkdir(exist_ok=True)
                atomic.write_text(root / sub / ".gitkeep", "")
            gitignore = root / ".gitignore"
            if not gitignore.exists():
                atomic.write_text(gitignore, GITIGNORE)
            project.save_settings()
            project.save_domains()
        return project

    # ------------------------------------------------------------ paths
    @property
    def cache(self) -> Path:
        return self.root / ".olmix"

    @property
    def history_dir(self) -> Path:
        return self.root / "history"

    @property
    def swarms_dir(self) -> Path:
        return self.root / "swarms"

    @property
    def fits_dir(self) -> Path:
        return self.root / "fits"

    # ------------------------------------------------------------ locks
    def _file_lock(self, name: str, what: str) -> FileLock:
        if name not in self._locks:
            self._locks[name] = FileLock(self.cache / name, what)
        return self._locks[name]

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the project's single-writer lock (an flock on .olmix/lock, re-entrant within this
        Project). A second writer fails at once with the holder's pid, host, command and start time;
        the kernel releases the lock when its holder ends, however it ends. Taking it first completes
        a multi-file write a killed command left in the journal."""
        lock = self._file_lock("lock", "the project")
        lock.acquire()
        try:
            if lock.depth == 1:
                self._complete_journal()
            yield
        finally:
            lock.release()

    @contextmanager
    def swarm_lock(self, swarm_id: str) -> Iterator[None]:
        """Hold the lock of training swarm `swarm_id` (.olmix/swarm-<id>.lock): one scheduler per
        swarm, while the project stays free for staging changes and reading."""
        lock = self._file_lock(f"swarm-{swarm_id}.lock", f"swarm {swarm_id}")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def break_lock(self, swarm_id: str | None = None) -> str:
        """Break the project's lock (with `swarm_id`, that swarm's) if a process that is gone, or runs
        on a machine that is gone, holds it; what was broken, in a sentence. A live holder on this
        machine is refused."""
        lock = (self._file_lock("lock", "the project") if swarm_id is None
                else self._file_lock(f"swarm-{swarm_id}.lock", f"swarm {swarm_id}"))
        return lock.break_() or f"{lock.what} was not locked: nothing to break"

    def lock_holder(self) -> LockHolder | None:
        """Who holds the project's lock, None when it is free (or this process holds it): an action
        that would wait for the lock is refused before it starts, naming who holds it."""
        lock = self._file_lock("lock", "the project")
        if not lock.busy():
            return None
        return lock.holder() or LockHolder(0, "", None, 0.0, "another olmix-tui process")

    def _require_lock(self) -> None:
        if not self._file_lock("lock", "the project").depth:
            raise RuntimeError("project writes must happen under Project.lock()")

    # ------------------------------------------------------------ writing several files as one step
    def write_together(self, files: dict[str, str | None]) -> None:
        """Write project files (path relative to the root -> text, None to delete) as one step:
        the journal (.olmix/journal.json) holding them all is written first and removed last, so a
        command killed in between leaves a journal that the next one completes (`lock`), and that
        readers see as done (`load`)."""
        self._require_lock()
        atomic.write_json(self.cache / JOURNAL_FILE, {"files": [[rel, text] for rel, text in files.items()]})
        self.journal = dict(files)
        self._complete_journal()

    def _complete_journal(self) -> None:
        journal = read_journal(self.root)
        for rel, text in journal.items():
            path = self.root / rel
            if text is None:
                path.unlink(missing_ok=True)
            else:
                atomic.write_text(path, text)
        if journal:
            (self.cache / JOURNAL_FILE).unlink()
        self.journal = {}

    # ------------------------------------------------------------ saving
    def save_settings(self) -> None:
        self._require_lock()
        atomic.write_toml(self.root / SETTINGS_FILE, self.settings.to_toml())

    def update_settings(self, **tables) -> Settings:
        """Replace whole tables of olmix.toml (e.g. propose=ProposeSettings(...)), checked as on loading, and save."""
        try:
            settings = dataclasses.replace(self.settings, **tables)
        except ConfigError as err:
            raise ConfigError(f"{SETTINGS_FILE}: {err}") from None
        with self.lock():
            self.settings = settings
            self.save_settings()
        return settings

    def save_domains(self) -> None:
        self._require_lock()
        atomic.write_toml(self.root / DOMAINS_FILE, self.domains.to_toml())

    def save_pending(self) -> None:
        self._require_lock()
        text = self.pending_text()
        if text is not None:
            atomic.write_text(self.root / PENDING_FILE, text)
        else:
            (self.root / PENDING_FILE).unlink(missing_ok=True)

    def pending_text(self) -> str | None:
        """pending.toml's content for the staged changes (None: no file)."""
        return atomic.dumps_toml({"changes": [c.to_toml() for c in self.pending]}) if self.pending else None

    def on_disk_pending(self) -> list[Change]:
        """The staged changes as pending.toml holds them now (another command may have staged more
        since this project was loaded); call under the lock."""
        path = self.root / PENDING_FILE
        return read_pending(path) if path.exists() else []

    # ------------------------------------------------------------ domain-set updates
    @property
    def external_sources(self) -> bool:
        """Whether domain sources and eval sets may be outside the project ([data] external_sources)."""
        return self.settings.data.external_sources

    def staged_domains(self) -> DomainSet:
        """The domain set the pending update would produce (the current set if nothing is staged)."""
        result = self.domains
        for change in self.pending:
            result = apply_change(self.root, result, change, self.external_sources)
        return result

    def stage(self, change: Change) -> DomainSet:
        """Validate `change` on top of the pending update (as pending.toml holds it now) and stage
        it; returns the staged set."""
        with self.lock():
            self.pending = self.on_disk_pending()
            result = apply_change(self.root, self.staged_domains(), change, self.external_sources)
            self.pending.append(change)
            self.save_pending()
        return result

    def discard_pending(self) -> None:
        with self.lock():
            self.pending = []
            self.save_pending()

    def affected(self) -> AffectedSet:
        return affected_set(self.domains, self.staged_domains())

    # ------------------------------------------------------------ data
    def _warn_external(self, on_event: EventSink) -> None:
        if self.external_sources:
            on_event(Message(f"{SETTINGS_FILE} sets [data] external_sources = true: domain sources and eval sets may "
                             f"be read from outside {self.root}, and such files are not versioned with the project.",
                             level="warning"))

    def tokenizer(self, on_event: EventSink = ignore) -> Tokenizer:
        """The project tokenizer: loaded from the project, or trained on the project's data the first time."""
        s = self.settings.tokenizer
        tokenizer = load_tokenizer(self.root, s)
        if tokenizer is not None:
            return tokenizer
        domains = list(self.staged_domains())
        if not domains:
            raise DataError("the project has no domains to train a tokenizer on; add one with `olmix-tui domains add`.")
        on_event(Message(f"training a {s.vocab_size}-token BPE on {s.train_bytes:,} bytes of the project's data"))
        self._warn_external(on_event)
        with self.lock():
            return train_bpe(sample_texts(self.root, domains, s.train_bytes, self.external_sources), s.vocab_size,
                             tokenizer_file(self.root, s))

    def tokens(self, domains: DomainSet | None = None, on_event: EventSink = ignore) -> dict[str, DomainTokens]:
        """Tokenized data of `domains` (default: current and staged domains), tokenizing what is
        missing (only then under the lock: reading a tokenized project writes nothing)."""
        if domains is None:
            staged = self.staged_domains()
            extra = tuple(d for d in staged if d.name not in self.domains or d.revision != self.domains.get(d.name).revision)
            domains = DomainSet(self.domains.domains + extra)
        if not len(domains):
            raise DataError("the project has no domains; add one with `olmix-tui domains add DIR NAME SOURCES...`.")
        tokenizer = self.tokenizer(on_event)
        store = TokenStore.of_project(self.root)
        out = {d.name: store.load(d.name, store_key(d, tokenizer, self.settings.data)) for d in domains}
        for d in domains:
            changed = [] if out[d.name] is None else changed_sources(self.root, d, out[d.name], self.external_sources)
            if changed:
                on_event(Message(f"domain '{d.name}': {changed[0]} (of {len(changed)} file(s)) changed since revision "
                                 f"{d.revision} was tokenized; the tokenized revision is used: stage `olmix-tui domains "
                                 f"revise {self.root} {d.name}` to use the new data.", level="warning"))
        missing = [d for d in domains if out[d.name] is None]
        if missing:
            self._warn_external(on_event)
            with self.lock():
                for d in missing:
                    out[d.name] = store.tokenize(self.root, d, tokenizer, self.settings.data, on_event)
        return out

    def cached_tokens(self, domains: DomainSet | None = None) -> dict[str, DomainTokens | None]:
        """Tokenized data already in the store (None where a domain is not tokenized yet); never tokenizes."""
        domains = domains if domains is not None else self.domains
        tokenizer = load_tokenizer(self.root, self.settings.tokenizer)
        if tokenizer is None:
            return {d.name: None for d in domains}
        store = TokenStore.of_project(self.root)
        return {d.name: store.load(d.name, store_key(d, tokenizer, self.settings.data)) for d in domains}


def read_journal(root: Path) -> dict[str, str | None]:
    """The files an interrupted multi-file write still has to write, in the order it writes them
    (empty when none)."""
    path = Path(root) / ".olmix" / JOURNAL_FILE
    if not path.exists():
        return {}
    fix = "delete it and check the project with `olmix-tui status` (the update it held may need applying again)."
    data = read_json(path, f"{path} is missing", fix)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and not outside_project(pair[0])
            and not pair[0].startswith(".") and (pair[1] is None or isinstance(pair[1], str)) for pair in files):
        raise ConfigError(f"{path} is damaged; {fix}")
    return dict(files)


def _project_toml(root: Path, name: str, journal: dict[str, str | None]) -> dict:
    """A project TOML file as it is once the journal is complete."""
    if name in journal and journal[name] is not None:
        return parse_toml(journal[name], root / name)
    return read_toml(root / name)
