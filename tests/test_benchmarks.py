"""The benchmark scripts stay in step with the engine they measure.

They run outside the test suite (minutes each; their figures are in docs/benchmarks.md), so a
change to an engine API they use must at least fail here, on import.
"""

import importlib
import pkgutil

import benchmarks


def test_every_benchmark_imports_against_the_current_engine():
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__, "benchmarks."))
    assert {"benchmarks.swarm_throughput", "benchmarks.mixture_value", "benchmarks.reuse_sequence"} <= set(names)
    for name in names:
        importlib.import_module(name)
