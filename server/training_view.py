"""What the Train tab shows of a training and what a run keeps: times as m:ss, the loss plot's rows and its two
tables (each raw series with its smoothed line), and what a finished run keeps in its run folder so that it can be
continued (its exemplars and its plot so far).

Nothing here imports gradio or torch.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from reversion_core.run_files import EXEMPLARS_DIR, LOSSES_FILE, save_exemplars

from .forms import TrainingRequest

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------------------- the loss plot
def loss_rows(step: int, total: float, denoise: float, steer: float) -> list[dict[str, Any]]:
    """Plot rows of one step: one per series, so a line plot colours them apart."""
    return [
        {"step": step, "loss": total, "series": "total"},
        {"step": step, "loss": denoise, "series": "denoise"},
        {"step": step, "loss": steer, "series": "steering"},
    ]


SMOOTHED = " (smoothed)"
SMOOTHING = 0.1  # weight of the newest step in the smoothed line (an exponential moving average, debiased)
# Draw order of each plot: raw lines first (faint), smoothed ones over them, total last so denoise never hides it.
MAIN_SERIES = ("denoise", "total", "denoise" + SMOOTHED, "total" + SMOOTHED)
STEER_SERIES = ("steering", "steering" + SMOOTHED)
PLOT_POINTS = 500  # at most this many points a line: a long run's plot stays light for the browser


def loss_frames(rows: list[dict[str, Any]]):
    """Two plot tables, each raw per-step series plus its smoothed line: total and denoise loss (similar scales), and
    the steering loss (a larger scale)."""
    import pandas as pd

    # explicit dtypes: an empty first frame must already read as numbers, or the plot treats the axes as categories
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64", "series": "str"})
    parts = [frame]
    for series, group in frame.groupby("series", sort=False):
        smooth = group.sort_values("step").assign(series=series + SMOOTHED)
        smooth["loss"] = smooth["loss"].ewm(alpha=SMOOTHING, adjust=True).mean()
        parts.append(smooth)
    frame = pd.concat(parts, ignore_index=True)
    last = int(frame.step.max()) if len(frame) else 0
    every = -(-last // PLOT_POINTS) if last > PLOT_POINTS else 1  # thin evenly after smoothing, keeping the last step
    if every > 1:
        frame = frame[(frame.step % every == 0) | (frame.step == last)]

    def ordered(names):
        part = frame[frame.series.isin(names)].copy()
        part["order"] = part.series.map({n: k for k, n in enumerate(names)})
        return part.sort_values(["order", "step"], kind="stable").drop(columns="order").reset_index(drop=True)

    return ordered(MAIN_SERIES), ordered(STEER_SERIES)


# ----------------------------------------------------------------------------------------------- the run folder
def keep_for_continuing(run: Path, request: TrainingRequest, rows: list) -> None:
    """Keep what continuing a relation later needs beside its checkpoint: its exemplars and loss history."""
    try:
        save_exemplars(request.exemplars, run / EXEMPLARS_DIR)
        write_atomic(run / LOSSES_FILE, json.dumps(rows))
    except OSError as exc:  # the relation itself is saved; only continuing it later is lost
        log.warning("could not keep the run of %s for continuing (%s)", run.name, exc)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_losses(path: Path) -> list[dict[str, Any]]:
    """A run's saved loss rows; an unreadable file only means the plot starts empty."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [{"step": int(r["step"]), "loss": float(r["loss"]), "series": str(r["series"])} for r in rows]
    except (OSError, ValueError, TypeError, KeyError):
        return []
