"""Proxy training: many small Llama proxies, each on its own data mixture, trained as one batch.

presets   ProxyPreset, the built-in presets, the dtypes, the token budget ([proxy] settings: engine/settings.py)
model     StackedLlama: K Llama models with stacked weights, batched matmuls
optim     AdamW over stacked weights, per-proxy gradient clipping, the lr schedule
sampler   apportioning sequences to domains, seeded draws, [K, B, T+1] batches
evaluate  held-out loss / bits per byte per domain, user eval sets
trainer   train_proxies -> ProxyResult
export    one proxy as a transformers LlamaForCausalLM checkpoint
device    device / dtype choice; flops: FLOPs per token and the measured matmul peak (MFU)

Import the submodules directly: the package itself imports nothing, so reading a project's
[proxy] settings does not load torch.
"""
