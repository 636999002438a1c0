"""GPU evidence in one command: the CUDA path's correctness, the batched trainer against the
one-at-a-time transformers loop with MFU, a swarm's overhead share and the main job's wall time.

    python -m benchmarks.gpu            # on a GPU box (see docs/benchmarks.md for its runtime)
    python -m benchmarks.gpu --smoke    # tiny shapes, a few steps: seconds, on a CPU too

Each section prints as it finishes; the last line is one JSON object with every figure.

1. Correctness, in float32 on the device with the production step (trainer.TrainingStep, compiled
   on a GPU): 3 proxies of a small Llama, 20 steps on byte-level text from the Python installation,
   against LlamaForCausalLM + AdamW + clip_grad_norm_ trained proxy by proxy on the same batches
   (the largest difference of a step's loss); the exported proxies' logits against transformers';
   the same training, eager, under bfloat16 autocast (the largest difference of a final loss from
   float32's).
2. Throughput under bfloat16 autocast on random tokens of each shape's vocabulary (the tokens are not
   the point here) at regmix-1m (vocabulary 50,277, K = 64) and olmix-30m (100,278, K = 16): each
   preset's model, --batch-size sequences per proxy per step. The batched trainer trains K proxies at
   once (compiled on a GPU; the warm-up steps that compile are timed apart); the loop trains one
   proxy, as it would each of the K in turn; both start from the same weights for proxy 0 and train
   on the same batch, so their losses after the same steps should agree to bfloat16 rounding
   (`proxy0_loss_difference`, a check of the compiled bfloat16 step at full size). MFU = tokens/s x
   flops.train_flops_per_token / the card's dense bfloat16 peak (H100 and H200 989 TFLOP/s, A100
   312; else a measured matmul peak).
3. The README's main job, `olmix-tui demo --sample stdlib --batch --compare` in a temporary folder
   (the sample's [proxy] preset = "auto": on a GPU the gpu preset with at least 2M tokens per
   proxy), timed; and from its run files each swarm's proxy and the phases of its workers' time
   (engine.phases, the `timing` of every run's status.json), and the overhead share over all of
   them (1 - training-step seconds / worker seconds). It gets what is left of --budget (6 minutes,
   the issue's limit for the whole command); stopped then, its phases are those of the runs
   finished by then and its wall time is not measured.

Floors (issue 16), printed as booleans, null where not measured: batched >= 3x the loop at
regmix-1m and >= 2x at olmix-30m, MFU >= 40% at olmix-30m, overhead <= 20%, main job <= 60 s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.transformers_loop import TransformersLoop, hf_proxy  # noqa: E402
from engine import atomic  # noqa: E402
from engine.phases import swarm_timing  # noqa: E402
from engine.runs import list_swarms  # noqa: E402
from engine.training.device import autocast_dtype, pick_device  # noqa: E402
from engine.training.export import export_hf  # noqa: E402
from engine.training.flops import measure_matmul_peak, train_flops_per_token  # noqa: E402
from engine.training.optim import lr_at  # noqa: E402
from engine.training.presets import ProxyPreset, get_preset  # noqa: E402
from engine.training.sampler import SequenceBatcher, available_windows, plan_proxy_data  # noqa: E402
from engine.training.trainer import TrainingStep  # noqa: E402
from benchmarks.textdata import BYTE_VOCAB_SIZE, stdlib_text_domains  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECK = ProxyPreset(name="check", n_layers=2, n_heads=4, d_model=64, d_ff=128, seq_len=64, batch_size=4, lr=3e-3,
                    warmup_fraction=0.2)
CHECK_MIXTURES = ((0.7, 0.3), (0.2, 0.8), (0.5, 0.5))
MAX_LOSS_DIFFERENCE, MAX_LOGIT_DIFFERENCE, MAX_BF16_FINAL_LOSS_DIFFERENCE = 1e-3, 1e-4, 0.03
SHAPES = (("regmix-1m", 50_277, 64), ("olmix-30m", 100_278, 16))
SMOKE_PRESET = ProxyPreset(name="smoke", n_layers=1, n_heads=2, d_model=32, d_ff=64, seq_len=32, batch_size=2, lr=1e-3)
SMOKE_SHAPES = (("regmix-1m", 1000, 4), ("olmix-30m", 2000, 2))
DENSE_BF16_PEAKS = (("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
SPEEDUP_FLOORS = {"regmix-1m": 3.0, "olmix-30m": 2.0}
MFU_FLOOR, OVERHEAD_FLOOR, MAIN_JOB_FLOOR_S = 0.40, 0.20, 60.0
BUDGET_S, MIN_MAIN_JOB_S, WRAP_UP_S = 360.0, 60.0, 15.0
"""The issue's 6 minutes for the whole command; the main job gets what the sections before it left
(but at least its floor's 60 s), less the seconds that stopping it and reading its run files take."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def correctness(device: torch.device, steps: int, compiled: bool) -> dict:
    """Section 1 (see the module docstring)."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()

    domains = stdlib_text_domains(max_bytes_per_domain=200_000, names=("code", "docs"))
    arrays = [d.train for d in domains]
    available = available_windows(arrays, CHECK.seq_len)
    seeds = list(range(len(CHECK_MIXTURES)))
    plans = [plan_proxy_data(np.array(w), steps * CHECK.batch_size, available, 4.0, seed, CHECK.batch_size)
             for w, seed in zip(CHECK_MIXTURES, seeds)]
    batcher = SequenceBatcher(arrays, CHECK.seq_len, plans, CHECK.batch_size)
    batches = [torch.from_numpy(batcher.batch(step)).to(device) for step in range(steps)]
    lrs = [lr_at(step, steps, CHECK) for step in range(steps)]

    def batched(amp: torch.dtype | None, compile_step: bool) -> tuple[TrainingStep, np.ndarray]:
        training = TrainingStep(CHECK, BYTE_VOCAB_SIZE, seeds, device, amp, compile_step)
        losses = torch.stack([training.step(batch, lr) for batch, lr in zip(batches, lrs)])
        training.finish()
        return training, losses.cpu().numpy()  # [steps, K]

    training, float32 = batched(None, compiled)
    config = CHECK.llama_config(BYTE_VOCAB_SIZE)
    loop = np.zeros_like(float32)
    for k, seed in enumerate(seeds):
        proxy = TransformersLoop(hf_proxy(config, seed, "sdpa", device), CHECK, device, None)
        loop[:, k] = torch.stack([proxy.step(batch[k], lr) for batch, lr in zip(batches, lrs)]).cpu().numpy()
    tokens = torch.randint(0, BYTE_VOCAB_SIZE, (len(seeds), 2, CHECK.seq_len),
                           generator=torch.Generator().manual_seed(0)).to(device)
    logit_difference = 0.0
    with torch.no_grad(), tempfile.TemporaryDirectory(prefix="olmix-gpu-check-") as scratch:
        logits = training.model(tokens)
        for k in (0, len(seeds) - 1):
            hf = LlamaForCausalLM.from_pretrained(export_hf(training.model, k, Path(scratch) / str(k))).to(device).eval()
            logit_difference = max(logit_difference, float((logits[k] - hf(tokens[k]).logits).abs().max()))
    _, bfloat16 = batched(torch.bfloat16, False)  # eager: one cold compile fewer (the throughput arms compile it)
    figures = {"steps": steps, "proxies": len(seeds), "float32_compiled": training.compiled,
               "max_loss_difference": float(np.abs(float32 - loop).max()),
               "max_logit_difference": logit_difference,
               "bf16_final_loss_difference": float(np.abs(bfloat16[-1] - float32[-1]).max())}
    figures["passed"] = (figures["max_loss_difference"] <= MAX_LOSS_DIFFERENCE
                         and figures["max_logit_difference"] <= MAX_LOGIT_DIFFERENCE
                         and figures["bf16_final_loss_difference"] <= MAX_BF16_FINAL_LOSS_DIFFERENCE)
    return figures


def dense_bf16_peak(device: torch.device, dtype: torch.dtype, smoke: bool) -> tuple[float, str]:
    """The card's dense bfloat16 peak FLOP/s by its name, else a measured matmul peak in `dtype`; and where it came from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in DENSE_BF16_PEAKS:
            if key in name:
                return peak, f"{name}: {key} datasheet"
    return measure_matmul_peak(device, dtype, size=512 if smoke else 8192), "measured matmul peak"


def timed_steps(step, batch: torch.Tensor, lr: float, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls of step(batch, lr), waiting for the device at both ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch, lr)
    synchronize(device)
    return time.perf_counter() - start


def release(device: torch.device) -> None:
    """Free what the last arm left on the device (its compiled graphs too), so that the next arm's peak memory is its own."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def throughput(shape: str, preset: ProxyPreset, vocab: int, k: int, device: torch.device, amp: torch.dtype | None,
               compiled: bool, warmup: int, steps: int, peak: float) -> dict:
    """Section 2 at one shape: the batched trainer against the one-at-a-time loop (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (k, preset.batch_size, preset.seq_len + 1), generator=gen).to(device)
    flops_per_token = train_flops_per_token(preset.llama_config(vocab), preset.seq_len)
    release(device)
    training = TrainingStep(preset, vocab, list(range(k)), device, amp, compiled)
    warmup_s = timed_steps(training.step, batch, preset.lr, warmup, device)
    batched_s = timed_steps(training.step, batch, preset.lr, steps, device)
    batched_loss = float(training.step(batch, preset.lr)[0])  # proxy 0 after the same steps as the loop's proxy
    batched_memory, compiled = peak_memory_gib(device), training.compiled
    del training
    release(device)
    loop = TransformersLoop(hf_proxy(preset.llama_config(vocab), 0, "sdpa", device), preset, device, amp)
    timed_steps(loop.step, batch[0], preset.lr, warmup, device)
    loop_s = timed_steps(loop.step, batch[0], preset.lr, steps, device)
    loop_loss = float(loop.step(batch[0], preset.lr))
    loop_memory = peak_memory_gib(device)
    del loop
    release(device)
    batched_tps = k * preset.tokens_per_step * steps / batched_s
    loop_tps = preset.tokens_per_step * steps / loop_s
    return {"shape": shape, "preset": preset.name, "vocab_size": vocab, "k": k, "batch_size": preset.batch_size,
            "seq_len": preset.seq_len, "steps": steps, "warmup_steps": warmup, "compiled": compiled,
            "batched_warmup_s": warmup_s, "batched_step_s": batched_s / steps, "loop_step_s": loop_s / steps,
            "batched_tokens_per_s": batched_tps, "loop_tokens_per_s": loop_tps, "speedup": batched_tps / loop_tps,
            "flops_per_token": flops_per_token, "batched_mfu": batched_tps * flops_per_token / peak,
            "loop_mfu": loop_tps * flops_per_token / peak,
            "batched_peak_memory_gib": batched_memory, "loop_peak_memory_gib": loop_memory,
            "proxy0_loss_difference": abs(batched_loss - loop_loss)}


def main_job(timeout_s: float) -> dict:
    """Section 3: the README's main job in a temporary folder, timed, and its swarms' phases and overhead share.

    Stopped after `timeout_s`, with the workers it started (they run in sessions of their own and
    would finish their batch); the phases are then those of the runs finished by that time."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "olmix_tui", "demo", "--sample", "stdlib", "--batch", "--compare"]
    with tempfile.TemporaryDirectory(prefix="olmix-gpu-main-job-", ignore_cleanup_errors=True) as scratch:
        project = Path(scratch) / "demo"
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_workers(project)
            swarms = swarm_phases(project)
            share, note = overhead_share(swarms)
            note = "no run finished before the stop" if share is None else f"{note}, those finished before the stop"
            return {"main_job_s": None, "main_job_ok": False, "main_job_note": f"stopped after {timeout_s:.0f} s",
                    "overhead_share": share, "overhead_note": note, "swarms": swarms}
        seconds = time.perf_counter() - start
        swarms = swarm_phases(project)
    tail = "" if done.returncode == 0 else (done.stderr or done.stdout).strip().splitlines()[-1:]
    share, note = overhead_share(swarms)
    return {"main_job_s": seconds, "main_job_ok": done.returncode == 0, "main_job_note": " ".join(tail),
            "overhead_share": share, "overhead_note": note, "swarms": swarms}


def stop_workers(project: Path) -> None:
    """Kill the workers training the project's runs here (each running run's status.json names its pid and host)."""
    for swarm in list_swarms(project / "swarms", lambda status: True):
        for pid in {s.pid for s in swarm.statuses() if s.state == "running" and s.pid and s.host == socket.gethostname()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def swarm_phases(project: Path) -> dict[str, dict]:
    """Per swarm of the project: its proxy (preset, tokens per proxy), runs, and the phase timing its
    runs' status.json record (engine.phases: seconds per phase over all runs, the overhead share)."""
    out = {}
    for swarm in list_swarms(project / "swarms", lambda status: False):
        timing = swarm_timing(status.timing for status in swarm.statuses())
        proxy = swarm.spec.proxy
        out[swarm.id] = {"purpose": swarm.spec.purpose, "preset": proxy.preset if proxy else None,
                         "tokens_per_proxy": proxy.tokens_per_proxy if proxy else None, "runs": len(swarm.run_ids),
                         "timed_runs": timing.runs if timing else 0, "seconds": timing.totals if timing else {},
                         "overhead_share": timing.overhead_share if timing else None}
    return out


