"""Optimisation of stacked proxies: AdamW, per-proxy gradient clipping, the learning-rate schedule.

AdamW is elementwise, so one torch.optim.AdamW over the stacked [K, ...] tensors gives every
proxy exactly its own AdamW. Gradient clipping is not elementwise: the norm is taken per proxy
(over all of that proxy's parameters) and each proxy's gradients are scaled by their own factor,
exactly as torch.nn.utils.clip_grad_norm_ would do on that proxy alone.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from engine.training.presets import ProxyPreset


def make_optimizer(model: nn.Module, preset: ProxyPreset, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (stacked dim 3: embedding, projections, head), none on norms.

    Uses the fused kernel (one pass per tensor) on CPU and CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 3], "weight_decay": preset.weight_decay},
        {"params": [p for p in params if p.dim() < 3], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=preset.lr, betas=tuple(preset.betas), eps=1e-8,
                             fused=device.type in ("cpu", "cuda"))


def per_proxy_grad_norms(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each proxy's full gradient [K] (parameters are stacked on axis 0)."""
    grads = [p.grad for p in params if p.grad is not None]
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [P, K]
    return torch.linalg.vector_norm(per_tensor, dim=0)


def clip_grad_norm_per_proxy_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each proxy's gradients so its norm is at most `max_norm`; returns the norms [K] before.

    Same factor as clip_grad_norm_: min(1, max_norm / (norm + 1e-6)).
    """
    params = [p for p in params if p.grad is not None]
    norms = per_proxy_grad_norms(params)
    if max_norm > 0:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))))
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
