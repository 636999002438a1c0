"""Proxy training: many small Llama proxies, each on its own data mixture, trained as one batch.

presets   ProxyPreset / ProxySettings ([proxy] in olmix.toml), the built-in presets
model     StackedLlama: K Llama models with stacked weights, batched matmuls
optim     AdamW over stacked weights, per-proxy gradient clipping, the lr schedule
sampler   apportioning sequences to domains, seeded draws, [K, B, T+1] batches
evaluate  held-out loss / bits per byte per domain, user eval sets
trainer   train_proxies -> ProxyResult
export    one proxy as a transformers LlamaForCausalLM checkpoint
device    device / dtype choice; flops: FLOPs per token and the measured matmul peak (MFU)
"""

from engine.training.evaluate import EvalItem, EvalSet, TokenizedEvalSet, bits_per_byte, load_eval_set, tokenize_eval_set
from engine.training.export import export_hf
from engine.training.model import StackedLlama
from engine.training.presets import PRESETS, ProxyPreset, ProxySettings, get_preset, tokens_per_proxy
from engine.training.sampler import apportion_sequences
from engine.training.trainer import ProxyResult, train_proxies

__all__ = [
    "EvalItem", "EvalSet", "PRESETS", "ProxyPreset", "ProxyResult", "ProxySettings", "StackedLlama",
    "TokenizedEvalSet", "apportion_sequences", "bits_per_byte", "export_hf", "get_preset", "load_eval_set",
    "tokenize_eval_set", "tokens_per_proxy", "train_proxies",
]
