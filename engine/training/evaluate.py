"""Held-out metrics of K stacked proxies at once: per-domain loss / BPB and user eval sets.

Per domain: the first `eval_tokens_per_domain` tokens of its validation split, cut into windows
of seq_len targets (stride seq_len, so every token is predicted exactly once, with up to seq_len
tokens of context). loss = mean NLL in nats per token; bpb = loss / ln 2 / bytes_per_token.

Eval sets: items {"context", "continuation"}; an item's BPB is the summed NLL of the
continuation tokens given the context, / ln 2 / the continuation's UTF-8 bytes; a set's BPB is
the mean over its items. Items are right-padded to seq_len + 1 tokens (causal attention keeps
padding invisible to real tokens) and scored in the same forwards as the domains' windows.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from engine.config import decode_text, read_bytes
from engine.errors import DataError
from engine.training.device import autocast, memory_budget
from engine.training.model import StackedLlama

LN2 = math.log(2.0)
EVAL_BUDGET_BYTES = 256 * 2**20
EVAL_GPU_FRACTION = 0.25
"""Activations one evaluation forward may hold (on a GPU, this fraction of the card's memory);
more rows are split into several forwards. The logits are bounded apart (model.LOSS_BLOCK)."""


def bits_per_byte(loss_nats_per_token: float, bytes_per_token: float) -> float:
    """Convert a mean loss in nats per token into bits per UTF-8 byte."""
    return loss_nats_per_token / LN2 / bytes_per_token


def domain_eval_windows(val_tokens: np.ndarray, seq_len: int, max_tokens: int) -> np.ndarray:
    """Windows [n, seq_len + 1] (int64) over the first `max_tokens` + 1 tokens, stride seq_len."""
    usable = min(int(max_tokens), len(val_tokens) - 1)
    n = usable // seq_len
    if n == 0:
        raise DataError(
            f"A validation split has {len(val_tokens)} tokens, fewer than one {seq_len}-token window; "
            "add validation data or lower the preset's seq_len."
        )
    idx = np.arange(n, dtype=np.int64)[:, None] * seq_len + np.arange(seq_len + 1, dtype=np.int64)
    return np.asarray(val_tokens[idx], dtype=np.int64)


@dataclass(frozen=True)
class EvalItem:
    context: str
    continuation: str


@dataclass(frozen=True)
class EvalSet:
    """A named list of (context, continuation) items scored as continuation BPB."""

    name: str
    items: tuple[EvalItem, ...]


def load_eval_set(path: str | os.PathLike, name: str | None = None) -> EvalSet:
    """Read an eval set from JSON lines of {"context": str, "continuation": str}; name = file stem."""
    path = Path(path)
    items = []
    text = decode_text(path, read_bytes(path, f"eval set {path} does not exist; add the file or fix [data] eval_sets "
                                              "in olmix.toml."), "save it as UTF-8 JSON lines.")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(EvalItem(str(row["context"]), str(row["continuation"])))
        except (json.JSONDecodeError, KeyError, TypeError, IndexError, RecursionError):
            raise DataError(
                f"{path}:{lineno} is not a JSON object with string fields \"context\" and \"continuation\"; fix that line."
            ) from None
    if not items:
        raise DataError(f"Eval set {path} has no items; add JSON lines of {{\"context\", \"continuation\"}}.")
    if any(not item.continuation.encode("utf-8") for item in items):
        raise DataError(f"Eval set {path} has an item with an empty continuation; every item needs one.")
    return EvalSet(name or path.stem, tuple(items))


@dataclass(frozen=True)
class TokenizedEvalSet:
    """An eval set as token ids: per item the scored sequence and which targets are continuation."""

    name: str
    sequences: tuple[np.ndarray, ...]  # [eos] + context + continuation, at most seq_len + 1 tokens
    n_continuation: np.ndarray  # [items] continuation tokens (the last targets of each sequence)
    continuation_bytes: np.ndarray  # [items] UTF-8 bytes of each continuation


def tokenize_eval_set(eval_set: EvalSet, encode: Callable[[str], Sequence[int]], eos_id: int,
                      seq_len: int) -> TokenizedEvalSet:
    """Tokenise context and continuation separately, prefix the document separator `eos_id`,
    and keep the last seq_len + 1 tokens (the context is cut from the left if too long)."""
    sequences, n_cont, n_bytes = [], [], []
    for i, item in enumerate(eval_set.items):
        ctx, cont = list(encode(item.context)), list(encode(item.continuation))
        if not 0 < len(cont) <= seq_len:
            raise DataError(
                f"Eval set {eval_set.name!r} item {i}: the continuation is {len(cont)} tokens; it must be "
                f"1..{seq_len} (the proxy context); shorten it."
            )
        seq = np.asarray(([eos_id] + ctx + cont)[-(seq_len + 1):], dtype=np.int64)
        sequences.append(seq)
        n_cont.append(len(cont))
        n_bytes.append(len(item.continuation.encode("utf-8")))
    return TokenizedEvalSet(eval_set.name, tuple(sequences), np.array(n_cont), np.array(n_bytes))


class Evaluator:
    """Scores all K proxies of a StackedLlama on every domain's held-out windows and the eval sets.

    All of them are rows of one table [rows, seq_len + 1] (eval-set items right-padded) with a mask
    of the targets each row scores, sent to the device once; an evaluation runs the table through
    the K proxies in as few stacked forwards as the activation budget allows, and reads the
    per-row sums back once.
    """

    def __init__(self, domain_names: Sequence[str], val_arrays: Sequence[np.ndarray],
                 bytes_per_token: Sequence[float], seq_len: int, eval_tokens_per_domain: int,
                 eval_sets: Sequence[TokenizedEvalSet] = ()):
        self.domain_names = list(domain_names)
        self.bytes_per_token = [float(b) for b in bytes_per_token]
        self.windows = [domain_eval_windows(v, seq_len, eval_tokens_per_domain) for v in val_arrays]
        self.eval_sets = list(eval_sets)
        width = seq_len + 1
        rows, ends = list(self.windows), [np.full(len(w), seq_len) for w in self.windows]
        n_scored = [np.full(len(w), seq_len) for w in self.windows]
        for es in self.eval_sets:
            padded = np.zeros((len(es.sequences), width), dtype=np.int64)
            for row, seq in enumerate(es.sequences):
                padded[row, : len(seq)] = seq
            rows.append(padded)
            ends.append(np.array([len(seq) - 1 for seq in es.sequences]))
            n_scored.append(np.asarray(es.n_continuation))
        self.rows = np.concatenate(rows)
        end, scored = np.concatenate(ends), np.concatenate(n_scored)
        positions = np.arange(seq_len)
        self.scored = (positions[None, :] < end[:, None]) & (positions[None, :] >= (end - scored)[:, None])
        self.starts = np.cumsum([0] + [len(r) for r in rows])  # rows of part i: starts[i]:starts[i + 1]
        self._on_device: tuple[torch.device, torch.Tensor, torch.Tensor] | None = None

    def prepare(self, device: torch.device) -> None:
        """Send the rows and their masks to `device` (once)."""
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = (device, torch.from_numpy(self.rows).to(device), torch.from_numpy(self.scored).to(device))

    @torch.no_grad()
    def evaluate(self, model: StackedLlama, device: torch.device, amp_dtype: torch.dtype | None) -> list[dict[str, float]]:
        """Metrics per proxy: "<domain>/loss", "<domain>/bpb" and "eval:<name>/bpb"."""
        was_training = model.training
        model.eval()
        nll = self._row_nll(model, device, amp_dtype)  # [K, rows]
        model.train(was_training)
        part = [nll[:, a:b] for a, b in zip(self.starts[:-1], self.starts[1:])]
        seq_len = self.rows.shape[1] - 1
        metrics: list[dict[str, float]] = [{} for _ in range(model.n_models)]
        for name, windows, bpt, rows in zip(self.domain_names, self.windows, self.bytes_per_token, part):
            losses = rows.sum(1) / (len(windows) * seq_len)
            for i, m in enumerate(metrics):
                m[f"{name}/loss"] = float(losses[i])
                m[f"{name}/bpb"] = bits_per_byte(float(losses[i]), bpt)
        for es, rows in zip(self.eval_sets, part[len(self.windows):]):
            set_bpb = (rows / LN2 / es.continuation_bytes[None, :]).mean(1)
            for i, m in enumerate(metrics):
                m[f"eval:{es.name}/bpb"] = float(set_bpb[i])
        return metrics

    def _row_nll(self, model: StackedLlama, device: torch.device, amp_dtype: torch.dtype | None) -> np.ndarray:
        """Summed NLL [K, rows] of every row's scored targets, for all K proxies at once."""
        self.prepare(device)
        _, rows, scored = self._on_device  # type: ignore[misc]
        k, width = model.n_models, rows.shape[1] - 1
        config = model.config
        per_row = 4 * k * width * (4 * config.hidden_size + 3 * config.intermediate_size)
        chunk = max(1, memory_budget(device, EVAL_BUDGET_BYTES, EVAL_GPU_FRACTION) // per_row)
        out = []
        for start in range(0, len(rows), chunk):
            tokens = rows[start:start + chunk].unsqueeze(0).expand(k, -1, -1)
            with autocast(device, amp_dtype):
                nll = model.token_nll(tokens[..., :-1], tokens[..., 1:])
            out.append((nll.float() * scored[start:start + chunk]).sum(-1))
        return torch.cat(out, dim=1).cpu().double().numpy()
