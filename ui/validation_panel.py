"""The quality-curve panel (issue 25): the validation figures plotted against steps, a line saying where the curve
stands (the latest point, the kept step and why, or why validation is off), and the latest validation images framed
like the report card's. The Train tab streams a run's curve into it; the report-card panel shows the curve a
relation's training recorded. What it shows comes from ``server.validation_view``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from server.validation_view import SERIES, CurveView, curve_frame

from .wiring import as_markdown

# One colour a figure, whichever scorer read it: purple says the relation, teal the entities. The text under the plot
# starts with the key, as under the loss plots: the plot's own legend stays empty when its first value has no rows.
COLOURS = (("#7c3aed", "Purple"), ("#0891b2", "teal"))
CURVE_COLOURS = {name: colour for series in SERIES.values() for (_, name), (colour, _) in zip(series, COLOURS)}


def curve_key(view: CurveView) -> str:
    """``"Purple: relation right; teal: both entities right."`` for the scorer that read the curve."""
    series = SERIES.get(view.kind or "world", SERIES["world"])
    return "; ".join(f"{word}: {name}" for (_, name), (_, word) in zip(series, COLOURS)) + "."


def caption(view: CurveView | None, note: bool) -> str:
    """The text under the plot: the key (when there is a curve), where the curve stands and, with ``note``, the note."""
    if view is None:
        return ""
    return as_markdown(view.markdown(curve_key(view)) if note else view.caption(curve_key(view)))


@dataclass
class ValidationPanel:
    """The panel's components; ``grid`` is None where the panel shows no images (a relation's recorded curve)."""

    plot: Any
    text: Any
    grid: Any = None

    @property
    def outputs(self) -> list:
        return [self.plot, self.text] + ([self.grid] if self.grid is not None else [])

    def values(self, view: CurveView | None) -> tuple:
        """A run's curve so far: the plot's table (None clears the plot), the latest point and the images (the run's
        note goes into its status line instead, see :func:`status_with_note`)."""
        frame = curve_frame(view) if view is not None and view.curve else None
        shown = (frame, caption(view, note=False))
        return shown + ((view.grid if view is not None else None,) if self.grid is not None else ())

    def recorded(self, view: CurveView | None) -> tuple:
        """A relation's recorded curve with its note, the plot hidden when it has none (most relations were trained
        without one)."""
        frame = curve_frame(view) if view is not None and view.curve else None
        text = caption(view, note=True)
        grid = (view.grid if view is not None else None,) if self.grid is not None else ()
        return (gr.LinePlot(value=frame, visible=frame is not None), gr.Markdown(text, visible=bool(text)), *grid)


def status_with_note(status: str, view: CurveView | None) -> str:
    """A run's status line and, when its validation is off or reads less, the one sentence that says so."""
    return f"{status}\n\n{view.note}" if view is not None and view.note else status


def build_validation_panel(elem_prefix: str = "validation", label: str = "Quality on validation pairs",
                           images: bool = True, visible: bool = True) -> ValidationPanel:
    """Lay out the panel where it is called: the plot (x: step, y: share of images right), the text under it and,
    with ``images``, the latest validation images."""
    plot = gr.LinePlot(x="step", y="score", color="figure", x_lim=[0, None], y_lim=[0, 1], height=260, label=label,
                       color_map=CURVE_COLOURS, colors_in_legend=[], x_title="step", y_title="score",
                       elem_id=f"{elem_prefix}-plot", visible=visible)
    text = gr.Markdown(label="Validation", elem_id=f"{elem_prefix}-text", visible=visible)
    grid = gr.Image(label="Latest validation images", show_label=False, format="png", interactive=False,
                    elem_classes="pixelated", elem_id=f"{elem_prefix}-grid") if images else None
    return ValidationPanel(plot, text, grid)
