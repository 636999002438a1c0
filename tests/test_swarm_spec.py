"""swarm.toml as one typed record: planned swarms and verification runs built the same way, files
written by earlier versions still load, and a damaged file is named with the fix."""

import dataclasses
import tomllib

import numpy as np
import pytest

from conftest import plan_swarm
from engine import atomic, pipeline
from engine.errors import ConfigError
from engine.swarm_spec import ProxyScale, SwarmData, SwarmSpec

OLD_SWARM = """\
groups = []
leaves = ["code", "decimal", "notes"]
plan = "full"
purpose = "swarm"
runs = ["fd9f1707856f-0000", "fd9f1707856f-0001", "fd9f1707856f-0002"]
units = ["code", "decimal", "notes"]

[data]
vocab_size = 257

[data.eval_sets]

[data.keys]
code = "2d8717d1c59e"
decimal = "eaa64b21b46e"
notes = "1f30684fbaaf"

[prior]
code = 0.4982298
decimal = 0.25763025
notes = 0.24413995

[proxy]
chinchilla_multiple = 0.2
dtype = "auto"
eval_every = 0
eval_tokens_per_domain = 1024
flops_per_token = 3146496.0
max_repetition = 5.0
preset = "cpu"
seed = 0
tokens_per_proxy = 4096

[swarm]
dedup_tolerance = 1e-05
forced = []
grid = 0
max_repetition = 5.0
max_strength = 5.0
min_strength = 0.1
min_weight = 0.002
runs_per_domain = 4
sampler = "olmix"
seed = 42
size = 3
temperature = 1.0

[swarm.prior]
"""
"""A swarm.toml as the code before SwarmSpec wrote it (the test project's first swarm)."""

OLD_IMPORT = """\
plan = "import"
purpose = "import"
runs = ["r1", "r2"]
units = ["web", "code"]

[source]
metrics = "metrics.csv"
ratios = "ratios.csv"
"""


def test_files_written_before_the_typed_spec_load():
    spec = SwarmSpec.from_toml(tomllib.loads(OLD_SWARM), "old/swarm.toml")
    assert spec.purpose == "swarm" and spec.swarm.size == 3 and spec.proxy.tokens_per_proxy == 4096
    assert spec.data.keys["notes"] == "1f30684fbaaf" and spec.labels == [] and spec.expand.shape == (3, 3)
    imported = SwarmSpec.from_toml(tomllib.loads(OLD_IMPORT), "old/swarm.toml")
    assert not imported.trained_here and imported.source.ratios == "ratios.csv"
    np.testing.assert_array_equal(imported.expand, np.eye(2))


def test_a_round_trip_through_the_file_is_exact(tmp_path):
    spec = SwarmSpec.from_toml(tomllib.loads(OLD_SWARM), "old/swarm.toml")
    atomic.write_toml(tmp_path / "swarm.toml", spec.to_toml())
    assert SwarmSpec.read(tmp_path / "swarm.toml") == spec


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="red"), r"unknown key 'colour'"),
    (lambda d: d["proxy"].update(tokens_per_proxy="many"), r"\[proxy\].tokens_per_proxy must be an integer"),
    (lambda d: d["proxy"].pop("preset"), r"\[proxy\].preset is missing"),
    (lambda d: d.update(units=["code", "notes"]), r"units \['code', 'notes'\] are not the ones"),
    (lambda d: d["data"]["keys"].pop("notes"), r"leaf 'notes' has no token-store key"),
    (lambda d: d.update(purpose="nonsense"), r"purpose 'nonsense' is unknown"),
    (lambda d: d.update(groups=[{"name": "g", "ratios": {"code": 0.5, "decimal": 0.2}}]), r"groups do not fit the leaves"),
])
def test_a_damaged_spec_names_the_file_and_the_fix(change, message):
    data = tomllib.loads(OLD_SWARM)
    change(data)
    with pytest.raises(ConfigError, match=message) as err:
        SwarmSpec.from_toml(data, "swarms/x/swarm.toml")
    assert str(err.value).startswith("swarms/x/swarm.toml: ")


def test_swarms_and_verification_runs_share_one_builder(small_project):
    swarm_dir, swarm = plan_swarm(small_project)
    spec = swarm_dir.spec
    assert spec.purpose == "swarm" and spec.units == swarm.units and spec.runs == swarm_dir.run_ids
    assert isinstance(spec.proxy, ProxyScale) and isinstance(spec.data, SwarmData)
    ctx = pipeline.update_context(small_project)
    verify = pipeline.plan_verification(small_project, ctx, {"a": dict(ctx.prior), "b": {"code": 1.0}}, 2)
    v = verify.spec
    assert v.purpose == "verify" and v.labels == ["a", "b"] and v.units == v.leaves == spec.leaves
    assert (v.proxy, v.data, v.prior) == (spec.proxy, spec.data, spec.prior)  # what every run shares: built once
    assert [s.label for s in verify.statuses()] == ["a", "a", "b", "b"] and [s.seed for s in verify.statuses()] == [0, 1, 0, 1]
    assert dataclasses.replace(spec, swarm=None, purpose="verify", plan="verify", labels=["a", "b"],
                               units=v.units, runs=v.runs) == v
