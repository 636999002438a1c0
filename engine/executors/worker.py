"""The proxy-training worker: trains a batch of a swarm's runs in one process and writes their files.

    python -m engine.executors.worker SWARM_DIR [--device cpu|cuda:N] [--threads N] RUN [RUN ...]

Every executor starts this same command (locally, in a Slurm job, in a Ray task). It reads the
swarm spec, the project's token store and (for eval sets) its tokenizer, not the whole project;
trains the runs together as one batched computation; rewrites each run's status.json with
progress (atomically, about once a second); appends curve points to metrics.jsonl; prints the
trainer's notes to its output (the executor's log) with what it trained and how each run ended;
and ends each run as `done` (metrics, realised tokens) or `failed` (the error). It records itself
as a job of the project (engine.executors.jobs) and exits at once on SIGTERM (`olmix-tui stop`),
leaving its runs to read as interrupted. Exit code 0 when every run finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path

import numpy as np

from engine.data.store import TokenStore
from engine.data.tokenizer import load_tokenizer
from engine.errors import DataError, OlmixError, storage_error
from engine.events import Event, Message, TaskProgress, TaskStarted
from engine.executors import jobs
from engine.executors.liveness import owner_alive, process_start
from engine.runs import SwarmDir
from engine.settings import read_settings


def load_inputs(swarm: SwarmDir):
    """Leaf token data (exactly the store entries the swarm was planned on), the proxy preset, and
    the eval sets tokenized with the project's tokenizer."""
    from engine.training.evaluate import load_eval_set, tokenize_eval_set
    from engine.training.presets import get_preset

    spec = swarm.spec
    root = swarm.path.parent.parent
    store = TokenStore.of_project(root)
    data = []
    for leaf in spec.leaves:
        tokens = store.load(leaf, spec.data.keys[leaf])
        if tokens is None:
            raise DataError(f"the token store has no entry for domain '{leaf}' as planned; run `olmix-tui tokenize {root}`.")
        data.append(tokens)
    preset = get_preset(spec.proxy.preset)
    eval_sets = []
    if spec.data.eval_sets:
        tokenizer = load_tokenizer(root, read_settings(root).tokenizer)
        if tokenizer is None:
            raise DataError(f"the project's tokenizer is not trained; run `olmix-tui tokenize {root}`.")
        eval_sets = [tokenize_eval_set(load_eval_set(root / path, name), tokenizer.encode, tokenizer.eos_id, preset.seq_len)
                     for name, path in sorted(spec.data.eval_sets.items())]
    return data, preset, eval_sets


