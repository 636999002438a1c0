"""The proxy-training worker: trains batches of a swarm's runs and writes their files.

    python -m engine.executors.worker SWARM_DIR [--device cpu|cuda:N] [--threads N] RUN [RUN ...]
    python -m engine.executors.worker --serve [--device cpu|cuda:N]

The first form trains one batch and exits (a Slurm job, a Ray task). The second is a served
worker (the local executor's): it reads batches from stdin, one `BatchRequest` JSON line each,
trains them one after the other in the same process (torch imported, the device and its caches
warm once), sends each batch's output to the log the request names, and exits at the end of its
input, after the batch in hand. Either way the worker reads the swarm spec, the project's token
store and (for eval sets) its tokenizer, not the whole project; trains a batch's runs together as
one batched computation; rewrites each run's status.json with progress (atomically, about once a
second, from a thread of its own); appends curve points to metrics.jsonl; prints the trainer's
notes to its output (the log); and ends each run as `done` (metrics, realised tokens, the phases'
timing: engine.phases) or `failed` (the error). It records itself as a job of the project
(engine.executors.jobs) and exits at once on SIGTERM (`olmix-tui stop`), leaving its runs to read
as interrupted. Exit code 0 when every run finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.store import TokenStore
from engine.data.tokenizer import load_tokenizer
from engine.errors import DataError, OlmixError, storage_error
from engine.events import Event, Message, TaskProgress, TaskStarted
from engine.executors import jobs
from engine.executors.liveness import owner_alive, process_start
from engine.phases import PhaseTimer
from engine.runs import SwarmDir
from engine.settings import read_settings


@dataclass(frozen=True)
class BatchRequest:
    """One batch for a served worker: the swarm folder, its runs, the torch threads to train them
    with, and the log file the batch's output goes to."""

    swarm: str
    runs: list[str]
    threads: int
    log: str

    def to_line(self) -> str:
        return json.dumps(dataclasses.asdict(self)) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "BatchRequest":
        return cls(**json.loads(line))


