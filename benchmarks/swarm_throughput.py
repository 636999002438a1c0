"""Swarm throughput: K proxies one at a time (plain transformers loop) vs the batched trainer.

Both train the same K proxies (same preset, mixtures, seeds, initial weights, batches, lr schedule,
AdamW settings, per-proxy gradient clipping, dtype and threads) on the stdlib sample project's
data: its six current domains, tokenized with its own 2048-token BPE (built in a temporary folder
in a few seconds, or read from --project DIR, e.g. ./demo after the README's first command). (a) is the idiomatic loop: LlamaForCausalLM, cross-entropy, backward,
clip_grad_norm_, AdamW step, proxy after proxy, with whichever of transformers' attention
implementations (sdpa, eager) a short probe finds faster here. (b) is
engine.training.train_proxies, all K at once in this process (on a CPU with several threads it
trains them as stacks side by side, one per thread: trainer.cpu_stacks). The arms alternate, A B A B A
(--repeats 2: (b) runs twice, (a)'s proxies in parts of K/4, K/2, K/4 around them), so that the
machine's speed drifting over minutes weighs on both alike; tokens/s are totals over the parts.
On a CPU with several cores two more arms follow, each with one single-threaded process per core
started together: (c) the batched trainer on K / cores proxies per process, which is how the
local executor lays a swarm out on CPU, and (a') for reference the one-at-a-time loop the same
way. Every arm uses the same threads in total. All run in the trainer's dtype for the device
(--dtype to choose: bfloat16 autocast on CUDA and on CPUs with AVX512-BF16 or AMX, else float32).
Training time only (no evaluation) is compared. The floor is checked on (b) against (a).
MFU = tokens/s x FLOPs per token (flops.train_flops_per_token: 6 x matmul weights incl. LM head
+ attention) / the matmul peak measured in this run. The last line printed is one JSON object with the figures.

    python benchmarks/swarm_throughput.py                # cpu preset, K=8, 262,144 tokens per proxy
    python benchmarks/swarm_throughput.py --project demo # the same on an existing project's tokens
    python benchmarks/swarm_throughput.py --quick        # smoke test: a few steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import samples  # noqa: E402
from engine.data.store import DomainTokens  # noqa: E402
from engine.errors import OlmixError  # noqa: E402
from engine.events import TaskFinished  # noqa: E402
from engine.project import Project  # noqa: E402
from benchmarks.transformers_loop import TransformersLoop, hf_proxy  # noqa: E402
from engine.training.device import autocast_dtype, cpu_threads, keep_freed_memory, pick_device  # noqa: E402
from engine.training.flops import measure_matmul_peak, train_flops_per_token  # noqa: E402
from engine.training.optim import lr_at  # noqa: E402
from engine.training.presets import ProxyPreset, get_preset  # noqa: E402
from engine.training.sampler import SequenceBatcher, available_windows, plan_proxy_data  # noqa: E402
from engine.training.trainer import train_proxies  # noqa: E402

SPEEDUP_FLOOR = 2.0
MAX_REPETITION = 4.0


def load_domains(project_dir: Path | None, scratch: Path) -> tuple[list[DomainTokens], int, Path]:
    """The current domains of a project, tokenized with its tokenizer: (domains, vocab size, project root).

    Without `project_dir`, the stdlib sample project is built under `scratch` first.
    """
    project = Project.load(project_dir) if project_dir else samples.create(scratch / "stdlib", "stdlib")
    tokens = project.tokens(project.domains)
    return [tokens[name] for name in project.domains.names], project.tokenizer().vocab_size, project.root


def hf_steps(model: LlamaForCausalLM, preset: ProxyPreset, batches, steps: int, device: torch.device,
             amp: torch.dtype | None) -> float:
    """The idiomatic loop (transformers_loop) for `steps` steps; returns seconds."""
    loop = TransformersLoop(model, preset, device, amp)
    _synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        loop.step(torch.from_numpy(batches(step)).to(device), lr_at(step, steps, preset))
    _synchronize(device)
    return time.perf_counter() - start


def fastest_attention(preset: ProxyPreset, vocab_size: int, device: torch.device, amp: torch.dtype | None,
                      steps: int = 6) -> tuple[str, dict[str, float]]:
    """The baseline's quickest transformers attention implementation here, by timing a few steps of each.

    Which one wins depends on device and dtype (on CPU, bfloat16 SDPA's backward is slow), so the
    baseline is never held back by a default that is slow on this machine.
    """
    config = preset.llama_config(vocab_size)
    gen = np.random.default_rng(0)
    batch = gen.integers(0, vocab_size, size=(preset.batch_size, preset.seq_len + 1))
    seconds = {}
    for attention in ("sdpa", "eager"):
        model = hf_proxy(config, 0, attention, device)
        hf_steps(model, preset, lambda _: batch, 2, device, amp)  # warm up
        seconds[attention] = hf_steps(model, preset, lambda _: batch, steps, device, amp)
    return min(seconds, key=seconds.get), seconds


def one_at_a_time(preset: ProxyPreset, vocab_size: int, mixtures: np.ndarray, seeds: list[int],
                  domains: list[DomainTokens], steps: int, device: torch.device, amp: torch.dtype | None,
                  attention: str) -> float:
    """Train each proxy alone with LlamaForCausalLM + torch AdamW; returns training seconds."""
    arrays = [d.train for d in domains]
    available = available_windows(arrays, preset.seq_len)
    config = preset.llama_config(vocab_size)
    seconds = 0.0
    for weights, seed in zip(mixtures, seeds):
        model = hf_proxy(config, seed, attention, device)
        plan = plan_proxy_data(weights, steps * preset.batch_size, available, MAX_REPETITION, seed, preset.batch_size)
        batcher = SequenceBatcher(arrays, preset.seq_len, [plan], preset.batch_size)
        seconds += hf_steps(model, preset, lambda step: batcher.batch(step)[0], steps, device, amp)
    return seconds


def batched(preset: ProxyPreset, vocab_size: int, mixtures: np.ndarray, seeds: list[int],
            domains: list[DomainTokens], steps: int, device: str, dtype: str, compile: bool | str) -> dict:
    """Train all proxies with the batched trainer; returns its TaskFinished info."""
    finished = []
    train_proxies(
        preset, vocab_size, mixtures, [d.train for d in domains], [d.val for d in domains],
        [d.bytes_per_token for d in domains], steps * preset.tokens_per_step, seeds, MAX_REPETITION,
        domain_names=[d.name for d in domains], eval_tokens_per_domain=preset.seq_len, device=device,
        dtype=dtype, compile=compile, on_event=lambda e: finished.append(e.info) if isinstance(e, TaskFinished) else None)
    return finished[-1]


def batched_seconds(*args) -> float:
    """`batched`'s training seconds (for a per-core process)."""
    return batched(*args)["train_time_s"]


def per_core(target, shares: list[tuple]) -> float:
    """target(*share) in one single-threaded process per share, all released together; the slowest's seconds."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(shares)), ctx.Queue()
    procs = [ctx.Process(target=_on_one_core, args=(target, share, barrier, results)) for share in shares]
    for proc in procs:
        proc.start()
    seconds: list[float] = []
    while len(seconds) < len(procs):
        try:
            result = results.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a per-core process died with exit code {dead[0]}") from None
            continue
        if isinstance(result, str):
            raise RuntimeError(f"a per-core process failed: {result}")
        seconds.append(result)
    for proc in procs:
        proc.join()
    return max(seconds)


def _on_one_core(target, share: tuple, barrier, results) -> None:
    try:
        torch.set_num_threads(1)
        keep_freed_memory()
        barrier.wait(timeout=600)
        results.put(target(*share))
    except BaseException as err:  # reported to the parent, which stops the benchmark
        barrier.abort()
        results.put(f"{type(err).__name__}: {err}")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch-size", type=int, default=0, help="sequences per step per proxy (0: the preset's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every usable core)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="both arms' dtype (auto: the trainer's choice for this device, see engine/training/device.py)")
    parser.add_argument("--k", type=int, default=8, help="proxies")
    parser.add_argument("--tokens-per-proxy", type=int, default=262_144)
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="torch.compile in the batched trainer (auto: for long runs, see trainer.COMPILE_MIN_STEPS)")
    parser.add_argument("--project", type=Path, help="an existing project whose tokens to train on (default: build the stdlib sample)")
    parser.add_argument("--no-per-core", dest="per_core", action="store_false",
                        help="skip arms (c) and (a'), the one-process-per-core layouts (CPU only)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of (b), each between parts of (a) (A B A B A for 2); figures are totals")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 proxies, 2 steps")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="olmix-bench-") as scratch:
        try:
            data = load_domains(args.project, Path(scratch))
        except OlmixError as err:
            sys.exit(f"error: {err}")
        return run(args, *data)


def run(args: argparse.Namespace, domains: list[DomainTokens], vocab_size: int, project_root: Path) -> dict:
    """The benchmark proper on `domains`; prints the figures, returns them."""
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or cpu_threads())
        keep_freed_memory()  # the trainer does this on CPU; done first so that both arms run with it
    threads = torch.get_num_threads()
    preset = get_preset(args.preset)
    if args.batch_size:
        preset = dataclasses.replace(preset, batch_size=args.batch_size)
    k = min(args.k, 2) if args.quick else args.k
    tokens = 2 * preset.tokens_per_step if args.quick else args.tokens_per_proxy
    steps = tokens // preset.tokens_per_step
    compile = {"auto": "auto", "on": True, "off": False}[args.compile]
    mixtures = np.random.default_rng(0).dirichlet(np.ones(len(domains)), size=k)
    seeds = list(range(k))
    config = preset.llama_config(vocab_size)
    flops_per_token = train_flops_per_token(config, preset.seq_len)
    amp = autocast_dtype(device, args.dtype)

    print(f"device {device} ({threads} threads, {cpu_threads()} usable cores), preset {preset.name}: "
          f"{preset.n_layers} layers, d_model {preset.d_model}, {preset.n_heads} heads, seq_len {preset.seq_len}, "
          f"batch {preset.batch_size}; {'bfloat16 autocast' if amp else 'float32'}; vocab {vocab_size}; {k} proxies x {steps} steps "
          f"({steps * preset.tokens_per_step:,} tokens each); data: {project_root.name}, domains {', '.join(d.name for d in domains)}")
    load_before = os.getloadavg()[0]
    peak = measure_matmul_peak(device, amp or torch.float32, size=8192 if device.type == "cuda" else 1024 if args.quick else 2048)
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; {flops_per_token / 1e6:.3f} MFLOP per trained token")

    attention, probe = fastest_attention(preset, vocab_size, device, amp, steps=2 if args.quick else 6)
    print(f"baseline attention: {attention} (probe: " + ", ".join(f"{n} {t:.2f} s" for n, t in probe.items()) + ")")
    # The arms alternate (A B A B A for 2 repeats): (b) runs `repeats` times, the baseline's proxies
    # in parts around them (half-size parts at both ends), so that a slow drift in the machine's
    # speed (other tenants, clocks) weighs on both arms alike.
    repeats = max(1, args.repeats)
    bounds = np.round(np.linspace(0, k, 2 * repeats + 1)).astype(int)[[0, *range(1, 2 * repeats, 2), 2 * repeats]]
    tokens_all = k * steps * preset.tokens_per_step
    base_seconds, batched_runs = 0.0, []
    for part in range(repeats + 1):
        lo, hi = bounds[part], bounds[part + 1]
        base_seconds += one_at_a_time(preset, vocab_size, mixtures[lo:hi], seeds[lo:hi], domains, steps, device, amp, attention)
        if part < repeats:
            batched_runs.append(batched(preset, vocab_size, mixtures, seeds, domains, steps, str(device), args.dtype, compile))
    batched_time = sum(run["train_time_s"] for run in batched_runs)
    cores = threads if device.type == "cpu" and args.per_core and min(threads, k) > 1 else 0
    if cores:
        parts = np.array_split(np.arange(k), cores)
        per_core_batched = per_core(batched_seconds, [
            (preset, vocab_size, mixtures[p], [seeds[i] for i in p], domains, steps, "cpu", args.dtype, compile)
            for p in parts])
        per_core_base = per_core(one_at_a_time, [
            (preset, vocab_size, mixtures[p], [seeds[i] for i in p], domains, steps, device, amp, attention)
            for p in parts])
    base_tps = tokens_all / base_seconds
    print(f"(a) one at a time, LlamaForCausalLM ({attention} attention) + AdamW, {threads} threads: "
          f"{base_tps:,.0f} tokens/s ({base_seconds:.1f} s), MFU {base_tps * flops_per_token / peak:.1%}")
    batched_tps = repeats * tokens_all / batched_time
    compiled = batched_runs[0]["compiled"]
    print(f"(b) batched trainer, {k} proxies at once in one process{' (torch.compile)' if compiled else ''}, "
          f"{threads} threads, {repeats} runs: {batched_tps:,.0f} tokens/s ({batched_time:.1f} s; each run "
          + ", ".join(f"{run['tokens_per_s']:,.0f}" for run in batched_runs)
          + f"), MFU {batched_tps * flops_per_token / peak:.1%}")
    per_core_figures = {}
    if cores:
        core_batched_tps, core_base_tps = tokens_all / per_core_batched, tokens_all / per_core_base
        print(f"(c) batched trainer, one single-threaded process per core ({cores} x {k // cores}"
              f"{'+' if k % cores else ''} proxies), as the local executor runs a swarm: {core_batched_tps:,.0f} tokens/s "
              f"({per_core_batched:.1f} s), MFU {core_batched_tps * flops_per_token / peak:.1%}")
        print(f"(a') reference: one at a time in one single-threaded process per core: {core_base_tps:,.0f} tokens/s "
              f"({per_core_base:.1f} s), MFU {core_base_tps * flops_per_token / peak:.1%}")
        per_core_figures = {
            "per_core_processes": cores, "per_core_batched_tokens_per_s": core_batched_tps,
            "per_core_baseline_tokens_per_s": core_base_tps, "per_core_speedup_over_baseline": core_batched_tps / base_tps,
            "per_core_speedup_over_per_core_baseline": core_batched_tps / core_base_tps,
        }

    speedup = batched_tps / base_tps
    floor_met = speedup >= SPEEDUP_FLOOR
    if cores:
        print(f"(c)/(a) {core_batched_tps / base_tps:.2f}x; (c)/(a') {core_batched_tps / core_base_tps:.2f}x")
    print(f"speedup (b)/(a) {speedup:.2f}x; floor {SPEEDUP_FLOOR:.0f}x {'met' if floor_met else 'NOT met'}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (>{cpu_threads()} means other "
          "processes shared the cores)")
    figures = {
        "device": str(device), "threads": threads, "dtype": str(amp or torch.float32).removeprefix("torch."),
        "baseline_attention": attention, "data": project_root.name, "preset": preset.name, "k": k, "steps": steps,
        "tokens_per_proxy": steps * preset.tokens_per_step, "vocab_size": vocab_size,
        "flops_per_token": flops_per_token, "matmul_peak_flops": peak,
        "baseline_tokens_per_s": base_tps, "batched_tokens_per_s": batched_tps, "speedup": speedup,
        "baseline_mfu": base_tps * flops_per_token / peak, "batched_mfu": batched_tps * flops_per_token / peak,
        "speedup_floor": SPEEDUP_FLOOR, "floor_met": floor_met, "quick": args.quick, "compiled": compiled,
        "repeats": repeats, "batched_run_tokens_per_s": [run["tokens_per_s"] for run in batched_runs],
        "load_average": [load_before, os.getloadavg()[0]], **per_core_figures,
    }
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main()
