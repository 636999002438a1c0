"""The app over real project files, driven by its pilot: it stages changes through the engine,
applies the update, trains a swarm and fits it in detached processes that outlive it, previews
proposals, re-attaches, and says what is wrong with a damaged project. Assertions read the app's
messages (a message hook) and its widgets' public state."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Input, Select
from typer.testing import CliRunner

from app_fixture import FIT_ID, MessageLog, build_fixture_project, open_tab, wait_for
from conftest import plan_swarm
from engine import atomic
from engine.compare import Comparison
from engine.config import read_toml
from engine.history import read_history
from engine.project import Project
from olmix_tui.app import MixingApp
from olmix_tui.app.app import AppTabs
from olmix_tui.app.keys import HelpScreen, key_actions
from olmix_tui.app.tabs import TABS
from olmix_tui.app.forms import ChangeForm, FitForm, PlanForm, ProposeForm
from olmix_tui.app.messages import (Discarded, JobEnded, JobRefused, JobStarted, PendingUnchanged, ProposalFailed,
                                    ProposalPreviewed, SnapshotRead, Staged, StopDone)
from olmix_tui.cli import app as cli


def run_states(app: MixingApp) -> list[str]:
    """The state column of the runs table, as shown."""
    table = app.query_one("#runs", DataTable)
    return [str(table.get_row(key)[1]) for key in table.rows]


def active_binding_ids(app: MixingApp) -> set[str]:
    return {active.binding.id for active in app.screen.active_bindings.values()}


def test_trains_from_the_app_and_reattaches_after_quitting(small_project):
    swarm_dir, _ = plan_swarm(small_project)

    async def first_session():
        app, log = MixingApp(small_project, "swarms"), MessageLog()
        async with app.run_test(size=(160, 48), message_hook=log) as pilot:
            await wait_for(pilot, lambda: run_states(app) == ["pending"] * 3)
            assert app.selection.swarm == swarm_dir.id
            await wait_for(pilot, lambda: app.focused is app.query_one("#swarms"), timeout=60)
            await pilot.press("t")
            await wait_for(pilot, lambda: log.of(JobStarted), timeout=60)
            job = log.of(JobStarted)[0].job
            assert job.key == swarm_dir.id and swarm_dir.id in app.jobs
            await wait_for(pilot, lambda: "running" in run_states(app))
            await pilot.press("t")  # a second start while training is refused
            await pilot.pause(0.5)
            assert len(log.of(JobStarted)) == 1
            states_at_quit = [s.state for s in swarm_dir.statuses()]
        return job, states_at_quit

    job, states_at_quit = asyncio.run(first_session())
    assert states_at_quit != ["done"] * 3  # quit mid-training...
    assert job.process.wait(timeout=300) == 0  # ...and training went on without the app
    assert [s.state for s in swarm_dir.statuses()] == ["done"] * 3

    async def second_session():
        app, log = MixingApp(small_project, "swarms"), MessageLog()
        async with app.run_test(size=(160, 48), message_hook=log) as pilot:
            await wait_for(pilot, lambda: run_states(app) == ["done"] * 3)
            table = app.query_one("#runs", DataTable)
            columns = [str(c.label) for c in table.columns.values()]
            assert {"code/bpb", "notes/bpb", "decimal/bpb"} <= set(columns)
            first = table.get_row(next(iter(table.rows)))
            assert float(str(first[columns.index("code/bpb")])) > 0
            await wait_for(pilot, lambda: app.focused is app.query_one("#swarms"), timeout=60)
            await pilot.press("t")  # nothing left to train: no process is started
            await pilot.pause(0.5)
            assert not log.of(JobStarted) and not app.jobs
            assert app.selection.run == swarm_dir.run_ids[0]
            assert app.query_one("#mixture").content.title == f"mixture of {swarm_dir.run_ids[0]}"

    asyncio.run(second_session())


def test_without_a_swarm_it_says_how_to_plan_one(small_project):
    async def session():
        app, log = MixingApp(small_project, "swarms"), MessageLog()
        async with app.run_test(message_hook=log) as pilot:
            await wait_for(pilot, lambda: log.of(SnapshotRead), timeout=60)
            assert not app.snapshot.swarms
            assert "swarm plan" in str(app.query_one("#summary").content)
            await wait_for(pilot, lambda: app.focused is app.query_one("#swarms"), timeout=60)
            await pilot.press("t")
            await pilot.pause(0.5)
            assert not log.of(JobStarted) and not app.jobs

    asyncio.run(session())


def test_a_damaged_swarm_folder_is_named_with_the_fix(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    (swarm_dir.run_dir(swarm_dir.run_ids[1]) / "status.json").unlink()

    async def session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.snapshot.error, timeout=60)
            assert "status.json is missing" in app.snapshot.error and "plan it again" in app.snapshot.error
            assert str(app.query_one("#summary").content) == f"error: {app.snapshot.error}"

    asyncio.run(session())


@pytest.mark.parametrize("content, said", [("[]", "holds list, not a run's status"),
                                            ('{"run": "RUN", "state": "queued"}', "state 'queued' is unknown")])
def test_a_status_file_the_app_cannot_use_is_named_not_a_crash(small_project, content, said):
    swarm_dir, _ = plan_swarm(small_project)
    run = swarm_dir.run_ids[1]
    (swarm_dir.run_dir(run) / "status.json").write_text(content.replace("RUN", run))

    async def session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.snapshot.error, timeout=60)
            assert said in app.snapshot.error and "restore it from git" in app.snapshot.error
            assert app.is_running

    asyncio.run(session())


def test_a_settings_file_broken_while_the_app_runs_is_named(small_project):
    async def session():
        app = MixingApp(small_project)
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: app.query_one("#domains", DataTable).row_count == 3, timeout=60)
            assert not app.snapshot.error
            (small_project.root / "olmix.toml").write_text("[proxy\n")
            await wait_for(pilot, lambda: app.snapshot.error, timeout=60)
            assert "olmix.toml" in app.snapshot.error and "not valid TOML" in app.snapshot.error

    asyncio.run(session())


def test_the_app_needs_a_terminal_and_a_project(small_project, tmp_path):
    for args in (["watch", str(small_project.root)], ["run", str(small_project.root)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "interactive terminal" in r.output and "--batch" in r.output
    r = CliRunner().invoke(cli, ["watch", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a project folder" in r.output
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "sample"), "--sample", "stdlib"])
    assert r.exit_code == 1 and not (tmp_path / "sample").exists()  # refused before building anything


def test_each_tab_has_its_own_keys(tmp_path):
    project = build_fixture_project(tmp_path / "fixture")

    async def session():
        app = MixingApp(project)
        async with app.run_test(size=(80, 24)) as pilot:
            expected = {"domains": {"domains.add", "domains.apply"}, "swarms": {"swarms.train", "swarms.detail"},
                        "mixtures": set(), "fits": {"fits.fit", "fits.propose"}}
            mine = set().union(*expected.values())
            for number, (tab, keys) in enumerate(expected.items(), 1):
                await open_tab(pilot, str(number), tab)
                active = active_binding_ids(app)
                assert keys <= active and not (mine - keys) & active and "app.quit" in active, tab

    asyncio.run(session())


def test_mixtures_tab_shows_an_update_beside_its_full_recomputation(small_project):
    from engine import pipeline
    from engine.domains import Change

    small_project.stage(Change("remove", "decimal"))  # the first mixture over code and notes...
    pipeline.run_batch(small_project, False, 1)
    small_project.stage(Change("add", "decimal", sources=("data/decimal/*.txt",)))  # ...then an update, compared
    pipeline.run_batch(small_project, True, 1)
    expected = pipeline.diff_entries(small_project, None, None)

    async def session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.selection.swarm is not None, timeout=60)
            newest = pipeline.find_swarm(small_project, None)  # the latest swarm, verification runs aside
            swarms = app.query_one("#swarms", DataTable)
            assert app.selection.swarm == newest.id and swarms.row_count > 2
            entries = read_history(small_project)  # the swarms in the history's order, each with its entry
            used = [(e.content.swarm, e.label) for e in entries if e.content.swarm]
            used += [(entries[-1].content.compare.full.swarm, "0003-add full"),
                     (entries[-1].content.compare.verification.swarm, "0003-add verify")]
            first_use = list({swarm: label for swarm, label in reversed(used)}.items())[::-1]  # a swarm used again: its first use
            assert [(key.value, str(swarms.get_row(key)[1])) for key in swarms.rows] == sorted(first_use, key=lambda u: u[1])
            await wait_for(pilot, lambda: app.focused is app.query_one("#swarms"), timeout=30)
            await open_tab(pilot, "3", "mixtures")
            panel = app.query_one("#comparison")
            await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, Comparison), timeout=60)
            assert app.selection.entry == "0003-add"
            assert app.snapshot.comparison == expected
            view, evidence = panel.content.renderables  # the two mixtures, then what the entry's mixture rests on
            assert view.title == f"{expected.a.label}  vs  {expected.b.label}"
            assert "(full)" in view.title and "measured" in str(view.caption) and "% of the FLOPs" in str(view.caption)
            assert "fit unusable, kept incumbent" in str(view.caption)  # three runs: each side fell back
            assert "fell back to the incumbent" in str(evidence.renderables[0]) and "Train more runs" in str(evidence.renderables[0])
            await pilot.press("up")  # the removal: not compared, so beside the entry before it
            await wait_for(pilot, lambda: app.selection.entry == "0002-remove" and isinstance(app.snapshot.comparison, Comparison)
                           and app.snapshot.comparison.a.label == "0001-initial", timeout=60)
            await pilot.press("up")  # the first entry: its mixture alone, and why
            await wait_for(pilot, lambda: app.snapshot.selection.entry == "0001-initial"
                           and isinstance(app.snapshot.comparison, str), timeout=60)
            await wait_for(pilot, lambda: panel.content.renderables[0].title == "mixture of 0001-initial", timeout=30)
            assert "first entry" in app.snapshot.comparison
            await pilot.press("c", "down", "down")  # 0001 pinned, 0003 highlighted: any two entries side by side
            await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, Comparison)
                           and app.snapshot.selection.entry == "0003-add", timeout=60)
            assert app.snapshot.comparison == pipeline.diff_entries(small_project, "0001-initial", "0003-add")

    asyncio.run(session())


def test_domains_tab_stages_changes_and_applies_the_update(small_project):
    from conftest import STDLIB

    extra = small_project.root / "data/extra"
    extra.mkdir()
    for p in sorted((STDLIB / "logging").glob("*.py")):
        (extra / (p.stem + ".txt")).write_text(p.read_text())

    def staged() -> list[str]:
        return [c.describe() for c in Project.load(small_project.root).pending]

    app, log = MixingApp(small_project), MessageLog()  # opens on the Domains tab

    async def fill_form(pilot, **values) -> None:
        await wait_for(pilot, lambda: isinstance(app.screen, ChangeForm), timeout=60)
        for field, value in values.items():
            app.screen.query_one(f"#{field}", Input).value = value
        await pilot.press("enter")

    async def session():
        async with app.run_test(size=(160, 48), message_hook=log) as pilot:
            table = app.query_one("#domains", DataTable)
            await wait_for(pilot, lambda: table.row_count == 3 and app.focused is table, timeout=60)
            assert app.selection.domain == "code" and "swarms.train" not in active_binding_ids(app)
            await pilot.press("x")  # nothing staged: nothing discarded, and it says so
            await wait_for(pilot, lambda: log.of(PendingUnchanged), timeout=60)
            assert "Nothing is staged" in log.of(PendingUnchanged)[0].reason and not log.of(Discarded)
            await pilot.press("d")  # remove the highlighted domain...
            await wait_for(pilot, lambda: log.of(Staged), timeout=60)
            assert log.of(Staged)[0].change.describe() == "remove code" and staged() == ["remove code"]
            await wait_for(pilot, lambda: str(table.get_row("code")[1]) == "remove", timeout=60)
            await pilot.press("x")  # ...and discard it
            await wait_for(pilot, lambda: log.of(Discarded), timeout=60)
            assert not staged()
            await wait_for(pilot, lambda: str(table.get_row("code")[1]) == "", timeout=60)
            await pilot.press("a")  # files another domain owns: refused by the engine, the form stays open as typed
            await fill_form(pilot, name="extra", paths="data/notes/*.txt")
            await wait_for(pilot, lambda: "data/notes" in str(app.screen.query_one("#form-error").content), timeout=60)
            assert isinstance(app.screen, ChangeForm) and app.screen.query_one("#name", Input).value == "extra"
            assert not staged() and len(log.of(PendingUnchanged)) == 1
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, ChangeForm), timeout=30)
            await pilot.press("p")  # a malformed partition stays in the form with its error
            await fill_form(pilot, paths="bogus")
            await wait_for(pilot, lambda: "NAME=GLOB" in str(app.screen.query_one("#form-error").content), timeout=30)
            assert isinstance(app.screen, ChangeForm)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, ChangeForm), timeout=30)
            await pilot.press("a")
            await fill_form(pilot, name="extra", paths="data/extra/*.txt")
            await wait_for(pilot, lambda: len(log.of(Staged)) == 2, timeout=60)
            assert staged() == ["add extra"]
            await wait_for(pilot, lambda: app.snapshot.status.pending is not None, timeout=60)
            await pilot.press("u")  # choose the plan (the domains are not tokenized: the kinds alone, and why)...
            await wait_for(pilot, lambda: isinstance(app.screen, PlanForm), timeout=60)
            assert "not tokenized yet" in str(app.screen.query_one("#plan-costs").content)
            await pilot.click("#apply")  # ...then the first mixture and the update, in a detached `olmix-tui DIR --batch`
            await wait_for(pilot, lambda: log.of(JobStarted), timeout=60)
            assert "--plan full_reuse" in " ".join(log.of(JobStarted)[0].job.process.args)
            job = log.of(JobStarted)[0].job
            assert job.key == "pipeline" and job.process.wait(timeout=600) == 0, job.log.read_text()[-2000:]
            await wait_for(pilot, lambda: log.of(JobEnded), timeout=60)
            assert log.of(JobEnded)[0].code == 0 and not app.jobs
            await wait_for(pilot, lambda: app.snapshot.status.history_entries == 2
                           and app.snapshot.status.pending is None and table.row_count == 4, timeout=60)
            await open_tab(pilot, "3", "mixtures")
            await wait_for(pilot, lambda: app.selection.entry == "0002-add" and isinstance(app.snapshot.comparison, Comparison),
                           timeout=60)

    asyncio.run(session())


def test_fits_tab_fits_a_swarm_in_the_background_and_previews_its_proposal(small_project, tmp_path):
    """A fit on the tiny trained swarm is unusable: the preview shows the fallback and says how to
    propose anyway. A fit of a swarm that follows a log-linear law is usable: the preview shows the
    exact proposal with its intervals, and a ridge fit of it the simulation proposer's."""
    from engine import pipeline
    from test_pipeline_cli import _loglinear_swarm_csvs

    swarm_dir, _ = plan_swarm(small_project)
    pipeline.train_swarm(small_project, swarm_dir)
    app, log = MixingApp(small_project, "fits"), MessageLog()

    async def propose(pilot, **values) -> None:
        """o, then the proposer form with `values` typed in, then Preview."""
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, ProposeForm), timeout=60)
        for name, value in values.items():
            app.screen.query_one(f"#{name}").value = value
        await pilot.click("#preview")

    def previews() -> list[ProposalPreviewed]:
        return log.of(ProposalPreviewed)

    async def session():
        async with app.run_test(size=(160, 48), message_hook=log) as pilot:
            fits = app.query_one("#fits", DataTable)
            await wait_for(pilot, lambda: log.of(SnapshotRead) and app.selection.swarm == swarm_dir.id
                           and app.focused is fits, timeout=60)
            assert not app.snapshot.fits
            await pilot.press("o")  # nothing to propose from yet: no form
            await pilot.pause(0.5)
            assert not isinstance(app.screen, ProposeForm)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, FitForm), timeout=60)
            app.screen.query_one(Select).value = "loglinear"
            await pilot.click("#fit")
            await wait_for(pilot, lambda: log.of(JobStarted), timeout=60)
            job = log.of(JobStarted)[0].job
            assert job.key == f"fit {swarm_dir.id}" and job.process.wait(timeout=300) == 0, job.log.read_text()[-2000:]
            await wait_for(pilot, lambda: fits.row_count == 1, timeout=60)
            fit = app.snapshot.fits[0]
            assert fit.info["regressor"] == "loglinear" and fit.info["source_swarms"] == [swarm_dir.id]
            assert app.snapshot.verdicts[fit.fit_id].verdict == "unusable"  # three runs show no signal
            await wait_for(pilot, lambda: app.query_one("#cv", DataTable).row_count == len(fit.info["metrics"]) > 0, timeout=30)
            await propose(pilot)
            await wait_for(pilot, lambda: previews(), timeout=60)
            fallback = previews()[0].view
            (_, prior, _), (label, mixture, _) = fallback.shown
            assert label == "natural" and mixture == pytest.approx(prior) and fallback.evidence.action == "fallback"
            assert "no proposal" in fallback.caption and "--force" in fallback.caption
            # a swarm whose metrics follow a log-linear law: a usable fit
            law = pipeline.import_swarm(small_project, *_loglinear_swarm_csvs(tmp_path), name="law")
            usable = pipeline.fit_swarm(small_project, law, "loglinear")
            await wait_for(pilot, lambda: fits.row_count == 2, timeout=60)
            fits.move_cursor(row=1)
            await wait_for(pilot, lambda: app.selection.fit == usable.fit_id, timeout=60)
            await propose(pilot, bootstrap="20")
            await wait_for(pilot, lambda: len(previews()) == 2, timeout=60)
            first = previews()[1]
            (_, prior, _), (_, proposal, _) = first.view.shown
            assert first.fit_id == usable.fit_id and first.saved is None and first.view.evidence.verdict.verdict == "usable"
            assert set(proposal) == set(prior) == {"web", "code", "books"}
            assert abs(sum(proposal.values()) - 1) < 1e-6 and "exact" in first.view.title
            assert "KKT residual" in first.view.caption and "nothing is written" in first.view.caption
            spread = first.view.evidence.spread
            assert spread.replicates == 20 and all(spread.lower[d] - 1e-9 <= proposal[d] <= spread.upper[d] + 1e-9 for d in proposal)
            kl_free = float(first.view.caption.split("KL to the prior ")[1].split(";")[0])
            await propose(pilot, kl_reg="a lot")  # refused in the form, which stays open
            await wait_for(pilot, lambda: "kl_reg must be a number" in str(app.screen.query_one("#form-error").content),
                           timeout=30)
            assert isinstance(app.screen, ProposeForm)
            app.screen.query_one("#kl_reg").value = "0.5"
            app.screen.query_one("#bootstrap").value = "0"  # the simulation proposer's replicates take a third of a second each
            app.screen.query_one("#save").value = True
            app.screen.query_one("#kl_reg").focus()
            await pilot.press("enter")  # (a second click this soon would fall in the button's press effect)
            await wait_for(pilot, lambda: len(previews()) == 3, timeout=60)
            saved = previews()[2]
            assert "kl_reg 0.5" in saved.view.title and saved.saved.propose.kl_reg == 0.5 and saved.view.evidence.spread is None
            assert float(saved.view.caption.split("KL to the prior ")[1].split(";")[0]) < kl_free  # pulled to the prior
            assert "saved to olmix.toml" in saved.view.caption
            assert Project.load(small_project.root).settings.propose.kl_reg == 0.5 == app.project.settings.propose.kl_reg
            ridge = pipeline.fit_swarm(small_project, law, "ridge")  # a fit the exact proposer cannot use
            await wait_for(pilot, lambda: fits.row_count == 3, timeout=60)
            fits.move_cursor(row=2)
            await wait_for(pilot, lambda: app.selection.fit == ridge.fit_id, timeout=60)
            await propose(pilot)
            await wait_for(pilot, lambda: len(previews()) == 4, timeout=60)
            simulated = previews()[3]
            assert simulated.fit_id == ridge.fit_id and "(simulation, kl_reg 0.5)" in simulated.view.title  # saved settings
            assert "needs a log-linear fit" in simulated.view.caption

    asyncio.run(session())


