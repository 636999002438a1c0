"""K Llama proxies of one shape as one batched computation.

Every weight carries a leading model axis [K, ...] and every projection is a batched matmul
(torch.bmm) over that axis, so K tiny models cost a handful of large kernels instead of K times
many small ones. Attention runs batched over [K*B, heads, T, hd], and the training loss is fused
with the LM head (`_HeadLoss`).
Numerically this is transformers' LlamaForCausalLM (RMSNorm computed in float32, RoPE as HF
computes it, SwiGLU MLP, no biases, tied or untied head); `export.export_hf` writes proxy k as
such a checkpoint and the tests compare logits.

Weights are stored in "x @ W" orientation ([K, in, out]); q and k share one bmm. Within each
head, q and k columns are stored with RoPE's rotation pairs adjacent (HF dims i and i + hd/2 at
2i and 2i + 1), so RoPE is one complex multiply instead of rotate_half's copies; the same
permutation of q and k leaves every attention score unchanged, and export_hf permutes back.

Under bfloat16 autocast the projections and attention run in bfloat16 while norms, RoPE and the
residual stream stay in float32, as in HF. On the CPU, RMSNorm (with the residual add before it),
RoPE with the attention layout, the causal softmax and the loss run as fused kernels
(cpu_kernels) when those are built, else as the PyTorch ops below.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig

from engine.training import cpu_kernels


def rope_theta(config: LlamaConfig) -> float:
    """RoPE base of a config, across transformers versions (rope_parameters or rope_theta)."""
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10_000.0)))


def rope_tables(config: LlamaConfig, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [seq_len, head_dim] exactly as LlamaRotaryEmbedding computes them."""
    dim = config.head_dim
    inv_freq = 1.0 / (rope_theta(config) ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class _RMSNorm(torch.autograd.Function):
    """weight * x / rms(x) in float32, returned in `dtype`, with a hand-written backward.

    On the CPU one fused kernel pass each way (cpu_kernels). Elsewhere F.rms_norm's autograd would
    decompose into pow, mean, rsqrt and mul nodes; saving the normalised input and 1/rms lets the
    backward run in fewer passes over the activations, and the forward writes its output in
    `dtype` directly (no float32 copy to cast).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
        ctx.fused = cpu_kernels.usable(x)
        if ctx.fused:
            _, out, inv_rms = cpu_kernels.rms_norm_forward(x, weight, eps, dtype)
            ctx.save_for_backward(x, inv_rms, weight)
            return out
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
        inv_rms = mean_square.add_(eps).rsqrt_()
        normed = x * inv_rms
        ctx.save_for_backward(normed, inv_rms, weight)
        return torch.mul(normed, weight[:, None, :], out=torch.empty(x.shape, dtype=dtype, device=x.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.fused:
            return *cpu_kernels.rms_norm_backward(grad, *ctx.saved_tensors), None, None
        normed, inv_rms, weight = ctx.saved_tensors
        grad = grad.float()
        grad_normed = grad * weight[:, None, :]
        projection = torch.linalg.vecdot(grad_normed, normed).unsqueeze_(-1).div_(-normed.shape[-1])
        grad_x = torch.addcmul(grad_normed, normed, projection).mul_(inv_rms)
        return grad_x, (grad * normed).sum(1), None, None


class _AddRMSNorm(torch.autograd.Function):
    """(x + delta, RMSNorm of it) in one kernel pass on the CPU: the residual add and the norm that
    follows it. The backward adds the sum's gradient from its other uses into the norm's, so the
    residual stream's gradient is written once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype):
        total, out, inv_rms = cpu_kernels.rms_norm_forward(x, weight, eps, dtype, delta=delta)
        ctx.save_for_backward(total, inv_rms, weight)
        return total, out

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor | None, grad_out: torch.Tensor):
        grad, grad_weight = cpu_kernels.rms_norm_backward(grad_out, *ctx.saved_tensors, grad_residual=grad_total)
        return grad, grad, grad_weight, None, None


def _norm_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype normed activations are handed on in: the autocast dtype, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm over the last axis; `weight` is [K, D] and x is [K, N, D].

    Computed in float32 like HF. Under autocast the result is cast once to the autocast dtype
    here, rather than once per projection that reads it (and once per gradient coming back).
    """
    dtype = _norm_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _RMSNorm.apply(x.float(), weight, eps, dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual update and the norm after it: (x + delta, rms_norm(x + delta)), x in float32."""
    if not (x.dtype == torch.float32 and cpu_kernels.usable(x, delta)):
        total = x + delta
        return total, rms_norm(total, weight, eps)
    dtype = _norm_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        return _AddRMSNorm.apply(x, delta, weight, eps, dtype)


