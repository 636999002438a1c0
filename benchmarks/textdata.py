"""Byte-level token domains from text that ships with Python, for the training tests and the GPU benchmark.

The real token store is built by the data package; this gives the same shape of input
(per domain: train / validation token arrays of documents each ending in EOS, plus bytes per
token) with no download: vocabulary = the 256 byte values + EOS (id 256).
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BYTE_VOCAB_SIZE = 257
BYTE_EOS = 256


def encode_bytes(text: str) -> list[int]:
    """Byte-level tokeniser: UTF-8 bytes as ids 0..255 (EOS is added by the caller)."""
    return list(text.encode("utf-8"))


@dataclass(frozen=True)
class TokenDomain:
    """One domain's tokens: train and validation arrays (uint16) and bytes per token."""

    name: str
    train: np.ndarray
    val: np.ndarray
    bytes_per_token: float


def _sources() -> dict[str, list[Path]]:
    paths = sysconfig.get_paths()
    stdlib = Path(paths["stdlib"])
    site = Path(paths["purelib"])
    return {
        "code": sorted(stdlib.glob("*.py")),
        "tests": sorted((stdlib / "test").glob("test_*.py")),
        "docs": [stdlib / "pydoc_data" / "topics.py"],
        "prose": sorted(site.glob("*.dist-info/METADATA")),
    }


def stdlib_text_domains(max_bytes_per_domain: int = 2_000_000, val_fraction: float = 0.1,
                        names: tuple[str, ...] = ("code", "tests", "docs", "prose")) -> list[TokenDomain]:
    """Up to `max_bytes_per_domain` bytes of each domain (files in sorted order), byte-tokenised.

    Each file is a document followed by EOS; the last `val_fraction` of a domain's tokens is its
    validation split. Domains with no files on this installation are skipped.
    """
    domains = []
    sources = _sources()
    for name in names:
        chunks, size = [], 0
        for path in sources[name]:
            if size >= max_bytes_per_domain:
                break
            data = path.read_bytes()[: max_bytes_per_domain - size]
            chunks.append(np.frombuffer(data, dtype=np.uint8).astype(np.uint16))
            chunks.append(np.array([BYTE_EOS], dtype=np.uint16))
            size += len(data)
        if not chunks:
            continue
        tokens = np.concatenate(chunks)
        n_val = max(1, int(len(tokens) * val_fraction))
        domains.append(TokenDomain(name, tokens[:-n_val], tokens[-n_val:], size / len(tokens)))
    return domains
