"""The watch app over real run files: it trains a swarm in a detached process, keeps training going
when it quits, re-attaches, and says what is wrong with a damaged swarm folder."""

import asyncio
import time

from typer.testing import CliRunner

from conftest import plan_swarm
from engine.compare import Comparison
from olmix_tui.cli import app as cli
from engine.project import Project
from olmix_tui.app import MixingApp


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the app did not get there in time"
        await pilot.pause(0.2)


def run_states(app: MixingApp) -> list[str]:
    """The state column of the runs table, as shown."""
    table = app.query_one("#runs")
    return [str(table.get_row(key)[1]) for key in table.rows]


def test_trains_from_the_app_and_reattaches_after_quitting(small_project):
    swarm_dir, _ = plan_swarm(small_project)

    async def first_session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: run_states(app) == ["pending"] * 3)
            assert app.swarm_id == swarm_dir.id
            await pilot.press("t")
            job = app.jobs[swarm_dir.id]
            await wait_for(pilot, lambda: "running" in run_states(app))
            await pilot.press("t")  # a second start while training is refused
            assert list(app.jobs) == [swarm_dir.id]
            states_at_quit = [s.state for s in swarm_dir.statuses()]
        return job, states_at_quit

    job, states_at_quit = asyncio.run(first_session())
    assert states_at_quit != ["done"] * 3  # quit mid-training...
    assert job.process.wait(timeout=300) == 0  # ...and training went on without the app
    assert [s.state for s in swarm_dir.statuses()] == ["done"] * 3

    async def second_session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: run_states(app) == ["done"] * 3)
            table = app.query_one("#runs")
            columns = [str(c.label) for c in table.columns.values()]
            assert {"code/bpb", "notes/bpb", "decimal/bpb"} <= set(columns)
            first = table.get_row(next(iter(table.rows)))
            assert float(first[columns.index("code/bpb")]) > 0
            await pilot.press("t")  # nothing left to train: no process is started
            assert app.jobs == {}
            assert "mixture of" in str(app.query_one("#mixture").content.title)

    asyncio.run(second_session())


def test_without_a_swarm_it_says_how_to_plan_one(small_project):
    async def session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test() as pilot:
            await wait_for(pilot, lambda: "swarm plan" in str(app.query_one("#summary").content), timeout=60)
            await pilot.press("t")
            assert app.jobs == {}

    asyncio.run(session())


def test_a_damaged_swarm_folder_is_named_with_the_fix(small_project):
    swarm_dir, _ = plan_swarm(small_project)
    (swarm_dir.run_dir(swarm_dir.run_ids[1]) / "status.json").unlink()

    async def session():
        app = MixingApp(small_project, "swarms")
        async with app.run_test() as pilot:
            summary = lambda: str(app.query_one("#summary").content)  # noqa: E731
            await wait_for(pilot, lambda: "error" in summary(), timeout=60)
            assert "status.json is missing" in summary() and "plan it again" in summary()

    asyncio.run(session())


def test_a_settings_file_broken_while_the_app_runs_is_named(small_project):
    async def session():
        app = MixingApp(small_project)
        async with app.run_test() as pilot:
            summary = lambda: str(app.query_one("#domains-summary").content)  # noqa: E731
            await wait_for(pilot, lambda: "3 domains" in summary(), timeout=60)
            (small_project.root / "olmix.toml").write_text("[proxy\n")
            await wait_for(pilot, lambda: summary().startswith("error:"), timeout=60)
            assert "olmix.toml" in summary() and "not valid TOML" in summary()

    asyncio.run(session())