def overhead_share(swarms: dict[str, dict]) -> tuple[float | None, str]:
    """1 - training-step seconds / all recorded worker seconds, over every swarm of the job."""
    timing = swarm_timing(swarm["seconds"] for swarm in swarms.values())
    if timing is None:
        return None, "the run files record no phase timing, so the overhead share is not measured"
    return timing.overhead_share, f"over {sum(s['timed_runs'] for s in swarms.values())} runs' phase timing in status.json"


def floors(sections: dict) -> dict[str, bool | None]:
    """The issue's floors as booleans; None where the figure was not measured."""
    shapes = {shape: arm for shape, arm in sections["throughput"].items() if "error" not in arm}
    out: dict[str, bool | None] = {
        f"{shape}_batched_ge_{floor:g}x_loop": shapes[shape]["speedup"] >= floor if shape in shapes else None
        for shape, floor in SPEEDUP_FLOORS.items()}
    out["olmix-30m_mfu_ge_40%"] = shapes["olmix-30m"]["batched_mfu"] >= MFU_FLOOR if "olmix-30m" in shapes else None
    share = sections.get("overhead_share")
    out["overhead_le_20%"] = None if share is None else share <= OVERHEAD_FLOOR
    ok = sections.get("main_job_ok")
    out["main_job_le_60s"] = None if ok is None else ok and sections["main_job_s"] <= MAIN_JOB_FLOOR_S
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, a few steps, no main job: seconds, also on a CPU")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per proxy per step in the throughput arms")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per throughput arm")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the batched trainer compiles in them)")
    parser.add_argument("--check-steps", type=int, default=20, help="steps of the correctness runs")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="train the batched arms eagerly on a GPU too")
    parser.add_argument("--skip-main-job", action="store_true")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="seconds for the whole benchmark: the main job is stopped when they are spent")
    parser.add_argument("--main-job-timeout", type=float,
                        help=f"seconds before the main job is stopped (default: what is left of --budget, at least {MIN_MAIN_JOB_S:.0f})")
    parser.add_argument("--out", type=Path, help="also write the figures so far to this JSON file after each section")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = pick_device(args.device)
    compiled = args.compile and device.type == "cuda"  # a CPU compile takes longer than these runs
    amp = autocast_dtype(device, "auto")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    figures: dict = {"device": str(device), "card": card, "torch": torch.__version__, "smoke": args.smoke,
                     "dtype": str(amp or torch.float32).removeprefix("torch.")}

    def section(**done) -> None:
        figures.update(done, seconds=time.perf_counter() - began)
        if args.out:
            atomic.write_text(args.out, json.dumps(figures, sort_keys=True) + "\n")

    print(f"device {device} ({card}), torch {torch.__version__}, {'compiled' if compiled else 'eager'} batched step, "
          f"throughput in {amp or torch.float32}{', smoke test' if args.smoke else ''}", flush=True)

    check = correctness(device, 5 if args.smoke else args.check_steps, compiled)
    section(correctness=check)
    print(f"correctness ({check['steps']} steps, {check['proxies']} proxies, float32): largest loss difference against "
          f"LlamaForCausalLM + AdamW {check['max_loss_difference']:.2e}, exported logits {check['max_logit_difference']:.2e}, "
          f"bfloat16 final loss against float32 {check['bf16_final_loss_difference']:.2e}: "
          f"{'passed' if check['passed'] else 'FAILED'}", flush=True)

    peak, peak_source = dense_bf16_peak(device, amp or torch.float32, args.smoke)
    print(f"peak {peak / 1e12:.1f} TFLOP/s ({peak_source})", flush=True)
    shapes: dict = {}
    section(peak_flops=peak, peak_source=peak_source, throughput=shapes)
    for shape, vocab, k in (SMOKE_SHAPES if args.smoke else SHAPES):
        preset = SMOKE_PRESET if args.smoke else dataclasses.replace(get_preset(shape), batch_size=args.batch_size)
        steps, warmup = (2, 1) if args.smoke else (args.steps, args.warmup)
        try:
            arm = throughput(shape, preset, vocab, k, device, amp, compiled, warmup, steps, peak)
        except torch.OutOfMemoryError as err:  # a smaller card: the other figures still count
            shapes[shape] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
            release(device)
            print(f"{shape}: {shapes[shape]['error']}", flush=True)
            continue
        shapes[shape] = arm
        section(throughput=shapes)
        print(f"{shape} (vocab {vocab:,}, K={k}, batch {preset.batch_size} x {preset.seq_len}): batched "
              f"{arm['batched_tokens_per_s']:,.0f} tokens/s (MFU {arm['batched_mfu']:.1%}, warm-up {arm['batched_warmup_s']:.1f} s), "
              f"loop {arm['loop_tokens_per_s']:,.0f} tokens/s (MFU {arm['loop_mfu']:.1%}): {arm['speedup']:.2f}x; proxy 0's "
              f"loss after {warmup + steps + 1} steps, batched against the loop: {arm['proxy0_loss_difference']:.1e} apart",
              flush=True)

    if args.smoke or args.skip_main_job:
        note = "skipped (--smoke)" if args.smoke else "skipped (--skip-main-job)"
        section(main_job_s=None, main_job_ok=None, main_job_note=note, overhead_share=None, overhead_note=note, swarms={})
    else:
        left = args.budget - (time.perf_counter() - began) - WRAP_UP_S
        section(**main_job(args.main_job_timeout or max(left, MIN_MAIN_JOB_S)))
        print(f"main job: {figures['main_job_s'] or float('nan'):.1f} s ({'ok' if figures['main_job_ok'] else 'FAILED'}"
              f"{': ' + figures['main_job_note'] if figures['main_job_note'] else ''}); overhead share: "
              f"{'n/a' if figures['overhead_share'] is None else format(figures['overhead_share'], '.1%')} "
              f"({figures['overhead_note']})", flush=True)
        for sid, swarm in figures["swarms"].items():
            phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in swarm["seconds"].items()) or "none recorded"
            share = "n/a" if swarm["overhead_share"] is None else format(swarm["overhead_share"], ".1%")
            print(f"  swarm {sid} ({swarm['purpose']}, {swarm['timed_runs']} of {swarm['runs']} runs timed, preset "
                  f"{swarm['preset']}, {swarm['tokens_per_proxy'] or 0:,} tokens per proxy): overhead {share}; worker "
                  f"seconds {phases}", flush=True)
    section(floors=floors(figures))
    print("floors: " + ", ".join(f"{name} {value}" for name, value in figures["floors"].items()), flush=True)
    print(json.dumps(figures, sort_keys=True))
    return figures


if __name__ == "__main__":
    main()