def process_seconds() -> float:
    """Seconds since this process started (from /proc on Linux; 0 where that cannot be read)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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


class ProgressWriter:
    """Writes a batch's progress into its runs' status files from a thread of its own, the latest
    fields only: an atomic write (with its fsyncs) takes milliseconds per file, which the training
    loop does not wait for."""

    def __init__(self, swarm: SwarmDir, runs: list[str]):
        self.swarm, self.runs = swarm, runs
        self.pending: dict | None = None
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._write, name="progress-writer", daemon=True)
        self.thread.start()

    def post(self, fields: dict[str, dict]) -> None:
        """The latest fields of each run (run -> status fields)."""
        with self.changed:
            self.pending = fields
            self.changed.notify()

    def close(self) -> None:
        """Write what is pending, then stop."""
        with self.changed:
            self.closed = True
            self.changed.notify()
        self.thread.join()

    def _write(self) -> None:
        while True:
            with self.changed:
                while self.pending is None and not self.closed:
                    self.changed.wait()
                fields, self.pending = self.pending, None
            if fields is None:
                return
            for r in self.runs:
                self.swarm.write_status(r, **fields[r])


def train_runs(swarm: SwarmDir, runs: list[str], device: str = "auto", threads: int = 0,
               timer: PhaseTimer | None = None) -> bool:
    """Train `runs` of `swarm` together; returns True when all finished. `timer` may hold phases
    already spent for this batch (the worker's start); each run records its share of them all."""
    import torch

    from engine.training.trainer import train_proxies

    timer = timer if timer is not None else PhaseTimer()
    if threads:
        torch.set_num_threads(threads)
    with timer.phase("write"):
        # the owner that started this worker, if any: a Slurm job, a Ray driver (engine.executors.ray)
        swarm.mark_running(runs, os.getpid(), os.environ.get("SLURM_JOB_ID"), os.environ.get("OLMIX_RAY_DRIVER"),
                           started=process_start(os.getpid()))
    print(f"worker {os.getpid()} on {socket.gethostname()}: training {len(runs)} run(s) of swarm {swarm.id} together on "
          f"{device} ({torch.get_num_threads()} threads): {', '.join(runs)}", flush=True)
    spec = swarm.spec
    progress = ProgressWriter(swarm, runs)
    try:
        with timer.phase("data"):
            data, preset, eval_sets = load_inputs(swarm)
            statuses = [swarm.status(r) for r in runs]
            unit_weights = np.array([[s.weights[u] for u in spec.units] for s in statuses])
        proxy = spec.proxy

        total_steps = {"steps": 1.0}

        def on_event(event: Event) -> None:
            if isinstance(event, TaskStarted) and event.total:
                total_steps["steps"] = event.total
            elif isinstance(event, TaskProgress):  # each run's own loss and tokens/s (the trainer's per-proxy figures)
                done = min(event.completed / total_steps["steps"], 0.999)
                losses, rates = event.info.get("proxy_loss", {}), event.info.get("proxy_tokens_per_s", {})
                progress.post({r: {"progress": done, "loss": losses.get(k), "tokens_per_s": rates.get(k),
                                   "mfu": event.info.get("mfu")} for k, r in enumerate(runs)})
            elif isinstance(event, Message):  # into the worker's log (.olmix/logs/...)
                print(f"{event.level}: {event.text}", flush=True)

        results = train_proxies(
            preset, spec.data.vocab_size, unit_weights @ spec.expand.T,
            [d.train for d in data], [d.val for d in data], [d.bytes_per_token for d in data],
            proxy.tokens_per_proxy, [s.seed for s in statuses], proxy.max_repetition,
            domain_names=spec.leaves, eval_sets=eval_sets, eval_tokens_per_domain=proxy.eval_tokens_per_domain,
            eval_every=proxy.eval_every, device=device, dtype=proxy.dtype, on_event=on_event,
            on_record=lambda k, rec: swarm.append_metrics(runs[k], rec), task=f"runs {runs[0]}..", timer=timer,
        )
    except Exception as err:  # the worker must record any failure in the run files, then exit non-zero
        problem = storage_error(err) if isinstance(err, OSError) else err if isinstance(err, OlmixError) else None
        message = str(problem) if problem is not None else f"{type(err).__name__}: {err}"
        traceback.print_exc()
        progress.close()
        record_failure(swarm, runs, message)
        print(f"{len(runs)} run(s) failed: {message}", flush=True)
        return False
    with timer.phase("write"):
        progress.close()
        owner = (spec.expand > 0).astype(float)  # [m, u]: which unit each leaf belongs to
        finished = []
        for r, res in zip(runs, results):
            leaf_tokens = np.array([res.tokens_per_domain[leaf] for leaf in spec.leaves], dtype=float)
            realised = (leaf_tokens / leaf_tokens.sum()) @ owner
            finished.append(dict(
                state="done", progress=1.0, metrics=res.metrics, tokens=res.tokens, flops=res.flops,
                realised_tokens=dict(zip(spec.leaves, map(int, leaf_tokens))),
                realised_weights=dict(zip(spec.units, map(float, realised))),
                final_train_loss=res.final_train_loss, wall_time_s=res.wall_time_s / res.batched_with, note=res.note))
    timing = timer.shares(len(runs))
    for r, fields in zip(runs, finished):
        swarm.write_status(r, **fields, timing=timing)
    for r, res in zip(runs, results):
        headline = ", ".join(f"{name} {value:.4f}" for name, value in sorted(res.metrics.items()) if name.startswith("eval:"))
        print(f"{r}: done, {res.tokens:,} tokens in {res.wall_time_s:.1f}s (trained with {res.batched_with - 1} other(s)), "
              f"final train loss {res.final_train_loss:.4f}" + (f"; {headline}" if headline else "")
              + (f"; {res.note}" if res.note else ""), flush=True)
    return True


def open_swarm(path: Path) -> SwarmDir:
    """The swarm folder a batch names, if it is one this project trains (else an OlmixError)."""
    swarm = SwarmDir(path, owner_alive)
    if not swarm.spec.trained_here:
        raise OlmixError(f"{swarm.path} is an imported swarm: it has no runs to train here.")
    return swarm


def serve(device: str) -> int:
    """Train the batches read from stdin one after the other; 0 at the end of the input, 1 when a
    batch names no swarm to train (its runs stay with this worker, which the executor sees exit)."""
    started = PhaseTimer()
    started.add("start", process_seconds())
    with started.phase("imports"):
        import torch  # noqa: F401

        import engine.training.trainer  # noqa: F401
    ok = True
    while line := sys.stdin.readline():
        request = BatchRequest.from_line(line)
        _output_to(request.log)
        try:
            swarm = open_swarm(Path(request.swarm))
        except OlmixError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 1
        timer, started = started, PhaseTimer()  # the start and imports count with the first batch
        with jobs.job(swarm.path.parent.parent, "worker", _label(swarm, request.runs), swarm.id, request.runs):
            ok = train_runs(swarm, request.runs, device, request.threads, timer) and ok
        gc.collect()  # the last batch's models and optimiser state, before the next batch's
    return 0 if ok else 1


def _label(swarm: SwarmDir, runs: list[str]) -> str:
    return f"worker training {len(runs)} run(s) of swarm {swarm.id}"


def _output_to(log: str) -> None:
    """Send this process's stdout and stderr (Python's and the C libraries') to the file `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


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
    ap.add_argument("swarm", type=Path, nargs="?")
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--serve", action="store_true", help="train the batches read from stdin (BatchRequest lines)")
    args = ap.parse_intermixed_args(argv)
    # stopped (`olmix-tui stop`, scancel): exit at once; the runs read as interrupted (their owner is gone)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.serve:
        return serve(args.device)
    if args.swarm is None or not args.runs:
        ap.error("give a swarm folder and its runs, or --serve")
    started = PhaseTimer()
    started.add("start", process_seconds())
    try:
        swarm = open_swarm(args.swarm)
    except OlmixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with started.phase("imports"):
        import engine.training.trainer  # noqa: F401
    with jobs.job(swarm.path.parent.parent, "worker", _label(swarm, args.runs), swarm.id, args.runs):
        return 0 if train_runs(swarm, args.runs, args.device, args.threads, started) else 1


if __name__ == "__main__":
    sys.exit(main())
