"""benchmarks/swarm_throughput.py runs end to end and reports its figures as JSON."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "swarm_throughput.py"


def test_swarm_throughput_quick_mode_reports_figures():
    """Two threads: arms (a) and (b) in this process, (c) and (a') in one single-threaded process each."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "2"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["quick"] is True and figures["device"] == "cpu" and figures["threads"] == 2
    for key in ("baseline_tokens_per_s", "batched_tokens_per_s", "speedup", "matmul_peak_flops", "flops_per_token",
                "per_core_batched_tokens_per_s", "per_core_baseline_tokens_per_s"):
        assert figures[key] > 0, key
    assert figures["per_core_processes"] == 2
    assert 0 < figures["baseline_mfu"] < 1 and 0 < figures["batched_mfu"] < 1
    assert figures["floor_met"] == (figures["speedup"] >= figures["speedup_floor"])
    for arm in ("(a) one at a time", "(b) batched trainer", "(c) batched trainer", "(a') reference"):
        assert any(line.startswith(arm) for line in lines), arm
