"""Comparing two mixtures across partitions: the parts are added up under the domain they were split
from, in the engine (compare.compare) and in `olmix-tui diff`, which finds the partitions in the
history entries between the two."""

import json

import pytest
from typer.testing import CliRunner

from engine import pipeline
from engine.compare import MixtureSide, compare
from engine.domains import AffectedRecord
from engine.history import EntryContent, write_entry
from engine.project import Project
from engine.reuse import PlanRecord
from olmix_tui.cli import app

FIRST = {"code": 0.6, "notes": 0.4}
SPLIT = {"code:a": 0.3, "code:b": 0.25, "notes": 0.45}  # code partitioned into code:a and code:b
RESPLIT = {"code:a1": 0.1, "code:a2": 0.15, "code:b": 0.3, "notes": 0.45}  # then code:a into code:a1, code:a2


def test_parts_are_added_up_under_their_parent_nested_too():
    partitions = {"code": ["code:a", "code:b"], "code:a": ["code:a1", "code:a2"]}
    result = compare(MixtureSide("first", FIRST), MixtureSide("resplit", RESPLIT), partitions)
    assert {x.domain: (x.a, x.b) for x in result.leaves} == pytest.approx({"code": (0.6, 0.55), "notes": (0.4, 0.45)})
    assert result.parts == {"code": ["code:a1", "code:a2", "code:b"]}
    assert result.l1 == pytest.approx(0.1)
    between = compare(MixtureSide("split", SPLIT), MixtureSide("resplit", RESPLIT), partitions)
    assert between.parts == {"code:a": ["code:a1", "code:a2"]}  # code:b is on both sides: compared as it is
    assert {x.domain for x in between.leaves} == {"code:a", "code:b", "notes"}
    plain = compare(MixtureSide("first", FIRST), MixtureSide("resplit", RESPLIT))  # no partitions known: leaf by leaf
    assert not plain.parts and len(plain.leaves) == 5


def test_diff_adds_up_the_parts_of_partitions_between_two_entries(tmp_path):
    project = Project.init(tmp_path / "p")
    for mixture, partitioned, kind in ((FIRST, {}, "initial"), (SPLIT, {"code": ["code:a", "code:b"]}, "partition"),
                                       (RESPLIT, {"code:a": ["code:a1", "code:a2"]}, "partition")):
        plan = PlanRecord("full_reuse" if partitioned else "full", affected=AffectedRecord(partitioned=partitioned))
        write_entry(project, EntryContent(plan, mixture, kind=kind))
    result = pipeline.diff_entries(project, "1", "3")
    assert result.parts == {"code": ["code:a1", "code:a2", "code:b"]}
    assert pipeline.diff_entries(project, "3", None).parts == {"code:a": ["code:a1", "code:a2"]}  # with the one before
    r = CliRunner().invoke(app, ["diff", str(project.root), "1", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parts"] == result.parts
    r = CliRunner().invoke(app, ["diff", str(project.root), "1", "3"])
    assert "code: code:a1 + code:a2 + code:b added up" in r.output
