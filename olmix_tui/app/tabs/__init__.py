"""The app's tabs, in the loop's order: the app composes them in this order and numbers them 1, 2, ...
Adding a tab is adding its class here."""

from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.tabs.domains import DomainsTab
from olmix_tui.app.tabs.fits import FitsTab
from olmix_tui.app.tabs.jobs import JobsTab
from olmix_tui.app.tabs.mixtures import MixturesTab
from olmix_tui.app.tabs.swarms import SwarmsTab

TABS: list[type[AppTab]] = [DomainsTab, SwarmsTab, MixturesTab, FitsTab, JobsTab]
