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
    r = invoke("export", small_project.root, "--format", "yaml")
    assert r.exit_code == 2 and all(name in r.output for name in ("json", "olmo", "regmix"))


def test_console_script_dir_batch_spelling(small_project):
    env = {**os.environ, "COLUMNS": "120"}
    r = subprocess.run([sys.executable, "-c", "from olmix_tui.cli import main; main()", str(small_project.root),
                        "--batch", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {d["name"] for d in report["domains"]} == {"code", "decimal", "notes"}
    assert abs(sum(d["prior"] for d in report["domains"]) - 1) < 1e-8
    assert [u["entry"] for u in report["updates"]] == ["0001-initial"]


def _piped(*args) -> subprocess.CompletedProcess:
    """The console script with its output into a pipe (as in a script or a log), no terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TERM", "COLUMNS")}
    return subprocess.run([sys.executable, "-m", "olmix_tui", *map(str, args)], capture_output=True, text=True, env=env)


def test_piped_output_is_plain_text_with_its_square_brackets(tmp_path):
    """Into a pipe: no ANSI codes (plotext's "text saved in" included), and what sits in square
    brackets (a settings table, "[reused]") prints whole."""
    from app_fixture import build_fixture_project

    project = build_fixture_project(tmp_path / "fixture")
    first = _piped("fit", project.root, "--regressor", "loglinear")
    again = _piped("fit", project.root, "--regressor", "loglinear")
    for r in (first, again):
        assert r.returncode == 0, r.stderr
        assert "\x1b[" not in r.stdout + r.stderr and "text saved in" not in r.stdout
    assert "[reused]" in again.stdout
    (project.root / "olmix.toml").write_text((project.root / "olmix.toml").read_text().replace('preset = "cpu"', 'preset = "nope"'))
    r = _piped("status", project.root)
    assert r.returncode == 1 and "[proxy]" in r.stderr and "\x1b[" not in r.stderr


def test_swarm_plan_with_nothing_staged_says_so_in_one_sentence(tmp_path):
    from app_fixture import build_fixture_project

    project = build_fixture_project(tmp_path / "fixture")  # it has a mixture and nothing staged
    r = invoke("swarm", "plan", project.root)
    assert r.exit_code == 1 and "nothing to plan" in r.output and "domains add" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1 and "renormalise" not in r.output


def test_the_fit_you_chose_predicts_and_proposes(small_project, tmp_path):
    """`fit --regressor gp` with `proposer = "exact"` works; `fit` names the command that uses its fit;
    `predict` and `propose` use the swarm's latest fit (or --fit), the exact proposer falling back
    to simulation on a fit that is not log-linear, and saying so."""
    from conftest import plan_swarm
    from engine import pipeline

    swarm_dir, _ = plan_swarm(small_project)
    pipeline.train_swarm(small_project, swarm_dir)
    assert small_project.settings.propose.proposer == "exact"
    loglinear = json.loads(invoke("fit", small_project.root, "--regressor", "loglinear", "--json").stdout)["fit"]
    r = invoke("fit", small_project.root, "--regressor", "gp")
    assert r.exit_code == 0, r.output
    gp = r.output.split("next: olmix-tui propose ")[1].split("--fit ")[1].split()[0]
    (tmp_path / "c.csv").write_text("run,code,notes,decimal\nc1,0.4,0.3,0.3\n")
    predicted = json.loads(invoke("predict", small_project.root, "--mixtures", tmp_path / "c.csv", "--json").stdout)
    assert predicted["fit"] == gp
    r = invoke("propose", small_project.root, "--json", "--force")  # the small swarm's fits are unusable
    proposal = json.loads(r.stdout)
    assert proposal["fit"] == gp and proposal["proposer"] == "simulation" and "needs a log-linear fit" in proposal["note"]
    proposal = json.loads(invoke("propose", small_project.root, "--fit", loglinear, "--json", "--force").stdout)
    assert proposal["fit"] == loglinear and proposal["proposer"] == "exact" and not proposal["note"]
    r = invoke("propose", small_project.root, "--fit", "nope")
    assert r.exit_code == 1 and "fit 'nope' does not exist" in r.output and loglinear in r.output
