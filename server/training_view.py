"""What the Train tab shows of a training: the engine's events turned into the job's updates (a status line, the loss
plot's rows, previews, the words nearest to <R>), the loss plot's two tables, and what a finished run keeps in its run
folder so that it can be continued (its exemplars and its plot so far).

Nothing here imports gradio or torch.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from reversion_core.events import CheckpointEvent, FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent
from reversion_core.run_files import EXEMPLARS_DIR, LOSSES_FILE, save_exemplars

from .benchmark_view import upscale
from .forms import TrainingRequest
from .gpu_runner import GpuRunner, NearestWords, TrainingReady
from .training_jobs import TrainingJob, TrainUpdate

UPDATE_EVERY_S = 0.7  # a training refreshes its status at most this often
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- a run's updates
def run_training(job: TrainingJob, runner: GpuRunner, request: TrainingRequest) -> None:
    """The body of a training thread: the runner's events, as they come, turned into the job's updates."""
    name = job.name
    rows = list(job.latest().losses)
    previews: list[tuple[Image.Image, str]] = []
    nearest: dict[str, float] = {}
    start_step, last_ui, kept, final = 0, 0.0, None, None
    for event in runner.train(request):
        if isinstance(event, TrainingReady):
            start_step, job.running = event.start_step, True
            job.publish(TrainUpdate(f"Training **{name}**: step {start_step} of {event.total_steps}.", list(rows)))
        elif isinstance(event, NearestWords):
            nearest = dict(event.words)
        elif isinstance(event, StepEvent):
            rows += loss_rows(event.step, event.loss, event.denoise_loss, event.steer_loss)
            now = time.monotonic()
            if now - last_ui < UPDATE_EVERY_S and event.step < event.total_steps:
                continue
            last_ui = now
            rate = (event.step - start_step) / event.elapsed if event.elapsed > 0 else 0.0
            status = (f"Training **{name}**: step {event.step} of {event.total_steps} · {rate:.2f} steps/s · "
                      f"elapsed {clock(event.elapsed)} · about {clock(event.eta)} left · loss {event.loss:.4f}")
            job.publish(TrainUpdate(status, list(rows), previews, nearest))
        elif isinstance(event, PreviewEvent):
            previews = [(upscale(im), f"step {event.step}: {event.prompt}") for im in event.images]
            job.publish(TrainUpdate(f"Training **{name}**: preview at step {event.step}.", list(rows), previews, nearest))
        elif isinstance(event, CheckpointEvent):
            kept = event
        elif isinstance(event, (FinishedEvent, StoppedEvent, FailedEvent)):
            final = end_update(name, event, rows, previews, request, kept is not None)
    if final is not None:  # the runner's last NearestWords comes after the end event
        job.publish(replace(final, nearest=nearest), done=True)


def end_update(name: str, event, rows, previews, request: TrainingRequest, checkpoint_kept: bool) -> TrainUpdate:
    """The last update of a run from its end event; a finished or stopped run keeps what continuing it needs."""
    # a relation saved elsewhere than the request's folder (its fallback when that failed) is not listed
    listed = event.path is not None and event.path.parent.resolve() == Path(request.relations_dir).resolve()
    saved = event.path.name if listed else None
    if isinstance(event, FailedEvent):
        where = f" It was saved as **{saved}**." if saved else ""
        status = f"Failed at step {event.step}. {event.message}{where}"
        return TrainUpdate(status, rows, previews, {}, saved, warning=status)
    if saved is not None and checkpoint_kept:
        keep_for_continuing(Path(request.runs_dir) / saved, request, rows)
    verb = "Finished" if isinstance(event, FinishedEvent) else "Stopped"
    took = f"at step {event.step} in {clock(event.elapsed)}"
    if event.message:
        status = f"{verb} {took}. {event.message}"
    elif saved is None:
        status = f"{verb} {took}; the relation could not be saved."
    elif saved != name:
        status = f"{verb} {took}; saved as **{saved}** (the existing **{name}** was kept), ready in the Generate tab."
    else:
        status = f"{verb} {took}; relation **{saved}** is saved and ready in the Generate tab."
    return TrainUpdate(status, rows, previews, {}, saved)


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
