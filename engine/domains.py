"""Domains, domain sets, and staged domain-set updates with their affected sets.

A domain is a named slice of the corpus (`source:topic` names allowed) whose data comes from
files or globs relative to the project folder. Its revision is a hash of that data, so a
revised domain is detected by content. An update is a list of changes (add, remove, partition,
revise) applied to the current set; the affected set (what mixture reuse must recompute) is
derived from the difference between the two sets.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Iterable, Mapping

from engine.config import Table
from engine.errors import ConfigError, DataError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
MAX_NAME = 100
"""The longest name (of a domain, an eval set, a swarm): names become parts of file names."""
FORMATS = ("auto", "jsonl", "text", "tokens")
TOKEN_DTYPES = ("uint16", "uint32")
CHANGE_KINDS = ("add", "remove", "partition", "revise")


@dataclass(frozen=True)
class Domain:
    """One domain: name, data sources (paths/globs relative to the project), and how to read them."""

    name: str
    sources: tuple[str, ...]
    format: str = "auto"  # auto (by extension) | jsonl | text | tokens
    text_field: str = "text"  # JSON lines: the field holding the document text
    token_dtype: str = "uint16"  # pre-tokenized raw files without an .npy header
    parent: str = ""  # the domain this one was partitioned from
    revision: str = ""  # content hash of the sources, set by `with_revision`

    def to_toml(self) -> dict:
        out = {"sources": list(self.sources), "revision": self.revision}
        for key, default in (("format", "auto"), ("text_field", "text"), ("token_dtype", "uint16"), ("parent", "")):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        return out


def check_name(name: str, where: str, what: str = "domain") -> None:
    """A name used in file names and tables: letters, digits and _ . : -, at most MAX_NAME characters."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40] + "...")
        raise ConfigError(
            f"{where}: {what} name {shown} is not valid; use letters, digits and _ . : - (at most {MAX_NAME} "
            "characters, for example 'web:news')."
        )


def outside_project(pattern: str) -> bool:
    """Whether a path or glob written in a project file leaves the project folder: absolute, or
    with a '..' part."""
    return PurePath(pattern).is_absolute() or pattern.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", pattern)


def resolve_sources(root: Path, domain: Domain, external: bool = False) -> list[Path]:
    """The sorted files a domain's sources match; a pattern that matches nothing or an empty file is an error.

    Without `external` ([data] external_sources), a source outside the project folder (an absolute
    path, '..', or a symlink leading out) is refused before anything is read.
    """
    root = Path(root).resolve()
    files: set[Path] = set()
    for pattern in domain.sources:
        if outside_project(pattern) and not external:
            raise DataError(
                f"domain '{domain.name}': source '{pattern}' is outside the project folder; copy or link the data "
                "into the project, or set [data] external_sources = true in olmix.toml to allow it."
            )
        try:
            if Path(pattern).is_absolute():
                matches = [Path(pattern)] if Path(pattern).is_file() else sorted(Path("/").glob(pattern.lstrip("/")))
            else:
                matches = sorted(p for p in root.glob(pattern) if p.is_file())
            resolved = [p.resolve() for p in matches]
        except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, an unreadable folder, a bad glob
            raise DataError(f"domain '{domain.name}': source '{pattern}' cannot be read ({err}); fix the path or glob.") from None
        if not matches:
            raise DataError(
                f"domain '{domain.name}': source '{pattern}' matches no file under {root}; "
                "fix the path or glob (paths are relative to the project folder)."
            )
        escaped = [p for p in resolved if not p.is_relative_to(root)]
        if escaped and not external:
            raise DataError(
                f"domain '{domain.name}': source '{pattern}' leads outside the project folder ({escaped[0]}, through a "
                "symlink); copy the data into the project, or set [data] external_sources = true in olmix.toml."
            )
        files.update(resolved)
    for path in sorted(files):
        try:
            empty = path.stat().st_size == 0 or not os.access(path, os.R_OK)
        except OSError:
            empty = True
        if empty:
            raise DataError(f"domain '{domain.name}': source file {path} is empty or unreadable; remove it or give it data.")
    return sorted(files)


