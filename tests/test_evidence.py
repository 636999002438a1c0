"""No path from a fit to a mixture passes an unusable fit without saying so: the main job's first
mixture, its update and the update's full recomputation (--compare), `propose` (and --force), and
what a weak fit, an imported swarm without token counts and a proposal without KL or caps record.
Real training (tiny proxies), real fits, real convex solves."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine import pipeline
from engine.data.store import natural_prior
from engine.domains import Change, affected_set
from engine.history import read_history
from engine.mixture_table import read_tables
from engine.project import Project
from engine.reuse import incumbent_mixture
from engine.settings import ProposeSettings
from olmix_tui import render
from olmix_tui.cli import app

REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_main_job_falls_back_on_unusable_fits_and_says_what_would_fix_them(small_project):
    """Three runs per swarm can show no signal: the first mixture is the natural distribution, the
    update keeps the incumbent (the current mixture, the new domain at 0: the very mixture --compare
    measures as the incumbent), and so does the full recomputation under --compare; history, diff
    and the report say so."""
    root = small_project.root
    small_project.stage(Change("remove", "decimal"))
    r = invoke("run", root, "--batch", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)["updates"][0]
    project = Project.load(root)
    natural = natural_prior(project.tokens(project.domains))
    assert first["evidence"]["action"] == "fallback" and first["evidence"]["fallback"] == "natural"
    assert first["evidence"]["verdict"]["verdict"] == "unusable" and first["proposal"] is None
    mix = first["mixture"]  # the natural distribution over the three domains of the time
    assert set(mix) == {"code", "notes", "decimal"} and first["predicted"] is None
    assert mix["code"] / mix["notes"] == pytest.approx(natural["code"] / natural["notes"], rel=1e-6)
    assert first["evidence"]["verdict"]["fix"].startswith("Train more runs")
    project.stage(Change("add", "decimal", sources=("data/decimal/*.txt",)))
    ctx = pipeline.update_context(project)
    incumbent = incumbent_mixture(affected_set(ctx.before, ctx.after), ctx.current, ctx.prior, ctx.leaves)
    assert incumbent["decimal"] == 0 and incumbent["code"] / incumbent["notes"] == pytest.approx(
        ctx.current["code"] / ctx.current["notes"])
    r = invoke("run", root, "--batch", "--compare", "--seeds", "1")
    assert r.exit_code == 0, r.output
    assert "fell back to the incumbent mixture" in r.output and "fix: Train more runs" in r.output
    entry = read_history(Project.load(root))[-1].content
    for record in (entry, entry.compare.full):
        assert record.evidence.action == "fallback" and record.evidence.fallback == "incumbent"
        assert record.mixture == pytest.approx(incumbent) and record.evidence.reason.startswith("the fit is unusable")
    assert entry.compare.incumbent == pytest.approx(incumbent)
    measured = entry.compare.verification.measured  # both arms kept the incumbent: one mixture, verified once
    assert measured["incumbent"] == measured["full"] == measured["chosen"]
    assert all(f"chosen - {other}: the same mixture, trained once" in r.output for other in ("full", "incumbent"))
    verify = pipeline.open_swarm(Project.load(root), entry.compare.verification.swarm)
    assert verify.spec.labels == ["chosen"] and len(verify.run_ids) == 1
    rows = render.history_rows(read_history(Project.load(root)))  # what `history` and the Mixtures tab show
    assert [row[render.HISTORY_COLUMNS.index("fit")] for row in rows] == [
        "unusable, took natural", "-", "unusable, kept incumbent"]
    diff = invoke("diff", root)
    assert diff.exit_code == 0 and diff.output.count("fell back") == 2 and "fit verdict: unusable" in diff.output


def test_force_proposes_from_an_unusable_fit_and_records_it(small_project):
    r = invoke("run", small_project.root, "--batch", "--force", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)["updates"][0]
    evidence = first["evidence"]
    assert evidence["action"] == "forced" and evidence["verdict"]["verdict"] == "unusable"
    assert "--force was given" in evidence["warnings"][0]
    assert first["proposal"]["proposer"] == "exact" and first["predicted"] is not None
    spread = evidence["spread"]  # a forced proposal still gets its bootstrap spread
    assert spread["replicates"] == small_project.settings.propose.bootstrap and set(spread["lower"]) == set(first["mixture"])
    assert render.history_rows(read_history(small_project))[0][render.HISTORY_COLUMNS.index("fit")] == "unusable, forced"


def test_propose_shows_the_fallback_and_force_proposes(small_project):
    """`propose` on a swarm whose fit is unusable: the first mixture's fallback (the project has no
    mixture yet), the fit's verdict and fix; --force proposes, with its intervals."""
    from conftest import plan_swarm

    swarm_dir, _ = plan_swarm(small_project)
    pipeline.train_swarm(small_project, swarm_dir)
    r = invoke("propose", small_project.root, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["evidence"]["action"] == "fallback" and out["evidence"]["fallback"] == "natural"
    assert out["mixture"] == pytest.approx(out["prior"]) and "proposer" not in out
    text = invoke("propose", small_project.root).output
    assert "fit verdict: unusable" in text and "fix: Train more runs" in text and "--force" in text
    r = invoke("propose", small_project.root, "--force", "--bootstrap", "20", "--json")
    forced = json.loads(r.stdout)
    assert forced["evidence"]["action"] == "forced" and forced["proposer"] == "exact"
    assert forced["evidence"]["spread"]["replicates"] == 20 and forced["mixture"] != pytest.approx(out["mixture"])
    text = invoke("propose", small_project.root, "--force", "--bootstrap", "20").output
    assert "95% interval" in text and "forced" in text


def _csvs(folder: Path, x: np.ndarray, y: np.ndarray, domains, metrics) -> tuple[Path, Path]:
    ratios, values = folder / "ratios.csv", folder / "metrics.csv"
    with ratios.open("w", newline="") as f:
        csv.writer(f).writerows([["run", *domains], *([f"r{i}", *row] for i, row in enumerate(x.tolist()))])
    with values.open("w", newline="") as f:
        csv.writer(f).writerows([["run", *metrics], *([f"r{i}", *row] for i, row in enumerate(y.tolist()))])
    return ratios, values


def test_a_weak_fit_proposes_with_a_warning_and_an_import_says_what_it_lacks(small_project, tmp_path):
    """One metric follows a log-linear law, the other is noise: the fit is weak, and the proposal
    carries that warning; imported without a prior or token counts, the swarm says its prior is its
    mean and its caps are off, and without KL the proposal says it has neither."""
    rng = np.random.default_rng(1)
    x = rng.dirichlet(np.ones(3), size=24)
    y = 1.5 + np.exp(x @ np.array([[-1.0, 0.5, 0.2], [0.3, -1.2, 0.1]]).T)
    y[:, 1] = y[:, 1].mean() + rng.normal(0, 0.1, 24)
    ratios, metrics = _csvs(tmp_path, x, y, ["web", "code", "books"], ["web/bpb", "code/bpb"])
    r = invoke("import-swarm", small_project.root, "--ratios", ratios, "--metrics", metrics, "--name", "weak")
    assert r.exit_code == 0 and "swarm's mean" in r.output and "repetition caps are off" in r.output
    r = invoke("propose", small_project.root, "--swarm", "weak", "--bootstrap", "0", "--json")
    evidence = json.loads(r.stdout)["evidence"]
    assert evidence["verdict"]["verdict"] == "weak" and evidence["action"] == "proposed"
    assert evidence["warnings"][0].startswith("the fit is weak") and any("caps are off" in w for w in evidence["warnings"])
    small_project.update_settings(propose=ProposeSettings(kl_reg=0.0, bootstrap=0))
    r = invoke("propose", small_project.root, "--swarm", "weak")
    assert "neither a KL pull" in r.output.replace("\n", " ")


@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").exists(), reason="RegMix data not present")
def test_import_with_token_counts_gives_the_prior_and_caps(small_project, tmp_path):
    """RegMix's released swarm with its domains' token shares: the prior and the caps follow from
    --tokens, nothing is left to warn about, and the default KL keeps a 0.2% domain from a quarter
    of the mixture."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.regmix_public import PRIOR

    domains = read_tables(REGMIX / "train_mixture_1m.csv").domains
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("domain,tokens\n" + "".join(f"train_{d},{p * 1e11:.0f}\n" for d, p in zip(domains, PRIOR)))
    r = invoke("import-swarm", small_project.root, "--ratios", REGMIX / "train_mixture_1m.csv", "--metrics",
               REGMIX / "train_pile_loss_1m.csv", "--tokens", tokens, "--name", "regmix", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["caveats"] == [] and info["prior"] == pytest.approx(dict(zip(domains, PRIOR)), rel=1e-6)
    assert info["tokens"]["the_pile_pile_cc"] == pytest.approx(PRIOR[domains.index("the_pile_pile_cc")] * 1e11)
    r = invoke("propose", small_project.root, "--swarm", "regmix", "--bootstrap", "0", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # the default objective (the mean of the 13 losses), no caps, the default KL
    assert out["evidence"]["warnings"] == [] and out["evidence"]["verdict"]["verdict"] == "usable"
    assert out["mixture"]["the_pile_enron_emails"] < 0.05 and out["mixture"]["the_pile_pile_cc"] > 0.05
    bad = tmp_path / "bad.csv"
    bad.write_text("the_pile_arxiv,1\nnot_a_domain,2\n")
    r = invoke("import-swarm", small_project.root, "--ratios", REGMIX / "train_mixture_1m.csv", "--metrics",
               REGMIX / "train_pile_loss_1m.csv", "--prior", bad, "--name", "bad")
    assert r.exit_code == 1 and "not_a_domain" in r.output and "not a domain of the swarm" in r.output


def test_a_fit_by_an_earlier_version_is_refitted_and_not_proposed_from(small_project, tmp_path):
    """A fit folder without evidence.npz and a verdict (written before verdicts existed): proposing
    from it is refused in one sentence, and fitting the swarm again replaces it."""
    import tomllib

    from engine.atomic import write_toml
    from engine.errors import OlmixError
    from engine.regression.store import EVIDENCE_FILE, FIT_FILE, load_fit

    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=24)
    y = 1.5 + np.exp(x @ np.array([[-1.0, 0.5, 0.2]]).T)
    ratios, metrics = _csvs(tmp_path, x, y, ["web", "code", "books"], ["web/bpb"])
    swarm = pipeline.import_swarm(small_project, ratios, metrics, name="old")
    fit = pipeline.fit_swarm(small_project, swarm, "loglinear")
    info = tomllib.loads((fit.folder / FIT_FILE).read_text())
    del info["verdict"]
    write_toml(fit.folder / FIT_FILE, info)
    (fit.folder / EVIDENCE_FILE).unlink()
    old = load_fit(fit.folder)
    assert old.verdict is None
    with pytest.raises(OlmixError, match=f"fit {fit.fit_id} was made by an earlier version.*fit the swarm again"):
        pipeline.preview_proposal(small_project, old, ProposeSettings(bootstrap=0))
    again = pipeline.fit_swarm(small_project, swarm, "loglinear")
    assert again.fit_id == fit.fit_id and not again.reused and again.verdict.verdict == "usable"
