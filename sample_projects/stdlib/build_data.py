"""Build the `stdlib` sample project's data from text that every installation of olmix-tui has.

Seven domains of different character (library code, test code, C headers, reference prose,
package notes, numeric data, markup/config data) and two held-out, task-like evaluation sets (code
completion on standard-library modules no domain trains on, prose completion on documentation
topics no domain trains on).

The text comes only from what no installation lacks: the standard library's own modules and pydoc's
topics, and olmix-tui's installed dependencies (their tests, headers, data files and descriptions);
never from the parts of Python that distributions package separately (the test suite, IDLE,
tkinter, Python's own C headers: Debian and Ubuntu ship them in other packages, and some builds
drop them), so the sample builds on system, conda and uv-managed Pythons alike. Deterministic for
given installed versions: every choice is made by a hash of a file's path inside its package.
Nothing third-party is copied into the repository: the files are made on the user's machine.

Usage: python build_data.py OUT_DIR   (olmix-tui init DIR --sample stdlib runs it for you)
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

STDLIB = Path(sysconfig.get_paths()["stdlib"])
DISTRIBUTIONS = ("torch", "transformers", "tokenizers", "numpy", "scipy", "scikit-learn", "lightgbm", "textual",
                 "textual-plotext", "plotext", "rich", "typer", "tomli-w")
"""olmix-tui's required dependencies (pyproject.toml): installed wherever the tool is."""
PACKAGES = ("torch", "torchgen", "transformers", "tokenizers", "numpy", "scipy", "sklearn", "lightgbm", "textual",
            "textual_plotext", "plotext", "rich", "typer", "tomli_w")
"""The import packages those distributions install, whose files the domains draw from."""
SKIP_DIRS = {
    "site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test",
    # packaged separately by some distributions (Debian: idle, python3-tk, python3-lib2to3,
    # python3-distutils, python3-venv), or the docs domain's own source (pydoc_data)
    "idlelib", "tkinter", "turtledemo", "lib2to3", "distutils", "ensurepip", "pydoc_data",
}
BUDGETS = {"code": 2_500_000, "tests": 2_000_000, "c": 900_000, "notes": 140_000, "decimal": 1_200_000,
           "markup": 450_000}
"""Bytes of text per domain: the sample's training time follows them."""
MAX_DATA_DOCUMENT = 65_536
"""Data and markup files are cut at a line near this many characters, so that no single table dominates."""
NUMERIC = set("0123456789.,;:+-eE()[]")
MARKUP_SUFFIXES = {".json", ".yaml", ".yml", ".toml", ".xml", ".html", ".css", ".tcss", ".scm", ".ini", ".cfg", ".arff"}
HELD_OUT_CODE = 0.04  # share of stdlib modules kept out of training for the code eval set
HELD_OUT_TOPICS = 0.15

Item = tuple[str, Callable[[], Optional[str]]]
"""A candidate document: its stable key (the path inside its package) and how to read it (None: not eligible)."""


def frac(key: str) -> float:
    """A stable pseudo-random number in [0, 1) from a string."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2**64


def read(path: Path) -> str:
    """The file's text (through a .gz), undecodable bytes replaced."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def read_utf8(path: Path) -> Optional[str]:
    """The file's text, or None when it is not UTF-8 text (binary data)."""
    try:
        text = (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).decode("utf-8")
    except (UnicodeDecodeError, OSError, EOFError):
        return None
    return None if "\x00" in text else text


