"""Every tab of the app at 80x24 and 160x48, on the fixture project of tests/app_fixture.py.

What each snapshot holds at 80x24: the tab bar and the footer with `q Quit` (nothing scrolls them
away); on Domains, a partition staged through the form shown whole in the staged column; on
Swarms, the runs table with a row per run under the swarm list, and (its second snapshot) the
highlighted failed run's detail with its error whole; on Fits, the cross-validation table with
whole metric names. Update them with `pytest tests/test_app_snapshots.py --snapshot-update` and
look at the SVGs in tests/__snapshots__/ before committing them."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input

from app_fixture import SWARM_ID, build_fixture_project, wait_for
from engine.compare import Comparison
from olmix_tui.app import MixingApp
from olmix_tui.app.forms import ChangeForm

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
FAILED_RUN = f"{SWARM_ID}-0004"


@pytest.fixture
def fixture_project(tmp_path):
    return build_fixture_project(tmp_path / "fixture")


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
    await pilot.pause(0.3)
    await pilot.pause()  # every widget idle: laid out for what it shows


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