def content_hash(root: Path, files: Iterable[Path], extra: str = "") -> str:
    """sha256 over each file's path (relative to root where possible) and bytes; 16 hex digits."""
    h = hashlib.sha256(extra.encode())
    for path in files:
        try:
            rel = str(path.relative_to(root.resolve()))
        except ValueError:
            rel = str(path)
        h.update(rel.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:16]


def with_revision(root: Path, domain: Domain, external: bool = False) -> Domain:
    """The domain with its revision set to the current content hash of its sources."""
    files = resolve_sources(root, domain, external)
    extra = f"{domain.format}|{domain.text_field}|{domain.token_dtype}"
    return replace(domain, revision=content_hash(root, files, extra))


@dataclass(frozen=True)
class DomainSet:
    """An ordered (by name) set of domains."""

    domains: tuple[Domain, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "domains", tuple(sorted(self.domains, key=lambda d: d.name)))

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    def __contains__(self, name: str) -> bool:
        return any(d.name == name for d in self.domains)

    def __len__(self) -> int:
        return len(self.domains)

    def __iter__(self):
        return iter(self.domains)

    def get(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise ConfigError(f"unknown domain '{name}'; known domains: {', '.join(self.names) or '(none)'}.")

    def to_toml(self) -> dict:
        return {"domains": {d.name: d.to_toml() for d in self.domains}}

    @classmethod
    def from_toml(cls, data: Mapping, file: str) -> "DomainSet":
        unknown = sorted(set(data) - {"domains"})
        if unknown:
            raise ConfigError(f"{file}: unknown top-level key '{unknown[0]}'; only [domains.<name>] tables belong here.")
        table = data.get("domains", {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{file}: 'domains' must be a table of [domains.<name>] entries.")
        return cls(tuple(domain_from_toml(name, entry, file) for name, entry in table.items()))


DOMAIN_KEYS = {"sources", "format", "text_field", "token_dtype", "parent", "revision"}


def domain_from_toml(name: str, entry: Mapping, file: str) -> Domain:
    where = f"{file}: [domains.\"{name}\"]"
    check_name(name, file)
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table with at least 'sources = [...]'.")
    unknown = sorted(set(entry) - DOMAIN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; known keys are {', '.join(sorted(DOMAIN_KEYS))}.")
    sources = entry.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise ConfigError(f"{where}: 'sources' must be a non-empty list of file paths or globs.")
    for key in ("format", "text_field", "token_dtype", "parent", "revision"):
        if key in entry and not isinstance(entry[key], str):
            raise ConfigError(f"{where}: '{key}' must be a string.")
    domain = Domain(name=name, sources=tuple(sources), **{k: entry[k] for k in entry if k != "sources"})
    if domain.format not in FORMATS:
        raise ConfigError(f"{where}: format '{domain.format}' is unknown; use one of {', '.join(FORMATS)}.")
    if domain.token_dtype not in TOKEN_DTYPES:
        raise ConfigError(f"{where}: token_dtype '{domain.token_dtype}' is unknown; use uint16 or uint32.")
    return domain


# ---------------------------------------------------------------- updates


@dataclass(frozen=True)
class Change:
    """One staged change to the domain set."""

    kind: str  # add | remove | partition | revise
    domain: str
    sources: tuple[str, ...] = ()  # add: the new domain's sources; revise: new sources (empty = same paths, new content)
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # partition: part name -> files/globs
    format: str = "auto"
    text_field: str = "text"

    def describe(self) -> str:
        if self.kind == "partition":
            return f"partition {self.domain} into {', '.join(self.parts)}"
        return f"{self.kind} {self.domain}"

    def to_toml(self) -> dict:
        out: dict = {"kind": self.kind, "domain": self.domain}
        if self.sources:
            out["sources"] = list(self.sources)
        if self.parts:
            out["parts"] = {k: list(v) for k, v in self.parts.items()}
        if self.format != "auto":
            out["format"] = self.format
        if self.text_field != "text":
            out["text_field"] = self.text_field
        return out

    @classmethod
    def from_toml(cls, entry: Mapping, file: str, index: int) -> "Change":
        where = f"{file}: changes[{index}]"
        known = {"kind", "domain", "sources", "parts", "format", "text_field"}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a table.")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'; known keys are {', '.join(sorted(known))}.")
        kind = entry.get("kind")
        if kind not in CHANGE_KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is unknown; use one of {', '.join(CHANGE_KINDS)}.")
        domain = entry.get("domain")
        check_name(domain, where)
        sources = entry.get("sources", [])
        if not _string_list(sources):
            raise ConfigError(f"{where}: 'sources' must be a list of file paths or globs.")
        parts = entry.get("parts", {})
        if not isinstance(parts, Mapping) or not all(_string_list(v) and v for v in parts.values()):
            raise ConfigError(f"{where}: 'parts' must be a table of part name = [files or globs].")
        for part in parts:
            check_name(part, where)
        for key, allowed in (("format", FORMATS), ("text_field", None)):
            value = entry.get(key, "auto" if key == "format" else "text")
            if not isinstance(value, str) or not value or (allowed and value not in allowed):
                raise ConfigError(f"{where}: {key} {value!r} is not valid"
                                  + (f"; use one of {', '.join(allowed)}." if allowed else "; give a field name."))
        return cls(
            kind=kind,
            domain=domain,
            sources=tuple(sources),
            parts={k: tuple(v) for k, v in parts.items()},
            format=entry.get("format", "auto"),
            text_field=entry.get("text_field", "text"),
        )


def _string_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def parse_parts(parts: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Partition parts written as NAME=FILE_OR_GLOB[,FILE_OR_GLOB...], one string per part."""
    spec: dict[str, tuple[str, ...]] = {}
    for part in parts:
        name, sep, paths = part.partition("=")
        globs = tuple(g.strip() for g in paths.split(",") if g.strip())
        if not sep or not name.strip() or not globs:
            raise ConfigError(f"partition part {part.strip()!r} must look like NAME=GLOB[,GLOB...].")
        spec[name.strip()] = globs
    return spec


def apply_change(root: Path, current: DomainSet, change: Change, external: bool = False) -> DomainSet:
    """The domain set after `change`, validated against the project's files (`external`: sources
    outside the project are allowed, [data] external_sources)."""
    doms = {d.name: d for d in current}
    name = change.domain
    if change.kind == "add":
        check_name(name, "add")
        if name in doms:
            raise ConfigError(f"domain '{name}' already exists; pick another name or revise it instead.")
        if not change.sources:
            raise ConfigError(f"adding domain '{name}' needs at least one source file or glob.")
        new = Domain(name=name, sources=tuple(change.sources), format=change.format, text_field=change.text_field)
        if new.format not in FORMATS:
            raise ConfigError(f"format '{new.format}' is unknown; use one of {', '.join(FORMATS)}.")
        doms[name] = with_revision(root, new, external)
    elif change.kind == "remove":
        _require(doms, name)
        del doms[name]
        if not doms:
            raise ConfigError(f"removing '{name}' would leave no domains; add another domain first.")
    elif change.kind == "revise":
        old = _require(doms, name)
        new = with_revision(root, replace(old, sources=tuple(change.sources) or old.sources), external)
        if new.revision == old.revision:
            raise ConfigError(f"domain '{name}' has the same data as its current revision; change its files or give new sources.")
        doms[name] = new
    elif change.kind == "partition":
        parent = _require(doms, name)
        parts = _partition(root, parent, change.parts, set(doms), external)
        del doms[name]
        doms.update(parts)
    else:  # pragma: no cover - guarded by Change.from_toml
        raise ConfigError(f"unknown change kind {change.kind!r}")
    result = DomainSet(tuple(doms.values()))
    check_disjoint(root, result, external)
    return result


def _require(doms: dict, name: str) -> Domain:
    if name not in doms:
        raise ConfigError(f"unknown domain '{name}'; known domains: {', '.join(sorted(doms)) or '(none)'}.")
    return doms[name]


def _partition(root: Path, parent: Domain, parts: Mapping[str, tuple[str, ...]], taken: set[str],
               external: bool = False) -> dict[str, Domain]:
    if len(parts) < 2:
        raise ConfigError(f"partitioning '{parent.name}' needs at least two parts.")
    parent_files = set(resolve_sources(root, parent, external))
    claimed: dict[Path, str] = {}
    out = {}
    for part, patterns in parts.items():
        check_name(part, f"partition of '{parent.name}'")
        if part == parent.name:
            raise ConfigError(f"part name '{part}' is the name of the domain being partitioned; give each part a new name.")
        if part in taken:
            raise ConfigError(f"part name '{part}' is already a domain; choose another name.")
        dom = replace(parent, name=part, sources=tuple(patterns), parent=parent.name, revision="")
        files = resolve_sources(root, dom, external)
        for f in files:
            if f not in parent_files:
                raise ConfigError(f"part '{part}' claims {f}, which is not part of domain '{parent.name}'.")
            if f in claimed:
                raise ConfigError(f"file {f} is claimed by both parts '{claimed[f]}' and '{part}'; each file goes in one part.")
            claimed[f] = part
        out[part] = with_revision(root, dom, external)
    missing = sorted(parent_files - set(claimed))
    if missing:
        raise ConfigError(
            f"the parts of '{parent.name}' do not cover it: {missing[0]} (and {len(missing) - 1} more) belongs to no part; "
            "add it to a part."
        )
    return out


def check_disjoint(root: Path, domains: DomainSet, external: bool = False) -> None:
    """A file may belong to one domain only."""
    owner: dict[Path, str] = {}
    for d in domains:
        for f in resolve_sources(root, d, external):
            if f in owner:
                raise ConfigError(f"file {f} is claimed by both '{owner[f]}' and '{d.name}'; a file belongs to one domain.")
            owner[f] = d.name


@dataclass(frozen=True)
class AffectedSet:
    """What an update touches: mixture reuse recomputes `affected` and freezes `unaffected`."""

    added: tuple[str, ...] = ()
    revised: tuple[str, ...] = ()
    partitioned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # parent -> parts
    removed: tuple[str, ...] = ()
    unaffected: tuple[str, ...] = ()

    @property
    def affected(self) -> tuple[str, ...]:
        """Leaf domains of the new set whose weight must be recomputed."""
        parts = [p for ps in self.partitioned.values() for p in ps]
        return tuple(sorted({*self.added, *self.revised, *parts}))

    @property
    def kinds(self) -> list[str]:
        kinds = []
        for kind, items in (("add", self.added), ("revise", self.revised), ("partition", self.partitioned), ("remove", self.removed)):
            if items:
                kinds.append(kind)
        return kinds

    def record(self) -> "AffectedRecord":
        return AffectedRecord(list(self.added), list(self.revised), {k: list(v) for k, v in self.partitioned.items()},
                              list(self.removed), list(self.unaffected), list(self.affected))


@dataclass(frozen=True)
class AffectedRecord(Table):
    """An affected set as history files, `status` and `swarm plan --json` record it (with `affected` spelled out)."""

    added: list[str] = field(default_factory=list)
    revised: list[str] = field(default_factory=list)
    partitioned: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    unaffected: list[str] = field(default_factory=list)
    affected: list[str] = field(default_factory=list)


def affected_set(before: DomainSet, after: DomainSet) -> AffectedSet:
    """Compare two domain sets: new, revised, partitioned and removed domains versus unaffected ones."""
    old = {d.name: d for d in before}
    new = {d.name: d for d in after}
    partitioned: dict[str, list[str]] = {}
    added, revised, unaffected = [], [], []
    for name, dom in new.items():
        if name in old:
            (unaffected if old[name].revision == dom.revision and old[name].sources == dom.sources else revised).append(name)
        elif dom.parent and dom.parent in old and dom.parent not in new:
            partitioned.setdefault(dom.parent, []).append(name)
        else:
            added.append(name)
    removed = [n for n in old if n not in new and n not in partitioned]
    return AffectedSet(
        added=tuple(sorted(added)),
        revised=tuple(sorted(revised)),
        partitioned={k: tuple(sorted(v)) for k, v in sorted(partitioned.items())},
        removed=tuple(sorted(removed)),
        unaffected=tuple(sorted(unaffected)),
    )
