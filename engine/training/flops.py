"""Training FLOPs per token and the machine's measured matmul peak, for MFU.

FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B) / nanoGPT:

    6 * N_matmul + 12 * n_layers * d_attn * seq_len

N_matmul counts every weight used in a matmul: q/k/v/o and the three SwiGLU projections of each
layer, plus the LM head (d_model * vocab, counted whether or not it is tied to the embedding; the
embedding lookup itself is a gather, not a matmul). 6 = 2 FLOPs per multiply-add x (1 forward +
2 backward). The attention term covers QK^T and AV (2 matmuls x 2 FLOPs x 3 passes x T keys per
query, d_attn = n_heads * head_dim); like PaLM it ignores the causal mask's halving. Norms,
RoPE, softmax and the optimizer are not counted, so MFU is conservative.
"""

from __future__ import annotations

import time

import torch
from transformers import LlamaConfig


def matmul_params(config: LlamaConfig) -> int:
    """Weights that take part in matmuls, per proxy (attention, MLP, LM head)."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    head_dim = config.head_dim
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    per_layer = d * q_out + 2 * d * kv_out + q_out * d + 3 * d * f
    return config.num_hidden_layers * per_layer + d * v


def train_flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token (see the module docstring for the formula)."""
    d_attn = config.num_attention_heads * config.head_dim
    return 6.0 * matmul_params(config) + 12.0 * config.num_hidden_layers * d_attn * seq_len


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                        size: int = 2048, repeats: int = 10, warmup_seconds: float = 0.5) -> float:
    """FLOP/s of the best of `repeats` timed (size x size) @ (size x size) GEMMs on `device`.

    GEMMs run untimed for `warmup_seconds` first: bfloat16 matrix units (AMX) and GPUs take a
    while to reach full speed, and a cold measurement would understate the peak and inflate MFU.
    """
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    start = time.perf_counter()
    while time.perf_counter() - start < warmup_seconds:
        torch.mm(a, b, out=out)
        _synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