def test_the_app_needs_a_terminal_and_a_project(small_project, tmp_path):
    for args in (["watch", str(small_project.root)], ["run", str(small_project.root)]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1 and "interactive terminal" in r.output and "--batch" in r.output
    r = CliRunner().invoke(cli, ["watch", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a project folder" in r.output
    r = CliRunner().invoke(cli, ["run", str(tmp_path / "sample"), "--sample", "stdlib"])
    assert r.exit_code == 1 and not (tmp_path / "sample").exists()  # refused before building anything


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
            await wait_for(pilot, lambda: app.swarm_id is not None, timeout=60)
            newest = pipeline.find_swarm(small_project, None)  # the latest swarm, verification runs aside
            assert app.swarm_id == newest.id and app.query_one("#swarms").row_count > 2
            # the initial tab's activation can arrive after the first snapshot; a key pressed before it is undone
            await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "swarms", timeout=30)
            await pilot.pause()
            await pilot.press("3")
            panel = app.query_one("#comparison")
            await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "history", timeout=30)
            await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, Comparison), timeout=60)
            assert app.entry_id == "0003-add"
            assert app.snapshot.comparison == expected
            assert not app.check_action("train", ())  # training keys belong to the Swarms tab
            view = panel.content
            assert view.title == f"{expected.a.label}  vs  {expected.b.label}"
            assert "(full)" in view.title and "measured" in str(view.caption) and "% of the FLOPs" in str(view.caption)
            await pilot.press("up")  # the removal: not compared, so beside the entry before it
            await wait_for(pilot, lambda: app.entry_id == "0002-remove" and isinstance(app.snapshot.comparison, Comparison)
                           and app.snapshot.comparison.a.label == "0001-initial", timeout=60)
            await pilot.press("up")  # the first entry: its mixture alone, and why
            await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, str) and app.entry_id == "0001-initial", timeout=60)
            assert panel.content.title == "mixture of 0001-initial" and "first entry" in str(panel.content.caption)

    asyncio.run(session())


def test_domains_tab_stages_changes_and_applies_the_update(small_project):
    from textual.widgets import Input

    from conftest import STDLIB
    from olmix_tui.forms import ChangeForm

    extra = small_project.root / "data/extra"
    extra.mkdir()
    for p in sorted((STDLIB / "logging").glob("*.py")):
        (extra / (p.stem + ".txt")).write_text(p.read_text())

    def staged() -> list[str]:
        from engine.project import Project

        return [c.describe() for c in Project.load(small_project.root).pending]

    def summary() -> str:
        return str(app.query_one("#domains-summary").content)

    async def fill_form(pilot, **values) -> None:
        await wait_for(pilot, lambda: isinstance(app.screen, ChangeForm), timeout=60)
        for field, value in values.items():
            app.screen.query_one(f"#{field}", Input).value = value
        await pilot.press("enter")

    app = MixingApp(small_project)  # opens on the Domains tab

    async def session():
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.query_one("#domains")
            await wait_for(pilot, lambda: table.row_count == 3 and "No staged update" in summary(), timeout=60)
            assert app.domain_id == "code" and not app.check_action("train", ())
            await pilot.press("d")  # remove the highlighted domain...
            await wait_for(pilot, lambda: staged() == ["remove code"] and str(table.get_row("code")[-1]) == "remove", timeout=60)
            await wait_for(pilot, lambda: "Staged: remove code" in summary(), timeout=60)
            await pilot.press("x")  # ...and discard it
            await wait_for(pilot, lambda: not staged() and "No staged update" in summary(), timeout=60)
            await pilot.press("a")  # files another domain owns: refused by the engine, nothing staged
            await fill_form(pilot, name="extra", paths="data/notes/*.txt")
            await wait_for(pilot, lambda: not isinstance(app.screen, ChangeForm), timeout=60)
            await pilot.pause(0.5)
            assert not staged()
            await pilot.press("p")  # a malformed partition stays in the form with its error
            await fill_form(pilot, paths="bogus")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ChangeForm) and "NAME=GLOB" in str(app.screen.query_one("#form-error").content)
            await pilot.press("escape")
            await pilot.press("a")
            await fill_form(pilot, name="extra", paths="data/extra/*.txt")
            await wait_for(pilot, lambda: staged() == ["add extra"] and "new: extra" in summary(), timeout=60)
            await pilot.press("u")  # the first mixture, then the update, in a detached `olmix-tui DIR --batch`
            job = app.jobs["pipeline"]
            assert job.process.wait(timeout=600) == 0, job.log.read_text()[-2000:]
            await wait_for(pilot, lambda: "No staged update" in summary() and "2 history entries" in summary(), timeout=60)
            assert table.row_count == 4 and app.jobs == {}
            await pilot.press("3")
            await wait_for(pilot, lambda: app.entry_id == "0002-add" and isinstance(app.snapshot.comparison, Comparison), timeout=60)

    asyncio.run(session())


