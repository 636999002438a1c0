"""Typed tables: load a TOML table into a frozen dataclass, rejecting what it doesn't know.

Every table of olmix.toml is a frozen dataclass in engine/settings.py, and the records of the
project's other files (swarm.toml: engine/swarm_spec.py) are built the same way. A table class
derives from `Table`: its `validate()` raises a ConfigError naming the key and the fix, and runs
whenever one is made (loaded or built in code). `load_section` checks keys and types first and
puts the file and the table in front of any message; `dump_section` writes a table back.
"""

from __future__ import annotations

import dataclasses
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
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    data = {k: v for k, v in (data or {}).items() if k not in getattr(cls, "retired", ())}
    hints = typing.get_type_hints(cls)
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


def dump_section(obj: Any) -> dict[str, Any]:
    """The dataclass as a plain dict, for writing back to TOML (None values are left out when written)."""
    return dataclasses.asdict(obj)


def read_toml(path: Path) -> dict:
    """Parse a TOML file; a syntax error names the file and line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing; run `olmix-tui init {path.parent}` to create a project.") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML ({err}); fix the syntax.") from None
