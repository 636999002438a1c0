"""Fused CPU kernels for training (cpu_kernels.c), built on first use with the system C compiler.

On a CPU, tiny proxies spend as long in memory-bound elementwise passes as in their matmuls; the
kernels fuse RMSNorm (forward and backward), the head's softmax cross-entropy, RoPE with the
heads-first attention layout, and per-proxy clipping with AdamW (which also writes the bfloat16
weights the next forward multiplies). cpu_ops.CpuKernelOps and optim.FusedCpuAdamW call them; a
model is built with them only when they are available (`library()`), else with PyTorch ops: no C
compiler, a failed build, or OLMIX_CPU_KERNELS=0 in the environment (for comparisons).

The library is compiled for this CPU (-march=native) into the user's cache folder, keyed by the
source, the compiler and the CPU's feature flags, so a home folder shared by different machines
keeps one build per kind of CPU. It links the OpenMP runtime PyTorch loaded (libgomp), so the
kernels run on PyTorch's thread pool with torch.get_num_threads() threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from engine import atomic
from engine.training.device import cache_root

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC")
BUILD_TIMEOUT_S = 120

_P, _I64, _I32, _F32, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double
_SIGNATURES = {
    "olmix_rmsnorm_forward": [_P, _P, _I32, _P, _P, _P, _I32, _P, _I64, _I64, _I64, _F32, _I32],
    "olmix_rmsnorm_backward": [_P, _I32, _P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I32],
    "olmix_softmax_xent_forward": [_P, _I32, _P, _P, _I64, _I64, _I32],
    "olmix_causal_softmax_forward": [_P, _I64, _I64, _F32, _I32],
    "olmix_causal_softmax_backward": [_P, _P, _P, _I64, _I64, _F32, _I32],
    "olmix_rope_heads_first_forward": [_P, _P, _P, _I64, _I64, _I64, _I64, _I32],
    "olmix_rope_heads_first_backward": [_P, _P, _P, _P, _I64, _I64, _I64, _I64, _I32],
    "olmix_adamw_clip": [_I64, _P, _P, _P, _P, _P, _P, _P, _P, _I64, _F64, _F64, _F64, _F64, _F64, _F64, _F64,
                         _P, _P, _I32],
}


def cache_folder() -> Path:
    """Where built libraries live: $XDG_CACHE_HOME/olmix-tui/cpu-kernels (default ~/.cache/...)."""
    return cache_root() / "cpu-kernels"


def _cpu_fingerprint() -> str:
    """The CPU model and feature flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def _compiler() -> str | None:
    return next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)


def _build(compiler: str) -> Path:
    """Compile cpu_kernels.c (or reuse an earlier build for the same source, compiler and CPU)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_fingerprint()]).encode())
    target = cache_folder() / f"olmix-cpu-kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="olmix-cpu-kernels-") as scratch:
        built = Path(scratch) / target.name
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "compiler failed")
        atomic.write_bytes(target, built.read_bytes())  # concurrent builders each install a complete library
    return target


def _openmp_runtimes() -> set[str]:
    """Paths of the OpenMP runtimes loaded in this process (Linux), to check that only one is."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return set()
    names = ("libgomp", "libiomp", "libomp")
    return {line.split()[-1] for line in maps if any(n in line.rsplit("/", 1)[-1] for n in names)}


