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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):  # name the file being written, not its temp file
            raise OSError(err.errno, err.strerror, str(path)) from None
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


def dumps_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text with floats in a fixed format."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([format_float(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Atomic CSV with floats in a fixed format."""
    return write_text(path, dumps_csv(header, rows))


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync: append-only logs (metrics.jsonl) survive a SIGKILL.

    A line torn by a killed writer (no newline at the end of the file) is closed first, so the new
    record starts a line of its own; readers skip the torn one (see `read_jsonl`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(round_floats(dict(record)), sort_keys=True) + "\n").encode("utf-8")
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size and os.pread(f.fileno(), 1, size - 1) != b"\n":
            line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read an append-only JSON-lines log of objects, skipping a torn line left by a killed writer
    (and any line that is not a JSON object)."""
    path = Path(path)
    if not path.is_file():  # missing (nothing written yet), or not a file a worker wrote
        return []
    data = path.read_bytes()
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def write_output(path: str | os.PathLike, text: str) -> Path:
    """Write a command's output file (`export --out`, `predict --out`): a regular file (or a symlink
    to one, which is kept and written through) atomically; anything else that exists (a FIFO, a
    device such as /dev/stdout, a terminal) by opening and writing it, never replacing it."""
    path = Path(path)
    try:
        special = (path.exists() and not path.is_file()
                   or any(str(p).startswith(("/dev/", "/proc/")) for p in (path.absolute(), path.resolve())))
    except (OSError, RuntimeError):  # a symlink loop: let the write say what is wrong
        special = False
    if special:  # appending: /dev/stdout redirected to a file is written where the shell left it
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return path
    return write_text(path.resolve() if path.is_symlink() else path, text)
