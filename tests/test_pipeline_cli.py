"""The mixing loop from the command line: import, fit, propose, predict; batch with --compare;
history, diff and export. Real training (tiny proxies), real fits, real convex solves."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.domains import Change
from olmix_tui.cli import app

REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").exists(), reason="RegMix data not present")
def test_import_fit_propose_predict_on_regmix_data(small_project, tmp_path):
    root = small_project.root
    r = invoke("import-swarm", root, "--ratios", REGMIX / "train_mixture_1m.csv", "--metrics",
               REGMIX / "train_pile_loss_1m.csv", "--name", "regmix", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["runs"] == 512 and len(info["domains"]) == 17 and len(info["metrics"]) == 13
    r = invoke("fit", root, "--swarm", "regmix", "--regressor", "loglinear", "--json")
    assert r.exit_code == 0, r.output
    fit = json.loads(r.stdout)
    assert fit["cv"]["means"]["spearman"] > 80  # the log-linear law ranks held-out runs well
    again = json.loads(invoke("fit", root, "--swarm", "regmix", "--regressor", "loglinear", "--json").stdout)
    assert again["reused"] and again["fit"] == fit["fit"]
    r = invoke("propose", root, "--swarm", "regmix", "--json")
    assert r.exit_code == 0, r.output
    prop = json.loads(r.stdout)
    assert abs(sum(prop["mixture"].values()) - 1) < 1e-6 and prop["kkt_residual"] < 1e-5
    out = tmp_path / "pred.csv"
    r = invoke("predict", root, "--swarm", "regmix", "--mixtures", REGMIX / "test_mixture_1m.csv", "--out", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(out.open()))
    assert len(rows) == 257 and len(rows[0]) == 14
    with open(REGMIX / "test_mixture_1m.csv") as f:
        assert [row[0] for row in rows[1:]] == [row[0] for row in list(csv.reader(f))[1:]]  # input order


@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").exists(), reason="RegMix data not present")
def test_fit_on_too_few_runs_warns_and_keeps_json_strict(small_project, tmp_path):
    """24 runs over 17 domains: the log-linear law does far worse than the mean on held-out runs
    (R^2 < 0), and the fit's verdict says so and what would fix it; a metric constant over the runs
    has no Spearman or R^2, and --json prints null for them (strict JSON, no NaN)."""
    root = small_project.root
    for name in ("train_mixture_1m.csv", "train_pile_loss_1m.csv"):
        lines = (REGMIX / name).read_text().splitlines()[:25]
        if name.endswith("loss_1m.csv"):  # make the last metric constant
            lines = lines[:1] + [",".join(line.split(",")[:-1] + ["4.0"]) for line in lines[1:]]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    r = invoke("import-swarm", root, "--ratios", tmp_path / "train_mixture_1m.csv", "--metrics",
               tmp_path / "train_pile_loss_1m.csv", "--name", "few")
    assert r.exit_code == 0, r.output
    r = invoke("fit", root, "--swarm", "few", "--regressor", "loglinear")
    assert r.exit_code == 0, r.output
    assert "fit verdict:" in r.output and "worse than their mean" in r.output and "runs_per_domain" in r.output
    r = invoke("fit", root, "--swarm", "few", "--regressor", "loglinear", "--json")

    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    fit = json.loads(r.stdout, parse_constant=reject)
    per_metric = fit["cv"]["per_metric"]
    assert fit["verdict"]["verdict"] in ("weak", "unusable") and "Train more runs" in fit["verdict"]["fix"]
    assert sum(v["spearman"] is None for v in per_metric.values()) == 1
    assert min(v["r2"] for v in per_metric.values() if v["r2"] is not None) < 0


def test_import_rejects_bad_rows(small_project, tmp_path):
    (tmp_path / "r.csv").write_text("run,a,b\nx,0.5,0.6\n")
    (tmp_path / "m.csv").write_text("run,loss\nx,1.0\n")
    r = invoke("import-swarm", small_project.root, "--ratios", tmp_path / "r.csv", "--metrics", tmp_path / "m.csv")
    assert r.exit_code == 1 and "sum" in r.output and "Traceback" not in r.output
    assert not any(p.name.startswith(".") and p.is_dir() for p in (small_project.root / "swarms").iterdir())


def test_batch_compare_history_diff_export(small_project):
    root = small_project.root
    small_project.stage(Change("remove", "decimal"))
    r = invoke("run", root, "--batch", "--json")  # first mixture, then the removal (renormalise, no swarm)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    first, removal = report["updates"]
    assert first["entry"] == "0001-initial" and first["plan"]["kind"] == "full" and first["compute"]["runs"] == 3
    assert removal["plan"]["kind"] == "renormalise" and removal["compute"]["runs"] == 0
    kept = {k: v for k, v in first["mixture"].items() if k != "decimal"}
    assert removal["mixture"] == pytest.approx({k: v / sum(kept.values()) for k, v in kept.items()})
    # an addition, applied by reuse and compared with full recomputation on verification proxies
    from engine.project import Project

    project = Project.load(root)
    project.stage(Change("add", "decimal", sources=("data/decimal/*.txt",)))
    r = invoke("run", root, "--batch", "--compare", "--seeds", "2", "--json")
    assert r.exit_code == 0, r.output
    update = json.loads(r.stdout)["updates"][0]
    assert update["entry"] == "0003-add" and update["plan"]["kind"] == "full_reuse"
    assert update["plan"]["units"] == ["decimal", "virtual:unaffected"]
    measured = update["compare"]["verification"]["measured"]
    assert set(measured) == {"chosen", "full", "incumbent"} and all(m["seeds"] == [0, 1] for m in measured.values())
    assert update["compare"]["incumbent"]["decimal"] == 0.0  # what the project had: the added domain at 0
    assert sum(update["compare"]["incumbent"].values()) == pytest.approx(1)
    hist = json.loads(invoke("history", root, "--json").stdout)
    assert [h["entry"] for h in hist] == ["0001-initial", "0002-remove", "0003-add"]
    # the reuse keeps the unaffected domains' ratio from the previous mixture
    prev, now = hist[1]["mixture"], hist[2]["mixture"]
    assert now["code"] / now["notes"] == pytest.approx(prev["code"] / prev["notes"], rel=1e-6)
    d = json.loads(invoke("diff", root, "--json").stdout)  # the last entry against its full recomputation
    assert {x["domain"]: x["a"] for x in d["leaves"]} == pytest.approx(now)
    assert {x["domain"]: x["b"] for x in d["leaves"]} == pytest.approx(update["compare"]["full"]["mixture"])
    # (stored weights are rounded, so L1 agrees to rounding, not relatively, when the mixtures nearly coincide)
    assert d["l1"] == pytest.approx(sum(abs(x["b"] - x["a"]) for x in d["leaves"]), abs=1e-8)
    assert d["l1"] == pytest.approx(update["compare"]["l1"], abs=1e-8)
    d12 = json.loads(invoke("diff", root, "1", "2", "--json").stdout)
    assert d12["a"]["label"] == "0001-initial"
    assert json.loads(invoke("diff", root, "3", "--json").stdout) == d  # one entry: against its full recomputation
    d2 = json.loads(invoke("diff", root, "2", "--json").stdout)  # not compared: against the entry before it
    assert (d2["a"]["label"], d2["b"]["label"]) == ("0001-initial", "0002-remove")
    r = invoke("diff", root, "1")
    assert r.exit_code == 1 and "first entry" in r.output
    for fmt, needle in (("json", '"mixture"'), ("olmo", "target_ratio"), ("regmix", "train:")):
        r = invoke("export", root, "--format", fmt)
        assert r.exit_code == 0 and needle in r.stdout
    assert invoke("export", root, "--format", "csv").exit_code == 2  # a usage error: --format takes one of json, olmo, regmix
    status = json.loads(invoke("status", root, "--json").stdout)
    assert status["pending"] is None and status["last_entry"] == "0003-add"
    assert np.isclose(sum(d["weight"] for d in status["domains"]), 1)


def test_partial_reuse_unfreezes_the_suggested_domain(small_project):
    from engine import pipeline

    assert invoke("run", small_project.root, "--batch").exit_code == 0
    notes = sorted((small_project.root / "data/notes").iterdir())[0]
    notes.write_text(notes.read_text() + "\nrevised notes\n")
    small_project.stage(Change("revise", "notes"))
    ctx = pipeline.update_context(small_project)
    suggested = pipeline.suggested_unfreeze(small_project, ctx)
    assert len(suggested) == 1 and suggested[0][0] in ("code", "decimal") and suggested[0][1] > 0
    plan = pipeline.make_plan(small_project, ctx, "partial_reuse")
    assert plan.unfrozen == [suggested[0][0]] and "notes" in plan.free
    assert pipeline.make_plan(small_project, ctx, "full_reuse").unfrozen == []


def _mixed_then_decimal_added(project):
    """The project's first mixture and the removal of decimal applied, then decimal's return staged."""
    from engine.project import Project

    project.stage(Change("remove", "decimal"))
    assert invoke("run", project.root, "--batch").exit_code == 0
    project = Project.load(project.root)
    project.stage(Change("add", "decimal", sources=("data/decimal/*.txt",)))
    return project


def test_a_reuse_update_runs_as_olmix_ran_it(small_project):
    """A reuse swarm is drawn around its own prior (the stated share on the virtual domain, every unit
    in every run, at least 1e-4), its fit proposes with [reuse.proposer]'s proposer for the update's
    kind and the KL term over the units, and the history entry says which."""
    import dataclasses
    import tomllib

    from engine import pipeline
    from engine.history import read_history
    from engine.regression.store import load_fit
    from engine.settings import ProposeSettings

    s = small_project.settings
    small_project.update_settings(
        reuse=dataclasses.replace(s.reuse, swarm=dataclasses.replace(s.reuse.swarm, virtual_share=0.9),
                                  proposer=dataclasses.replace(s.reuse.proposer, add="search", kl_centre="current")),
        propose=ProposeSettings(kl_reg=0.1))
    small_project = _mixed_then_decimal_added(small_project)
    ctx = pipeline.update_context(small_project)
    record = pipeline.run_update(small_project, ctx)
    swarm = pipeline.open_swarm(small_project, record.swarm)
    assert swarm.spec.units == ["decimal", "virtual:unaffected"] and swarm.spec.start == pytest.approx(record.plan.start)
    assert swarm.spec.swarm.prior == pytest.approx({"decimal": 0.1, "virtual:unaffected": 0.9})
    assert swarm.spec.swarm.forced == swarm.spec.units and swarm.spec.swarm.min_weight == 1e-4
    table = swarm.table()
    assert table.n_runs == 6 and table.ratios.min() >= 1e-4  # [reuse.swarm]: 3 runs per unit
    info = record.proposal
    assert (info.proposer, info.proposer_setting, info.kl_centre) == ("search", "[reuse.proposer] add", "current")
    z = np.array([1 - record.mixture["code"] - record.mixture["notes"], record.mixture["code"] + record.mixture["notes"]])
    start = np.array([record.plan.start["decimal"], 1 - record.plan.start["decimal"]])
    assert info.kl == pytest.approx(float(np.sum(z * np.log(z / start))), rel=1e-6)  # KL over the units
    assert any(np.allclose(row, z, atol=1e-9) for row in table.ratios)  # search: a measured run
    natural = ctx.prior["decimal"]
    for kind, expected in (("prior", [0.1, 0.9]), ("natural", [natural, 1 - natural]), ("current", start)):
        small_project.settings = dataclasses.replace(
            small_project.settings, reuse=dataclasses.replace(
                small_project.settings.reuse, proposer=dataclasses.replace(small_project.settings.reuse.proposer, kl_centre=kind)))
        assert pipeline.kl_centre(swarm.spec, small_project) == pytest.approx(expected, abs=1e-8), kind
    # Through the gate with another proposer: the verdict decides, and --force's bootstrap spread is
    # taken with the same unit-level KL term (a strong pull to the reuse prior's 0.1 on decimal, far
    # from decimal's natural share, which a KL over the leaves would pull towards).
    assert abs(natural - 0.1) > 0.05
    small_project.settings = dataclasses.replace(small_project.settings, reuse=dataclasses.replace(
        small_project.settings.reuse, proposer=dataclasses.replace(small_project.settings.reuse.proposer, kl_centre="prior")))
    fit = load_fit(small_project.fits_dir / record.fit)
    strong = ProposeSettings(proposer="exact", kl_reg=1000.0, bootstrap=20)
    gated = pipeline.choose_mixture(small_project, swarm, fit, strong)
    assert fit.verdict.verdict == "usable" or "[reuse.swarm] runs_per_domain" in fit.verdict.fix  # 6 runs, 2 units
    assert gated.evidence.verdict == fit.verdict
    assert (gated.evidence.action == "fallback") == (fit.verdict.verdict == "unusable")
    forced = pipeline.choose_mixture(small_project, swarm, fit, strong, force=True)
    spread = forced.evidence.spread
    assert forced.mixture["decimal"] == pytest.approx(0.1, abs=0.01) and spread.failed == 0
    assert spread.lower["decimal"] > 0.08 and spread.upper["decimal"] < 0.12
    pipeline.apply_update(small_project, ctx, record)
    entry = read_history(small_project)[-1]
    saved = tomllib.loads(entry.path.read_text())["proposal"]
    assert saved["proposer_setting"] == "[reuse.proposer] add" and saved["kl_centre"] == "current"


def test_an_addition_gets_an_unfreeze_suggestion_from_the_objective(small_project):
    """The last entry (a removal) has no fit: the suggestion comes from the last one that has."""
    from engine import pipeline

    small_project = _mixed_then_decimal_added(small_project)
    ctx = pipeline.update_context(small_project)
    suggested = pipeline.suggested_unfreeze(small_project, ctx)
    assert len(suggested) == 1 and suggested[0][0] in ("code", "notes") and suggested[0][1] > 0
    assert pipeline.make_plan(small_project, ctx, "partial_reuse").unfrozen == [suggested[0][0]]


def _loglinear_swarm_csvs(folder: Path, runs: int = 24) -> tuple[Path, Path]:
    """Ratios and metrics of a swarm whose metrics follow a log-linear law exactly (Olmix's layout)."""
    rng = np.random.default_rng(0)
    domains = ["web", "code", "books"]
    x = rng.dirichlet(np.ones(3), size=runs)
    t = np.array([[-1.0, 0.5, 0.2], [0.3, -1.2, 0.1]])
    y = 1.5 + np.exp(x @ t.T)
    ratios, metrics = folder / "ratios.csv", folder / "metrics.csv"
    with ratios.open("w", newline="") as f:
        csv.writer(f).writerows([["run", *domains], *([f"r{i}", *row] for i, row in enumerate(x.tolist()))])
    with metrics.open("w", newline="") as f:
        csv.writer(f).writerows([["run", "web/bpb", "code/bpb"], *([f"r{i}", *row] for i, row in enumerate(y.tolist()))])
    return ratios, metrics


def test_the_cli_and_the_app_preview_a_proposal_through_one_engine_function(small_project, tmp_path):
    """`propose` and the app's preview both go through pipeline.preview_proposal: the exact proposer
    where the fit is log-linear, simulation with a note where it is not, and a clear sentence (not an
    IndexError) for a fit that names no swarm."""
    import dataclasses

    from engine import pipeline
    from engine.errors import OlmixError
    from engine.settings import ProposeSettings

    ratios, metrics = _loglinear_swarm_csvs(tmp_path)
    swarm = pipeline.import_swarm(small_project, ratios, metrics, name="law")
    exact = ProposeSettings(proposer="exact")
    loglinear = pipeline.fit_swarm(small_project, swarm, "loglinear")
    preview = pipeline.preview_proposal(small_project, loglinear, exact)
    assert preview.proposal.proposer == "exact" and preview.note == "" and preview.swarm == "law"
    assert preview.proposal.kkt_residual < 1e-6 and set(preview.prior) == {"web", "code", "books"}
    r = invoke("propose", small_project.root, "--swarm", "law", "--proposer", "exact", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mixture"] == pytest.approx(preview.proposal.mixture, abs=1e-6)
    ridge = pipeline.fit_swarm(small_project, swarm, "ridge")
    fallback = pipeline.preview_proposal(small_project, ridge, exact)
    assert fallback.proposal.proposer == "simulation" and "needs a log-linear fit; this is ridge" in fallback.note
    orphan = dataclasses.replace(loglinear, source_swarms=[])
    with pytest.raises(OlmixError, match=f"fit {loglinear.fit_id} names no swarm to propose from"):
        pipeline.preview_proposal(small_project, orphan, exact)
