"""The model's ops on a CPU, and the choice of ops for a device (`ops_for`), made once per model.

`CpuOps` is `model.TorchOps` with attention in bfloat16 written as transformers' eager attention
computes it (bfloat16 matmuls, a softmax accumulated in float32 and rounded to bfloat16): PyTorch's
flash attention on a CPU is several times slower backward in bfloat16 (docs/benchmarks.md). In
float32 it is SDPA, as everywhere. `CpuKernelOps` runs the fused C kernels of cpu_kernels instead:
RMSNorm with the residual add before it, RoPE with the heads-first layout, the causal softmax, and
the LM head's softmax cross-entropy, each one pass over the data each way.

The CPU path takes the kernels when they are built and the step is not compiled (torch.compile
cannot trace a ctypes call), else CpuOps; GPUs take TorchOps, with larger loss blocks.
"""

from __future__ import annotations

import torch

from engine.training import cpu_kernels
from engine.training.model import TorchOps, autocast_dtype_of, rotate

GPU_LOSS_BLOCK = 2**30
"""Logits the loss holds at once on a GPU (elements; 4 GiB in float32): blocks of whole proxies."""


def ops_for(device: torch.device, compiled: bool) -> TorchOps:
    """The ops a model on `device` computes with: see the module docstring."""
    if device.type != "cpu":
        return TorchOps(loss_block=GPU_LOSS_BLOCK)
    if compiled or cpu_kernels.library() is None:
        return CpuOps()
    return CpuKernelOps()


class CpuOps(TorchOps):
    """PyTorch ops for CPUs: attention in bfloat16 as explicit matmuls (see the module docstring)."""

    def attention(self, qk: torch.Tensor, v: torch.Tensor, rope: torch.Tensor, scale: float) -> torch.Tensor:
        """TorchOps.attention; in bfloat16, q and k rotated and laid out heads-first in one pass, v
        laid out in one copy, then the scores' matmul, the causal softmax and the values' matmul."""
        if v.dtype == torch.float32:
            return super().attention(qk, v, rope, scale)
        b, t, h, hd = v.shape
        q, k = self.rope_heads_first(qk, rope, v.dtype)
        v = torch.empty(b, h, t, hd, dtype=v.dtype, device=v.device).copy_(v.transpose(1, 2)).view(b * h, t, hd)
        return torch.bmm(self.causal_softmax(q, k, scale), v).view(b, h, t, hd)

    def rope_heads_first(self, qk: torch.Tensor, rope: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE on qk [batch, T, 2 * heads, hd]: q and k as contiguous [batch * heads, T, hd] in `dtype`."""
        return _RopeHeadsFirst.apply(qk, rope, dtype)

    def causal_softmax(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
        """softmax(scale * q k^T) over each query's keys up to itself; the scale and an additive mask
        ride on the scores' matmul (baddbmm)."""
        t = q.shape[1]
        mask = torch.full((t, t), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)
        return torch.softmax(torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale), dim=-1)


