"""The one-at-a-time baseline of the throughput benchmarks: one proxy as transformers' LlamaForCausalLM,
trained by the idiomatic loop (forward, cross-entropy, backward, clip_grad_norm_, AdamW), from the
batched trainer's initial weights for the same seed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from engine.training.device import autocast
from engine.training.export import proxy_state_dict
from engine.training.model import StackedLlama
from engine.training.presets import ProxyPreset


def hf_proxy(config, seed: int, attention: str, device: torch.device) -> LlamaForCausalLM:
    """LlamaForCausalLM with the batched trainer's initial weights for `seed`, on `device`."""
    init = StackedLlama(config, 1)
    init.init_weights([seed])
    model = LlamaForCausalLM(config)
    model.set_attn_implementation(attention)
    model.load_state_dict(proxy_state_dict(init, 0))
    return model.to(device).train()


class TransformersLoop:
    """One LlamaForCausalLM and its torch AdamW (fused; weight decay on matrices only, as the trainer)."""

    def __init__(self, model: LlamaForCausalLM, preset: ProxyPreset, device: torch.device, amp: torch.dtype | None):
        self.model, self.preset, self.device, self.amp = model, preset, device, amp
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": preset.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=preset.lr, betas=preset.betas, fused=device.type in ("cpu", "cuda"))

    def step(self, batch: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimiser step on sequences [B, T+1] (on the device); returns the loss without waiting for it."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.amp):
            logits = self.model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.preset.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
