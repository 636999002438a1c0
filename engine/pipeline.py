"""The headless main job, end to end: what `olmix-tui DIR --batch` runs.

Today: tokenize every domain (current and staged) and compute the natural distribution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.events import EventSink, Message, ignore
from engine.project import Project


@dataclass
class BatchReport:
    domains: list[dict]
    prior: dict[str, float]
    tokenizer: str
    vocab_size: int
    seconds: float

    def to_dict(self) -> dict:
        return {"domains": self.domains, "prior": self.prior, "tokenizer": self.tokenizer,
                "vocab_size": self.vocab_size, "seconds": self.seconds}


def run_batch(project: Project, on_event: EventSink = ignore) -> BatchReport:
    start = time.perf_counter()
    on_event(Message(f"project {project.settings.project.name}: {len(project.domains)} domains"))
    tokens = project.tokens(on_event=on_event)
    tokenizer = project.tokenizer()
    prior = project.prior(tokens)
    domains = [
        {"name": name, "train_tokens": t.train_tokens, "val_tokens": t.val_tokens,
         "bytes_per_token": t.bytes_per_token, "prior": prior.get(name)}
        for name, t in tokens.items()
    ]
    return BatchReport(domains, prior, tokenizer.fingerprint, tokenizer.vocab_size, time.perf_counter() - start)