def clip(text: str, limit: int = MAX_DATA_DOCUMENT) -> str:
    """The text up to the last line break before `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut + 1 if cut > 0 else limit]


def numeric_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c in NUMERIC for c in chars) / max(1, len(chars))


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def file_name(key: str) -> str:
    """A flat, unique file name for a document key: 'numpy/ma/README.rst' -> 'numpy__ma__README.rst.txt'."""
    flat = key.replace("/", "__")
    return flat if flat.endswith(".txt") else flat + ".txt"


def pick(candidates: list[Item], budget: int, salt: str = "") -> list[tuple[str, str]]:
    """(key, text) of eligible, non-empty candidates taken in hash order of their keys, each one whose
    text still fits in `budget` bytes (the first one always); sorted by key (deterministic)."""
    chosen, total = [], 0
    for key, load in sorted(candidates, key=lambda item: (frac(salt + item[0]), item[0])):
        text = load()
        if text is None or not text.strip():
            continue
        size = len(text.encode("utf-8"))
        if chosen and total + size > budget:
            continue
        chosen.append((key, text))
        total += size
        if total >= budget:
            break
    return sorted(chosen)


def documents(files: list[tuple[str, Path]], load: Callable[[Path], Optional[str]] = read) -> list[Item]:
    """The files as candidate documents, each read by `load` when a pick gets to it."""
    return [(key, partial(load, path)) for key, path in files]


def library_modules() -> list[tuple[str, Path]]:
    """(path relative to the standard library, path) of its modules, without the separately packaged parts."""
    out = []
    for p in STDLIB.rglob("*.py"):
        rel = p.relative_to(STDLIB)
        if not any(part in SKIP_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            out.append((rel.as_posix(), p))
    return sorted(out)


def package_files() -> list[tuple[str, Path]]:
    """(path inside the import package, e.g. 'numpy/linalg/tests/test_linalg.py', path) of every file the
    dependencies install; found through the import system, so it works without a RECORD file."""
    out = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for root in (spec.submodule_search_locations or []) if spec else []:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
                for f in files:
                    path = Path(folder) / f
                    out.append((f"{name}/{path.relative_to(root).as_posix()}", path))
    return sorted(out)


def suffix_of(key: str) -> str:
    """The file type, looking through a .gz: 'a/digits.csv.gz' -> '.csv'."""
    return Path(key[:-3] if key.endswith(".gz") else key).suffix


def build_code(out: Path) -> list[tuple[str, Path]]:
    """code:stdlib as JSON lines, one shard per top-level package (so it can be partitioned by glob).

    Every package gets its share of the budget, so every shard exists on every Python."""
    modules = library_modules()
    held_out = [(k, p) for k, p in modules if frac("eval:" + k) < HELD_OUT_CODE]
    held_keys = {k for k, _ in held_out}
    shards: dict[str, list[tuple[str, Path]]] = {}
    for key, path in modules:
        if key not in held_keys:
            shards.setdefault(key.split("/")[0] if "/" in key else "_modules", []).append((key, path))
    total = sum(p.stat().st_size for files in shards.values() for _, p in files)
    for shard, files in sorted(shards.items()):
        share = BUDGETS["code"] * sum(p.stat().st_size for _, p in files) / total
        texts = [text for _, text in pick(documents(files), share)]
        if texts:
            write_jsonl(out / "data" / "code" / f"{shard}.jsonl", texts)
    return held_out


def build_tests(out: Path, files: list[tuple[str, Path]], folder: str = "tests", salt: str = "") -> None:
    """code:tests as plain text files, one document per test module of the dependencies.

    With another `folder` and `salt`, a second selection of test modules: the new data a
    `domains revise` of code:tests points at in the walkthrough and the reuse benchmark."""
    tests = [(k, p) for k, p in files
             if k.endswith(".py") and ({"test", "tests"} & set(k.split("/")[:-1]) or p.name.startswith("test_"))]
    for key, text in pick(documents(tests), BUDGETS["tests"], salt):
        write_text(out / "data" / folder / file_name(key.removesuffix(".py")), text)


def build_headers(out: Path, files: list[tuple[str, Path]]) -> None:
    """code:c as JSON lines, C and C++ headers the dependencies install (their C APIs)."""
    headers = [(k, p) for k, p in files if suffix_of(k) in {".h", ".hpp", ".cuh"}]
    write_jsonl(out / "data" / "c" / "headers.jsonl", [t for _, t in pick(documents(headers), BUDGETS["c"])])


def build_docs(out: Path) -> list[tuple[str, str]]:
    """prose:docs as JSON lines, the reference topics shipped with pydoc; some held out for eval."""
    from pydoc_data.topics import topics

    train, held = [], []
    for name in sorted(topics):
        (held if frac("topic:" + name) < HELD_OUT_TOPICS else train).append((name, topics[name]))
    write_jsonl(out / "data" / "docs" / "topics.jsonl", [t for _, t in train])
    return held


def descriptions() -> list[Item]:
    """Each dependency's description: its README, as its METADATA carries it."""
    out: list[Item] = []
    for name in DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        out.append((f"{name}/description", partial(str, body)))
    return out


