"""Optimisation of stacked proxies: AdamW, per-proxy gradient clipping, the learning-rate schedule.

AdamW is elementwise, so one AdamW over the stacked [K, ...] tensors gives every proxy exactly its
own AdamW. Gradient clipping is not elementwise: the norm is taken per proxy (over all of that
proxy's parameters) and each proxy's gradients are scaled by their own factor, exactly as
torch.nn.utils.clip_grad_norm_ would do on that proxy alone.

Two optimisers do this, with one interface (`step(lr)`, `zero_grad()`, `finish()`):
`TorchAdamW` (torch.optim.AdamW's fused kernel after `clip_grad_norm_per_proxy_`, whose norms and
scaling are foreach kernels over all the gradients and which never reads a value back to the host;
CUDA, and CPUs without the kernels) and `FusedCpuAdamW` (clipping and AdamW in one pass of
cpu_kernels). Under
bfloat16 autocast the CPU one keeps the float32 master weights itself and gives the model bfloat16
copies of the matmul weights to train with, refreshed in the same pass: autocast would cast the
same values every forward and cast their gradients back every backward.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from engine.training import cpu_kernels
from engine.training.model import StackedLlama
from engine.training.presets import ProxyPreset

EPS = 1e-8


class TorchAdamW:
    """torch.optim.AdamW (fused kernel on CPU and CUDA) after per-proxy clipping; decay on matrices only."""

    def __init__(self, model: nn.Module, preset: ProxyPreset, device: torch.device):
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in self.params if p.dim() >= 3], "weight_decay": preset.weight_decay},
            {"params": [p for p in self.params if p.dim() < 3], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=preset.lr, betas=tuple(preset.betas), eps=EPS,
                                           fused=device.type in ("cpu", "cuda"))
        self.grad_clip = preset.grad_clip

    def step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip_grad_norm_per_proxy_(self.params, self.grad_clip)
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def finish(self) -> None:
        """Nothing to hand back: the model's parameters are the weights."""


class FusedCpuAdamW:
    """Per-proxy clipping and AdamW for a StackedLlama on the CPU, in one cpu_kernels pass.

    With `working_dtype` bfloat16, each matmul weight of the model is replaced by a bfloat16
    parameter for the duration of training while this optimiser updates the float32 original;
    `finish()` puts the float32 weights back. The embedding and the norms stay float32 parameters
    (the model computes with them in float32). Updates equal TorchAdamW's up to float32 rounding.
    """

    def __init__(self, model: StackedLlama, preset: ProxyPreset, working_dtype: torch.dtype | None):
        self.preset, self.steps = preset, 0
        self.working: list[tuple[nn.Module, str, torch.Tensor]] = []  # (module, name, float32 master)
        if working_dtype is not None:
            for module, name in model.matmul_weights():
                master = getattr(module, name).detach()
                setattr(module, name, nn.Parameter(master.to(working_dtype)))
                self.working.append((module, name, master))
        masters = {id(getattr(m, n)): master for m, n, master in self.working}
        self.trained = [p for p in model.parameters() if p.requires_grad]  # what autograd fills
        params = [masters.get(id(p), p.detach()) for p in self.trained]
        self.plan = cpu_kernels.AdamWClipPlan(
            params, [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params],
            [p.detach() if id(p) in masters else None for p in self.trained],
            [preset.weight_decay if p.dim() >= 3 else 0.0 for p in params])

    def step(self, lr: float) -> None:
        grads = [p.grad for p in self.trained]
        if any(g is None for g in grads):
            raise RuntimeError("every parameter of the stacked model needs a gradient before an optimiser step")
        self.steps += 1
        self.plan.step(grads, lr, tuple(self.preset.betas), EPS, self.steps, self.preset.grad_clip)

    def zero_grad(self) -> None:
        for p in self.trained:
            p.grad = None

    def finish(self) -> None:
        """Give the model its float32 weights back (for evaluation after training and for export)."""
        for module, name, master in self.working:
            setattr(module, name, nn.Parameter(master))
        self.working.clear()


def make_optimizer(model: StackedLlama, preset: ProxyPreset, device: torch.device,
                   amp: torch.dtype | None) -> TorchAdamW | FusedCpuAdamW:
    """The fused CPU optimiser on the CPU when cpu_kernels are built, else torch's AdamW."""
    if device.type == "cpu" and cpu_kernels.library() is not None:
        return FusedCpuAdamW(model, preset, working_dtype=amp)
    return TorchAdamW(model, preset, device)


def per_proxy_grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each proxy's full gradient [K] (gradients are stacked on axis 0): one foreach norm
    over every proxy's slice of every gradient, then the norm of each proxy's norms."""
    k = grads[0].shape[0]
    per_slice = torch._foreach_norm([g[i] for g in grads for i in range(k)])
    return torch.linalg.vector_norm(torch.stack(per_slice).view(len(grads), k), dim=0)


def clip_grad_norm_per_proxy_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each proxy's gradients so its norm is at most `max_norm`; returns the norms [K] before.

    Same factor as clip_grad_norm_: min(1, max_norm / (norm + 1e-6)), applied to every gradient
    by one foreach multiply.
    """
    grads = [p.grad for p in params if p.grad is not None]
    norms = per_proxy_grad_norms(grads)
    if max_norm > 0:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, [coef.view(-1, *([1] * (g.dim() - 1))) for g in grads])
    return norms


def lr_at(step: int, total_steps: int, preset: ProxyPreset) -> float:
    """Learning rate of optimiser step `step` (0-based) of `total_steps`.

    Linear warmup over ceil(warmup_fraction * total_steps) steps (step 0 gets lr / warmup),
    then constant, or cosine decay from lr to lr * min_lr_ratio at the last step.
    """
    warmup = math.ceil(preset.warmup_fraction * total_steps)
    if step < warmup:
        return preset.lr * (step + 1) / warmup
    if preset.schedule == "constant":
        return preset.lr
    decay_steps = max(1, total_steps - warmup - 1)
    progress = min(1.0, (step - warmup) / decay_steps)
    min_lr = preset.lr * preset.min_lr_ratio
    return min_lr + 0.5 * (preset.lr - min_lr) * (1.0 + math.cos(math.pi * progress))
