"""Tokenization throughput of the token store on the stdlib sample project.

Builds the sample project in a temporary folder (or uses --project), then times
(a) a plain loop calling the tokenizer once per document (the idiomatic baseline), and
(b) the token store, which batches documents through the Rust tokenizer and streams to memmaps.
Prints MB/s and tokens/s of each; the last line is one JSON object with the figures.

Usage: python benchmarks/tokenize_throughput.py [--project DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from engine import samples
from engine.data.store import iter_documents
from engine.project import Project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, help="an existing project (default: a fresh stdlib sample)")
    args = ap.parse_args()
    tmp = None
    if args.project is None:
        tmp = Path(tempfile.mkdtemp(prefix="olmix-tok-"))
        project = samples.create(tmp / "p", "stdlib")
    else:
        project = Project.load(args.project)
    try:
        t0 = time.perf_counter()
        tokenizer = project.tokenizer()
        train_s = time.perf_counter() - t0
        docs = [d for dom in project.domains for d in iter_documents(project.root, dom, tokenizer.eos_id)]
        n_bytes = sum(len(d.encode()) for d in docs if isinstance(d, str))

        t0 = time.perf_counter()
        n_loop = sum(len(tokenizer.encode(d)) + 1 for d in docs if isinstance(d, str))
        loop_s = time.perf_counter() - t0

        shutil.rmtree(project.cache / "tokens", ignore_errors=True)
        t0 = time.perf_counter()
        tokens = project.tokens(project.domains)
        store_s = time.perf_counter() - t0
        n_store = sum(t.train_tokens + t.val_tokens for t in tokens.values())

        figures = {
            "bytes": n_bytes,
            "tokens": n_store,
            "threads": os.cpu_count(),
            "bpe_train_s": round(train_s, 2),
            "loop_mb_s": round(n_bytes / loop_s / 1e6, 3),
            "loop_tokens_s": round(n_loop / loop_s),
            "store_mb_s": round(n_bytes / store_s / 1e6, 3),
            "store_tokens_s": round(n_store / store_s),
            "store_speedup": round(loop_s / store_s, 2),
        }
        print(f"data: {n_bytes / 1e6:.1f} MB, {n_store:,} tokens in {len(docs)} documents, {os.cpu_count()} cores")
        print(f"BPE training ({project.settings.tokenizer.vocab_size} tokens): {train_s:.1f} s")
        print(f"(a) one encode() per document: {figures['loop_mb_s']:.2f} MB/s, {figures['loop_tokens_s']:,} tokens/s")
        print(f"(b) token store (batched, memmaps, split, counts): {figures['store_mb_s']:.2f} MB/s, "
              f"{figures['store_tokens_s']:,} tokens/s  ({figures['store_speedup']}x)")
        print(json.dumps(figures))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
