"""The model's ops on a CPU, and the choice of ops for a device (`ops_for`), made once per model.

`CpuOps` is `model.TorchOps` with three methods written for a CPU's eager passes over memory: RMSNorm
with a hand-written backward; the loss over all rows at once with its softmax in the matmul dtype
(a CPU holds a step's logits easily, but each float32 pass over them costs); attention in
bfloat16 as transformers' eager attention computes it (bfloat16 matmuls, a softmax accumulated in
float32 and rounded to bfloat16), since PyTorch's flash attention on a CPU is several times slower
backward in bfloat16 (docs/benchmarks.md); in float32 it is SDPA, as everywhere.
`CpuKernelOps` runs the fused C kernels of cpu_kernels instead:
RMSNorm with the residual add before it, RoPE with the heads-first layout, the causal softmax, and
the LM head's softmax cross-entropy, each one pass over the data each way.

The CPU path takes the kernels when they are built and the step is not compiled (torch.compile
cannot trace a ctypes call), else CpuOps; GPUs take TorchOps, with larger loss blocks.
"""

from __future__ import annotations

import torch

from engine.training import cpu_kernels
from engine.training.model import TorchOps, autocast_dtype_of

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
    """PyTorch ops for CPUs: RMSNorm with a hand-written backward, the loss with its softmax in the
    matmul dtype, attention in bfloat16 as explicit matmuls (see the module docstring)."""

    keeps_logits = True

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dtype = autocast_dtype_of(x)
        with torch.autocast("cpu", enabled=False):
            return _RMSNorm.apply(x.float(), weight, eps, dtype)

    def head_loss(self, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _HeadLoss.apply(hidden, head, targets)

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
    and rotates it back in place (autograd's slices would each fill a zero buffer and then add
    them). The rotation is one complex multiply (eager, it beats `rotate`'s real arithmetic)."""

    @staticmethod
    def forward(ctx, qk: torch.Tensor, rope: torch.Tensor, dtype: torch.dtype):
        b, t, gh, hd = qk.shape
        rotation = torch.view_as_complex(rope)
        ctx.save_for_backward(rotation)
        ctx.shape, ctx.qk_dtype = qk.shape, qk.dtype
        rotated = torch.view_as_real(torch.view_as_complex(qk.float().unflatten(-1, (-1, 2))) * rotation)
        out = torch.empty(2, b, gh // 2, t, hd, dtype=dtype, device=qk.device)
        out.copy_(rotated.view(b, t, 2, gh // 2, hd).permute(2, 0, 3, 1, 4))
        return out[0].view(-1, t, hd), out[1].view(-1, t, hd)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, grad_k: torch.Tensor):
        (rotation,) = ctx.saved_tensors
        b, t, gh, hd = ctx.shape
        grad = torch.empty(b, t, 2, gh // 2, hd, dtype=torch.float32, device=grad_q.device)
        for i, g in enumerate((grad_q, grad_k)):
            grad[:, :, i].copy_(g.view(b, gh // 2, t, hd).transpose(1, 2))
        torch.view_as_complex(grad.view(b, t, gh, hd // 2, 2)).mul_(rotation.conj())
        return grad.view(ctx.shape).to(ctx.qk_dtype), None, None


class _RMSNorm(torch.autograd.Function):
    """weight * x / rms(x) of float32 x, returned in `dtype`, with a hand-written backward: autograd
    of TorchOps.rms_norm would run a pass per op (pow, mean, rsqrt, mul); saving the normalised
    input and 1/rms lets the backward run in fewer, and the forward writes its output in `dtype`
    directly (no float32 copy to cast)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
        inv_rms = mean_square.add_(eps).rsqrt_()
        normed = x * inv_rms
        ctx.save_for_backward(normed, inv_rms, weight)
        return torch.mul(normed, weight[:, None, :], out=torch.empty(x.shape, dtype=dtype, device=x.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, inv_rms, weight = ctx.saved_tensors
        grad = grad.float()
        grad_normed = grad * weight[:, None, :]
        projection = torch.linalg.vecdot(grad_normed, normed).unsqueeze_(-1).div_(-normed.shape[-1])
        grad_x = torch.addcmul(grad_normed, normed, projection).mul_(inv_rms)
        return grad_x, (grad * normed).sum(1), None, None


class _FusedRMSNorm(torch.autograd.Function):
    """_RMSNorm as one kernel pass each way."""

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


class _HeadLoss(torch.autograd.Function):
    """Mean next-token cross-entropy per proxy [K] of hidden states [K, N, D] through the head [K, D, V],
    all rows at once, for CPUs (a CPU holds a step's logits easily; its passes over them cost).

    The logits' gradient (softmax - one-hot) is formed in the forward pass, in the matmul dtype,
    and the backward scales by each proxy's loss gradient only the small tensors (the hidden
    states' gradient, and the hidden states before the head's gradient product), so no [K, N, V]
    multiply runs and, under bfloat16, no float32 [K, N, V] tensor is written at all. The target's
    entry p - 1 is taken as minus the sum of the other probabilities, exact to bfloat16 rounding
    also when p is near 1; the loss is -log p (or -log1p of minus that sum when p > 1/2), within
    2^-8 of float32 per token. Tokens whose probability underflows get their loss from an exact
    logsumexp (a check that reads a value back, so only in eager training; under torch.compile
    such a token's logged loss would read inf, its gradient exact all the same).
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            weight = head.to(hidden.dtype)
            logits = torch.bmm(hidden, weight)
            grad_logits = torch.softmax(logits, dim=-1)
            at_target = torch.arange(targets.numel(), device=targets.device) * logits.shape[-1] + targets.reshape(-1)
            flat = grad_logits.view(-1)
            p_target = flat[at_target].float().view(targets.shape)
            flat.index_fill_(0, at_target, 0.0)
            rest = grad_logits.sum(-1).float()  # 1 - p_target without cancellation
            nll = torch.where(p_target < 0.5, -torch.log(p_target), -torch.log1p(-rest))
            tiny = p_target < 1e-30
            if not torch.compiler.is_compiling() and bool(tiny.any()):
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


class _FusedHeadLoss(_HeadLoss):
    """_HeadLoss with one kernel that turns the logits into their gradient in place, row by row (the
    target's entry from the float32 probabilities, rounded once), every loss from an exact logsumexp."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            weight = head.to(hidden.dtype)
            logits = torch.bmm(hidden, weight)
            nll = cpu_kernels.softmax_xent_forward_(logits, targets).view(targets.shape)
        ctx.save_for_backward(hidden, weight, logits)
        return nll.mean(1)
