"""The token store: one flat token file per domain and split, keyed by content.

Under .olmix/tokens/<domain>-<key>/ each domain has train.bin and val.bin (uint16 when the vocab
fits, else uint32; every document ends with EOS) and meta.json with token and byte counts (bytes
are what bits-per-byte divides by). The key hashes the domain's revision, the tokenizer and the
split settings, so an unchanged domain is never re-tokenized and a revised one always is.
Documents go to validation by a hash of their content: deterministic, and stable when other
documents are added.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from engine import atomic
from engine.data.readers import detect_format, iter_text_documents, load_token_file, split_token_documents
from engine.data.tokenizer import Tokenizer
from engine.domains import Domain, resolve_sources
from engine.config import Table, load_section, read_json
from engine.errors import ConfigError, DataError
from engine.events import EventSink, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.settings import DataSettings

BATCH_DOCS = 256


@dataclass(frozen=True)
class StoreMeta(Table):
    """A token-store entry's meta.json: token dtype, what was tokenized, the counts of each split, and
    the size of each source file (to notice data changed without a revision)."""

    dtype: str
    domain: str
    revision: str
    tokenizer: str
    train_bytes: int
    val_bytes: int
    train_docs: int
    val_docs: int
    train_tokens: int
    val_tokens: int
    sources: dict[str, int] = field(default_factory=dict)

    def validate(self) -> None:
        if self.dtype not in ("uint16", "uint32"):
            raise ConfigError(f"dtype '{self.dtype}' is not a token dtype.")
        if min(self.train_bytes, self.val_bytes, self.train_docs, self.val_docs, self.train_tokens, self.val_tokens) < 0:
            raise ConfigError("a count is negative.")

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize
STORE_VERSION = 1
STORE_DIR = ".olmix/tokens"


@dataclass(frozen=True)
class DomainTokens:
    """A tokenized domain: memmapped train/val token streams and their counts."""

    name: str
    key: str
    train: np.ndarray
    val: np.ndarray
    train_bytes: int
    val_bytes: int
    train_docs: int
    val_docs: int
    sources: dict[str, int] = field(default_factory=dict)  # file -> size when tokenized

    @property
    def train_tokens(self) -> int:
        return int(self.train.shape[0])

    @property
    def val_tokens(self) -> int:
        return int(self.val.shape[0])

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per token on validation (train when validation is empty)."""
        if self.val_tokens:
            return self.val_bytes / self.val_tokens
        return self.train_bytes / max(self.train_tokens, 1)


def store_key(domain: Domain, tokenizer: Tokenizer, settings: DataSettings) -> str:
    h = hashlib.sha256(f"v{STORE_VERSION}|{domain.revision}|{tokenizer.fingerprint}|{settings.val_fraction}".encode())
    return h.hexdigest()[:12]


def _doc_bytes(doc) -> bytes:
    return doc.encode("utf-8") if isinstance(doc, str) else np.ascontiguousarray(doc).tobytes()


