"""K Llama proxies of one shape as one batched computation, written as nanoGPT writes one GPT.

Every weight carries a leading model axis [K, ...] and every projection is a batched matmul
(torch.bmm) over that axis, so K tiny models cost a handful of large kernels instead of K times
many small ones; attention folds K into the batch. Numerically this is transformers'
LlamaForCausalLM (RMSNorm computed in float32, RoPE as HF computes it, SwiGLU MLP, no biases,
tied or untied head); `export.export_hf` writes proxy k as such a checkpoint and the tests
compare logits and whole training runs.

The modules (Attention, MLP, Block, StackedLlama) say what is computed; an ops object, chosen once
when the model is built, says how. `TorchOps` below is the implementation, in PyTorch ops: the
path on GPUs, under torch.compile, and the reference the tests hold every other path to.
`cpu_ops` overrides some of its methods for CPUs (norm, loss and bfloat16 attention written for a
CPU's passes over memory; the fused C kernels of cpu_kernels), and `cpu_ops.ops_for` chooses.

Weights are stored in "x @ W" orientation ([K, in, out]); q and k share one bmm. Within each
head, q and k columns are stored with RoPE's rotation pairs adjacent (HF dims i and i + hd/2 at
2i and 2i + 1), so RoPE rotates neighbouring pairs instead of rotate_half's halves; the same
permutation of q and k leaves every attention score unchanged, and export_hf permutes back.

Under bfloat16 autocast the projections and attention run in bfloat16 while norms, RoPE and the
residual stream stay in float32, as in HF.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig

from engine.training.loss import ChunkedCrossEntropy, chunked_token_nll

LOSS_BLOCK = 2**26
"""Logits the loss holds at once by default (elements: 256 MiB in float32); see loss.py."""


def rope_theta(config: LlamaConfig) -> float:
    """RoPE base of a config, across transformers versions (rope_parameters or rope_theta)."""
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10_000.0)))


def rope_table(config: LlamaConfig, seq_len: int) -> torch.Tensor:
    """[seq_len, 1, head_dim / 2, 2]: cos and sin of each rotation pair, as LlamaRotaryEmbedding computes them."""
    dim = config.head_dim
    inv_freq = 1.0 / (rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return torch.stack((freqs.cos(), freqs.sin()), dim=-1)[:, None]


def rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """RoPE on x [..., T, heads, hd] whose rotation pairs are adjacent, in float32."""
    x = x.float().unflatten(-1, (-1, 2))
    cos, sin = table[..., 0], table[..., 1]
    even, odd = x[..., 0], x[..., 1]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def autocast_dtype_of(x: torch.Tensor) -> torch.dtype:
    """The dtype activations are handed on in: the autocast dtype, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class TorchOps:
    """The model's computations as PyTorch ops; `loss_block` bounds the logits held at once (elements)."""

    keeps_logits = False
    """Whether the loss keeps a step's whole [K, rows, V] logits for the backward (see trainer.micro_batch_rows)."""

    def __init__(self, loss_block: int = LOSS_BLOCK):
        self.loss_block = loss_block

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """LlamaRMSNorm of x [K, N, D] with weight [K, D], in float32; returned in the autocast dtype,
        cast once here rather than by every projection that reads it."""
        dtype = autocast_dtype_of(x)
        x = x.float()
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return (weight[:, None, :] * normed).to(dtype)

    def add_rms_norm(self, x: torch.Tensor, update: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream after `update` (None: none) and its RMSNorm: (x + update, rms_norm(x + update))."""
        if update is not None:
            x = x + update
        return x, self.rms_norm(x, weight, eps)

    def attention(self, qk: torch.Tensor, v: torch.Tensor, rope: torch.Tensor, scale: float) -> torch.Tensor:
        """Causal softmax attention with RoPE: qk [batch, T, 2 * heads, hd] holds the q heads then the
        k heads, v is [batch, T, heads, hd]; returns [batch, heads, T, hd] in v's dtype.
        SDPA's fused kernel: flash attention on GPUs."""
        heads = v.shape[2]
        qk = rotate(qk, rope)
        q, k, v = (x.transpose(1, 2).to(v.dtype) for x in (qk[:, :, :heads], qk[:, :, heads:], v))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)

    def head_loss(self, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy per proxy [K] of hidden states [K, N, D] through head [K, D, V]."""
        return ChunkedCrossEntropy.apply(hidden, head, targets, self.loss_block)

    def token_nll(self, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy [K, N] in nats, for evaluation."""
        return chunked_token_nll(hidden, head, targets, self.loss_block)


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE of K proxies: qk [K, D, 2 * A] (q then k), v, o."""

    def __init__(self, config: LlamaConfig, n_models: int, ops: TorchOps):
        super().__init__()
        self.ops, self.n_heads, self.head_dim = ops, config.num_attention_heads, config.head_dim
        d, width = config.hidden_size, config.num_attention_heads * config.head_dim
        self.qk = nn.Parameter(torch.empty(n_models, d, 2 * width))
        self.v = nn.Parameter(torch.empty(n_models, d, width))
        self.o = nn.Parameter(torch.empty(n_models, width, d))

    def forward(self, h: torch.Tensor, seq_len: int, rope: torch.Tensor) -> torch.Tensor:
        """[K, B * T, D] -> [K, B * T, D] for B sequences of seq_len tokens per proxy."""
        k, n, _ = h.shape
        batch, heads, hd = k * n // seq_len, self.n_heads, self.head_dim
        v = torch.bmm(h, self.v).view(batch, seq_len, heads, hd)
        qk = torch.bmm(h, self.qk).view(batch, seq_len, 2 * heads, hd)
        y = self.ops.attention(qk, v, rope, scale=hd**-0.5)
        return torch.bmm(y.transpose(1, 2).reshape(k, n, heads * hd), self.o)


class MLP(nn.Module):
    """SwiGLU of K proxies: down(silu(gate(h)) * up(h))."""

    def __init__(self, config: LlamaConfig, n_models: int):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate = nn.Parameter(torch.empty(n_models, d, f))
        self.up = nn.Parameter(torch.empty(n_models, d, f))
        self.down = nn.Parameter(torch.empty(n_models, f, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.bmm(F.silu(torch.bmm(h, self.gate)) * torch.bmm(h, self.up), self.down)


class Block(nn.Module):
    """A Llama decoder layer of K proxies: x + attn(norm(x)), then + mlp(norm(x)).

    Each residual add is done together with the norm that reads its result (`ops.add_rms_norm`),
    so the block takes the previous block's MLP output still to be added, and hands its own on.
    """

    def __init__(self, config: LlamaConfig, n_models: int, ops: TorchOps):
        super().__init__()
        self.ops, self.eps = ops, config.rms_norm_eps
        self.attn_norm = nn.Parameter(torch.ones(n_models, config.hidden_size))
        self.attn = Attention(config, n_models, ops)
        self.mlp_norm = nn.Parameter(torch.ones(n_models, config.hidden_size))
        self.mlp = MLP(config, n_models)

    def forward(self, x: torch.Tensor, update: torch.Tensor | None, seq_len: int,
                rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + update after attention, this block's MLP output); `update` is None for the first block."""
        x, h = self.ops.add_rms_norm(x, update, self.attn_norm, self.eps)
        x, h = self.ops.add_rms_norm(x, self.attn(h, seq_len, rope), self.mlp_norm, self.eps)
        return x, self.mlp(h)


class StackedLlama(nn.Module):
    """K LlamaForCausalLM models with identical config, weights stacked on axis 0, computing with `ops`.

    Parameters (K = n_models, D = hidden, F = intermediate, V = vocab, A = heads * head_dim, per layer i):
      embed [K, V, D]; layers.i.attn_norm [K, D]; layers.i.attn.qk [K, D, 2A] (q then k);
      layers.i.attn.v [K, D, A]; layers.i.attn.o [K, A, D]; layers.i.mlp_norm [K, D];
      layers.i.mlp.gate [K, D, F]; layers.i.mlp.up [K, D, F]; layers.i.mlp.down [K, F, D];
      norm [K, D]; head [K, D, V] (absent when tied).
    """

    def __init__(self, config: LlamaConfig, n_models: int, ops: TorchOps | None = None):
        super().__init__()
        if config.num_key_value_heads != config.num_attention_heads:
            raise ValueError("StackedLlama implements multi-head attention only (num_key_value_heads == num_attention_heads).")
        self.config, self.n_models, self.ops = config, n_models, ops or TorchOps()
        self.embed = nn.Parameter(torch.empty(n_models, config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(Block(config, n_models, self.ops) for _ in range(config.num_hidden_layers))
        self.norm = nn.Parameter(torch.ones(n_models, config.hidden_size))
        self.head = None if config.tie_word_embeddings else nn.Parameter(
            torch.empty(n_models, config.hidden_size, config.vocab_size))
        self.register_buffer("rope", rope_table(config, config.max_position_embeddings), persistent=False)
        self.register_buffer("vocab_offsets", torch.arange(n_models)[:, None, None] * config.vocab_size, persistent=False)

    def init_weights(self, seeds: Sequence[int]) -> None:
        """Initialise proxy k from seeds[k] alone (normal(0, initializer_range), norms = 1), as HF does.

        Proxy k's initial weights depend only on its seed, not on K or its position in the stack.
        """
        if len(seeds) != self.n_models:
            raise ValueError(f"need {self.n_models} seeds, got {len(seeds)}")
        std = self.config.initializer_range
        matrices = [p for p in self.parameters() if p.dim() == 3]
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2:
                    p.fill_(1.0)
            for k, seed in enumerate(seeds):
                gen = torch.Generator(device="cpu").manual_seed(int(seed))
                for p in matrices:
                    p[k].copy_(torch.empty(p.shape[1:]).normal_(0.0, std, generator=gen))

    def matmul_weights(self) -> list[tuple[nn.Module, str]]:
        """(module, attribute) of every weight the forward only multiplies (bmm operands): the
        projections and an untied head, not the embedding (looked up in float32) or the norms."""
        pairs = [(module, name) for layer in self.layers
                 for module, names in ((layer.attn, ("qk", "v", "o")), (layer.mlp, ("gate", "up", "down")))
                 for name in names]
        return pairs + ([(self, "head")] if self.head is not None else [])

    def head_weight(self) -> torch.Tensor:
        """[K, D, V] output projection (the embedding, transposed, when tied)."""
        return self.embed.transpose(1, 2) if self.head is None else self.head

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normed hidden states [K, B*T, D] for token ids [K, B, T]."""
        k, b, t = tokens.shape
        d = self.config.hidden_size
        x = F.embedding(tokens + self.vocab_offsets, self.embed.reshape(-1, d)).reshape(k, b * t, d)
        update = None
        for block in self.layers:
            x, update = block(x, update, t, self.rope[:t])
        return self.ops.add_rms_norm(x, update, self.norm, self.config.rms_norm_eps)[1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, T, V] for token ids [K, B, T] (proxy k reads tokens[k])."""
        k, b, t = tokens.shape
        logits = torch.bmm(self.hidden_states(tokens), self.head_weight())
        return logits.reshape(k, b, t, -1)

    def token_nll(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood in nats [K, B, T] of `targets` after `tokens` (for evaluation)."""
        nll = self.ops.token_nll(self.hidden_states(tokens), self.head_weight(), targets.reshape(self.n_models, -1))
        return nll.reshape(targets.shape)

    def losses(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy per proxy [K] for sequences [K, B, T+1].

        Backpropagating `losses.sum()` gives each proxy exactly the gradient of its own loss.
        """
        targets = batch[..., 1:].reshape(self.n_models, -1)
        return self.ops.head_loss(self.hidden_states(batch[..., :-1]), self.head_weight(), targets)
