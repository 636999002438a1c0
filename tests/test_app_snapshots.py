"""Every tab of the app at 80x24 and 160x48, on the fixture project of tests/app_fixture.py, and its
screens: the plan form, the help screen, the command palette, a job's log full screen.

What each snapshot holds at 80x24: the tab bar and the footer with `q Quit` (nothing scrolls them
away); on Domains, a partition staged through the form shown whole in the staged column; on
Swarms, the runs table with a row per run under the swarm list (in the history's order, with the
entry that used it), each row within the width, and (its second snapshot) the highlighted failed
run's detail with its error whole, square brackets included; on Mixtures, the history within the
width and, pinned, entry 1 compared with entry 2; on Fits, the fits table within the width and the
cross-validation table with whole metric names; on Jobs, the jobs with the running one's log below;
the plan form with each plan's runs and FLOPs; the help screen's key map; the palette finding
"train"; the failed update's log full screen, "[regression]" whole. Times show in UTC. Update them
with `pytest tests/test_app_snapshots.py --snapshot-update` and look at the SVGs in
tests/__snapshots__/ before committing them."""

from __future__ import annotations

import time

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input

from app_fixture import SWARM_ID, build_fixture_project, wait_for
from engine import atomic
from engine.compare import Comparison
from engine.domains import Change
from olmix_tui.app import MixingApp
from olmix_tui.app.forms import ChangeForm, PlanForm
from olmix_tui.app.keys import HelpScreen
from olmix_tui.app.tabs.jobs import LogScreen

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
STABLE_SHOTS = 5
"""Pictures 0.5 s apart that must agree before a snapshot is taken: longer than the app's refresh
(REFRESH_SECONDS), so a re-read that briefly changes the screen (a table widening a column when
next idle) is waited out on a loaded machine."""
FAILED_RUN = f"{SWARM_ID}-0004"


@pytest.fixture
def fixture_project(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the jobs' start times, the same on every machine
    time.tzset()
    yield build_fixture_project(tmp_path / "fixture")
    monkeypatch.undo()
    time.tzset()


def log_text(log) -> str:
    return "\n".join(line.text for line in log.lines)


async def opened(pilot, tab: str) -> None:
    """The files read and shown, the tab's first table focused."""
    app = pilot.app
    await wait_for(pilot, lambda: app.snapshot.status is not None and app.snapshot.fits, timeout=60)
    await wait_for(pilot, lambda: isinstance(app.focused, DataTable) and app.focused.row_count > 0
                   and app.focused.parent.id == f"{tab}-tab", timeout=60)


async def settled(pilot) -> None:
    """A stable picture: what is shown was read for what is highlighted; no toasts; the project
    folder (which differs per machine) not shown."""
    app = pilot.app
    await wait_for(pilot, lambda: app.snapshot.selection == app.selection, timeout=60)
    pilot.app.clear_notifications()
    pilot.app.sub_title = "fixture"
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor would make two pictures differ
    shots, deadline = [], time.monotonic() + 60
    while len(shots) < STABLE_SHOTS or len(set(shots[-STABLE_SHOTS:])) > 1:  # unchanged over two refreshes
        assert time.monotonic() < deadline, "the screen never settled"
        await pilot.pause(0.5)
        await pilot.pause()  # every widget idle: laid out for what it shows
        shots.append(app.export_screenshot())


def snapshot_of(snap_compare, project, tab: str, size: str, steps=None) -> bool:
    app = MixingApp(project, tab)

    async def run_before(pilot) -> None:
        await opened(pilot, tab)
        if steps is not None:
            await steps(pilot)
        await settled(pilot)

    return snap_compare(app, terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_domains_with_a_partition_staged_in_the_form(snap_compare, fixture_project, size):
    async def stage_partition(pilot) -> None:
        app = pilot.app
        await pilot.press("p")  # the highlighted domain, code
        await wait_for(pilot, lambda: isinstance(app.screen, ChangeForm), timeout=60)
        app.screen.query_one("#paths", Input).value = "code:a=data/code/part0.txt; code:b=data/code/part1.txt"
        await pilot.press("enter")
        table, staged = app.query_one("#domains", DataTable), "partition into code:a, code:b"
        column = table.columns[next(key for key, c in table.columns.items() if str(c.label) == "staged")]
        await wait_for(pilot, lambda: str(table.get_row("code")[1]) == staged and column.content_width >= len(staged),
                       timeout=60)  # the column widens when the table is next idle

    assert snapshot_of(snap_compare, fixture_project, "domains", size, stage_partition)


@pytest.mark.parametrize("size", SIZES)
def test_swarms(snap_compare, fixture_project, size):
    assert snapshot_of(snap_compare, fixture_project, "swarms", size)


@pytest.mark.parametrize("size", SIZES)
def test_swarms_with_the_failed_runs_detail(snap_compare, fixture_project, size):
    async def open_failed_run(pilot) -> None:
        app = pilot.app
        runs = app.query_one("#runs", DataTable)
        runs.focus()
        runs.move_cursor(row=4)
        await wait_for(pilot, lambda: app.selection.run == FAILED_RUN, timeout=60)
        if size == "80x24":
            await pilot.press("m")  # a short terminal opens the detail on demand

    assert snapshot_of(snap_compare, fixture_project, "swarms", size, open_failed_run)


@pytest.mark.parametrize("size", SIZES)
def test_mixtures(snap_compare, fixture_project, size):
    async def compared(pilot) -> None:
        await wait_for(pilot, lambda: isinstance(pilot.app.snapshot.comparison, Comparison), timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "mixtures", size, compared)


@pytest.mark.parametrize("size", SIZES)
def test_fits(snap_compare, fixture_project, size):
    async def cv_shown(pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.query_one("#cv", DataTable).row_count > 0, timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "fits", size, cv_shown)


@pytest.mark.parametrize("size", SIZES)
def test_mixtures_with_an_entry_pinned(snap_compare, fixture_project, size):
    async def pinned(pilot) -> None:
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, Comparison), timeout=60)
        await pilot.press("up", "c", "down")  # entry 1 pinned, entry 2 highlighted
        await wait_for(pilot, lambda: isinstance(app.snapshot.comparison, Comparison)
                       and app.snapshot.comparison.a.label == "0001-initial", timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "mixtures", size, pinned)


