"""Atomic, deterministic file writes: temp file in the same folder, fsync, rename.

A reader never sees a half-written file, and a crash leaves either the old or the new content.
TOML and CSV output is deterministic (sorted keys, fixed float formatting) so git diffs of a
project show only real changes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import tomli_w

FLOAT_DIGITS = 8


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file + fsync + rename); returns the path. The file
    gets the mode a plain open() would give it (0666 less the umask), not mkstemp's 0600, so the
    other users of a shared project folder can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it too, racing other threads' writes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: set and restore
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def round_floats(obj: Any, digits: int = FLOAT_DIGITS) -> Any:
    """Recursively round floats (and numpy scalars) so serialised output is stable."""
    if isinstance(obj, Mapping):
        return {str(k): round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj) or math.isinf(obj):
            return obj
        return float(f"{obj:.{digits}g}")
    return obj


def _sorted(obj: Any) -> Any:
    """Keys sorted; None values dropped (TOML has no null: a missing key reads back as absent)."""
    if isinstance(obj, Mapping):
        return {k: _sorted(obj[k]) for k in sorted(obj) if obj[k] is not None}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Deterministic TOML: sorted keys, floats rounded to FLOAT_DIGITS significant digits, None dropped."""
    return tomli_w.dumps(_sorted(round_floats(dict(data))))


def write_toml(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return write_text(path, dumps_toml(data))


def dumps_json(data: Any, indent: int | None = 2) -> str:
    return json.dumps(round_floats(data), indent=indent, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, dumps_json(data))


def format_float(x: float, digits: int = FLOAT_DIGITS) -> str:
    return "nan" if x != x else f"{x:.{digits}g}"


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Atomic CSV with floats in a fixed format."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([format_float(v) if isinstance(v, float) else v for v in row])
    return write_text(path, buf.getvalue())


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync: append-only logs (metrics.jsonl) survive a SIGKILL.

    A reader must ignore a truncated last line (see `read_jsonl`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(round_floats(dict(record)), sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an append-only JSON-lines log, skipping a torn final line left by a killed writer."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
