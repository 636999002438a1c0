"""The mixing project folder: settings, domain set, staged update, lock, and the token store.

Layout (everything but .olmix/ is meant for git):
  olmix.toml      settings, one table per concern (see `Settings`)
  domains.toml    the current domain set
  pending.toml    the staged domain-set update (changes), if any
  tokenizer/      the project's trained tokenizer
  history/        one file per applied update (the mixture over leaf domains)
  swarms/ fits/   swarm runs and fitted regressions
  .olmix/         caches: token store, logs, lock
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine import atomic
from engine.config import read_toml
from engine.data.store import DomainTokens, TokenStore, sample_texts, store_key
from engine.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_file, train_bpe
from engine.domains import AffectedSet, Change, DomainSet, affected_set, apply_change
from engine.errors import ConfigError, DataError, LockedError, OlmixError
from engine.events import EventSink, Message, ignore
from engine.executors.liveness import pid_alive
from engine.settings import SETTINGS_FILE, Settings, read_settings

DOMAINS_FILE = "domains.toml"
PENDING_FILE = "pending.toml"
GITIGNORE = ".olmix/\n"


def read_pending(path: Path) -> list[Change]:
    """The staged changes of a pending.toml file."""
    data = read_toml(path)
    unknown = sorted(set(data) - {"changes"})
    if unknown:
        raise ConfigError(f"{PENDING_FILE}: unknown key '{unknown[0]}'; only [[changes]] entries belong here.")
    changes = data.get("changes", [])
    if not isinstance(changes, list):
        raise ConfigError(f"{PENDING_FILE}: 'changes' must be an array of tables ([[changes]]).")
    return [Change.from_toml(c, PENDING_FILE, i) for i, c in enumerate(changes)]


class Project:
    """A loaded project folder. Mutating methods must run under `lock()`."""

    def __init__(self, root: Path, settings: Settings, domains: DomainSet, pending: list[Change]):
        self.root = root
        self.settings = settings
        self.domains = domains
        self.pending = pending
        self._lock_depth = 0

    # ------------------------------------------------------------ loading and creating
    @classmethod
    def load(cls, root: str | os.PathLike) -> "Project":
        root = Path(root).resolve()
        if not root.is_dir():
            raise ConfigError(f"{root} is not a project folder; create one with `olmix-tui init {root}`.")
        settings = read_settings(root)
        domains = DomainSet.from_toml(read_toml(root / DOMAINS_FILE), DOMAINS_FILE)
        pending = read_pending(root / PENDING_FILE) if (root / PENDING_FILE).exists() else []
        return cls(root, settings, domains, pending)

    @classmethod
    def init(cls, root: str | os.PathLike, settings: Settings | None = None, domains: DomainSet | None = None) -> "Project":
        """Create a new project folder (refuses to overwrite an existing project)."""
        root = Path(root).resolve()
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

    # ------------------------------------------------------------ lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the project's single-writer lock (.olmix/lock, re-entrant within a process).

        A second writer fails with the holder's pid; a lock left by a dead process is taken over.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        path = self.cache / "lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()} {' '.join(sys.argv[:3])}"
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(path)
                if holder is not None and _holder_alive(holder):
                    raise LockedError(
                        f"the project is locked by another olmix-tui process (pid {holder[0]}: {holder[2]}); "
                        "wait for it to finish or stop it."
                    ) from None
                try:
                    os.unlink(path)  # stale: its holder is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            break
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def lock_holder(self) -> tuple[int, str, str] | None:
        """(pid, host, command) of the live process holding the lock, None when it is free: an action
        that would wait for the lock is refused before it starts, naming who holds it."""
        holder = _read_lock(self.cache / "lock")
        return holder if holder is not None and _holder_alive(holder) and holder[0] != os.getpid() else None

    def _require_lock(self) -> None:
        if not self._lock_depth:
            raise RuntimeError("project writes must happen under Project.lock()")

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
        path = self.root / PENDING_FILE
        if self.pending:
            atomic.write_toml(path, {"changes": [c.to_toml() for c in self.pending]})
        elif path.exists():
            path.unlink()

    # ------------------------------------------------------------ domain-set updates
    def staged_domains(self) -> DomainSet:
        """The domain set the pending update would produce (the current set if nothing is staged)."""
        result = self.domains
        for change in self.pending:
            result = apply_change(self.root, result, change)
        return result

    def stage(self, change: Change) -> DomainSet:
        """Validate `change` on top of the pending update and stage it; returns the staged set."""
        with self.lock():
            result = apply_change(self.root, self.staged_domains(), change)
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
        with self.lock():
            return train_bpe(sample_texts(self.root, domains, s.train_bytes), s.vocab_size, tokenizer_file(self.root, s))

    def tokens(self, domains: DomainSet | None = None, on_event: EventSink = ignore) -> dict[str, DomainTokens]:
        """Tokenized data of `domains` (default: current and staged domains), tokenizing what is missing."""
        if domains is None:
            staged = self.staged_domains()
            extra = tuple(d for d in staged if d.name not in self.domains or d.revision != self.domains.get(d.name).revision)
            domains = DomainSet(self.domains.domains + extra)
        if not len(domains):
            raise DataError("the project has no domains; add one with `olmix-tui domains add DIR NAME SOURCES...`.")
        tokenizer = self.tokenizer(on_event)
        store = TokenStore.of_project(self.root)
        out = {}
        with self.lock():
            for d in domains:
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


def _read_lock(path: Path) -> tuple[int, str, str] | None:
    try:
        pid, host, *cmd = path.read_text().split(" ")
        return int(pid), host, " ".join(cmd)
    except (FileNotFoundError, ValueError):
        return None


def _holder_alive(holder: tuple[int, str, str]) -> bool:
    pid, host, _ = holder
    return pid_alive(pid, host)
