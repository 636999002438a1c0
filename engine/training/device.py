"""Where proxies train: device choice, dtype policy, thread count, the user's cache folder.

CUDA when present, else the CPU. Matmuls run under bfloat16 autocast
(float32 master weights) on CUDA and on CPUs with bfloat16 dot-product instructions (AVX512-BF16,
AMX), where a bfloat16 matmul is several times faster than a float32 one; elsewhere proxies train
in float32.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from engine.errors import ConfigError
from engine.training.presets import DTYPES

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def pick_device(requested: str = "auto") -> torch.device:
    """"auto" -> cuda:0 when a GPU is visible, else cpu; "cpu", "cuda" or "cuda:N" as asked."""
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"Unknown device {requested!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"Device {requested!r} was asked for but no CUDA GPU is visible; use auto or cpu.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"Unsupported device {requested!r}; use auto, cpu, cuda or cuda:N.")
    return device


def prepare_device(device: torch.device) -> None:
    """Make `device` ready to train on: on CUDA it becomes the current device and its context is
    created here (not by whichever op first needs it, and not on GPU 0 for a worker of GPU 1); on
    a CPU glibc keeps freed memory (keep_freed_memory)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
    else:
        keep_freed_memory()


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What waits for the work queued on `device` (None on a CPU, where ops finish as they return)."""
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    return None


def memory_budget(device: torch.device, cpu_bytes: int, gpu_fraction: float) -> int:
    """Bytes a computation may hold: `cpu_bytes` on a CPU, this fraction of the card's memory on a GPU."""
    if device.type == "cuda":
        return int(gpu_fraction * torch.cuda.get_device_properties(device).total_memory)
    return cpu_bytes


def cpu_has_bf16_matmul() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX tiles), not by emulation.

    With either, oneDNN's bfloat16 matmuls run several times faster than float32 ones
    (benchmarks/swarm_throughput.py prints both matmul peaks; docs/benchmarks.md).
    """
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe is not None and probe() for probe in probes)


def autocast_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `dtype` on `device`: None means plain float32.

    "auto" is bfloat16 on CUDA and on CPUs with bfloat16 matmul units, float32 elsewhere.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"[proxy] dtype {dtype!r} is not one of {', '.join(DTYPES)}; fix olmix.toml.")
    if dtype == "float32" or (dtype == "auto" and device.type == "cpu" and not cpu_has_bf16_matmul()):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for the forward pass (a no-op in float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_threads() -> int:
    """Cores this process may use (affinity-aware), the torch thread count for training on CPU."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def keep_freed_memory() -> None:
    """Stop glibc from returning large freed blocks to the OS between training steps (process-wide).

    Every step allocates and frees the same large activations and logits. By default glibc serves
    big blocks with fresh mmaps and unmaps them when freed, so each step page-faults and zeroes them
    again: with the sample project on 2 cores, a third of the training time went to the kernel. Here
    big blocks come from the heap and stay there (up to 1 GiB free before trimming). No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return


def cache_root() -> Path:
    """$XDG_CACHE_HOME/olmix-tui (default ~/.cache/olmix-tui): built kernels, compiled graphs."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "olmix-tui"


def use_persistent_compile_cache() -> None:
    """Keep torch.compile's caches (inductor's compiled graphs, its Triton kernels) in cache_root(),
    so that a run pays the cold compile once per machine rather than once per boot: inductor's
    default folder is under /tmp. A TORCHINDUCTOR_CACHE_DIR the user set is left as it is; call
    before the first compile of the process (inductor reads the variable then)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torch-compile"))