def test_a_proposal_that_cannot_be_made_is_explained(tmp_path):
    project = build_fixture_project(tmp_path / "fixture")
    fit_toml = project.fits_dir / FIT_ID / "fit.toml"
    atomic.write_toml(fit_toml, {**read_toml(fit_toml), "source_swarms": []})  # e.g. fitted on a table from elsewhere

    async def session():
        app, log = MixingApp(project, "fits"), MessageLog()
        async with app.run_test(size=(80, 24), message_hook=log) as pilot:
            await wait_for(pilot, lambda: app.selection.fit == FIT_ID and app.focused is app.query_one("#fits"), timeout=60)
            await pilot.press("o")
            await wait_for(pilot, lambda: isinstance(app.screen, ProposeForm), timeout=60)
            app.screen.query_one("#kl_reg").focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: log.of(ProposalFailed), timeout=60)
            failed = log.of(ProposalFailed)[0]
            assert failed.fit_id == FIT_ID and not log.of(ProposalPreviewed)
            assert failed.reason.startswith(f"fit {FIT_ID} names no swarm") and "olmix-tui fit" in failed.reason

    asyncio.run(session())


def test_a_tab_opened_by_its_number_stays_open(tmp_path):
    """"3" then "4" at once: opening 3 focuses its table, whose focus message used to switch back to 3
    after 4 was open. The tab opened last stays open, with the focus in it."""
    project = build_fixture_project(tmp_path / "fixture")

    async def session():
        app = MixingApp(project)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.focused, DataTable), timeout=60)
            for first, second, tab in (("3", "4", "fits"), ("2", "1", "domains"), ("4", "3", "mixtures"), ("1", "5", "jobs")):
                await pilot.press(first, second)
                await wait_for(pilot, lambda: app.focused is not None and app.focused.parent.id == f"{tab}-tab", timeout=30)
                await pilot.pause(1.0)  # any late message has arrived
                assert app.query_one(AppTabs).active == f"{tab}-tab" and app.focused.parent.id == f"{tab}-tab"
            for focused, tab in (("#history", "fits"), ("#fits", "swarms")):  # the race itself: a focus, then a number
                app.query_one(focused, DataTable).focus()  # its message still on its way when...
                await app.run_action(f"show_tab('{tab}-tab')")  # ...the number key's action runs
                await pilot.pause(1.0)
                assert app.query_one(AppTabs).active == f"{tab}-tab" and app.focused.parent.id == f"{tab}-tab"

    asyncio.run(session())


