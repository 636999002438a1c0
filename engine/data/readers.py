"""Read documents from a domain's source files: JSON lines, plain text, pre-tokenized token files.

Text formats yield `str` documents; token files yield 1-D integer arrays (documents split at the
EOS id). `.gz` text files are read transparently.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import DataError

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
TOKEN_SUFFIXES = {".npy", ".bin", ".u16", ".u32"}


def detect_format(path: Path, declared: str) -> str:
    """`declared` unless it is 'auto', then by extension (a trailing .gz is looked through)."""
    if declared != "auto":
        return declared
    suffixes = [s for s in path.suffixes if s != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in TOKEN_SUFFIXES:
        return "tokens"
    return "text"


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_text_documents(path: Path, fmt: str, text_field: str = "text") -> Iterator[str]:
    """Documents of a text source: one per JSON line (its `text_field`), or the whole file for plain
    text; a file that cannot be read (a broken .gz, a vanished file) is a DataError naming it."""
    try:
        yield from _text_documents(path, fmt, text_field)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path} cannot be read ({err}); fix or remove the file.") from None


def _text_documents(path: Path, fmt: str, text_field: str) -> Iterator[str]:
    if fmt == "text":
        with _open_text(path) as f:
            text = f.read()
        if text.strip():
            yield text
        return
    if fmt != "jsonl":
        raise ValueError(fmt)
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno} is not valid JSON ({err.msg}); fix or remove that line.") from None
            if not isinstance(record, dict) or text_field not in record:
                raise DataError(
                    f"{path}:{lineno} has no '{text_field}' field; set text_field for this domain in domains.toml."
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: field '{text_field}' is not a string.")
            if text.strip():
                yield text


def load_token_file(path: Path, dtype: str) -> np.ndarray:
    """A pre-tokenized file as a read-only memmap: real .npy (with header) or raw uint16/uint32."""
    with open(path, "rb") as f:
        has_header = f.read(6) == b"\x93NUMPY"
    if has_header:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise DataError(f"{path} is not a readable .npy token array; re-export it or remove it.") from None
        if arr.ndim != 1 or arr.dtype.kind not in "ui":
            raise DataError(f"{path} holds a {arr.dtype} array of shape {arr.shape}; expected a 1-D integer token array.")
        return arr
    dt = np.dtype({"uint16": np.uint16, "uint32": np.uint32}[dtype])
    if path.suffix == ".u32":
        dt = np.dtype(np.uint32)
    elif path.suffix == ".u16":
        dt = np.dtype(np.uint16)
    size = path.stat().st_size
    if size % dt.itemsize:
        raise DataError(f"{path} is {size} bytes, not a whole number of {dt.name} tokens; check token_dtype in domains.toml.")
    return np.memmap(path, dtype=dt, mode="r")


def split_token_documents(tokens: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """Split a flat token stream at EOS ids (each document keeps its EOS)."""
    ends = np.flatnonzero(np.asarray(tokens) == eos_id) + 1
    if not len(ends) or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))
    starts = np.concatenate([[0], ends[:-1]])
    return [np.asarray(tokens[s:e]) for s, e in zip(starts, ends) if e > s]
