"""Importing a large swarm: `olmix-tui import-swarm` on RegMix-layout CSVs of many runs, then
`swarm status` and `fit`'s read of it, timed as a user runs them (separate processes).

The CSVs are made here: `--runs` mixtures over 17 domains (Dirichlet draws written with 6 decimals,
as RegMix's files are) and one loss per run, about 8 MB per 50k runs. Prints wall seconds and peak
memory of each command and the swarm folder's size on disk; the last line is one JSON object.

    python -m benchmarks.import_scale --runs 110000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.project import Project

DOMAINS = 17


def write_csvs(folder: Path, runs: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(DOMAINS), size=runs)
    ratios, metrics = folder / "ratios.csv", folder / "metrics.csv"
    with open(ratios, "w") as f:
        f.write("index," + ",".join(f"train_d{i}" for i in range(DOMAINS)) + "\n")
        for i, row in enumerate(weights):
            f.write(f"{i}," + ",".join(f"{x:.6f}" for x in row) + "\n")
    with open(metrics, "w") as f:
        f.write("index,metric/loss\n")
        for i in range(runs):
            f.write(f"{i},{3 + rng.random():.5f}\n")
    return ratios, metrics


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one olmix-tui command in its own process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "olmix_tui", *args], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=110_000)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="olmix-import-"))
    ratios, metrics = write_csvs(folder, args.runs)
    csv_mb = (ratios.stat().st_size + metrics.stat().st_size) / 2**20
    root = Project.init(folder / "proj").root
    out = {"runs": args.runs, "csv_mb": round(csv_mb, 1)}
    for name, command in (("import", ["import-swarm", str(root), "--ratios", str(ratios), "--metrics", str(metrics),
                                      "--name", "big"]),
                          ("status", ["swarm", "status", str(root), "--swarm", "big"])):
        seconds, peak_mb = timed(command)  # peak memory: the largest child so far
        out[f"{name}_s"], out[f"{name}_peak_mb"] = round(seconds, 1), round(peak_mb)
        print(f"{name:>7}: {seconds:6.1f} s, peak {peak_mb:6.0f} MB (largest process so far)")
    on_disk = sum(p.stat().st_size for p in (root / "swarms" / "big").rglob("*") if p.is_file()) / 2**20
    files = sum(1 for p in (root / "swarms" / "big").rglob("*") if p.is_file())
    out.update(swarm_mb=round(on_disk, 1), swarm_files=files)
    print(f"{args.runs} runs ({csv_mb:.1f} MB of CSV): the swarm folder holds {files} files, {on_disk:.1f} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
