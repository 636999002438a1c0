"""olmix.toml's tables: every value no run could use is refused when the project loads, in one
sentence naming the file, the table, the key and the fix; older files keep loading."""

import re
import tomllib

import pytest

from engine.errors import ConfigError
from engine.project import Project
from engine.settings import ProposeSettings, RegressionSettings, Settings, SwarmSettings, usable_proposer


@pytest.mark.parametrize("text, message", [
    ("[proxy]\npreset = 'nope'\n", r"\[proxy\] preset 'nope' is unknown; use one of auto, cpu, gpu, regmix-1m, olmix-30m, olmix-60m\."),
    ("[proxy]\ndtype = 'bf16'\n", r"\[proxy\] dtype 'bf16' is unknown; use one of auto, float32, bfloat16\."),
    ("[proxy]\nchinchilla_multiple = -1\n", r"\[proxy\] tokens_per_proxy and chinchilla_multiple must be >= 0"),
    ("[executor]\ndevice = 'cuda:1'\n", r"\[executor\] device 'cuda:1' is unknown"),
    ("[executor]\npoll_seconds = 0\n", r"\[executor\] max_batch must be >= 1.*poll_seconds > 0"),
    ("[objective.weights]\n'code/bpb' = -1.0\n", r"\[objective\] weights must be finite, >= 0 and not all 0"),
    ("[reuse]\nvirtual_name = 'not a name'\n", r"\[reuse\] virtual_name: domain name 'not a name' is not valid"),
    ("[swarm]\nmin_weight = 2\n", r"\[swarm\] min_weight 2.0 must be in \[0, 1\)"),
    ("[reuse.swarm]\nvirtual_share = 1.0\n", r"\[reuse.swarm\] virtual_share is 1.0; use a share between 0 and 1"),
    ("[reuse.swarm]\nsize = -2\n", r"\[reuse.swarm\] runs_per_domain and size must be 0 \(automatic\) or positive"),
    ("[reuse.proposer]\nadd = 'best'\n", r"\[reuse.proposer\] add = 'best' is unknown; use one of exact, simulation, search"),
    ("[reuse.proposer]\nkl_centre = 'mean'\n", r"\[reuse.proposer\] kl_centre 'mean' is unknown; use one of prior, natural, current"),
    ("[regression]\nregressor = 'gp'\n[propose]\nproposer = 'simulation'\n[reuse.proposer]\nrevise = 'exact'\n",
     r"\[reuse.proposer\] revise = \"exact\" needs \[regression\] regressor = \"loglinear\""),
])
def test_a_value_no_run_could_use_fails_at_load_in_one_sentence(tmp_path, text, message):
    project = Project.init(tmp_path / "p")
    (project.root / "olmix.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        Project.load(project.root)
    text = str(err.value)
    assert text.startswith("olmix.toml: [") and text.endswith(".") and not re.search(r"\. [A-Z]", text), text  # one sentence


def test_the_old_project_seed_is_accepted_and_dropped(tmp_path):
    project = Project.init(tmp_path / "p")
    (project.root / "olmix.toml").write_text("[project]\nname = 'old'\nseed = 7\n")
    loaded = Project.load(project.root)
    assert loaded.settings.project.name == "old"
    with loaded.lock():
        loaded.save_settings()
    assert tomllib.loads((project.root / "olmix.toml").read_text())["project"] == {"name": "old"}


def test_the_old_absolute_huber_delta_is_accepted_and_dropped(tmp_path):
    """Earlier versions wrote [regression] loglinear_delta = 0.02 (absolute); the delta is now relative
    to each metric's spread (loglinear_relative_delta), so the old key is dropped, not misread."""
    project = Project.init(tmp_path / "p")
    (project.root / "olmix.toml").write_text("[regression]\nregressor = 'loglinear'\nloglinear_delta = 0.02\n")
    loaded = Project.load(project.root)
    assert loaded.settings.regression.loglinear_relative_delta == RegressionSettings().loglinear_relative_delta
    with loaded.lock():
        loaded.save_settings()
    assert "loglinear_delta" not in tomllib.loads((project.root / "olmix.toml").read_text())["regression"]


def test_tables_made_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="sampler 'uniform' is unknown"):
        SwarmSettings(sampler="uniform")
    with pytest.raises(ConfigError, match='proposer = "exact" needs'):
        Settings(regression=RegressionSettings(regressor="ridge"))


def test_the_exact_proposer_rule_lives_in_one_place():
    assert usable_proposer("exact", "loglinear") == ("exact", "")
    assert usable_proposer("search", "ridge") == ("search", "")
    proposer, note = usable_proposer("exact", "auto", "auto: gp+ridge")
    assert proposer == "simulation" and "needs a log-linear fit; this is auto: gp+ridge" in note


def test_update_settings_checks_across_tables_and_saves(small_project):
    settings = small_project.update_settings(propose=ProposeSettings(kl_reg=0.25))
    assert Project.load(small_project.root).settings.propose.kl_reg == 0.25 == settings.propose.kl_reg
    ridge = small_project.update_settings(propose=ProposeSettings(proposer="search"),
                                          regression=RegressionSettings(regressor="ridge"))
    assert ridge.regression.regressor == "ridge"
    with pytest.raises(ConfigError, match=r'^olmix.toml: \[propose\] proposer = "exact" needs'):
        small_project.update_settings(propose=ProposeSettings(proposer="exact"))
    assert Project.load(small_project.root).settings.propose.proposer == "search"  # nothing written


def test_reuse_tables_default_to_olmix_case_study_and_load_partially(tmp_path):
    project = Project.init(tmp_path / "p")
    (project.root / "olmix.toml").write_text("[reuse.swarm]\nvirtual_share = 0.9\n[reuse.proposer]\nadd = 'search'\n")
    reuse = Project.load(project.root).settings.reuse
    assert reuse.swarm.virtual_share == 0.9 and (reuse.swarm.min_strength, reuse.swarm.max_strength) == (1.0, 20.0)
    assert reuse.swarm.min_weight == 1e-4 and reuse.swarm.force_all and reuse.plan == "full_reuse"
    assert (reuse.proposer.add, reuse.proposer.revise, reuse.proposer.kl_centre) == ("search", "search", "prior")
    assert reuse.proposer.proposer_for(["add"], "exact") == ("search", "[reuse.proposer] add")
    assert reuse.proposer.proposer_for(["partition"], "exact") == ("exact", "[propose] proposer")
    assert reuse.proposer.proposer_for(["add", "partition"], "exact") == ("exact", "[propose] proposer")
    assert reuse.proposer.proposer_for(["add", "revise"], "exact") == ("search", "[reuse.proposer] add+revise")