def train_runs(swarm: SwarmDir, runs: list[str], device: str = "auto", threads: int = 0) -> bool:
    """Train `runs` of `swarm` together; returns True when all finished."""
    import torch

    from engine.training.trainer import train_proxies

    if threads:
        torch.set_num_threads(threads)
    # the owner that started this worker, if any: a Slurm job, a Ray driver (engine.executors.ray)
    swarm.mark_running(runs, os.getpid(), os.environ.get("SLURM_JOB_ID"), os.environ.get("OLMIX_RAY_DRIVER"),
                       started=process_start(os.getpid()))
    print(f"worker {os.getpid()} on {socket.gethostname()}: training {len(runs)} run(s) of swarm {swarm.id} together on "
          f"{device} ({torch.get_num_threads()} threads): {', '.join(runs)}", flush=True)
    spec = swarm.spec
    try:
        data, preset, eval_sets = load_inputs(swarm)
        statuses = [swarm.status(r) for r in runs]
        unit_weights = np.array([[s.weights[u] for u in spec.units] for s in statuses])
        proxy = spec.proxy

        total_steps = {"steps": 1.0}

        def on_event(event: Event) -> None:
            if isinstance(event, TaskStarted) and event.total:
                total_steps["steps"] = event.total
            elif isinstance(event, TaskProgress):  # each run's own loss and tokens/s (the trainer's per-proxy figures)
                progress = min(event.completed / total_steps["steps"], 0.999)
                losses, rates = event.info.get("proxy_loss", {}), event.info.get("proxy_tokens_per_s", {})
                for k, r in enumerate(runs):
                    swarm.write_status(r, progress=progress, loss=losses.get(k), tokens_per_s=rates.get(k),
                                       mfu=event.info.get("mfu"))
            elif isinstance(event, Message):  # into the worker's log (.olmix/logs/...)
                print(f"{event.level}: {event.text}", flush=True)

        results = train_proxies(
            preset, spec.data.vocab_size, unit_weights @ spec.expand.T,
            [d.train for d in data], [d.val for d in data], [d.bytes_per_token for d in data],
            proxy.tokens_per_proxy, [s.seed for s in statuses], proxy.max_repetition,
            domain_names=spec.leaves, eval_sets=eval_sets, eval_tokens_per_domain=proxy.eval_tokens_per_domain,
            eval_every=proxy.eval_every, device=device, dtype=proxy.dtype, on_event=on_event,
            on_record=lambda k, rec: swarm.append_metrics(runs[k], rec), task=f"runs {runs[0]}..",
        )
    except Exception as err:  # the worker must record any failure in the run files, then exit non-zero
        problem = storage_error(err) if isinstance(err, OSError) else err if isinstance(err, OlmixError) else None
        message = str(problem) if problem is not None else f"{type(err).__name__}: {err}"
        traceback.print_exc()
        record_failure(swarm, runs, message)
        print(f"{len(runs)} run(s) failed: {message}", flush=True)
        return False
    owner = (spec.expand > 0).astype(float)  # [m, u]: which unit each leaf belongs to
    for r, res in zip(runs, results):
        leaf_tokens = np.array([res.tokens_per_domain[leaf] for leaf in spec.leaves], dtype=float)
        realised = (leaf_tokens / leaf_tokens.sum()) @ owner
        swarm.write_status(
            r, state="done", progress=1.0, metrics=res.metrics, tokens=res.tokens, flops=res.flops,
            realised_tokens=dict(zip(spec.leaves, map(int, leaf_tokens))),
            realised_weights=dict(zip(spec.units, map(float, realised))),
            final_train_loss=res.final_train_loss, wall_time_s=res.wall_time_s / res.batched_with, note=res.note,
        )
        headline = ", ".join(f"{name} {value:.4f}" for name, value in sorted(res.metrics.items()) if name.startswith("eval:"))
        print(f"{r}: done, {res.tokens:,} tokens in {res.wall_time_s:.1f}s (trained with {res.batched_with - 1} other(s)), "
              f"final train loss {res.final_train_loss:.4f}" + (f"; {headline}" if headline else "")
              + (f"; {res.note}" if res.note else ""), flush=True)
    return True


def record_failure(swarm: SwarmDir, runs: list[str], message: str) -> None:
    """Mark `runs` failed with `message`; where a status file cannot be written (a full disk), say so
    in the log, and the scheduler marks the runs failed when it sees the worker exit."""
    for r in runs:
        try:
            swarm.write_status(r, state="failed", error=message)
        except (OSError, OlmixError) as err:
            try:
                print(f"error: could not record the failure of run {r} in its status.json ({err}); the failure was: "
                      f"{message}", flush=True)
            except OSError:
                pass  # the log is on the same full disk: the exit code is all that is left


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.executors.worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("swarm", type=Path)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        swarm = SwarmDir(args.swarm, owner_alive)
        if not swarm.spec.trained_here:
            raise OlmixError(f"{swarm.path} is an imported swarm: it has no runs to train here.")
    except OlmixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # stopped (`olmix-tui stop`, scancel): exit at once; the runs read as interrupted (their owner is gone)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    label = f"worker training {len(args.runs)} run(s) of swarm {swarm.id}"
    with jobs.job(swarm.path.parent.parent, "worker", label, swarm.id, args.runs):
        return 0 if train_runs(swarm, args.runs, args.device, args.threads) else 1


if __name__ == "__main__":
    sys.exit(main())
