"""The report-card panel: a "Score this relation" button with the number of entity pairs, a progress bar, the
card's paragraph and table, the scored images each framed right or wrong, and the quality curve the relation's
training recorded, when it has one. The Train and Generate tabs each build one, wired to their relation selector; what
it shows comes from ``server.card_view`` (and ``server.validation_view``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gradio as gr

from reversion_core.report_card import DEFAULT_PAIRS, MAX_PAIRS
from server import studio as st
from server.card_view import NO_CARD, TABLE_HEADERS, shelf_card_view
from server.validation_view import record_view

from .validation_panel import ValidationPanel, build_validation_panel
from .wiring import PRIVATE, CheckedNumber, clear_error_marks, handler


@dataclass
class ScorePanel:
    """The panel's components (the app may wire more events to them)."""

    button: Any
    pairs: Any
    text: Any
    table: Any
    grid: Any
    box: Any
    curve: ValidationPanel | None = None


def build_score_panel(
    studio: st.Studio,
    selector: Any,
    owner: Any = None,
    api_name: str | None = None,
    hidden_until_chosen: bool = False,
    refresh_on: Sequence[Any] = (),
    elem_prefix: str = "score",
    show_curve: bool = True,
) -> ScorePanel:
    """Lay out the report-card panel where it is called (inside a tab) and wire it to ``selector``, the component
    whose value names the relation to score. The saved card is shown whenever ``selector`` changes (and on load).

    ``owner`` is the page's token, which finds the caller's shelf of relations (without it, the API session's);
    ``api_name`` makes scoring an API endpoint (else it is private); ``hidden_until_chosen`` hides the panel while ``selector`` is empty (the Train tab's, until a run has saved a
    relation); ``refresh_on`` lists more triggers (such as a tab's ``select``) that show the saved card again, since
    another panel may have scored the same relation; ``show_curve`` shows the relation's recorded quality curve under
    the card (the Train tab shows its run's own)."""
    visitor = [owner] if owner is not None else []

    @handler(studio)
    def score(relation, pairs=DEFAULT_PAIRS, shelf=None, progress=gr.Progress()):
        """Score a relation on held-out entity pairs (one image each, and one with the relation's phrase): the
        card's paragraph, its table and the marked grid. Saved into the relation's card.json where you may write it."""
        progress(0, desc="Starting")
        view = studio.score_relation(relation, DEFAULT_PAIRS if pairs is None else pairs, shelf,
                                     lambda done, total: progress((done, total), desc="Scoring", unit="images"))
        return view.text, view.table, view.grid

    @handler(studio)
    def show_saved(relation, shelf=None):
        if not relation:
            return gr.Column(visible=not hidden_until_chosen), NO_CARD, [], None, *curve_values(None)
        view = shelf_card_view(shelf, relation)
        return gr.Column(visible=True), view.text, view.table, view.grid, *curve_values(view.validation)

    def curve_values(record) -> tuple:
        return curve.recorded(record_view(record)) if curve is not None else ()

    with gr.Column(visible=not hidden_until_chosen, elem_id=f"{elem_prefix}-panel") as box:
        with gr.Row():
            button = gr.Button("Score this relation", elem_id=f"{elem_prefix}-button", scale=3)
            pairs = CheckedNumber(value=DEFAULT_PAIRS, precision=0, minimum=1, maximum=MAX_PAIRS, label="Entity pairs",
                                  elem_id=f"{elem_prefix}-pairs", scale=1)
        text = gr.Markdown(elem_id=f"{elem_prefix}-text")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Report card", interactive=False, elem_id=f"{elem_prefix}-table",
                             column_widths=["55%", "15%", "15%", "15%"])
        # no label badge (it would cover the top row); the toolbar sits above the images (app.CSS's .score-grid)
        grid = gr.Image(label="Scored images (frame: right or wrong)", show_label=False, format="png", interactive=False,
                        elem_classes=["pixelated", "score-grid"], elem_id=f"{elem_prefix}-grid", buttons=["download", "fullscreen"])
        curve = build_validation_panel(f"{elem_prefix}-curve", "Quality on validation pairs during training", images=False,
                                       visible=False) if show_curve else None
    shown = [box, text, table, grid] + (curve.outputs if curve is not None else [])
    scored = button.click(score, [selector, pairs, *visitor], [text, table, grid], api_name=api_name, show_progress_on=grid,
                          api_visibility="public" if api_name else "private", concurrency_id="generate")  # one pipeline
    clear_error_marks(scored, [text, table, grid])
    gr.on(None, show_saved, [selector, *visitor], shown, **PRIVATE)  # on load and on change
    if refresh_on:
        gr.on(list(refresh_on), show_saved, [selector, *visitor], shown, **PRIVATE)
    return ScorePanel(button, pairs, text, table, grid, box, curve)
