"""What the app shows of a training's validation (issue 25): the quality curve as a plot table (the validation figures
against steps), a line saying where it stands, and the latest validation images framed like the report card's.

One view for three sources: a live run (its ``ValidationEvent``s), a relation's recorded curve (``card.json``'s
``validation``, which a continued run starts from and the report-card panel shows), and the run's note when
validation is off or partial (``Validation.note``). ``ui/validation_panel.py`` lays it out. No gradio, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from reversion_core.report_card import marked_grid

from .card_view import LEGEND, SCORER_NAMES

# The plotted figures of each scorer, (curve key, series name), in draw order. Leakage is in the text, not the plot:
# it reads the other way (lower is better) and would cross the two lines that say whether <R> works.
SERIES = {
    "world": (("relation", "relation right"), ("entities", "both entities right")),
    "clip": (("relation", "relation probe agrees"), ("entities", "CLIP entity score")),
}
GRID_CELL = 64  # pixels a validation image is drawn at (the world's images are 32 px)


@dataclass(frozen=True)
class CurveView:
    """The quality curve so far: its points (``{step, relation, entities, leakage, seconds}``), the scorer that read
    them (``"world"``, ``"clip"`` or None), the latest validation images as a marked grid (None: none to show), a
    Markdown line on where the curve stands, and the run's validation note."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    kind: str | None = None
    grid: Image.Image | None = None
    text: str = ""
    note: str = ""

    def caption(self, key: str = "") -> str:
        """Where the curve stands, the plot's ``key`` (which colour is which figure) and, when images are shown, what
        their frames mean."""
        return " ".join(t for t in (self.text, key if self.curve else "", LEGEND if self.grid is not None else "") if t)

    def markdown(self, key: str = "") -> str:
        """The text under the plot: the caption, then the note."""
        return "\n\n".join(t for t in (self.caption(key), self.note) if t)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def curve_rows(view: CurveView | None) -> list[dict[str, Any]]:
    """Plot rows, one per figure measured at each validated step: ``{step, score, figure}``."""
    if view is None:
        return []
    series = SERIES.get(view.kind or "world", SERIES["world"])
    return [{"step": int(p["step"]), "score": float(p[key]), "figure": name}
            for key, name in series for p in view.curve if p.get(key) is not None]


def curve_frame(view: CurveView | None):
    """The plot's table (numeric even when empty, so the plot reads its axes as numbers)."""
    import pandas as pd

    frame = pd.DataFrame(curve_rows(view), columns=["step", "score", "figure"])
    return frame.astype({"step": "int64", "score": "float64", "figure": "str"})


def point_text(point: dict[str, Any], kind: str | None, pairs: int, best: int | None) -> str:
    """``"Validation at step 40 on 8 entity pairs (the world's scorer): relation right 0.75, ...; best so far: step 40."``"""
    names = dict(SERIES.get(kind or "world", SERIES["world"]))
    figures = [f"{names['relation']} {_fmt(point.get('relation'))}", f"{names['entities']} {_fmt(point.get('entities'))}"]
    if point.get("leakage") is not None:
        figures.append(f"nuisance leaked {_fmt(point['leakage'])}")
    scorer = SCORER_NAMES.get(kind, str(kind))
    best_text = f"; best so far: step {best}" if best is not None else ""
    return f"**Validation at step {point['step']}** on {pairs} entity pairs ({scorer}): {', '.join(figures)}{best_text}."


def event_view(event, note: str = "") -> CurveView:
    """The view after a ``ValidationEvent``: its curve so far, its images framed right or wrong, the latest point."""
    text = point_text(event.curve[-1], event.kind, len(event.pairs), event.best_step)
    grid = marked_grid(event.images, cell=GRID_CELL) if event.images else None
    return CurveView([dict(p) for p in event.curve], event.kind, grid, text, note)


def record_view(record: dict[str, Any] | None) -> CurveView | None:
    """The view of a relation's recorded curve (``card.json``'s ``validation``): the kept step and why, an early stop,
    the note; None when the relation was trained without validation."""
    if not isinstance(record, dict):
        return None
    curve = [dict(p) for p in record.get("curve") or [] if isinstance(p, dict) and "step" in p]
    bits = []
    if curve:
        scorer = SCORER_NAMES.get(record.get("kind"), str(record.get("kind")))
        every = "every step" if record.get("every") == 1 else f"every {record.get('every')} steps"
        bits.append(f"Validation during training on {len(record.get('pairs') or [])} entity pairs ({scorer}, {every}).")
    for key in ("why", "stopped_early"):
        if record.get(key):
            bits.append(str(record[key]))
    return CurveView(curve, record.get("kind"), None, " ".join(bits), str(record.get("note") or ""))


def ended_view(view: CurveView | None, record: dict[str, Any] | None) -> CurveView | None:
    """A run's view once it has ended: its latest point and images and, when it kept its best step, the card's
    sentence on which step was kept and why (its status already says why it stopped early)."""
    why = record.get("why") if isinstance(record, dict) and record.get("keep") == "best" else None
    if view is None or not why or why in view.text:  # a continued run's view may already say it
        return view
    return replace(view, text=f"{view.text} {why}")


def with_note(view: CurveView | None, note: str) -> CurveView | None:
    """The view with the run's validation note (why validation is off or reads less); None when there is neither."""
    if not note:
        return view
    return replace(view or CurveView(), note=note)