def test_every_key_is_in_the_palette_and_the_help_screen(tmp_path):
    project = build_fixture_project(tmp_path / "fixture")

    async def session():
        app = MixingApp(project, "swarms")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.snapshot.history and isinstance(app.focused, DataTable), timeout=60)
            bindings = [b for tab in TABS for b in tab.BINDINGS] + [b for b in MixingApp.BINDINGS if b.action != "close_panels"]
            names = [a.name for a in key_actions(list(MixingApp.BINDINGS))]
            assert len(names) == len(bindings) and "Swarms: Train (t)" in names and "Jobs: Stop (s)" in names
            await pilot.press("ctrl+p")  # a command by what it does: pin an entry, on the Mixtures tab
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), timeout=30)
            await pilot.press(*"compare with")
            await pilot.pause(1.0)
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.selection.compare_with == app.snapshot.history[-1].label, timeout=30)
            assert app.query_one(AppTabs).active == "mixtures-tab"
            for key in ("question_mark", "f1"):  # the help screen: every key with what it does, and the loop
                await pilot.press(key)
                await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=30)
                shown = app.screen.query_one("#help-keys").content
                keys = "\n".join(str(cell) for column in shown.columns for cell in column.cells)
                assert all(b.tooltip in keys for b in bindings if b.id != "app.close")
                assert "The mixing loop" in str(app.screen.query_one("#help-guide").content)
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), timeout=30)
            app.action_show_help_panel()  # Textual's keys panel (ctrl+p "keys"): Escape closes it
            await wait_for(pilot, lambda: app.screen.query("HelpPanel"), timeout=30)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not app.screen.query("HelpPanel"), timeout=30)

    asyncio.run(session())


