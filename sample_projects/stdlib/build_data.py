"""Build the `stdlib` sample project's data from text every Python installation ships.

Seven domains of different character (library code, test code, C headers, reference prose,
release notes, numeric test vectors, markup/config data) and two held-out, task-like evaluation
sets (code completion on modules no domain trains on, prose completion on documentation topics no
domain trains on). Deterministic for a given Python version: every choice is made by a hash of
the file's relative path. Nothing third-party is copied into the repository: the files are made on
the user's machine.

Usage: python build_data.py OUT_DIR   (olmix-tui init DIR --sample stdlib runs it for you)
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
from pathlib import Path

STDLIB = Path(sysconfig.get_paths()["stdlib"])
INCLUDE = Path(sysconfig.get_paths()["include"])
SKIP_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo", "ensurepip", "config-3"}
BUDGETS = {"code": 2_500_000, "tests": 2_000_000, "decimal": 1_200_000}
HELD_OUT_CODE = 0.04  # share of stdlib modules kept out of training for the code eval set
HELD_OUT_TOPICS = 0.15


def frac(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2**64


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def pick(files: list[Path], budget: int, base: Path, salt: str = "") -> list[Path]:
    """Files chosen by hash order until their sizes reach `budget` bytes (deterministic)."""
    chosen, total = [], 0
    files = [f for f in files if read(f).strip()]
    for f in sorted(files, key=lambda p: frac(salt + str(p.relative_to(base)))):
        if total >= budget:
            break
        chosen.append(f)
        total += f.stat().st_size
    return sorted(chosen)


def library_modules() -> list[Path]:
    out = []
    for p in STDLIB.rglob("*.py"):
        rel = p.relative_to(STDLIB)
        if not any(part in SKIP_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            out.append(p)
    return sorted(out)


def build_code(out: Path) -> list[Path]:
    """code:stdlib as JSON lines, one shard per top-level package (so it can be partitioned by glob)."""
    modules = library_modules()
    held_out = [p for p in modules if frac("eval:" + str(p.relative_to(STDLIB))) < HELD_OUT_CODE]
    train = pick([p for p in modules if p not in held_out], BUDGETS["code"], STDLIB)
    shards: dict[str, list[str]] = {}
    for p in train:
        rel = p.relative_to(STDLIB)
        shard = rel.parts[0] if len(rel.parts) > 1 else "_modules"
        shards.setdefault(shard, []).append(read(p))
    for shard, texts in shards.items():
        write_jsonl(out / "data" / "code" / f"{shard}.jsonl", texts)
    return held_out


def build_tests(out: Path, folder: str = "tests", salt: str = "") -> None:
    """code:tests as plain text files, one document per test module.

    With another `folder` and `salt`, a second selection of test modules: the new data a
    `domains revise` of code:tests points at in the walkthrough and the reuse benchmark."""
    files = [p for p in (STDLIB / "test").rglob("*.py") if "__pycache__" not in p.parts]
    for p in pick(files, BUDGETS["tests"], STDLIB, salt):
        name = str(p.relative_to(STDLIB / "test")).replace("/", "__")
        write_text(out / "data" / folder / (name[:-3] + ".txt"), read(p))


def build_headers(out: Path) -> None:
    """code:c as JSON lines, the C API headers."""
    headers = sorted(INCLUDE.rglob("*.h"))
    write_jsonl(out / "data" / "c" / "headers.jsonl", [read(p) for p in headers])


def build_docs(out: Path) -> list[tuple[str, str]]:
    """prose:docs as JSON lines, the reference topics shipped with pydoc; some held out for eval."""
    from pydoc_data.topics import topics

    train, held = [], []
    for name in sorted(topics):
        (held if frac("topic:" + name) < HELD_OUT_TOPICS else train).append((name, topics[name]))
    write_jsonl(out / "data" / "docs" / "topics.jsonl", [t for _, t in train])
    return held


def build_notes(out: Path) -> None:
    """prose:notes as plain text: IDLE's release notes, credits and help texts, and the license."""
    for p in sorted((STDLIB / "idlelib").glob("*.txt")) + [STDLIB / "LICENSE.txt"]:
        if p.exists():
            write_text(out / "data" / "notes" / p.name, read(p))


def build_decimal(out: Path) -> None:
    """data:decimal as plain text: the decimal arithmetic test vectors."""
    files = sorted((STDLIB / "test" / "decimaltestdata").glob("*.decTest"))
    for p in pick(files, BUDGETS["decimal"], STDLIB):
        write_text(out / "data" / "decimal" / (p.stem + ".txt"), read(p))


def build_markup(out: Path) -> None:
    """data:markup as JSON lines: XML, TOML, JSON, config and text fixtures of the test suite."""
    suffixes = {".xml", ".toml", ".json", ".cfg", ".ini", ".csv", ".html", ".xsl", ".dtd", ".txt"}
    files = sorted(
        p for p in (STDLIB / "test").rglob("*")
        if p.is_file() and p.suffix in suffixes and "decimaltestdata" not in p.parts and p.stat().st_size < 200_000
    )
    texts = [t for t in (read(p) for p in files) if t.strip()]
    write_jsonl(out / "data" / "markup" / "fixtures.jsonl", texts)


def code_eval_items(held_out: list[Path], per_file: int = 6) -> list[dict]:
    """Completion items from held-out modules: a function's signature and docstring -> its first body lines."""
    items = []
    for p in held_out:
        try:
            tree = ast.parse(read(p))
        except SyntaxError:
            continue
        lines = read(p).splitlines(keepends=True)
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.body]
        funcs = [f for f in funcs if (f.end_lineno or 0) - f.lineno >= 6][:per_file]
        for f in funcs:
            first_body = f.body[1] if ast.get_docstring(f) and len(f.body) > 1 else f.body[0]
            split = first_body.lineno - 1
            context = "".join(lines[max(0, f.lineno - 1 - 20): split])
            continuation = "".join(lines[split: min(split + 6, f.end_lineno or split + 6)])
            if context.strip() and continuation.strip():
                items.append({"context": context, "continuation": continuation})
    return items


def docs_eval_items(held: list[tuple[str, str]], per_topic: int = 8) -> list[dict]:
    """Completion items from held-out topics: 400 characters of prose -> the next 200."""
    items = []
    for _, text in held:
        for i in range(per_topic):
            start = i * 600
            context, continuation = text[start: start + 400], text[start + 400: start + 600]
            if len(continuation) >= 100:
                items.append({"context": context, "continuation": continuation})
    return items


def build(out: Path) -> None:
    out = Path(out)
    held_code = build_code(out)
    build_tests(out)
    build_tests(out, "tests-v2", salt="v2:")
    build_headers(out)
    held_topics = build_docs(out)
    build_notes(out)
    build_decimal(out)
    build_markup(out)
    evals = out / "evals"
    evals.mkdir(parents=True, exist_ok=True)
    for name, items in (("code-completion", code_eval_items(held_code)), ("docs-completion", docs_eval_items(held_topics))):
        with open(evals / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