def apply_rope(qk: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """RoPE on [..., T, heads, hd] whose rotation pairs are adjacent, as one complex multiply.

    `rotation` [T, 1, hd/2] holds cos + i sin of HF's tables. Computed and returned in float32.
    """
    pairs = torch.view_as_complex(qk.float().reshape(*qk.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * rotation).reshape(qk.shape)


def causal_attention(qk: torch.Tensor, v: torch.Tensor, rotation: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax attention with RoPE. qk [batch, T, 2 * heads, hd] holds the q heads then the
    k heads, v is [batch, T, heads, hd]; returns [batch, heads, T, hd] in v's dtype.

    SDPA's fused kernel everywhere except bfloat16 on CPU, where its backward is several times
    slower than eager attention. There it runs as transformers' eager attention does: bfloat16
    matmuls, softmax accumulated in float32 and rounded to bfloat16. RoPE and the heads-first
    layout of q and k come out of one pass (`_RopeHeadsFirst`), v is laid out in one copy, and
    the causal softmax is one kernel pass each way (`_CausalSoftmax`; without the kernels, the
    scale and an additive mask ride on the scores' matmul, baddbmm).
    """
    b, t, h, hd = v.shape
    if qk.device.type != "cpu" or v.dtype == torch.float32:
        qk = apply_rope(qk, rotation)
        q, k, v = (x.transpose(1, 2).to(v.dtype) for x in (qk[:, :, :h], qk[:, :, h:], v))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    q, k = _RopeHeadsFirst.apply(qk, rotation, v.dtype)
    v = torch.empty(b, h, t, hd, dtype=v.dtype, device=v.device).copy_(v.transpose(1, 2)).view(b * h, t, hd)
    if cpu_kernels.usable(q):
        probs = _CausalSoftmax.apply(torch.bmm(q, k.transpose(1, 2)), scale)
    else:
        mask = torch.full((t, t), float("-inf"), dtype=v.dtype, device=v.device).triu_(1)
        probs = torch.softmax(torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale), dim=-1)
    return torch.bmm(probs, v).view(b, h, t, hd)


class _CausalSoftmax(torch.autograd.Function):
    """softmax(scale * scores) over each query's keys up to itself, in place on the bfloat16 scores
    [M, T, T] (cpu_kernels); the backward is one pass over the saved probabilities."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, scale: float) -> torch.Tensor:
        probs = cpu_kernels.causal_softmax_forward_(scores, scale)
        ctx.mark_dirty(scores)
        ctx.save_for_backward(probs)
        ctx.scale = scale
        return probs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (probs,) = ctx.saved_tensors
        return cpu_kernels.causal_softmax_backward(probs, grad, ctx.scale), None


class _RopeHeadsFirst(torch.autograd.Function):
    """RoPE (`apply_rope`) on qk [batch, T, 2 * heads, hd], returning q and k as contiguous
    [batch * heads, T, hd] tensors in `dtype` written in one pass (a fused kernel on the CPU for
    bfloat16). The backward writes qk's gradient from both in one pass and rotates it back in
    place (autograd's slices would each fill a zero buffer and then add them)."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, rotation: torch.Tensor, dtype: torch.dtype):
        b, t, gh, hd = qk.shape
        ctx.save_for_backward(rotation)
        ctx.shape, ctx.qk_dtype = qk.shape, qk.dtype
        ctx.fused = qk.dtype == dtype == torch.bfloat16 and cpu_kernels.usable(qk)
        if ctx.fused:
            out = cpu_kernels.rope_heads_first_forward(qk, rotation)
        else:
            out = torch.empty(2, b, gh // 2, t, hd, dtype=dtype, device=qk.device)
            out.copy_(apply_rope(qk, rotation).view(b, t, 2, gh // 2, hd).permute(2, 0, 3, 1, 4))
        return out[0].view(-1, t, hd), out[1].view(-1, t, hd)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor):
        (rotation,) = ctx.saved_tensors
        if ctx.fused:
            return cpu_kernels.rope_heads_first_backward(grad_q, grad_k, rotation, ctx.shape), None, None
        b, t, gh, hd = ctx.shape
        grad = torch.empty(b, t, 2, gh // 2, hd, dtype=torch.float32, device=grad_q.device)
        for i, g in enumerate((grad_q, grad_k)):
            grad[:, :, i].copy_(g.view(b, gh // 2, t, hd).transpose(1, 2))
        torch.view_as_complex(grad.view(b, t, gh, hd // 2, 2)).mul_(rotation.conj())
        return grad.view(ctx.shape).to(ctx.qk_dtype), None, None


class _HeadLoss(torch.autograd.Function):
    """Mean next-token cross-entropy per proxy [K] of hidden states [K, N, D] through the head [K, D, V].

    The logits' gradient (softmax - one-hot) is formed in the forward pass, in the matmul dtype,
    and the backward scales by each proxy's loss gradient only small tensors (the hidden states'
    gradient, and the hidden states before the head's gradient product). This replaces
    log_softmax, its backward, the float32 copy of the logits and the [K, N, V] multiply autograd
    would run. The softmax runs in the matmul dtype
    (accumulated in float32), so under bfloat16 no float32 [K, N, V] tensor is written at all
    (cpu preset, 2048-token vocabulary, K=8: 6.7 against 4.9 ms forward). The target's entry
    p - 1 is taken as minus the sum of the other probabilities, which keeps it exact to bfloat16
    rounding also when p is near 1 (p - 1 itself would cancel); the loss is -log p (or -log1p of
    minus that sum when p > 1/2), within 2^-8 of float32 per token.
    Tokens whose probability underflows get their loss from an exact logsumexp. That check
    reads a value back, so it runs only in eager CPU training: on CUDA it would wait for the device
    and under torch.compile it would break the graph. There the gradient is exact all the same;
    only the logged training loss of such a token would read inf.
    On the CPU one fused kernel turns the logits into their gradient in place, row by row (the
    target's entry from the float32 probabilities, rounded once), and takes every loss from an
    exact logsumexp.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            weight = head.to(hidden.dtype)
            logits = torch.bmm(hidden, weight)
            if cpu_kernels.usable(logits):
                nll = cpu_kernels.softmax_xent_forward_(logits, targets).view(targets.shape)
                ctx.save_for_backward(hidden, weight, logits)
                return nll.mean(1)
            grad_logits = torch.softmax(logits, dim=-1)
            at_target = torch.arange(targets.numel(), device=targets.device) * logits.shape[-1] + targets.reshape(-1)
            flat = grad_logits.view(-1)
            p_target = flat[at_target].float().view(targets.shape)
            flat.index_fill_(0, at_target, 0.0)
            rest = grad_logits.sum(-1).float()  # 1 - p_target without cancellation
            nll = torch.where(p_target < 0.5, -torch.log(p_target), -torch.log1p(-rest))
            tiny = p_target < 1e-30
            eager_cpu = hidden.device.type == "cpu" and not torch.compiler.is_compiling()
            if eager_cpu and bool(tiny.any()):
                rows = logits[tiny].float()
                nll[tiny] = torch.logsumexp(rows, dim=-1) - rows.gather(-1, targets[tiny][:, None]).squeeze(-1)
            flat.index_put_((at_target,), -rest.view(-1).to(flat.dtype))
            ctx.save_for_backward(hidden, weight, grad_logits)
            return nll.mean(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight, grad_logits = ctx.saved_tensors
        scale = (grad / grad_logits.shape[1])[:, None, None]  # float32; each product rounds once
        grad_hidden = torch.bmm(grad_logits, weight.transpose(1, 2)).mul_(scale)
        scaled_hidden = torch.mul(hidden, scale, out=torch.empty_like(hidden))  # the small side of the head's product
        return grad_hidden, torch.bmm(scaled_hidden.transpose(1, 2), grad_logits), None


class StackedLlama(nn.Module):
    """K LlamaForCausalLM models with identical config, weights stacked on axis 0.

    Parameters (K = n_models, D = hidden, F = intermediate, V = vocab, per layer i):
      embed [K, V, D]; layers.i.attn_norm [K, D]; layers.i.qk [K, D, 2D] (q then k);
      layers.i.v [K, D, D]; layers.i.o [K, D, D]; layers.i.mlp_norm [K, D]; layers.i.gate [K, D, F];
      layers.i.up [K, D, F]; layers.i.down [K, F, D]; norm [K, D]; head [K, D, V] (absent when tied).
    """

    def __init__(self, config: LlamaConfig, n_models: int):
        super().__init__()
        if config.num_key_value_heads != config.num_attention_heads:
            raise ValueError("StackedLlama implements multi-head attention only (num_key_value_heads == num_attention_heads).")
        self.config = config
        self.n_models = k = n_models
        d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
        attn = config.num_attention_heads * config.head_dim
        self.embed = nn.Parameter(torch.empty(k, v, d))
        self.layers = nn.ModuleList()
        for _ in range(config.num_hidden_layers):
            layer = nn.Module()
            layer.attn_norm = nn.Parameter(torch.ones(k, d))
            layer.qk = nn.Parameter(torch.empty(k, d, 2 * attn))
            layer.v = nn.Parameter(torch.empty(k, d, attn))
            layer.o = nn.Parameter(torch.empty(k, attn, d))
            layer.mlp_norm = nn.Parameter(torch.ones(k, d))
            layer.gate = nn.Parameter(torch.empty(k, d, f))
            layer.up = nn.Parameter(torch.empty(k, d, f))
            layer.down = nn.Parameter(torch.empty(k, f, d))
            self.layers.append(layer)
        self.norm = nn.Parameter(torch.ones(k, d))
        self.head = None if config.tie_word_embeddings else nn.Parameter(torch.empty(k, d, v))
        cos, sin = rope_tables(config, config.max_position_embeddings)
        half = config.head_dim // 2  # HF's tables repeat the same half twice
        self.register_buffer("rope_rotation", torch.complex(cos[:, None, :half], sin[:, None, :half]), persistent=False)
        self.register_buffer("vocab_offsets", torch.arange(k)[:, None, None] * v, persistent=False)

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
        names = ("qk", "v", "o", "gate", "up", "down")
        return [(layer, n) for layer in self.layers for n in names] + ([(self, "head")] if self.head is not None else [])

    def head_weight(self) -> torch.Tensor:
        """[K, D, V] output projection (the embedding, transposed, when tied)."""
        return self.embed.transpose(1, 2) if self.head is None else self.head

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final normed hidden states [K, B*T, D] for token ids [K, B, T]."""
        cfg = self.config
        k, b, t = tokens.shape
        h, hd = cfg.num_attention_heads, cfg.head_dim
        attn = h * hd
        x = F.embedding(tokens + self.vocab_offsets, self.embed.reshape(-1, cfg.hidden_size))
        x = x.reshape(k, b * t, cfg.hidden_size)
        rotation = self.rope_rotation[:t]
        norms = [w for layer in self.layers for w in (layer.attn_norm, layer.mlp_norm)] + [self.norm]
        normed = rms_norm(x, norms[0], cfg.rms_norm_eps)
        for i, layer in enumerate(self.layers):  # each residual update is followed by a norm
            v = torch.bmm(normed, layer.v).view(k * b, t, h, hd)
            qk = torch.bmm(normed, layer.qk).view(k * b, t, 2 * h, hd)
            y = causal_attention(qk, v, rotation, scale=hd**-0.5)
            x, normed = add_rms_norm(x, torch.bmm(y.transpose(1, 2).reshape(k, b * t, attn), layer.o),
                                     norms[2 * i + 1], cfg.rms_norm_eps)
            mlp = torch.bmm(F.silu(torch.bmm(normed, layer.gate)) * torch.bmm(normed, layer.up), layer.down)
            x, normed = add_rms_norm(x, mlp, norms[2 * i + 2], cfg.rms_norm_eps)
        return normed

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, T, V] for token ids [K, B, T] (proxy k reads tokens[k])."""
        k, b, t = tokens.shape
        logits = torch.bmm(self.hidden_states(tokens), self.head_weight())
        return logits.reshape(k, b, t, -1)

    def token_nll(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token negative log-likelihood in nats [K, B, T] of `targets` after `tokens` (for evaluation)."""
        logits = self.forward(tokens)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
        return nll.reshape(targets.shape)

    def losses(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy per proxy [K] for sequences [K, B, T+1].

        Backpropagating `losses.sum()` gives each proxy exactly the gradient of its own loss.
        """
        k = batch.shape[0]
        return _HeadLoss.apply(self.hidden_states(batch[..., :-1]), self.head_weight(), batch[..., 1:].reshape(k, -1))
