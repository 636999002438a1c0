"""The Textual app over a project (`olmix-tui DIR`, `olmix-tui watch DIR`): the mixing loop, live.

Tabs, in the loop's order (olmix_tui.app.tabs, one module each):
  Domains   the domain set and the staged update; keys stage changes (add, remove, revise,
            partition), discard them, or apply the update
  Swarms    swarms, the highlighted swarm's runs, the highlighted run's mixture, error and curve
  Mixtures  the history, and the highlighted entry beside its full recomputation or predecessor
  Fits      stored regressions with their cross-validation; keys fit a swarm with a chosen
            regressor, or preview the proposal of the highlighted fit beside the prior

Long work never runs in the app: applying the update, training a swarm and fitting one start
detached `olmix-tui` processes (jobs.py; output in .olmix/logs/) that keep going when the app quits.
A worker thread reads the project's files once a second (snapshot.py) and posts what it read
(messages.py); handlers on the UI thread own all state, so the app can open, quit and re-attach at
any time. Staging a change goes through the engine, which validates it and writes pending.toml.
"""

from olmix_tui.app.app import MixingApp

__all__ = ["MixingApp"]