def test_reads_keep_coming_when_one_takes_longer_than_the_refresh(tmp_path, monkeypatch):
    """A read slower than the refresh interval (a loaded machine, an update writing files) used to
    be cancelled by the next one, and nothing was ever shown: counts went stale while `u` ran."""
    from olmix_tui.app.snapshot import SnapshotReader

    project = build_fixture_project(tmp_path / "fixture")
    read = SnapshotReader.read

    def slow(self, selection):
        time.sleep(1.5)
        return read(self, selection)

    monkeypatch.setattr(SnapshotReader, "read", slow)

    async def session():
        app, log = MixingApp(project, "swarms"), MessageLog()
        async with app.run_test(message_hook=log) as pilot:
            await wait_for(pilot, lambda: len(log.of(SnapshotRead)) >= 4, timeout=60)

    asyncio.run(session())


def test_an_action_that_would_wait_for_the_lock_is_refused_with_who_holds_it(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from engine.project import Project\n"
                               "with Project.load(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(120)",
                               str(small_project.root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"

    async def session():
        app, log = MixingApp(small_project, "swarms"), MessageLog()
        async with app.run_test(size=(80, 24), message_hook=log) as pilot:
            await wait_for(pilot, lambda: app.snapshot.lock is not None and app.focused is app.query_one("#swarms"), timeout=60)
            await pilot.press("t")
            await wait_for(pilot, lambda: log.of(JobRefused), timeout=30)
            refused = log.of(JobRefused)[0]
            assert f"pid {holder.pid}" in refused.reason and "busy" in refused.reason and swarm_dir.id in refused.what
            await open_tab(pilot, "4", "fits")
            await pilot.press("n")  # refused before its form
            await wait_for(pilot, lambda: len(log.of(JobRefused)) == 2, timeout=30)
            assert not log.of(JobStarted) and not isinstance(app.screen, FitForm)

    try:
        asyncio.run(session())
    finally:
        holder.kill()
        holder.wait()


def test_jobs_started_elsewhere_show_with_their_log_and_stop_from_the_app(small_project, tmp_path):
    """A `swarm run` started in another terminal: the Jobs tab lists it and its worker (from their
    records) with the worker's log, live; s stops it. Then training from the app, and s on the Swarms
    tab stops that: the app's job ends stopped, the runs read as interrupted."""
    from engine.executors.jobs import read_jobs
    from conftest import UNFINISHED_STEPS, long_runs, start_swarm_run

    project = long_runs(small_project, UNFINISHED_STEPS, max_batch=1)
    swarm_dir, _ = plan_swarm(project)
    elsewhere = start_swarm_run(project, swarm_dir.id, tmp_path / "run.log")
    workers = lambda: [r for r in read_jobs(project.root) if r.kind == "worker" and r.alive]  # noqa: E731

    async def session():
        app, log = MixingApp(project, "jobs"), MessageLog()
        async with app.run_test(size=(80, 24), message_hook=log) as pilot:
            await wait_for(pilot, lambda: any(j.label == f"training swarm {swarm_dir.id}" and j.state == "running"
                                              for j in app.snapshot.jobs), timeout=300)
            await wait_for(pilot, lambda: workers(), timeout=300)
            table = app.query_one("#jobs", DataTable)
            worker = workers()[0]
            await wait_for(pilot, lambda: worker.key in {k.value for k in table.rows}, timeout=60)
            table.move_cursor(row=[k.value for k in table.rows].index(worker.key))
            await wait_for(pilot, lambda: f"training 1 run(s) of swarm {swarm_dir.id}" in
                           "\n".join(line.text for line in app.query_one("#job-log").lines), timeout=300)
            table.move_cursor(row=[k.value for k in table.rows].index(f"{worker.host}-{elsewhere.pid}"))
            await wait_for(pilot, lambda: app.selection.job == f"{worker.host}-{elsewhere.pid}", timeout=30)
            await pilot.press("s")
            await wait_for(pilot, lambda: log.of(StopDone), timeout=120)
            assert elsewhere.wait(30) == 143 and not workers()
            assert "running" not in {s.state for s in swarm_dir.statuses()}
            await open_tab(pilot, "2", "swarms")  # train again from here, then stop it with s
            await wait_for(pilot, lambda: app.focused is app.query_one("#swarms"), timeout=30)
            await pilot.press("t")
            await wait_for(pilot, lambda: log.of(JobStarted) and workers(), timeout=300)
            await pilot.press("s")
            await wait_for(pilot, lambda: len(log.of(StopDone)) == 2 and log.of(JobEnded), timeout=120)
            assert log.of(JobEnded)[0].code == 143 and log.of(StopDone)[1].report.interrupted
            await wait_for(pilot, lambda: "running" not in {s.state for s in swarm_dir.statuses()}, timeout=60)

    try:
        asyncio.run(session())
    finally:
        if elsewhere.poll() is None:
            os.killpg(elsewhere.pid, signal.SIGKILL)
        CliRunner().invoke(cli, ["stop", str(project.root)])