def doc_hash_fraction(doc) -> float:
    """A document's content hash mapped to [0, 1)."""
    digest = hashlib.blake2b(_doc_bytes(doc), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def validation_mask(fractions: np.ndarray, val_fraction: float) -> np.ndarray:
    """Documents whose hash falls below val_fraction are held out; with none (or all) held out,
    the lowest (highest) hash is moved so both splits are non-empty whenever there are two documents."""
    mask = fractions < val_fraction
    if len(mask) >= 2:
        if not mask.any():
            mask[np.argmin(fractions)] = True
        if mask.all():
            mask[np.argmax(fractions)] = False
    return mask


def iter_documents(root: Path, domain: Domain, eos_id: int, external: bool = False) -> Iterator[str | np.ndarray]:
    """Every document of a domain, in file order: str for text sources, token arrays for token files
    (`external`: sources outside the project are allowed, [data] external_sources)."""
    for path in resolve_sources(root, domain, external):
        fmt = detect_format(path, domain.format)
        if fmt == "tokens":
            yield from split_token_documents(load_token_file(path, domain.token_dtype), eos_id)
        else:
            yield from iter_text_documents(path, fmt, domain.text_field)


def sample_texts(root: Path, domains: list[Domain], total_bytes: int, external: bool = False) -> Iterator[str]:
    """Up to total_bytes of text spread evenly over domains (documents truncated), to train a tokenizer."""
    per_domain = max(total_bytes // max(len(domains), 1), 1)
    for domain in domains:
        budget = per_domain
        for doc in iter_documents(root, domain, eos_id=-1, external=external):
            if not isinstance(doc, str):
                break
            yield doc[:budget]
            budget -= len(doc)
            if budget <= 0:
                break


class TokenStore:
    """Tokenized domains under `folder` (the project's .olmix/tokens)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def of_project(cls, root: Path) -> "TokenStore":
        """The token store of the project folder `root`."""
        return cls(Path(root) / STORE_DIR)

    def path(self, name: str, key: str) -> Path:
        return self.folder / f"{name.replace(':', '__')}-{key}"

    def load(self, name: str, key: str) -> DomainTokens | None:
        """The stored tokens of domain `name` at `key`, or None if not tokenized yet; an entry whose
        meta.json or token files do not add up is a DataError saying to delete it."""
        folder = self.path(name, key)
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            return None
        fix = f"delete {folder} and run `olmix-tui tokenize` to tokenize the domain again."
        try:
            meta = load_section(StoreMeta, read_json(meta_file, f"{meta_file} is missing", fix), str(meta_file))
        except ConfigError as err:
            raise DataError(f"{str(err).split('; ')[0].rstrip('.')}; {fix}") from None

        def mm(split: str) -> np.ndarray:
            f = folder / f"{split}.bin"
            try:
                size = f.stat().st_size
            except OSError:
                raise DataError(f"{f} is missing; {fix}") from None
            if size % meta.itemsize or size // meta.itemsize != getattr(meta, f"{split}_tokens"):
                raise DataError(f"{f} holds {size} bytes, not the {getattr(meta, f'{split}_tokens')} {meta.dtype} "
                                f"tokens its meta.json counts; {fix}")
            return np.zeros(0, dtype=meta.dtype) if size == 0 else np.memmap(f, dtype=meta.dtype, mode="r")

        return DomainTokens(
            name=name,
            key=key,
            train=mm("train"),
            val=mm("val"),
            train_bytes=meta.train_bytes,
            val_bytes=meta.val_bytes,
            train_docs=meta.train_docs,
            val_docs=meta.val_docs,
            sources=meta.sources,
        )

    def tokenize(self, root: Path, domain: Domain, tokenizer: Tokenizer, settings: DataSettings,
                 on_event: EventSink = ignore) -> DomainTokens:
        """Tokenize a domain into the store (or return it if already there)."""
        key = store_key(domain, tokenizer, settings)
        done = self.load(domain.name, key)
        if done is not None:
            return done
        folder = self.path(domain.name, key)
        folder.mkdir(parents=True, exist_ok=True)
        files = resolve_sources(root, domain, settings.external_sources)
        total = sum(p.stat().st_size for p in files)
        task = f"tokenize {domain.name}"
        on_event(TaskStarted(task, total=total, unit="bytes"))
        dtype = tokenizer.dtype
        counts = {"train_bytes": 0, "val_bytes": 0, "train_docs": 0, "val_docs": 0, "train_tokens": 0, "val_tokens": 0}
        tmp = {split: folder / f".{split}.bin.tmp" for split in ("train", "val")}
        fractions = np.array([doc_hash_fraction(d) for d in iter_documents(root, domain, tokenizer.eos_id,
                                                                           settings.external_sources)])
        val_mask = validation_mask(fractions, settings.val_fraction)
        doc_index = 0
        outs = {}
        try:
            outs.update((split, open(tmp[split], "wb")) for split in tmp)
            batch: list = []
            seen_bytes = 0

            def flush():
                nonlocal seen_bytes, doc_index
                texts = [d for d in batch if isinstance(d, str)]
                encoded = iter(tokenizer.encode_batch(texts))
                for doc in batch:
                    ids = np.asarray(next(encoded) if isinstance(doc, str) else doc, dtype=np.int64)
                    if isinstance(doc, str):
                        ids = np.append(ids, tokenizer.eos_id)
                        n_bytes = len(doc.encode("utf-8"))
                    else:
                        n_bytes = len(tokenizer.decode(ids[ids != tokenizer.eos_id]).encode("utf-8"))
                        if ids[-1] != tokenizer.eos_id:
                            ids = np.append(ids, tokenizer.eos_id)
                    if ids.max(initial=0) >= tokenizer.vocab_size:
                        raise DataError(
                            f"domain '{domain.name}' has token id {int(ids.max())} outside the tokenizer's vocabulary "
                            f"({tokenizer.vocab_size}); pre-tokenized files must use the project tokenizer."
                        )
                    split = "val" if val_mask[doc_index] else "train"
                    doc_index += 1
                    outs[split].write(ids.astype(dtype).tobytes())
                    counts[f"{split}_bytes"] += n_bytes
                    counts[f"{split}_docs"] += 1
                    counts[f"{split}_tokens"] += len(ids)
                    seen_bytes += n_bytes
                batch.clear()
                on_event(TaskProgress(task, completed=min(seen_bytes, total)))

            for doc in iter_documents(root, domain, tokenizer.eos_id, settings.external_sources):
                batch.append(doc)
                if len(batch) >= BATCH_DOCS:
                    flush()
            flush()
            for f in outs.values():
                f.flush()
                os.fsync(f.fileno())
            for f in outs.values():
                f.close()
        except BaseException as err:  # a full disk, a bad document: no half-written token file stays behind
            for split, f in outs.items():
                try:
                    f.close()
                except OSError:
                    pass
                tmp[split].unlink(missing_ok=True)
            if isinstance(err, OSError) and err.filename is None:
                raise OSError(err.errno, err.strerror, str(folder)) from None
            raise
        if counts["train_docs"] + counts["val_docs"] == 0:
            raise DataError(f"domain '{domain.name}' has no non-empty documents; give it data or remove it.")
        if counts["train_docs"] == 0 or counts["val_docs"] == 0:
            raise DataError(
                f"domain '{domain.name}' has {counts['train_docs'] + counts['val_docs']} document(s), too few to hold out "
                "validation data; give it at least two documents (or split its files)."
            )
        for split, path in tmp.items():
            os.replace(path, folder / f"{split}.bin")
        meta = {"dtype": dtype.name, "domain": domain.name, "revision": domain.revision,
                "tokenizer": tokenizer.fingerprint, **counts, "sources": source_sizes(root, files)}
        atomic.write_json(folder / "meta.json", meta)  # written last: marks the entry complete
        on_event(TaskFinished(task, info=counts))
        result = self.load(domain.name, key)
        assert result is not None
        return result


def source_sizes(root: Path, files: list[Path]) -> dict[str, int]:
    """Each file's size by its path (relative to the project where it is inside it)."""
    root = Path(root).resolve()
    return {str(f.relative_to(root) if f.is_relative_to(root) else f): f.stat().st_size for f in files}


def changed_sources(root: Path, domain: Domain, tokens: DomainTokens, external: bool = False) -> list[str]:
    """Source files of a tokenized domain that were added, removed or resized since it was tokenized
    (a cheap check by size: the revision, a hash of the contents, is only recomputed by `revise`)."""
    if not tokens.sources:  # tokenized before sizes were recorded
        return []
    try:
        now = source_sizes(root, resolve_sources(root, domain, external))
    except DataError:
        return sorted(tokens.sources)
    return sorted(f for f in set(now) | set(tokens.sources) if now.get(f) != tokens.sources.get(f))


def natural_prior(tokens: dict[str, DomainTokens]) -> dict[str, float]:
    """The natural distribution: each domain's share of all training tokens."""
    total = sum(t.train_tokens for t in tokens.values())
    if total == 0:
        raise DataError("no domain has training tokens; tokenize the project first.")
    return {name: t.train_tokens / total for name, t in tokens.items()}
