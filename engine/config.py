"""Typed tables: load a TOML table into a frozen dataclass, rejecting what it doesn't know.

Every table of olmix.toml is a frozen dataclass in engine/settings.py, and the records of the
project's other files (swarm.toml: engine/swarm_spec.py) are built the same way. A table class
derives from `Table`: its `validate()` raises a ConfigError naming the key and the fix, and runs
whenever one is made (loaded or built in code). `load_section` checks keys and types first and
puts the file and the table in front of any message; `dump_section` writes a table back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar, get_args, get_origin

from engine.errors import ConfigError

T = TypeVar("T")


class Table:
    """Base of a typed table: a frozen dataclass checked by `validate` whenever one is made.

    `finite_floats`: numbers must be finite (settings); a record of results (a history entry) may
    hold NaN or infinity where a score is undefined. `retired`: keys older files wrote that are
    accepted and dropped when loading (the next save leaves them out).
    """

    finite_floats: ClassVar[bool] = True
    retired: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError (one sentence: the key, what is wrong, the fix) for a value that cannot work."""


SEED_MAX = 2**32 - 1
"""The largest seed: numpy's and torch's generators take any seed in [0, 2**32)."""


def refuse(*problems: tuple[bool, str]) -> None:
    """Raise ConfigError with the sentence of the first problem whose condition holds (the key,
    what is wrong, the fix; the final period is added)."""
    for bad, text in problems:
        if bad:
            raise ConfigError(f"{text}.")


def seed_problem(key: str, seed: int) -> tuple[bool, str]:
    """A seed out of [0, SEED_MAX], for `refuse`."""
    return not 0 <= seed <= SEED_MAX, f"{key} is {seed}; use a seed between 0 and {SEED_MAX}"


def _optional(tp: Any) -> Any | None:
    """X for `X | None`, else None."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return "a table"
    if origin is None:
        return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
    args = get_args(tp)
    if origin is list:
        inner = _type_name(args[0])
        return "a list of tables" if inner == "a table" else f"a list of {inner.removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a table of {_type_name(args[1]).removeprefix('a ').removeprefix('an ')}s"
    return str(tp)


def _coerce(value: Any, tp: Any, where: str, file: str, path: str, finite: bool = True) -> Any:
    """Return `value` as type `tp` or raise ConfigError (ints are accepted where floats are).

    `where` names the value in messages ("[proxy].seed"), `path` is its dotted name ("proxy.seed"),
    the table name of a nested table. An empty table where an optional table goes reads as absent.
    """
    inner = _optional(tp)
    if inner is not None:
        if dataclasses.is_dataclass(inner) and isinstance(value, Mapping) and not value:
            return None
        return _coerce(value, inner, where, file, path, finite)
    origin = get_origin(tp)
    bad = ConfigError(f"{file}: {where} must be {_type_name(tp)}, got {value!r}; fix the value.")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad
        return load_section(tp, value, file, path)
    if origin is None:
        if tp is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            if finite and not math.isfinite(value):
                raise ConfigError(f"{file}: {where} must be a finite number, got {value!r}; fix the value.")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise bad
            return value
        raise TypeError(f"unsupported settings type {tp}")
    args = get_args(tp)
    if origin is list:
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, args[0], f"{where}[{i}]", file, f"{path}[{i}]", finite) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {str(k): _coerce(v, args[1], f"{where}.{k}", file, f"{path}.{k}", finite) for k, v in value.items()}
    raise TypeError(f"unsupported settings type {tp}")


def load_section(cls: type[T], data: Mapping[str, Any] | None, file: str, section: str = "") -> T:
    """Build `cls` from a TOML table (`section` names it in messages; "" for a whole file).

    Unknown keys, wrong types and whatever the class's `validate` refuses are ConfigErrors that
    name the file and the key; keys left out take the class's defaults (a class with a
    `from_section` factory fills them its own way, e.g. from a preset).
    """
    if data is not None and not isinstance(data, Mapping):
        where = f"[{section}]" if section else "the file"
        raise ConfigError(f"{file}: {where} must be a table of keys, got {type(data).__name__}; fix or restore it.")
    data = {k: v for k, v in (data or {}).items() if k not in getattr(cls, "retired", ())}
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    hints = _hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    key = (lambda k: f"[{section}].{k}") if section else (lambda k: f"'{k}'")
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{file}: unknown key {key(unknown[0])}; known keys are {', '.join(sorted(fields))}. "
            "Remove it or fix its spelling."
        )
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{file}: {key(missing[0])} is missing; add it.")
    finite = getattr(cls, "finite_floats", True)
    kwargs = {k: _coerce(v, hints[k], key(k), file, f"{section}.{k}" if section else k, finite) for k, v in data.items()}
    factory = getattr(cls, "from_section", cls)
    try:
        return factory(**kwargs)
    except ConfigError as err:
        if str(err).startswith(f"{file}: "):  # a nested table's message names the file already
            raise
        raise ConfigError(f"{file}: [{section}] {err}" if section else f"{file}: {err}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A class's resolved type hints (cached: run files are read every poll)."""
    return typing.get_type_hints(cls)


def dump_section(obj: Any) -> dict[str, Any]:
    """The dataclass as a plain dict, for writing back to TOML (None values are left out when written)."""
    return dataclasses.asdict(obj)


def read_bytes(path: Path, missing: str) -> bytes:
    """A project file's bytes; a missing file raises ConfigError with `missing` (its sentence's
    fix), a file that cannot be read (a folder, a FIFO or a device, which would be read forever)
    one naming the file and the reason."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigError(f"{path} is not a regular file (a FIFO or a device?); replace it with the file.")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a file; remove it or restore the file.") from None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read ({err.strerror}); fix its permissions or restore it.") from None


def decode_text(path: Path, data: bytes, fix: str = "save it as UTF-8 or restore it from git.") -> str:
    """UTF-8 text of a project file; other bytes (a binary file, latin-1 text) are a ConfigError."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); {fix}") from None


def read_toml(path: Path, missing: str | None = None) -> dict:
    """Parse a TOML file; a missing, unreadable, non-UTF-8 or malformed file is a ConfigError naming
    the file (a syntax error also its line). `missing`: the sentence for a missing file."""
    path = Path(path)
    return parse_toml(decode_text(path, read_bytes(path, missing or f"{path} is missing; run `olmix-tui init "
                                                                    f"{path.parent}` to create a project.")), path)


def parse_toml(text: str, path: Path | str) -> dict:
    """Parse TOML text read from `path` (named in the error of a malformed text)."""
    return _parsed(tomllib.loads, text, path, "TOML", "fix the syntax.")


def _parsed(loads, text: str, path: Path | str, kind: str, fix: str) -> Any:
    """`loads(text)`, or a ConfigError naming the file, where the text breaks, and `fix`."""
    try:
        return loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        reason = f"{err.msg} at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise ConfigError(f"{path} is not valid {kind} ({reason}); {fix}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid {kind} (it nests too deeply); {fix}") from None


def read_json(path: Path, missing: str, fix: str) -> Any:
    """Parse a JSON file the project wrote (NaN and Infinity as Python writes them are read back); a
    missing file raises ConfigError `missing`, a damaged one (not UTF-8, empty, not JSON) one naming
    the file, what is wrong and `fix`."""
    path = Path(path)
    data = read_bytes(path, missing)
    text = decode_text(path, data, fix)
    if not text.strip():
        raise ConfigError(f"{path} is empty; {fix}")
    return _parsed(json.loads, text, path, "JSON", fix)