def test_fits_tab_fits_a_swarm_in_the_background_and_previews_its_proposal(small_project):
    from textual.widgets import Select

    from engine import pipeline
    from olmix_tui.forms import FitForm, ProposeForm

    swarm_dir, _ = plan_swarm(small_project)
    pipeline.train_swarm(small_project, swarm_dir)
    app = MixingApp(small_project, "fits")

    async def propose(pilot, **values) -> None:
        """o, then the proposer form with `values` typed in, then Preview."""
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, ProposeForm), timeout=60)
        for name, value in values.items():
            app.screen.query_one(f"#{name}").value = value
        await pilot.click("#preview")

    async def session():
        async with app.run_test(size=(160, 48)) as pilot:
            cv = app.query_one("#cv")
            await wait_for(pilot, lambda: "No fit yet" in str(cv.content) and app.swarm_id == swarm_dir.id, timeout=60)
            await pilot.press("o")  # nothing to propose from yet
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, FitForm), timeout=60)
            app.screen.query_one(Select).value = "loglinear"
            await pilot.click("#fit")
            job = app.jobs[f"fit {swarm_dir.id}"]
            assert job.process.wait(timeout=300) == 0, job.log.read_text()[-2000:]
            await wait_for(pilot, lambda: app.query_one("#fits").row_count == 1, timeout=60)
            fit = app.snapshot.fits[0]
            assert fit.info["regressor"] == "loglinear" and fit.info["source_swarms"] == [swarm_dir.id]
            assert cv.content.row_count == len(fit.info["metrics"]) > 0
            await propose(pilot)
            await wait_for(pilot, lambda: fit.fit_id in app.proposals, timeout=60)
            title, shown, caption = app.proposals[fit.fit_id]
            (_, prior, _), (_, proposal, _) = shown
            assert set(proposal) == set(prior) == {"code", "notes", "decimal"}
            assert abs(sum(proposal.values()) - 1) < 1e-6 and "exact" in title and "KKT residual" in caption
            assert app.query_one("#proposal").content.title == title and "nothing is written" in caption
            kl_free = float(caption.split("KL to the prior ")[1].split(";")[0])
            await propose(pilot, kl_reg="a lot")  # refused in the form, which stays open
            assert isinstance(app.screen, ProposeForm) and "kl_reg must be a number" in str(app.screen.query_one("#form-error").content)
            app.screen.query_one("#kl_reg").value = "0.5"
            app.screen.query_one("#save").value = True
            app.screen.query_one("#kl_reg").focus()
            await pilot.press("enter")  # (a second click this soon would fall in the button's press effect)
            await wait_for(pilot, lambda: "kl_reg 0.5" in app.proposals[fit.fit_id][0], timeout=60)
            caption = app.proposals[fit.fit_id][2]
            assert float(caption.split("KL to the prior ")[1].split(";")[0]) < kl_free  # pulled towards the prior
            assert "saved to olmix.toml" in caption and Project.load(small_project.root).settings.propose.kl_reg == 0.5
            ridge = pipeline.fit_swarm(small_project, swarm_dir, "ridge")  # a fit the exact proposer cannot use
            await wait_for(pilot, lambda: app.query_one("#fits").row_count == 2, timeout=60)
            app.query_one("#fits").move_cursor(row=1)
            await wait_for(pilot, lambda: app.fit_id == ridge.fit_id, timeout=60)
            await propose(pilot)
            await wait_for(pilot, lambda: ridge.fit_id in app.proposals, timeout=60)
            title, _, caption = app.proposals[ridge.fit_id]
            assert "(simulation, kl_reg 0.5)" in title and "needs a log-linear fit" in caption  # the saved settings

    asyncio.run(session())
