"""What `status` reports about a project: domains with token counts and prior, current mixture,
pending update. Plain data, rendered by the CLI (table or JSON) and later the TUI."""

from __future__ import annotations

from engine.history import read_history
from engine.project import Project


def project_status(project: Project) -> dict:
    cached = project.cached_tokens()
    tokenized = all(t is not None for t in cached.values()) and bool(cached)
    total = sum(t.train_tokens for t in cached.values() if t is not None)
    history = read_history(project)
    current = history[-1].mixture if history else None
    domains = []
    for d in project.domains:
        t = cached[d.name]
        domains.append({
            "name": d.name,
            "sources": list(d.sources),
            "revision": d.revision,
            "parent": d.parent,
            "train_tokens": t.train_tokens if t else None,
            "val_tokens": t.val_tokens if t else None,
            "train_bytes": t.train_bytes if t else None,
            "bytes_per_token": t.bytes_per_token if t else None,
            "prior": (t.train_tokens / total) if (t and tokenized) else None,
            "weight": current.get(d.name) if current else None,
        })
    pending = None
    if project.pending:
        affected = project.affected()
        pending = {"changes": [c.describe() for c in project.pending], **affected.to_dict()}
    return {
        "project": project.settings.project.name,
        "root": str(project.root),
        "tokenized": tokenized,
        "train_tokens": total if tokenized else None,
        "domains": domains,
        "current_mixture": current,
        "history_entries": len(history),
        "last_entry": history[-1].label if history else None,
        "pending": pending,
    }
