"""Typed settings sections: load a TOML table into a frozen dataclass, rejecting what it doesn't know.

Every section of olmix.toml is a frozen dataclass owned by the module it configures
(`SwarmSettings` in engine/swarm.py, ...). `load_section` checks keys and types and raises a
ConfigError naming the file, the key and the fix; `dump_section` writes it back.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, get_args, get_origin

from engine.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is None:
        return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
    args = get_args(tp)
    if origin is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a table of {_type_name(args[1]).removeprefix('a ').removeprefix('an ')}s"
    return str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return `value` as type `tp` or raise ConfigError (ints are accepted where floats are)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}; fix the value.")
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
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}; fix the value.")
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
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported settings type {tp}")


def load_section(cls: type[T], data: Mapping[str, Any] | None, file: str, section: str) -> T:
    """Build `cls` from a TOML table; unknown keys and wrong types are ConfigErrors."""
    data = dict(data or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{file}: unknown key [{section}].{unknown[0]}; known keys are {', '.join(sorted(fields))}. "
            "Remove it or fix its spelling."
        )
    kwargs = {k: _coerce(v, hints[k], f"{file}: [{section}].{k}") for k, v in data.items()}
    factory = getattr(cls, "from_section", cls)  # a section may fill unset keys from a preset
    try:
        return factory(**kwargs)
    except (ValueError, ConfigError) as err:
        raise ConfigError(f"{file}: [{section}] {err}") from None


def dump_section(obj: Any) -> dict[str, Any]:
    """The dataclass as a plain dict, for writing back to TOML."""
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