def prose(path: Path) -> Optional[str]:
    text = read_utf8(path)
    return text if text is not None and numeric_share(text) < 0.35 else None


def build_notes(out: Path, files: list[tuple[str, Path]]) -> None:
    """prose:notes as plain text: the dependencies' descriptions, and the change notes, READMEs and
    data-set cards they ship (license texts left out: a few templates, repeated)."""
    shipped = [(k, p) for k, p in files
               if suffix_of(k) in {".md", ".rst", ".txt"} and not p.name.startswith(("LICENSE", "COPYING"))]
    for key, text in pick(descriptions() + documents(shipped, prose), BUDGETS["notes"]):
        write_text(out / "data" / "notes" / file_name(key), text)


def numeric_table(path: Path) -> Optional[str]:
    text = read_utf8(path)
    return clip(text) if text is not None and len(text) >= 1000 and numeric_share(text) >= 0.5 else None


def build_decimal(out: Path, files: list[tuple[str, Path]]) -> None:
    """data:decimal as plain text: numeric tables and test vectors the dependencies ship (data sets,
    reference values of their numerical tests)."""
    tables = [(k, p) for k, p in files if suffix_of(k) in {".csv", ".dat", ".txt"}]
    for key, text in pick(documents(tables, numeric_table), BUDGETS["decimal"]):
        write_text(out / "data" / "decimal" / file_name(key), text)


def markup(path: Path) -> Optional[str]:
    text = read_utf8(path)
    return clip(text) if text is not None else None


def build_markup(out: Path, files: list[tuple[str, Path]]) -> None:
    """data:markup as JSON lines: JSON, YAML, ARFF, CSS, config and query files the dependencies ship."""
    marked_up = [(k, p) for k, p in files if suffix_of(k) in MARKUP_SUFFIXES]
    texts = [t for _, t in pick(documents(marked_up, markup), BUDGETS["markup"])]
    write_jsonl(out / "data" / "markup" / "fixtures.jsonl", texts)


def code_eval_items(held_out: list[tuple[str, Path]], per_file: int = 6) -> list[dict]:
    """Completion items from held-out modules: a function's signature and docstring -> its first body lines."""
    out = []
    for _, p in held_out:
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
                out.append({"context": context, "continuation": continuation})
    return out


def docs_eval_items(held: list[tuple[str, str]], per_topic: int = 8) -> list[dict]:
    """Completion items from held-out topics: 400 characters of prose -> the next 200."""
    out = []
    for _, text in held:
        for i in range(per_topic):
            start = i * 600
            context, continuation = text[start: start + 400], text[start + 400: start + 600]
            if len(continuation) >= 100:
                out.append({"context": context, "continuation": continuation})
    return out


def build(out: Path) -> None:
    out = Path(out)
    shipped = package_files()
    held_code = build_code(out)
    build_tests(out, shipped)
    build_tests(out, shipped, "tests-v2", salt="v2:")
    build_headers(out, shipped)
    held_topics = build_docs(out)
    build_notes(out, shipped)
    build_decimal(out, shipped)
    build_markup(out, shipped)
    evals = out / "evals"
    evals.mkdir(parents=True, exist_ok=True)
    for name, rows in (("code-completion", code_eval_items(held_code)), ("docs-completion", docs_eval_items(held_topics))):
        with open(evals / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
