"""Proxy model presets (architecture + optimiser), the dtypes a proxy may train in, and the token budget.

A preset fixes everything about a proxy run except its data: the Llama shape, the sequence
length, the batch, and the AdamW / learning-rate schedule. Every proxy of a swarm uses the same
preset, which is what lets the trainer stack them into one batched computation. This module
imports no torch: engine.settings checks [proxy] preset and dtype against it when a project loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from engine.errors import ConfigError

if TYPE_CHECKING:
    from transformers import LlamaConfig

    from engine.settings import ProxySettings

DTYPES = ("auto", "float32", "bfloat16")
"""[proxy] dtype: "auto" (bfloat16 where matmuls are fast in it), plain float32, or bfloat16 autocast."""

CHINCHILLA_TOKENS_PER_PARAM = 20
"""Tokens per non-embedding parameter at 1x Chinchilla (Hoffmann et al. 2022)."""

AUTO = "auto"
"""[proxy] preset = "auto": the preset and token budget for the hardware the swarm trains on
(`resolve_proxy`; the rule and its reasons: docs/project-format.md, "The proxy scale")."""

GPU_TOKENS_PER_PROXY = 2**21
"""The least a proxy of the auto preset trains on a GPU: twice the ~1M tokens from which the
mixture's effect on held-out loss stands out of seed noise (NOTES-cpu-scale.md)."""


@dataclass(frozen=True)
class ProxyPreset:
    """One proxy architecture and its optimiser; all fields are plain numbers or strings.

    name: preset id used in olmix.toml ([proxy] preset).
    n_layers, n_heads, d_model, d_ff: Llama shape (d_ff is the SwiGLU hidden width).
    seq_len: tokens per training sequence (the model predicts seq_len targets per sequence).
    batch_size: sequences per optimiser step, per proxy.
    lr: peak learning rate; min_lr_ratio: final lr / peak lr for the cosine schedule.
    warmup_fraction: fraction of the steps with linear warmup from 0 to lr.
    schedule: "cosine" (warmup, then cosine decay to lr * min_lr_ratio) or "constant".
    weight_decay: decoupled AdamW decay on matrices (embedding, projections, head), not on norms.
    betas: AdamW betas; grad_clip: max global gradient norm, per proxy (0 disables clipping).
    rope_theta, rms_norm_eps, tie_word_embeddings, init_std: the rest of the Llama config.
    """

    name: str
    n_layers: int
    n_heads: int
    d_model: int
    d_ff: int
    seq_len: int
    batch_size: int
    lr: float
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    init_std: float = 0.02

    @property
    def tokens_per_step(self) -> int:
        """Training tokens (targets) one proxy sees per optimiser step."""
        return self.batch_size * self.seq_len

    def llama_config(self, vocab_size: int) -> "LlamaConfig":
        """The transformers config of one proxy (what `export_hf` writes as config.json)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.d_model,
            intermediate_size=self.d_ff,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads,
            hidden_act="silu",
            max_position_embeddings=self.seq_len,
            initializer_range=self.init_std,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_word_embeddings,
            attention_bias=False,
            mlp_bias=False,
            use_cache=False,
            bos_token_id=None,
            eos_token_id=vocab_size - 1,
            pad_token_id=None,
        )

    def non_embedding_params(self) -> int:
        """Parameters of the transformer blocks and final norm (no token embedding, no head).

        This is the N of `tokens = chinchilla_multiple * 20 * N` (RegMix's "1M" counts the same).
        """
        d, f = self.d_model, self.d_ff
        per_layer = 4 * d * d + 3 * d * f + 2 * d
        return self.n_layers * per_layer + d


LR_GPU = 4e-3

PRESETS: dict[str, ProxyPreset] = {
    p.name: p
    for p in (
        # CPU-sized for tests and demos (NOTES-cpu-scale.md's shape). Small steps learn most from a
        # small token budget (the batch and lr sweep: docs/benchmarks.md, "Figures behind constants").
        ProxyPreset(
            name="cpu", n_layers=2, n_heads=4, d_model=128, d_ff=384, seq_len=128, batch_size=4,
            lr=1.5e-3, min_lr_ratio=0.1, warmup_fraction=0.05, schedule="cosine",
        ),
        # The cpu preset's model with 16 times its batch, for a GPU: a step of a few dozen such
        # proxies is then enough work to keep a GPU's kernels busy rather than waiting on their
        # launches, and GPU_TOKENS_PER_PROXY takes 256 steps (eager: below trainer.COMPILE_MIN_STEPS).
        ProxyPreset(
            name="gpu", n_layers=2, n_heads=4, d_model=128, d_ff=384, seq_len=128, batch_size=64,
            lr=LR_GPU, min_lr_ratio=0.1, warmup_fraction=0.05, schedule="cosine",
        ),
        # RegMix's tinyllama_1M (Liu et al. 2025): constant lr 4e-4 after 100 of ~1000 warmup steps,
        # 512 x 2048-token sequences per step, norm eps 1e-5.
        ProxyPreset(
            name="regmix-1m", n_layers=2, n_heads=8, d_model=256, d_ff=512, seq_len=2048, batch_size=512,
            lr=4e-4, min_lr_ratio=1.0, warmup_fraction=0.1, schedule="constant", rms_norm_eps=1e-5,
        ),
        # OLMo-2 30M shape (OLMo-core olmo2_30M: SwiGLU width 8/3 d rounded up to 256) as a Llama;
        # lr near OLMo-core's ladder rule 0.0047 * (N / 108M)^(-1/3) / 2 (N counted with embeddings).
        ProxyPreset(
            name="olmix-30m", n_layers=4, n_heads=8, d_model=256, d_ff=768, seq_len=2048, batch_size=128,
            lr=4e-3, min_lr_ratio=0.1, warmup_fraction=0.05, schedule="cosine", rope_theta=500_000.0,
        ),
        # OLMo-2 60M shape (OLMo-core olmo2_60M: d 384, 8 layers, SwiGLU width 1536) as a Llama, same lr rule.
        ProxyPreset(
            name="olmix-60m", n_layers=8, n_heads=8, d_model=384, d_ff=1536, seq_len=2048, batch_size=128,
            lr=3e-3, min_lr_ratio=0.1, warmup_fraction=0.05, schedule="cosine", rope_theta=500_000.0,
        ),
    )
}


def get_preset(name: str) -> ProxyPreset:
    """The preset called `name`, or a ConfigError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown proxy preset {name!r} in [proxy] preset; use one of {', '.join(PRESETS)}."
        ) from None


