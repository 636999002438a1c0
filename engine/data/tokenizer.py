"""The project tokenizer: a byte-level BPE trained on the project's own data, a local Hugging Face
tokenizer folder, or raw bytes.

A trained tokenizer is saved inside the project (tokenizer/tokenizer.json, kept in git) so results
reproduce; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from engine import atomic
from engine.config import decode_text, read_bytes
from engine.errors import ConfigError, DataError
from engine.settings import TokenizerSettings

EOS_TOKEN = "<|endoftext|>"


class Tokenizer:
    """A uniform face over the backends: batch encoding to id lists, EOS id, vocab size, fingerprint."""

    def __init__(self, encode_batch: Callable[[list[str]], list[list[int]]], decode: Callable[[Sequence[int]], str],
                 eos_id: int, vocab_size: int, fingerprint: str):
        self._encode_batch = encode_batch
        self._decode = decode
        self.eos_id = eos_id
        self.vocab_size = vocab_size
        self.fingerprint = fingerprint

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._encode_batch(texts) if texts else []

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode(ids)

    @property
    def dtype(self) -> np.dtype:
        """uint16 when every id fits, else uint32."""
        return np.dtype(np.uint16) if self.vocab_size <= 65535 else np.dtype(np.uint32)


def byte_tokenizer() -> Tokenizer:
    def enc(texts):
        return [list(t.encode("utf-8")) for t in texts]

    def dec(ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    return Tokenizer(enc, dec, eos_id=256, vocab_size=257, fingerprint="bytes-v1")


def _from_fast(tok, fingerprint: str) -> Tokenizer:
    eos = tok.token_to_id(EOS_TOKEN)
    if eos is None:
        raise DataError(f"the tokenizer has no {EOS_TOKEN} token; retrain it with `olmix-tui tokenize --retrain`.")

    def enc(texts):
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    return Tokenizer(enc, lambda ids: tok.decode(list(ids)), eos_id=eos, vocab_size=tok.get_vocab_size(), fingerprint=fingerprint)


def train_bpe(texts: Iterable[str], vocab_size: int, out_file: Path) -> Tokenizer:
    """Train a byte-level BPE (GPT-2 style pre-tokenization) and save it atomically to `out_file`."""
    from tokenizers import Tokenizer as FastTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = FastTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    data = tok.to_str()
    atomic.write_text(out_file, data)
    return _from_fast(tok, "bpe-" + hashlib.sha256(data.encode()).hexdigest()[:16])


def load_bpe(file: Path) -> Tokenizer:
    from tokenizers import Tokenizer as FastTokenizer

    data = decode_text(file, read_bytes(file, f"{file} is missing; run `olmix-tui tokenize` to train the tokenizer."),
                       "delete it and run `olmix-tui tokenize` to retrain.")
    try:
        tok = FastTokenizer.from_str(data)
    except Exception as err:  # the tokenizers library raises a bare Exception on bad JSON
        raise DataError(f"{file} is not a valid tokenizer file ({err}); delete it and run `olmix-tui tokenize` to retrain.") from None
    return _from_fast(tok, "bpe-" + hashlib.sha256(data.encode()).hexdigest()[:16])


def load_hf_folder(folder: Path) -> Tokenizer:
    """A local Hugging Face tokenizer folder, loaded offline with AutoTokenizer."""
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise ConfigError(f"olmix.toml: [tokenizer].path '{folder}' is not a folder; point it at a local tokenizer folder.")
    try:
        hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load a tokenizer from {folder} ({err}); it needs tokenizer.json or the slow tokenizer files.") from None
    eos = hf.eos_token_id
    if eos is None:
        raise DataError(f"the tokenizer in {folder} has no EOS token; documents need one as separator.")
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())

    def enc(texts):
        return hf(texts, add_special_tokens=False)["input_ids"]

    return Tokenizer(enc, lambda ids: hf.decode(list(ids)), eos_id=eos, vocab_size=len(hf), fingerprint="hf-" + digest.hexdigest()[:16])


def tokenizer_file(root: Path, settings: TokenizerSettings) -> Path:
    """Where a project's trained BPE lives (tokenizer.json under [tokenizer] path)."""
    path = Path(settings.path) if Path(settings.path).is_absolute() else Path(root) / settings.path
    return path / "tokenizer.json"


def load_tokenizer(root: Path, settings: TokenizerSettings) -> Tokenizer | None:
    """The tokenizer of the project at `root` as [tokenizer] says; None when its BPE is not trained yet."""
    if settings.kind == "bytes":
        return byte_tokenizer()
    if settings.kind == "hf":
        return load_hf_folder(tokenizer_file(root, settings).parent)
    file = tokenizer_file(root, settings)
    return load_bpe(file) if file.exists() else None
