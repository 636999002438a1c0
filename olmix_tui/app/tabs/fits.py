"""The Fits tab: stored regressions with their verdict and cross-validation per metric; keys fit
the swarm highlighted on the Swarms tab with a chosen regressor (a detached job), or preview the
proposal of the highlighted fit beside the prior (on an unusable fit, the fallback), with its
bootstrap intervals, with proposer settings from a form (saved to olmix.toml's [propose] when asked).

On a narrow terminal the cross-validation table and the proposal are stacked, each full width, so
metric names show whole, and the fits table keeps to the columns that fit (the swarm, the number of
metrics and the fitting time are in the highlighted fit's title)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from engine import pipeline
from engine.errors import OlmixError
from engine.project import Project
from engine.regression.store import FitSummary, load_fit
from engine.settings import ProposeSettings, Settings
from olmix_tui.app.forms import FitForm, ProposeForm
from olmix_tui.app.messages import ProposalFailed, ProposalView, ProposalPreviewed
from olmix_tui.app.snapshot import Snapshot
from olmix_tui.app.tabs.base import AppTab
from olmix_tui.app.views import WeightBars, evidence_view, fill
from olmix_tui.render import VERDICT_STYLES, verdict_lines

COLUMNS = ["fit", "regressor", "swarm", "runs", "metrics", "verdict", "spearman x100", "R^2", "MAE", "seconds"]
NARROW_COLUMNS = ["fit", "regressor", "runs", "verdict", "spearman x100", "R^2"]
"""Below 120 columns: the fits table's columns that fit in 80."""
CV_COLUMNS = ["metric", "spearman x100", "R^2", "MAE"]


class FitsTab(AppTab):
    KEY, TITLE = "fits", "Fits"
    BINDINGS = [
        Binding("n", "fit", "Fit", id="fits.fit", tooltip="Fit the swarm highlighted on the Swarms tab (a background job)"),
        Binding("o", "propose", "Propose", id="fits.propose",
                tooltip="Preview the proposal of the highlighted fit beside the prior (nothing is written)"),
    ]

    def __init__(self, number: int):
        super().__init__(number)
        self.proposals: dict[str, ProposalView] = {}
        """The last proposal previewed from each fit, by fit id."""

    def compose(self) -> ComposeResult:
        yield DataTable(id="fits", cursor_type="row", zebra_stripes=True)
        with Container(id="fit-detail"):
            with Vertical(id="cv-panel"):
                yield Static(id="cv-title")
                yield DataTable(id="cv", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="proposal-scroll"):
                yield Static(id="proposal")

    def on_mount(self) -> None:
        self.query_one("#cv", DataTable).add_columns(*CV_COLUMNS)

    def show(self, snapshot: Snapshot) -> None:
        fits, table = snapshot.fits, self.query_one("#fits", DataTable)
        columns = NARROW_COLUMNS if self.narrow else COLUMNS
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        rows = []
        for f in fits:
            means, verdict = f.cv.means(), snapshot.verdicts.get(f.fit_id)
            cells = {"fit": f.fit_id, "regressor": Text(f.info["chosen"]), "swarm": ", ".join(f.info["source_swarms"]),
                     "runs": f.info.get("n_runs", ""), "metrics": len(f.info["metrics"]),
                     "verdict": Text(verdict.verdict, style=VERDICT_STYLES[verdict.verdict]) if verdict else "-",
                     "spearman x100": f"{means['spearman']:.1f}", "R^2": f"{means['r2']:.3f}", "MAE": f"{means['mae']:.4f}",
                     "seconds": f"{f.info['seconds']:.1f}"}
            rows.append((f.fit_id, [cells[c] for c in columns]))
        fill(table, rows)
        if self.app.selection.fit not in {f.fit_id for f in fits} and fits:
            self.app.select(fit=fits[-1].fit_id)
            table.move_cursor(row=len(fits) - 1)
        self._show_fit()

    def _show_fit(self) -> None:
        chosen = self.app.snapshot.fit(self.app.selection.fit)
        title, cv, proposal = self.query_one("#cv-title", Static), self.query_one("#cv", DataTable), self.query_one("#proposal", Static)
        if chosen is None:
            title.update(Text("No fit yet: n fits the swarm highlighted on the Swarms tab (a finished one)."))
            fill(cv, [])
            proposal.update("")
            return
        info = chosen.info
        title.update(Text(f"fit {chosen.fit_id} of swarm {', '.join(info['source_swarms'])}: {chosen.cv.folds}-fold CV of "
                          f"{chosen.cv.regressor}, {len(info['metrics'])} metrics, fitted in {info['seconds']:.1f}s",
                          style="bold"))
        fill(cv, [(m, [m, f"{sp:.1f}", Text(f"{r2:.3f}", style="red" if r2 < 0 else ""), f"{mae:.4f}"])
                  for m, sp, r2, mae in zip(chosen.info["metrics"], chosen.cv.spearman, chosen.cv.r2, chosen.cv.mae)])
        shown = self.proposals.get(chosen.fit_id)
        verdict = self.app.snapshot.verdicts.get(chosen.fit_id)
        if shown is not None:
            parts = [WeightBars(shown.title, shown.shown, shown.caption)]
            if shown.evidence is not None:
                parts.append(evidence_view(shown.evidence, shown.mixture, dict(shown.shown[0][1])))
            proposal.update(Group(*parts))
            return
        about = Text("\n").join(verdict_lines(verdict)) if verdict else Text(
            "fitted by an earlier version, which judged no verdict: fit its swarm again (n) to propose from it.")
        proposal.update(Group(about, Text(
            "o proposes from this fit with the project's [propose] settings and shows the mixture beside the prior "
            "(a preview: nothing is written; applying an update records its proposal).")))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.data_table.id == "fits" and event.row_key.value != self.app.selection.fit:
            self.app.select(fit=event.row_key.value)
            self._show_fit()

    # ------------------------------------------------------------ fitting
    def action_fit(self) -> None:
        swarm_id = self.app.selection.swarm
        if self.app.snapshot.swarm(swarm_id) is None:
            self.app.tell("No swarm to fit: highlight a trained one on the Swarms tab.", "warning")
            return
        key = f"fit {swarm_id}"
        if key in self.app.jobs:
            self.app.tell(f"Swarm {swarm_id} is being fitted already.", "warning")
            return
        if self.refused_when_busy(f"fitting swarm {swarm_id}"):
            return
        project = self.app.project

        def fit(regressor: str | None) -> None:
            if regressor:
                self.app.start_job(key, f"fitting {regressor} on swarm {swarm_id}",
                                   ["fit", str(project.root), "--swarm", swarm_id, "--regressor", regressor, "--json"],
                                   project.cache / "logs" / swarm_id / "fit.log")

        self.app.push_screen(FitForm(swarm_id, project.settings.regression.regressor), fit)

    # ------------------------------------------------------------ proposing
    def action_propose(self) -> None:
        """Ask for the proposer settings (olmix.toml's [propose] to start from), then preview the proposal."""
        summary = self.app.snapshot.fit(self.app.selection.fit)
        if summary is None:
            self.app.tell("No fit to propose from: n fits a swarm first.", "warning")
            return

        def preview(choice: tuple[ProposeSettings, bool] | None) -> None:
            if choice is not None:
                self._preview_proposal(summary, *choice)

        self.app.push_screen(ProposeForm(summary.fit_id, self.app.project.settings.propose), preview)

    @work(thread=True, exclusive=True, group="propose")
    def _preview_proposal(self, summary: FitSummary, settings: ProposeSettings, save: bool) -> None:
        try:
            view, saved = proposal_view(self.app.project.root, summary, settings, save)
        except OlmixError as err:
            self.post_message(ProposalFailed(summary.fit_id, str(err)))
            return
        self.post_message(ProposalPreviewed(summary.fit_id, view, saved))

    def on_proposal_previewed(self, message: ProposalPreviewed) -> None:
        self.proposals[message.fit_id] = message.view
        self._show_fit()

    def on_proposal_failed(self, message: ProposalFailed) -> None:
        self.app.tell(f"No proposal from fit {message.fit_id}: {message.reason}", "error", 15)