@pytest.mark.parametrize("size", SIZES)
def test_jobs(snap_compare, fixture_project, size):
    async def log_shown(pilot) -> None:
        await wait_for(pilot, lambda: "cross-validate lightgbm" in log_text(pilot.app.query_one("#job-log")), timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "jobs", size, log_shown)


def test_a_failed_jobs_log_full_screen(snap_compare, fixture_project):
    async def failed_log(pilot) -> None:
        app = pilot.app
        jobs = app.query_one("#jobs", DataTable)
        jobs.move_cursor(row=3)  # the failed update
        await wait_for(pilot, lambda: app.selection.job and app.selection.job.endswith("-4000"), timeout=60)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen)
                       and "[regression]" in log_text(app.screen.query_one("#log-screen")), timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "jobs", "80x24", failed_log)


def test_the_plan_form_with_each_plans_cost(snap_compare, fixture_project):
    root = fixture_project.root
    for i, text in enumerate(("extra text here\n", "more extra\n")):
        atomic.write_text(root / "data" / "extra" / f"part{i}.txt", text)
    fixture_project.stage(Change("add", "extra", sources=("data/extra/*.txt",)))
    fixture_project.tokens()  # bytes: well under a second

    async def plan_form(pilot) -> None:
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PlanForm), timeout=120)

    assert snapshot_of(snap_compare, fixture_project, "domains", "80x24", plan_form)


def test_the_help_screen(snap_compare, fixture_project):
    async def help_open(pilot) -> None:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), timeout=60)

    assert snapshot_of(snap_compare, fixture_project, "swarms", "80x24", help_open)


def test_the_command_palette_finds_train(snap_compare, fixture_project):
    async def palette(pilot) -> None:
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), timeout=60)
        await pilot.press(*"train")
        hits = pilot.app.screen.query_one(CommandList)
        counts, deadline = [], time.monotonic() + 60
        while len(counts) < 5 or len(set(counts[-5:])) > 1 or not counts[-1]:  # the hits gathered: a second unchanged
            assert time.monotonic() < deadline, "the palette found nothing"
            await pilot.pause(0.2)
            counts.append(hits.option_count)

    assert snapshot_of(snap_compare, fixture_project, "swarms", "80x24", palette)