@functools.lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("OLMIX_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "OLMIX_CPU_KERNELS=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler (cc, gcc or clang) on PATH"
    before = _openmp_runtimes()
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        return None, f"building them failed: {err}"
    if before and len(_openmp_runtimes()) > len(before):
        return None, "they would load a second OpenMP runtime beside PyTorch's"
    for name, argtypes in _SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = None
    return lib, ""


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None when they cannot be used here (see `unavailable_reason`)."""
    return _load()[0]


def unavailable_reason() -> str:
    """Why `library()` is None ("" when the kernels are in use)."""
    return _load()[1]


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _is_bf16(t: torch.Tensor) -> int:
    if t.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"the CPU kernels take float32 or bfloat16 tensors, not {t.dtype}")
    return int(t.dtype == torch.bfloat16)


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype,
                     delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMSNorm of s = x (or x + delta) [K, N, D], x and weight [K, D] float32:
    (s, s / rms(s) * weight in `dtype`, 1 / rms [K, N]); s is a new float32 tensor when delta is given."""
    k, n, d = x.shape
    if x.dtype != torch.float32:
        raise TypeError(f"the RMSNorm kernel reads a float32 residual stream, not {x.dtype}")
    x, weight = x.contiguous(), weight.contiguous()
    out, inv_rms = torch.empty(x.shape, dtype=dtype), torch.empty(k, n)
    total = None
    if delta is not None:
        delta, total = delta.contiguous(), torch.empty_like(x)
    library().olmix_rmsnorm_forward(_ptr(x), _ptr(delta), 0 if delta is None else _is_bf16(delta), _ptr(total),
                                    _ptr(weight), _ptr(out), _is_bf16(out), _ptr(inv_rms), k, n, d, eps,
                                    torch.get_num_threads())
    return (x if total is None else total), out, inv_rms


def rms_norm_backward(grad: torch.Tensor, normed_input: torch.Tensor, inv_rms: torch.Tensor, weight: torch.Tensor,
                      grad_residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (of the normed input s [K, N, D], plus grad_residual when given; of weight [K, D]),
    float32, from the output's gradient."""
    k, n, d = normed_input.shape
    grad = grad.contiguous()
    if grad_residual is not None:
        grad_residual = grad_residual.float().contiguous()
    threads = torch.get_num_threads()
    grad_s, grad_w = torch.empty_like(normed_input), torch.empty_like(weight)
    scratch = torch.empty(threads, k, d)
    library().olmix_rmsnorm_backward(_ptr(grad), _is_bf16(grad), _ptr(grad_residual), _ptr(normed_input),
                                     _ptr(inv_rms), _ptr(weight), _ptr(grad_s), _ptr(grad_w), _ptr(scratch), k, n, d,
                                     threads)
    return grad_s, grad_w


def softmax_xent_forward_(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy [R] (float32) of logits [..., V] against targets [...]; overwrites the
    logits with the loss's gradient, softmax - one-hot (see cpu_kernels.c)."""
    if not logits.is_contiguous():
        raise ValueError("softmax_xent_forward_ works in place on contiguous logits")
    v = logits.shape[-1]
    rows = logits.numel() // v
    targets = targets.reshape(-1).to(torch.int64).contiguous()
    nll = torch.empty(rows)
    library().olmix_softmax_xent_forward(_ptr(logits), _is_bf16(logits), _ptr(targets), _ptr(nll), rows, v,
                                         torch.get_num_threads())
    return nll


def causal_softmax_forward_(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """scores [M, T, T] bfloat16 (q . k) -> causal softmax(scale * scores), in place (0 above the diagonal)."""
    m, t, _ = scores.shape
    if not scores.is_contiguous() or scores.dtype != torch.bfloat16:
        raise ValueError("causal_softmax_forward_ works in place on contiguous bfloat16 scores")
    library().olmix_causal_softmax_forward(_ptr(scores), m, t, scale, torch.get_num_threads())
    return scores


def causal_softmax_backward(probs: torch.Tensor, grad: torch.Tensor, scale: float) -> torch.Tensor:
    """The gradient of the scores [M, T, T] (bfloat16) from the probabilities' gradient."""
    m, t, _ = probs.shape
    grad = grad.to(torch.bfloat16).contiguous()
    out = torch.empty_like(probs)
    library().olmix_causal_softmax_backward(_ptr(probs), _ptr(grad), _ptr(out), m, t, scale, torch.get_num_threads())
    return out


def rope_heads_first_forward(qk: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """qk [B, T, 2H, hd] bfloat16, table [T, 1, hd/2, 2] (cos, sin) -> rotated [2, B, H, T, hd] bfloat16."""
    b, t, gh, hd = qk.shape
    qk, table = qk.contiguous(), table.contiguous()
    out = torch.empty(2, b, gh // 2, t, hd, dtype=torch.bfloat16)
    library().olmix_rope_heads_first_forward(_ptr(qk), _ptr(table), _ptr(out), b, t, gh // 2, hd,
                                             torch.get_num_threads())
    return out


def rope_heads_first_backward(grad_q: torch.Tensor, grad_k: torch.Tensor, table: torch.Tensor,
                              shape: torch.Size) -> torch.Tensor:
    """Gradients [B*H, T, hd] of the rotated q and k -> the gradient of qk [B, T, 2H, hd] (bfloat16)."""
    b, t, gh, hd = shape
    grad_q, grad_k = grad_q.to(torch.bfloat16).contiguous(), grad_k.to(torch.bfloat16).contiguous()
    table = table.contiguous()
    grad = torch.empty(shape, dtype=torch.bfloat16)
    library().olmix_rope_heads_first_backward(_ptr(grad_q), _ptr(grad_k), _ptr(table), _ptr(grad), b, t, gh // 2, hd,
                                              torch.get_num_threads())
    return grad


class AdamWClipPlan:
    """The fixed part of an `olmix_adamw_clip` call: pointers to every stacked tensor, decay per tensor.

    params: float32 master weights [K, ...]; exp_avg, exp_avg_sq: their moments; working: the
    bfloat16 copy to refresh after each update, or None; weight_decay: per tensor. Only gradients
    change address between steps, so their pointers are gathered per call.
    """

    def __init__(self, params: list[torch.Tensor], exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor],
                 working: list[torch.Tensor | None], weight_decay: list[float]):
        n = len(params)
        pointers = ctypes.c_void_p * n
        self.tensors = (params, exp_avg, exp_avg_sq, working)  # keeps the memory the pointers name alive
        self.params = pointers(*map(_ptr, params))
        self.exp_avg = pointers(*map(_ptr, exp_avg))
        self.exp_avg_sq = pointers(*map(_ptr, exp_avg_sq))
        self.working = pointers(*map(_ptr, working))
        self.numel = (ctypes.c_int64 * n)(*[p[0].numel() for p in params])
        self.weight_decay = (ctypes.c_float * n)(*weight_decay)
        self.n, self.k = n, params[0].shape[0]

    def step(self, grads: list[torch.Tensor], lr: float, betas: tuple[float, float], eps: float, step: int,
             max_norm: float) -> torch.Tensor:
        """One clipped AdamW step (step counts from 1); returns each proxy's gradient norm [K] before clipping."""
        threads = torch.get_num_threads()
        beta1, beta2 = betas
        grads = [g.contiguous() for g in grads]
        grad_ptrs = (ctypes.c_void_p * self.n)(*map(_ptr, grads))
        grad_bf16 = (ctypes.c_int32 * self.n)(*map(_is_bf16, grads))
        norms, scratch = torch.empty(self.k), torch.empty(threads, self.k, dtype=torch.float64)
        library().olmix_adamw_clip(
            self.n, self.params, grad_ptrs, grad_bf16, self.exp_avg, self.exp_avg_sq, self.working, self.numel,
            self.weight_decay, self.k, lr, beta1, beta2, eps, lr / (1 - beta1**step), (1 - beta2**step) ** 0.5,
            max_norm, _ptr(norms), _ptr(scratch), threads)
        return norms