def proposal_view(root: Path, summary: FitSummary, settings: ProposeSettings,
                  save: bool) -> tuple[ProposalView, Settings | None]:
    """The proposal of a stored fit with `settings` (engine.pipeline.preview_proposal, which chooses
    the proposer the fit allows) beside its swarm's prior, and the project's settings when they were
    saved to olmix.toml after it (else None). The exact proposer takes milliseconds; loading the
    fit's model takes most of the time."""
    project = Project.load(root)
    preview = pipeline.preview_proposal(project, load_fit(summary.folder, project.settings.objective), settings)
    saved = project.update_settings(propose=settings) if save else None
    proposal, evidence = preview.proposal, preview.evidence
    written = (". Settings saved to olmix.toml; the proposal is a preview, nothing else is written." if save
               else ". A preview: nothing is written.")
    if proposal is None:  # an unusable fit: the fallback, and how to propose anyway
        caption = (f"{preview.note}the fit is unusable, so no proposal: this is the {evidence.fallback} mixture the "
                   f"pipeline falls back to; `olmix-tui propose {root} --swarm {preview.swarm} --force` proposes "
                   f"anyway{written}")
        return ProposalView(f"fallback ({evidence.fallback}) for fit {summary.fit_id} beside the prior",
                            [("prior", preview.prior, "blue"), (evidence.fallback, preview.mixture, "yellow")],
                            caption, evidence), saved
    caption = (f"{preview.note}predicted objective {proposal.predicted_objective:.4f}; KL to the prior {proposal.kl:.4f}"
               + (f"; at their cap: {', '.join(proposal.binding_caps)}" if proposal.binding_caps else "")
               + (f"; KKT residual {proposal.kkt_residual:.1e}" if proposal.kkt_residual is not None else "")
               + written)
    view = ProposalView(f"proposal from fit {summary.fit_id} ({proposal.proposer}, kl_reg {settings.kl_reg:g}) beside the prior",
                        [("prior", preview.prior, "blue"), ("proposal", proposal.mixture, "green")], caption, evidence)
    return view, saved
