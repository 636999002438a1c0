"""The command line: exit codes, --json, one-sentence errors, the DIR --batch spelling."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from olmix_tui.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_teaches_with_examples():
    for cmd in (["--help"], ["init", "--help"], ["status", "--help"], ["domains", "add", "--help"],
                ["domains", "partition", "--help"], ["tokenize", "--help"], ["run", "--help"]):
        r = invoke(*cmd)
        assert r.exit_code == 0, cmd
        assert "olmix-tui" in r.output


def test_init_status_domains_flow(small_project, tmp_path):
    root = small_project.root
    r = invoke("status", root, "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert [d["name"] for d in info["domains"]] == ["code", "decimal", "notes"]
    assert info["tokenized"] is False and info["pending"] is None
    assert invoke("tokenize", root).exit_code == 0
    info = json.loads(invoke("status", root, "--json").stdout)
    assert info["tokenized"] and abs(sum(d["prior"] for d in info["domains"]) - 1) < 1e-8
    r = invoke("domains", "remove", root, "decimal")
    assert r.exit_code == 0 and "removed: decimal" in r.output
    r = invoke("domains", "partition", root, "code", "--part", "code:json=data/code/json.jsonl",
               "--part", "code:email=data/code/email.jsonl")
    assert r.exit_code == 0, r.output
    info = json.loads(invoke("status", root, "--json").stdout)
    assert info["pending"]["partitioned"] == {"code": ["code:email", "code:json"]}
    assert info["pending"]["removed"] == ["decimal"]
    staged = json.loads(invoke("domains", "list", root, "--staged", "--json").stdout)
    assert [d["name"] for d in staged] == ["code:email", "code:json", "notes"]
    assert invoke("domains", "discard", root).exit_code == 0
    assert json.loads(invoke("status", root, "--json").stdout)["pending"] is None


@pytest.mark.parametrize("args, message", [
    (["domains", "remove", "{root}", "nope"], "unknown domain 'nope'"),
    (["domains", "add", "{root}", "x", "missing/*.txt"], "matches no file"),
    (["status", "{root}/nothing-here"], "olmix-tui init"),
    (["fit", "{root}"], "no swarm yet"),
    (["swarm", "status", "{root}", "--swarm", "nope"], "no swarm yet"),
    (["diff", "{root}", "1", "2"], "no history yet"),
    (["export", "{root}"], "no mixture yet"),
])
def test_user_errors_exit_1_with_one_sentence(small_project, args, message):
    r = invoke(*[a.format(root=small_project.root) for a in args])
    assert r.exit_code == 1
    assert message in r.output
    assert "Traceback" not in r.output


def test_usage_error_exits_2(small_project):
    assert invoke("domains", "partition", small_project.root, "code", "--part", "nonsense").exit_code == 2
    assert invoke("status").exit_code == 2


def test_console_script_dir_batch_spelling(small_project):
    env = {**os.environ, "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-c", "from olmix_tui.cli import main; main()", str(small_project.root),
                        "--batch", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {d["name"] for d in report["domains"]} == {"code", "decimal", "notes"}
    assert abs(sum(d["prior"] for d in report["domains"]) - 1) < 1e-8
    assert [u["entry"] for u in report["updates"]] == ["0001-initial"]
