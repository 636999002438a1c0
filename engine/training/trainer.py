"""Train K proxies of one preset, each on its own mixture, as one batched computation.

`train_proxies` plans every proxy's sequences (sampler), stacks the K models (model), and runs
one forward/backward/AdamW step for all of them per optimiser step (`TrainingStep`, which the
benchmarks time on its own): the loss is the sum over
proxies of each proxy's mean cross-entropy, so each proxy receives exactly its own gradients;
clipping is per proxy (optim). Proxies whose data cannot fill the token budget under the
repetition cap train fewer steps; they run as a separate batched group so that every proxy gets
its own complete learning-rate schedule. On a CPU with several threads a large group trains as
a few stacks side by side, one per thread (`cpu_stacks`), which keeps every core in its own
matmuls instead of waiting on the other at each op.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from engine.errors import ConfigError, DataError, InfeasibleError
from engine.events import EventSink, Message, TaskFinished, TaskProgress, TaskStarted, ignore
from engine.phases import PhaseTimer
from engine.training import cpu_kernels
from engine.training.cpu_ops import ops_for
from engine.training.device import (autocast, autocast_dtype, memory_budget, pick_device, prepare_device, synchronizer,
                                    use_persistent_compile_cache)
from engine.training.evaluate import Evaluator, TokenizedEvalSet
from engine.training.flops import measure_matmul_peak, train_flops_per_token
from engine.training.model import StackedLlama
from engine.training.optim import lr_at, make_optimizer
from engine.training.presets import ProxyPreset
from engine.training.sampler import ProxyDataPlan, SequenceBatcher, available_windows, plan_proxy_data

RecordSink = Callable[[int, dict], None]

CPU_ACTIVATION_BUDGET_BYTES = 2 * 2**30
GPU_ACTIVATION_FRACTION = 0.25
"""Activation memory one micro-batch may use (on a GPU, this fraction of the card's memory);
larger batches are split (gradient accumulation)."""

COMPILE_MIN_STEPS = {"cpu": 8000, "cuda": 300}
"""compile="auto" compiles runs with at least this many steps. On a CPU the eager step already
runs its norms, RoPE, attention softmax, loss and optimizer as fused kernels (cpu_kernels), so
compiling the rest gains little per step and its cold compile pays off only on long runs; on a
GPU compiling matters far more for tiny proxies. The measurements: docs/benchmarks.md, "Figures
behind constants in the code"."""

PROGRESS_SECONDS = 1.0
"""Seconds between progress events; the loss they carry is read from the device without waiting
(the latest value that has arrived)."""

GPU_WINDOW_BYTES = 256 * 2**20
"""Training windows sent to a GPU at once: a run's batches go over in chunks of this size (a short
run's in one), gathered on the host while the previous chunk trains, not one batch per step."""

MIN_PROXIES_PER_CPU_STACK = 4
"""A group of proxies trains on the CPU as one stack per thread while each stack keeps at least
this many proxies. Single-threaded stacks never wait on each other's serial stretches (Python,
dispatch, small kernels), so they train faster than one stack on all threads, down to stacks of
this size (docs/benchmarks.md, "Figures behind constants in the code")."""


@dataclass
class ProxyResult:
    """What one proxy trained on and how it scored.

    tokens / tokens_per_domain count trained targets (seq_len per sequence) actually used;
    metrics has "<domain>/loss", "<domain>/bpb" for every domain's held-out split and
    "eval:<name>/bpb" per eval set; wall_time_s is the batched run that trained this proxy
    together with `batched_with` proxies, in one stack or in stacks side by side (its share is
    wall_time_s / batched_with); flops counts training only (flops.train_flops_per_token x
    tokens). `note` explains a shortfall.
    `model[model_index]` is the trained proxy (for export.export_hf); not serialised.
    """

    index: int
    seed: int
    tokens: int
    requested_tokens: int
    tokens_per_domain: dict[str, int]
    steps: int
    metrics: dict[str, float]
    final_train_loss: float
    wall_time_s: float
    batched_with: int
    flops: float
    note: str = ""
    model: StackedLlama | None = field(default=None, repr=False, compare=False)
    model_index: int = 0


def train_proxies(
    preset: ProxyPreset,
    vocab_size: int,
    mixtures: np.ndarray | Sequence[Sequence[float]],
    train_arrays: Sequence[np.ndarray],
    val_arrays: Sequence[np.ndarray],
    bytes_per_token: Sequence[float],
    tokens_per_proxy: int,
    seeds: Sequence[int],
    max_repetition: float,
    domain_names: Sequence[str] | None = None,
    eval_sets: Sequence[TokenizedEvalSet] = (),
    eval_tokens_per_domain: int = 32_768,
    eval_every: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool | str = "auto",
    on_event: EventSink = ignore,
    on_record: RecordSink | None = None,
    task: str = "train proxies",
    timer: PhaseTimer | None = None,
) -> list[ProxyResult]:
    """Train one proxy per row of `mixtures` [K, m] (weights over the m domains) and evaluate it.

    train_arrays / val_arrays: one 1-D token array per domain (np.memmap is fine);
    bytes_per_token: per domain, to convert loss to bits per byte; seeds: one per proxy (weights
    init and data draw); max_repetition: how many times a domain's train windows may be reused;
    eval_every: steps between curve points sent to on_record(k, record) (0: only the end);
    compile: torch.compile the training step (True, False, or "auto" = for long runs when a C++
    compiler is present); timer: where the phases' seconds go (engine.phases). Returns one
    ProxyResult per mixture row, in order.
    """
    mixtures = np.asarray(mixtures, dtype=np.float64)
    n_domains = len(train_arrays)
    names = list(domain_names) if domain_names is not None else [f"domain{j}" for j in range(n_domains)]
    if mixtures.ndim != 2 or mixtures.shape[1] != n_domains:
        raise ValueError(f"mixtures must be [K, {n_domains}], got {mixtures.shape}")
    if not (len(val_arrays) == len(bytes_per_token) == len(names) == n_domains):
        raise ValueError("train_arrays, val_arrays, bytes_per_token and domain_names need one entry per domain")
    if len(seeds) != len(mixtures):
        raise ValueError(f"need one seed per mixture: {len(seeds)} seeds for {len(mixtures)} mixtures")
    steps = tokens_per_proxy // preset.tokens_per_step
    if steps < 1:
        raise ConfigError(
            f"tokens_per_proxy {tokens_per_proxy} is less than one step of preset {preset.name!r} "
            f"({preset.tokens_per_step} tokens); raise it."
        )

    timer = timer if timer is not None else PhaseTimer()
    with timer.phase("device"):
        dev = pick_device(device)
        amp = autocast_dtype(dev, dtype)
        prepare_device(dev)
        if dev.type == "cpu" and cpu_kernels.library() is None:
            on_event(Message(f"Fused CPU kernels unavailable ({cpu_kernels.unavailable_reason()}); training with "
                             "plain PyTorch ops, which is slower.", level="warning"))
        peak = matmul_peak(dev, amp)
    sync = synchronizer(dev)
    with timer.phase("data", sync):
        available = available_windows(train_arrays, preset.seq_len)
        plans = [
            plan_proxy_data(w, steps * preset.batch_size, available, max_repetition, int(seed), preset.batch_size)
            for w, seed in zip(mixtures, seeds)
        ]
        for k, plan in enumerate(plans):
            if plan.n_sequences == 0:
                raise InfeasibleError(
                    f"Proxy {k}: its mixture's domains hold fewer than one batch of {preset.seq_len + 1}-token "
                    f"sequences under max_repetition {max_repetition}; raise [swarm] max_repetition or add data."
                )
        evaluator = Evaluator(names, val_arrays, bytes_per_token, preset.seq_len, eval_tokens_per_domain, eval_sets)
        _check_vocab(evaluator.windows, vocab_size)
        evaluator.prepare(dev)

    results: list[ProxyResult | None] = [None] * len(plans)
    groups: dict[int, list[int]] = {}
    for k, plan in enumerate(plans):
        groups.setdefault(plan.n_sequences // preset.batch_size, []).append(k)
    for group_steps, members in sorted(groups.items(), reverse=True):
        if group_steps < steps:
            on_event(Message(
                f"{len(members)} proxies train {group_steps} of {steps} steps: their domains run out of data "
                f"under max_repetition {max_repetition}.", level="warning"))
        compiled = _wants_compile(compile, dev, group_steps)
        n_stacks = 1 if compiled or dev.type != "cpu" else cpu_stacks(len(members), torch.get_num_threads())
        stacks = [list(part) for part in np.array_split(members, n_stacks)]
        with timer.phase("data", sync):
            batches = [StepBatches(SequenceBatcher(train_arrays, preset.seq_len, [plans[k] for k in part], preset.batch_size),
                                   vocab_size, dev) for part in stacks]
        progress = _StackedProgress(on_event, [len(part) for part in stacks])
        with timer.phase("model", sync):
            runs = [_BatchedRun(preset, vocab_size, [plans[k] for k in part], [int(seeds[k]) for k in part], batches[i],
                                evaluator, dev, amp, compiled, progress.sink(i), task, tokens_per_proxy, peak, part)
                    for i, part in enumerate(stacks)]
        sinks = [None if on_record is None else progress.record_sink(on_record, part) for part in stacks]
        start = time.perf_counter()
        trained = _side_by_side(runs, eval_every, sinks)
        _add_group_phases(timer, [run.phases for run in runs], time.perf_counter() - start)
        for part, part_results in zip(stacks, trained):
            for k, result in zip(part, part_results):
                result.index = int(k)
                result.batched_with = len(members)  # the stacks shared the machine: each proxy's share of the wall time
                if group_steps < steps:
                    result.note = (f"trained {result.tokens} of {result.requested_tokens} tokens: the mixture's "
                                   f"domains run out under max_repetition {max_repetition}")
                results[k] = result
    return results  # type: ignore[return-value]


def _add_group_phases(timer: PhaseTimer, stacks: list[dict[str, float]], wall: float) -> None:
    """A group's phases from its stacks' (trained side by side): the slowest stack's warm-up and
    evaluation, and the rest of the group's wall time as training steps."""
    other = 0.0
    for phase in ("warmup", "eval"):
        seconds = max(phases.get(phase, 0.0) for phases in stacks)
        timer.add(phase, seconds)
        other += seconds
    timer.add("train", wall - other)


def cpu_stacks(n_proxies: int, threads: int) -> int:
    """Stacks to train `n_proxies` in side by side on `threads` CPU threads (see MIN_PROXIES_PER_CPU_STACK)."""
    return max(1, min(threads, n_proxies // MIN_PROXIES_PER_CPU_STACK))


def _side_by_side(runs: list["_BatchedRun"], eval_every: int, sinks: list) -> list[list[ProxyResult]]:
    """Train the stacks concurrently, each on its own Python thread with its share of the torch
    threads (their ops and the kernels release the GIL); one stack trains on the calling thread."""
    if len(runs) == 1:
        return [runs[0].train(eval_every, sinks[0])]
    total = torch.get_num_threads()
    shares = [len(part) for part in np.array_split(np.arange(total), len(runs))]
    outputs: list = [None] * len(runs)
    errors: list[BaseException] = []

    def train(i: int) -> None:
        torch.set_num_threads(shares[i])
        try:
            outputs[i] = runs[i].train(eval_every, sinks[i])
        except BaseException as err:  # re-raised on the calling thread below
            errors.append(err)

    workers = [threading.Thread(target=train, args=(i,), name=f"proxy-stack-{i}", daemon=True) for i in range(len(runs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    torch.set_num_threads(total)
    if errors:
        raise errors[0]
    return outputs


class _StackedProgress:
    """One task's events from stacks trained side by side: one start, progress at the slowest
    stack's step with the stacks' throughputs added up, one finish; callbacks run one at a time."""

    def __init__(self, on_event: EventSink, sizes: list[int]):
        self.on_event, self.sizes = on_event, sizes
        self.lock = threading.Lock()
        self.started = False
        self.progress: dict[int, TaskProgress] = {}
        self.finished: dict[int, TaskFinished] = {}

    def sink(self, stack: int) -> EventSink:
        if len(self.sizes) == 1:
            return self.on_event
        return lambda event: self._handle(stack, event)

    def record_sink(self, on_record: RecordSink, members: list[int]) -> RecordSink:
        def record(i: int, rec: dict) -> None:
            with self.lock:
                on_record(int(members[i]), rec)
        return record

    def _handle(self, stack: int, event) -> None:
        with self.lock:
            if isinstance(event, TaskStarted):
                if not self.started:
                    self.started = True
                    self.on_event(event)
            elif isinstance(event, TaskProgress):
                self.progress[stack] = event
                if len(self.progress) == len(self.sizes):
                    self.on_event(self._merged_progress(event.task))
            elif isinstance(event, TaskFinished):
                self.finished[stack] = event
                if len(self.finished) == len(self.sizes):
                    self.on_event(self._merged_finish(event.task))
            else:
                self.on_event(event)

    def _merged_progress(self, task: str) -> TaskProgress:
        events = [self.progress[i] for i in range(len(self.sizes))]
        info = {"lr": events[0].info.get("lr"),
                "loss": sum(e.info.get("loss", 0.0) * n for e, n in zip(events, self.sizes)) / sum(self.sizes),
                "tokens_per_s": sum(e.info.get("tokens_per_s", 0.0) for e in events),
                "mfu": sum(e.info.get("mfu", 0.0) for e in events),
                **{key: {k: v for e in events for k, v in e.info.get(key, {}).items()}
                   for key in ("proxy_loss", "proxy_tokens_per_s")}}
        return TaskProgress(task, completed=min(e.completed for e in events), info=info)

    def _merged_finish(self, task: str) -> TaskFinished:
        infos = [self.finished[i].info for i in range(len(self.sizes))]
        train_time = max(i["train_time_s"] for i in infos)
        return TaskFinished(task, info={
            "proxies": sum(i["proxies"] for i in infos), "steps": infos[0]["steps"], "stacks": len(infos),
            "wall_time_s": max(i["wall_time_s"] for i in infos), "train_time_s": train_time,
            "eval_time_s": max(i["eval_time_s"] for i in infos), "compiled": any(i["compiled"] for i in infos),
            # every stack's tokens over the time the slowest took
            "tokens_per_s": sum(i["tokens_per_s"] * i["train_time_s"] for i in infos) / max(train_time, 1e-9),
            "mfu": sum(i["mfu"] * i["train_time_s"] for i in infos) / max(train_time, 1e-9),
        })


def _check_vocab(windows: Sequence[np.ndarray], vocab_size: int) -> None:
    for w in windows:
        if len(w) and (w.min() < 0 or w.max() >= vocab_size):
            raise DataError(f"Token ids outside 0..{vocab_size - 1} in the token store; rebuild it with this tokenizer.")


@functools.lru_cache(maxsize=None)
def matmul_peak(device: torch.device, amp: torch.dtype | None) -> float:
    """The device's measured matmul FLOP/s in the training dtype (cached per process)."""
    return measure_matmul_peak(device, amp or torch.float32, size=8192 if device.type == "cuda" else 1536)


def micro_batch_rows(preset: ProxyPreset, vocab_size: int, n_models: int, device: torch.device,
                     keeps_logits: bool) -> int:
    """Sequences per micro-batch so that K proxies' activations fit the activation budget: the
    largest divisor of the batch that fits, so every micro-batch has one shape (one compiled graph).
    Logits count only when the loss keeps them whole (`TorchOps.keeps_logits`)."""
    per_token = 4 * (preset.n_layers * (12 * preset.d_model + 4 * preset.d_ff) + (3 * vocab_size if keeps_logits else 0))
    budget = memory_budget(device, CPU_ACTIVATION_BUDGET_BYTES, GPU_ACTIVATION_FRACTION)
    fits = max(1, budget // (per_token * preset.seq_len * n_models))
    return max(rows for rows in range(1, preset.batch_size + 1) if preset.batch_size % rows == 0 and rows <= fits)


def _wants_compile(compile: bool | str, device: torch.device, steps: int) -> bool:
    if compile == "auto":
        has_compiler = device.type == "cuda" or shutil.which("cc") or shutil.which("g++")
        return bool(has_compiler) and steps >= COMPILE_MIN_STEPS.get(device.type, COMPILE_MIN_STEPS["cpu"])
    if isinstance(compile, bool):
        return compile
    raise ConfigError(f"compile must be true, false or \"auto\", not {compile!r}.")


class TrainingStep:
    """K stacked proxies of one preset and their optimiser, on a device, in a dtype.

    `step(batch, lr)` runs one optimiser step: forward and backward over micro-batches (compiled
    when `compiled`), per-proxy clipping and AdamW; it returns each proxy's loss [K] on the device
    without waiting for it. The model computes with the ops for the device (cpu_ops.ops_for).
    """

    def __init__(self, preset: ProxyPreset, vocab_size: int, seeds: Sequence[int], device: torch.device,
                 amp: torch.dtype | None, compiled: bool, on_event: EventSink = ignore):
        self.device, self.amp, self.compiled, self.on_event = device, amp, compiled, on_event
        self.model = StackedLlama(preset.llama_config(vocab_size), len(seeds), ops_for(device, compiled))
        self.model.init_weights(seeds)
        self.model.to(device)
        self.optimizer = make_optimizer(self.model, preset, device, amp)
        self.micro_rows = micro_batch_rows(preset, vocab_size, len(seeds), device, self.model.ops.keeps_logits)
        self.loss_fn = self.model.losses
        if compiled:
            use_persistent_compile_cache()
            # on a CPU, RoPE's complex multiply (cpu_ops) stays an eager kernel inside the compiled graph; that is intended
            warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
            self.loss_fn = torch.compile(self.model.losses, dynamic=False)  # one shape per run: no symbolic sizes

    def step(self, batch: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimiser step on sequences [K, B, T+1]; returns the per-proxy training loss [K]."""
        total = torch.zeros(self.model.n_models, device=self.device)
        for chunk in batch.split(self.micro_rows, dim=1):
            with autocast(self.device, self.amp):
                losses = self._losses(chunk).float()
            weight = chunk.shape[1] / batch.shape[1]
            (losses * weight).sum().backward()
            total += losses.detach() * weight
        self.optimizer.step(lr)
        self.optimizer.zero_grad()
        return total

    def finish(self) -> None:
        """Hand the model its float32 weights back (see optim.FusedCpuAdamW.finish)."""
        self.optimizer.finish()

    def _losses(self, chunk: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.loss_fn(chunk)
        try:
            return self.loss_fn(chunk)
        except Exception as err:  # a missing or broken compiler toolchain: train eagerly instead
            self.on_event(Message(f"torch.compile failed ({type(err).__name__}); training without it.", level="warning"))
            self.compiled = False
            self.loss_fn = self.model.losses
            return self.loss_fn(chunk)


class StepBatches:
    """The token batches [K, B, T+1] of every step of a run, on the device.

    On a GPU they go over a chunk of steps at a time (GPU_WINDOW_BYTES, or `chunk_bytes`; a short
    run's all at once, before the first step), and the next chunk is gathered on the host while
    the current one trains; no step waits on a copy. On a CPU each step's batch is gathered when it
    is needed and used where it lies.
    """

    def __init__(self, batcher: SequenceBatcher, vocab_size: int, device: torch.device, chunk_bytes: int | None = None):
        self.batcher, self.vocab_size, self.device = batcher, vocab_size, device
        bytes_per_step = 8 * batcher.domain_ids.shape[0] * batcher.batch_size * batcher.window
        budget = chunk_bytes if chunk_bytes is not None else GPU_WINDOW_BYTES if device.type == "cuda" else 0
        self.chunk_steps = max(1, budget // bytes_per_step)
        self.steps = batcher.steps
        prefetch = 1 < self.chunk_steps < self.steps
        self.gather = ThreadPoolExecutor(1, thread_name_prefix="step-batches") if prefetch else None
        self.next: Future | None = None
        self.chunk, self.loaded = -1, torch.empty(0)
        self._load(0)

    def __call__(self, step: int) -> torch.Tensor:
        chunk = step // self.chunk_steps
        if chunk != self.chunk:
            self._load(chunk)
        return self.loaded[step - chunk * self.chunk_steps]

    def close(self) -> None:
        if self.gather is not None:
            self.gather.shutdown(wait=True)

    def _load(self, chunk: int) -> None:
        host = self.next.result() if self.next is not None else self._host(chunk)
        self.chunk = chunk
        self.loaded = host.to(self.device, non_blocking=True) if self.device.type == "cuda" else host
        following = (chunk + 1) * self.chunk_steps
        self.next = self.gather.submit(self._host, chunk + 1) if self.gather is not None and following < self.steps else None

    def _host(self, chunk: int) -> torch.Tensor:
        """The batches of `chunk`'s steps, [steps, K, B, T+1], in pinned memory on a GPU's host."""
        steps = range(chunk * self.chunk_steps, min((chunk + 1) * self.chunk_steps, self.steps))
        tokens = np.stack([self.batcher.batch(step) for step in steps])
        if tokens.max() >= self.vocab_size:
            raise DataError(f"Token ids outside 0..{self.vocab_size - 1} in the token store; rebuild it with this tokenizer.")
        host = torch.from_numpy(tokens)
        return host.pin_memory() if self.device.type == "cuda" else host


class _LatestLoss:
    """Each proxy's mean loss over the last interval, read without waiting for the device: `stage`
    queues a copy to the host, `value` is the latest copy that has arrived (None before any)."""

    def __init__(self, device: torch.device, n_models: int):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(n_models, pin_memory=self.cuda)
        self.copied: torch.cuda.Event | None = None
        self.latest: list[float] | None = None

    def stage(self, losses: torch.Tensor, steps: int) -> None:
        if not self.cuda:
            self.latest = (losses.float() / steps).tolist()
            return
        if self.copied is not None:  # the previous copy is still on its way
            return
        self.host.copy_(losses / steps, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()

    def value(self) -> list[float] | None:
        if self.copied is not None and self.copied.query():
            self.latest, self.copied = self.host.tolist(), None
        return self.latest


class _BatchedRun:
    """One TrainingStep and its data and evaluation: proxies that share a step count.

    `phases` holds the seconds of its warm-up (first step), training steps and evaluations once trained."""

    def __init__(self, preset: ProxyPreset, vocab_size: int, plans: list[ProxyDataPlan], seeds: list[int],
                 batches: StepBatches, evaluator: Evaluator, device: torch.device, amp: torch.dtype | None,
                 compiled: bool, on_event: EventSink, task: str, requested_tokens: int, peak: float, members: list[int]):
        self.preset, self.vocab_size, self.plans, self.seeds = preset, vocab_size, plans, seeds
        self.members = [int(k) for k in members]  # each proxy's index among train_proxies' mixtures
        self.evaluator, self.device, self.amp, self.on_event, self.task = evaluator, device, amp, on_event, task
        self.requested_tokens, self.peak = requested_tokens, peak
        self.batches = batches
        self.training = TrainingStep(preset, vocab_size, seeds, device, amp, compiled, on_event)
        self.model = self.training.model
        self.flops_per_token = train_flops_per_token(self.model.config, preset.seq_len)
        self.phases: dict[str, float] = {}

    def train(self, eval_every: int, on_record: RecordSink | None) -> list[ProxyResult]:
        """Run every step, send curve points and progress; returns one result per proxy (final eval).

        The device is waited for only where a phase ends (after the first step, around evaluations,
        at the end); progress reads the loss without waiting (_LatestLoss)."""
        preset, model, steps = self.preset, self.model, self.batches.steps
        sync = synchronizer(self.device) or (lambda: None)
        interval_loss = torch.zeros(model.n_models, device=self.device)
        interval_steps = 0
        latest = _LatestLoss(self.device, model.n_models)
        metrics: list[dict[str, float]] = []
        train_loss: list[float] = []
        phases = {"warmup": 0.0, "train": 0.0, "eval": 0.0}
        self.on_event(TaskStarted(self.task, total=steps, unit="steps"))
        start = last_progress = clock = time.perf_counter()
        model.train()
        for step in range(steps):
            lr = lr_at(step, steps, preset)
            interval_loss += self.training.step(self.batches(step), lr)
            interval_steps += 1
            done = step + 1
            if step == 0:
                sync()
                clock = self._lap(phases, "warmup", clock)
            if (eval_every and done % eval_every == 0) or done == steps:
                sync()
                clock = self._lap(phases, "train" if step else "warmup", clock)
                train_loss = (interval_loss / interval_steps).tolist()
                interval_loss.zero_()
                interval_steps = 0
                metrics = self.evaluator.evaluate(model, self.device, self.amp)
                if on_record is not None:
                    for k in range(model.n_models):
                        on_record(k, {"step": done, "tokens": done * preset.tokens_per_step,
                                      "train/loss": train_loss[k], "lr": lr, **metrics[k]})
                clock = self._lap(phases, "eval", clock)
            now = time.perf_counter()
            if now - last_progress >= PROGRESS_SECONDS or done == steps:
                if interval_steps:
                    latest.stage(interval_loss, interval_steps)
                losses = latest.value() if interval_steps else list(train_loss)
                throughput = self._throughput(done, now - start - phases["eval"])
                self.on_event(TaskProgress(self.task, completed=done, info={
                    # each proxy's own figures, by its index among the mixtures: its loss since the last report, its tokens/s
                    **({"loss": float(np.mean(losses)), "proxy_loss": dict(zip(self.members, losses))} if losses else {}),
                    "lr": lr, **throughput,
                    "proxy_tokens_per_s": {k: throughput["tokens_per_s"] / model.n_models for k in self.members}}))
                last_progress = now
        wall = time.perf_counter() - start
        self.batches.close()
        self.training.finish()
        self.phases = phases
        train_time = wall - phases["eval"]
        self.on_event(TaskFinished(self.task, info={
            "proxies": model.n_models, "steps": steps, "stacks": 1, "wall_time_s": wall, "train_time_s": train_time,
            "eval_time_s": phases["eval"], "compiled": self.training.compiled,
            **self._throughput(steps, train_time)}))
        return [self._result(k, train_loss[k], metrics[k], wall) for k in range(model.n_models)]

    @staticmethod
    def _lap(phases: dict[str, float], phase: str, since: float) -> float:
        now = time.perf_counter()
        phases[phase] += now - since
        return now

    def _throughput(self, steps_done: int, train_seconds: float) -> dict[str, float]:
        """Tokens/s over all proxies and model FLOPs utilisation against the measured matmul peak."""
        tokens_per_s = steps_done * self.preset.tokens_per_step * self.model.n_models / max(train_seconds, 1e-9)
        return {"tokens_per_s": tokens_per_s, "mfu": tokens_per_s * self.flops_per_token / self.peak}

    def _result(self, k: int, train_loss: float, metrics: dict[str, float], wall: float) -> ProxyResult:
        names = self.evaluator.domain_names
        tokens = self.batches.steps * self.preset.tokens_per_step
        per_domain = self.plans[k].sequences_per_domain(len(names)) * self.preset.seq_len
        return ProxyResult(
            index=k, seed=self.seeds[k], tokens=tokens, requested_tokens=self.requested_tokens,
            tokens_per_domain={name: int(n) for name, n in zip(names, per_domain)}, steps=self.batches.steps,
            metrics=metrics, final_train_loss=train_loss, wall_time_s=wall, batched_with=self.model.n_models,
            flops=self.flops_per_token * tokens, model=self.model, model_index=k)