def resolve_proxy(settings: "ProxySettings", vocab_size: int, on_gpu: Callable[[], bool]) -> tuple[ProxyPreset, int]:
    """The preset and tokens per proxy a swarm planned with `settings` trains.

    A named preset is used as it is, with `tokens_per_proxy`'s budget. "auto" is the cpu preset and
    that budget when the swarm's workers train on CPUs, and on GPUs (`on_gpu()`, asked only then)
    the gpu preset with at least GPU_TOKENS_PER_PROXY tokens.
    """
    if settings.preset != AUTO:
        preset = get_preset(settings.preset)
        return preset, tokens_per_proxy(settings, preset, vocab_size)
    if not on_gpu():
        preset = PRESETS["cpu"]
        return preset, tokens_per_proxy(settings, preset, vocab_size)
    preset = PRESETS["gpu"]
    return preset, max(tokens_per_proxy(settings, preset, vocab_size), GPU_TOKENS_PER_PROXY)


def tokens_per_proxy(settings: "ProxySettings", preset: ProxyPreset, vocab_size: int) -> int:
    """Training tokens per proxy: the explicit budget, else the Chinchilla multiple of the preset.

    `vocab_size` is accepted so callers need not know that the count excludes embeddings.
    """
    del vocab_size  # the Chinchilla count is over non-embedding parameters
    if settings.tokens_per_proxy > 0:
        return int(settings.tokens_per_proxy)
    tokens = round(settings.chinchilla_multiple * CHINCHILLA_TOKENS_PER_PARAM * preset.non_embedding_params())
    if tokens < preset.tokens_per_step:
        raise ConfigError(
            f"[proxy] chinchilla_multiple {settings.chinchilla_multiple} gives {tokens} tokens, less than one "
            f"step of preset {preset.name!r} ({preset.tokens_per_step}); raise it or set [proxy] tokens_per_proxy."
        )
    return tokens
