"""A/B of the training step: this checkout's engine/training against another git revision's, in one process.

The other revision's engine/training modules are copied into a temporary package (their imports of
engine.training pointed at it), so both steps run in the same process on the same machine state.
Both sides build K proxies of a preset from the same seeds and train on the same random token
batches; they alternate in stretches of --steps steps (A B A B ...), each step timed on its own,
so that a drift in the machine's speed (other tenants, clocks) weighs on both alike. Printed: the
median ms per step of each side, the median of the per-round ratios, and the largest difference
between the two sides' training losses at the same step; the last line is one JSON object.

    python -m benchmarks.step_ab --base main                     # cpu preset, K=8, the trainer's dtype
    OLMIX_CPU_KERNELS=0 python -m benchmarks.step_ab --base main # both sides without the C kernels
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.training import cpu_kernels, optim, trainer  # noqa: E402
from engine.training.device import autocast, autocast_dtype, cpu_threads, keep_freed_memory  # noqa: E402
from engine.training.presets import get_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def import_revision(revision: str, folder: Path) -> types.SimpleNamespace:
    """engine/training as of `revision`, imported as the package `base_training` from `folder`."""
    package = folder / "base_training"
    package.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", revision, "engine/training/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in names:
        text = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout
        if name.endswith(".py"):
            text = re.sub(r"\bengine\.training\b", "base_training", text)
        (package / Path(name).name).write_text(text)
    sys.path.insert(0, str(folder))
    import base_training.optim
    import base_training.trainer

    return types.SimpleNamespace(trainer=base_training.trainer, optim=base_training.optim,
                                 model=sys.modules["base_training.model"])


def step_function(side: types.SimpleNamespace, preset, vocab_size: int, seeds: list[int], amp):
    """One optimiser step of `side`'s code: (batch, lr) -> losses [K]."""
    device = torch.device("cpu")
    if hasattr(side.trainer, "TrainingStep"):
        return side.trainer.TrainingStep(preset, vocab_size, seeds, device, amp, compiled=False).step
    # revisions before TrainingStep: the model and optimizer the trainer built then (one micro-batch)
    model = side.model.StackedLlama(preset.llama_config(vocab_size), len(seeds))
    model.init_weights(seeds)
    optimizer = side.optim.make_optimizer(model, preset, device, amp)

    def step(batch: torch.Tensor, lr: float) -> torch.Tensor:
        with autocast(device, amp):
            losses = model.losses(batch).float()
        losses.sum().backward()
        optimizer.step(lr)
        optimizer.zero_grad()
        return losses.detach()

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the git revision to compare against (default: main)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--k", type=int, default=8, help="proxies in the stack")
    parser.add_argument("--vocab", type=int, default=2048, help="vocabulary (the stdlib sample's BPE has 2048)")
    parser.add_argument("--steps", type=int, default=20, help="steps per stretch")
    parser.add_argument("--rounds", type=int, default=8, help="stretches of each side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every usable core)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads or cpu_threads())
    keep_freed_memory()
    preset, device = get_preset(args.preset), torch.device("cpu")
    amp = autocast_dtype(device, args.dtype)
    seeds = list(range(args.k))
    total_steps = args.steps * (args.rounds + 1)
    gen = np.random.default_rng(0)
    batches = [torch.from_numpy(gen.integers(0, args.vocab, (args.k, preset.batch_size, preset.seq_len + 1)))
               for _ in range(total_steps)]
    with tempfile.TemporaryDirectory(prefix="olmix-step-ab-") as scratch:
        base = import_revision(args.base, Path(scratch))
        this = types.SimpleNamespace(trainer=trainer, optim=optim)
        sides = {"base": step_function(base, preset, args.vocab, seeds, amp),
                 "this": step_function(this, preset, args.vocab, seeds, amp)}
        print(f"preset {preset.name}, K={args.k}, vocab {args.vocab}, {'bfloat16 autocast' if amp else 'float32'}, "
              f"{torch.get_num_threads()} threads, kernels {'on' if cpu_kernels.library() is not None else 'off'}; "
              f"base = {args.base}, this = the checkout; {args.rounds} rounds of {args.steps} steps after "
              f"{args.steps} warm-up steps each")
        times: dict[str, list[float]] = {name: [] for name in sides}
        losses: dict[str, list[torch.Tensor]] = {name: [] for name in sides}
        ratios = []
        for round_ in range(args.rounds + 1):
            stretch = {}
            for name, step in sides.items():
                seconds = []
                for i in range(round_ * args.steps, (round_ + 1) * args.steps):
                    start = time.perf_counter()
                    losses[name].append(step(batches[i], preset.lr))
                    seconds.append(time.perf_counter() - start)
                stretch[name] = statistics.median(seconds)
                if round_:  # round 0 warms up
                    times[name] += seconds
            if round_:
                ratios.append(stretch["this"] / stretch["base"])
                print(f"round {round_}: base {1e3 * stretch['base']:.1f} ms, this {1e3 * stretch['this']:.1f} ms per step")
    loss_diff = max(float((a - b).abs().max()) for a, b in zip(losses["base"], losses["this"]))
    figures = {"base_revision": args.base, "preset": preset.name, "k": args.k, "threads": torch.get_num_threads(),
               "dtype": str(amp or torch.float32).removeprefix("torch."), "kernels": cpu_kernels.library() is not None,
               "base_ms_per_step": 1e3 * statistics.median(times["base"]),
               "this_ms_per_step": 1e3 * statistics.median(times["this"]),
               "median_round_ratio": statistics.median(ratios), "max_loss_difference": loss_diff,
               "load_average": list(os.getloadavg())}
    print(f"median ms per step: base {figures['base_ms_per_step']:.1f}, this {figures['this_ms_per_step']:.1f}; "
          f"this/base per round, median {figures['median_round_ratio']:.3f}; largest loss difference at the same "
          f"step {loss_diff:.2e}")
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main()