class CpuKernelOps(CpuOps):
    """CpuOps with the fused C kernels (cpu_kernels) for the norms, RoPE, the causal softmax and the loss."""

    keeps_logits = True

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dtype = autocast_dtype_of(x)
        with torch.autocast("cpu", enabled=False):
            return _FusedRMSNorm.apply(x.float(), weight, eps, dtype)

    def add_rms_norm(self, x: torch.Tensor, update: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        if update is None:
            return x, self.rms_norm(x, weight, eps)
        dtype = autocast_dtype_of(x)
        with torch.autocast("cpu", enabled=False):
            return _FusedAddRMSNorm.apply(x, update, weight, eps, dtype)

    def rope_heads_first(self, qk: torch.Tensor, rope: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if not qk.dtype == dtype == torch.bfloat16:
            return super().rope_heads_first(qk, rope, dtype)
        return _FusedRopeHeadsFirst.apply(qk, rope)

    def causal_softmax(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
        return _CausalSoftmax.apply(torch.bmm(q, k.transpose(1, 2)), scale)

    def head_loss(self, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _FusedHeadLoss.apply(hidden, head, targets)


class _RopeHeadsFirst(torch.autograd.Function):
    """RoPE on qk [batch, T, 2 * heads, hd], returning q and k as contiguous [batch * heads, T, hd]
    tensors in `dtype` written in one pass. The backward writes qk's gradient from both in one pass
    and rotates it back (autograd's slices would each fill a zero buffer and then add them)."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, rope: torch.Tensor, dtype: torch.dtype):
        b, t, gh, hd = qk.shape
        ctx.save_for_backward(rope)
        ctx.shape, ctx.qk_dtype = qk.shape, qk.dtype
        out = torch.empty(2, b, gh // 2, t, hd, dtype=dtype, device=qk.device)
        out.copy_(rotate(qk, rope).view(b, t, 2, gh // 2, hd).permute(2, 0, 3, 1, 4))
        return out[0].view(-1, t, hd), out[1].view(-1, t, hd)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor):
        (rope,) = ctx.saved_tensors
        b, t, gh, hd = ctx.shape
        grad = torch.empty(b, t, 2, gh // 2, hd, dtype=torch.float32, device=grad_q.device)
        for i, g in enumerate((grad_q, grad_k)):
            grad[:, :, i].copy_(g.view(b, gh // 2, t, hd).transpose(1, 2))
        return rotate(grad.view(ctx.shape), rope, inverse=True).to(ctx.qk_dtype), None, None


class _FusedRMSNorm(torch.autograd.Function):
    """weight * x / rms(x) of float32 x, returned in `dtype`: one kernel pass each way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
        _, out, inv_rms = cpu_kernels.rms_norm_forward(x, weight, eps, dtype)
        ctx.save_for_backward(x, inv_rms, weight)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return *cpu_kernels.rms_norm_backward(grad, *ctx.saved_tensors), None, None


class _FusedAddRMSNorm(torch.autograd.Function):
    """(x + update, RMSNorm of it) in one kernel pass: the residual add and the norm that follows it.
    The backward adds the sum's gradient from its other uses into the norm's, so the residual
    stream's gradient is written once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, update: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype):
        total, out, inv_rms = cpu_kernels.rms_norm_forward(x, weight, eps, dtype, delta=update)
        ctx.save_for_backward(total, inv_rms, weight)
        return total, out

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor | None, grad_out: torch.Tensor):
        grad, grad_weight = cpu_kernels.rms_norm_backward(grad_out, *ctx.saved_tensors, grad_residual=grad_total)
        return grad, grad, grad_weight, None, None


class _FusedRopeHeadsFirst(torch.autograd.Function):
    """_RopeHeadsFirst for bfloat16 qk as one kernel pass each way."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, rope: torch.Tensor):
        t, hd = qk.shape[1], qk.shape[3]
        ctx.save_for_backward(rope)
        ctx.shape = qk.shape
        out = cpu_kernels.rope_heads_first_forward(qk, rope)
        return out[0].view(-1, t, hd), out[1].view(-1, t, hd)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor):
        (rope,) = ctx.saved_tensors
        return cpu_kernels.rope_heads_first_backward(grad_q, grad_k, rope, ctx.shape), None


class _CausalSoftmax(torch.autograd.Function):
    """softmax(scale * scores) over each query's keys up to itself, in place on the bfloat16 scores
    [M, T, T]; the backward is one pass over the saved probabilities."""

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


class _FusedHeadLoss(torch.autograd.Function):
    """Mean next-token cross-entropy per proxy [K] of hidden states [K, N, D] through the head [K, D, V].

    One kernel turns the logits (in the matmul dtype) into their gradient, softmax - one-hot, in
    place, row by row (the target's entry from the float32 probabilities, rounded once), and takes
    every loss from an exact logsumexp. The backward scales by each proxy's loss gradient only the
    small tensors (the hidden states' gradient, and the hidden states before the head's gradient
    product), so no [K, N, V] multiply runs and, under bfloat16, no float32 [K, N, V] tensor is
    written at all.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            weight = head.to(hidden.dtype)
            logits = torch.bmm(hidden, weight)
            nll = cpu_kernels.softmax_xent_forward_(logits, targets).view(targets.shape)
        ctx.save_for_backward(hidden, weight, logits)
        return nll.mean(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, weight, grad_logits = ctx.saved_tensors
        scale = (grad / grad_logits.shape[1])[:, None, None]  # float32; each product rounds once
        grad_hidden = torch.bmm(grad_logits, weight.transpose(1, 2)).mul_(scale)
        scaled_hidden = torch.mul(hidden, scale, out=torch.empty_like(hidden))  # the small side of the head's product
        return grad_hidden, torch.bmm(scaled_hidden.transpose(1, 2), grad_logits), None
