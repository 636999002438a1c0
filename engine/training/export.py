"""Export one proxy of a StackedLlama as a transformers checkpoint.

The folder holds config.json and model.safetensors, the files LlamaForCausalLM.save_pretrained
writes, so `LlamaForCausalLM.from_pretrained(folder)` loads the proxy (and any HF tool can
evaluate it). Both files are written atomically.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from engine import atomic
from engine.training.model import StackedLlama


def hf_rope_order(columns: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """[D, heads * hd] q/k columns with rotation pairs adjacent -> HF's half-split order per head."""
    d = columns.shape[0]
    return columns.reshape(d, n_heads, head_dim // 2, 2).transpose(2, 3).reshape(d, n_heads * head_dim)


def proxy_state_dict(model: StackedLlama, k: int) -> dict[str, torch.Tensor]:
    """Proxy k's weights under LlamaForCausalLM names and [out, in] layout, float32 on CPU."""
    cfg = model.config
    attn = cfg.num_attention_heads * cfg.head_dim

    def t(x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().cpu().contiguous()

    state = {"model.embed_tokens.weight": t(model.embed[k]), "model.norm.weight": t(model.norm[k])}
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        qk = hf_rope_order(layer.attn.qk[k], 2 * cfg.num_attention_heads, cfg.head_dim)
        state.update({
            prefix + "input_layernorm.weight": t(layer.attn_norm[k]),
            prefix + "self_attn.q_proj.weight": t(qk[:, :attn].T),
            prefix + "self_attn.k_proj.weight": t(qk[:, attn:].T),
            prefix + "self_attn.v_proj.weight": t(layer.attn.v[k].T),
            prefix + "self_attn.o_proj.weight": t(layer.attn.o[k].T),
            prefix + "post_attention_layernorm.weight": t(layer.mlp_norm[k]),
            prefix + "mlp.gate_proj.weight": t(layer.mlp.gate[k].T),
            prefix + "mlp.up_proj.weight": t(layer.mlp.up[k].T),
            prefix + "mlp.down_proj.weight": t(layer.mlp.down[k].T),
        })
    if model.head is not None:
        state["lm_head.weight"] = t(model.head[k].T)
    return state


def export_hf(model: StackedLlama, k: int, folder: str | os.PathLike) -> Path:
    """Write proxy k as a LlamaForCausalLM checkpoint (config.json + model.safetensors) into `folder`."""
    if not 0 <= k < model.n_models:
        raise IndexError(f"proxy index {k} is outside 0..{model.n_models - 1}")
    folder = Path(folder)
    config = copy.deepcopy(model.config)
    config.architectures = ["LlamaForCausalLM"]
    atomic.write_text(folder / "config.json", config.to_json_string(use_diff=False))
    atomic.write_bytes(folder / "model.safetensors", safetensors_bytes(proxy_state_dict(model, k), metadata={"format": "pt"}))
    return folder
