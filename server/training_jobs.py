"""Trainings that belong to the server: each runs in its own thread and publishes its latest state (status, loss
rows, previews, nearest words, the saved name); pages follow it and may come and go. One slot runs them one after
another. Also the loss plot's tables and what a run folder keeps for continuing a relation later.

Nothing here imports gradio or torch.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from reversion_core.errors import ReVersionError

FOLLOW_EVERY_S = 1.0  # a page following a training gets its state at most this often (the end at once)
log = logging.getLogger(__name__)


@dataclass
class TrainUpdate:
    """One refresh of the Train tab."""

    status: str
    losses: list[dict[str, Any]] = field(default_factory=list)  # rows: step, loss, series
    previews: list[tuple[Image.Image, str]] = field(default_factory=list)
    nearest: dict[str, float] = field(default_factory=dict)
    saved: str | None = None  # relation name, once saved
    warning: str | None = None


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


def clock(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class TrainingJob:
    """One training on the server: it runs in its own thread, whatever happens to the page that started it.

    The thread writes the latest state (status, loss rows, previews, nearest words, the saved name); any number of
    pages follow it with :meth:`updates`, and a page that goes away only stops following.
    """

    def __init__(self, owner: str | None, name: str, rows: list[dict[str, Any]] | None = None) -> None:
        self.owner, self.name = owner, name
        self.running = False  # its model is loaded and its steps have begun
        self.on_stop: list[Callable[[], None]] = []  # how to tell the run to stop (it may run in another process)
        self.stop_requested = False
        self.on_done: list[Callable[[], None]] = []  # called once when the job has ended, run or not
        self.done = False
        self.started = False
        self._changed = threading.Condition()
        self._version = 0
        self._update = TrainUpdate(f"Starting **{name}**: loading the base model...", list(rows or []))

    def publish(self, update: TrainUpdate, done: bool = False) -> None:
        with self._changed:
            self._update = update
            self._version += 1
            self.done = self.done or done
            self._changed.notify_all()

    def latest(self) -> TrainUpdate:
        with self._changed:
            return self._update

    def stop(self) -> None:
        """End the run after its current step (it saves); a run still loading stops as soon as it has loaded."""
        with self._changed:
            self.stop_requested = True
        for tell in self.on_stop:
            tell()

    def updates(self, every_s: float = FOLLOW_EVERY_S) -> Iterator[TrainUpdate]:
        """The job's state now, then its latest state at most every ``every_s`` seconds while it changes, until the
        job has ended (its last state always included). A page redraws its plots on each one, so they are spaced."""
        seen = -1
        while True:
            with self._changed:
                while self._version == seen:
                    self._changed.wait()
                seen, update, done = self._version, self._update, self.done
            yield update
            if done:
                return
            with self._changed:
                self._changed.wait_for(lambda: self.done, timeout=every_s)


class TrainingSlot:
    """The machine's one training slot: runs jobs one after another (first come, first served), tells others that
    they wait, and lets only the owner of a job stop it or cancel it while it waits."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._queue: list[TrainingJob] = []  # the running job first, then the waiting ones
        self._cancelled: set[str] = set()  # owners whose next queued run must not start (Stop pressed while waiting)
        self._starting: set[str] = set()  # owners whose Start was checked and whose run is on its way to the queue
        self._last: dict[str | None, TrainingJob] = {}

    @property
    def running(self) -> TrainingJob | None:
        with self._state:
            return self._queue[0] if self._queue and self._queue[0].started else None

    def busy(self) -> bool:
        with self._state:
            return bool(self._queue)

    def waiting_message(self) -> str:
        job = self.running
        return f"Waiting: another training ({job.name if job else 'starting'}) is running; yours starts as soon as it ends."

    def job_of(self, owner: str | None) -> TrainingJob | None:
        """The owner's latest job while it runs or waits (what a reloaded page follows)."""
        with self._state:
            job = self._last.get(owner)
            return job if job is not None and not job.done else None

    def stop(self, owner: str | None) -> str:
        """Stop ``owner``'s run (it saves the latest <R>), or cancel its queued one."""
        with self._state:
            mine = [job for job in self._queue if job.owner == owner or owner is None]
            head = self._queue[0] if self._queue else None
            if head is not None and head in mine:
                head.stop()
                if head.running:
                    return "Stopping after this step; the latest <R> will be saved."
                return "Stopping as soon as the base model has loaded; the <R> of its first step will be saved."
            if head is not None:
                if owner is not None:
                    self._cancelled.add(owner)
                for job in mine:
                    job.stop()
                return "The running training belongs to another session; your queued training, if any, was cancelled."
            if owner is not None and owner in self._starting:  # Stop pressed between a Start's check and its run
                self._cancelled.add(owner)
                return "Your training was cancelled before it started."
            return "No training of yours is running."

    def forget(self, owner: str | None) -> None:
        """A fresh Start click (its run follows): an earlier Stop of this session must not cancel the new run."""
        with self._state:
            self._cancelled.discard(owner)
            if owner is not None:
                self._starting.add(owner)

    def submit(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> TrainingJob:
        """Queue ``job``; a server thread runs ``work(job)`` when the slot is free (skipped if cancelled first)."""
        with self._state:
            self._queue.append(job)
            self._last[job.owner] = job
            self._starting.discard(job.owner)
        if len(self._queue) > 1:
            job.publish(TrainUpdate(self.waiting_message(), job.latest().losses))
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"training-{job.name}").start()
        return job

    def _run(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> None:
        with self._state:
            while self._queue[0] is not job:
                self._state.wait()
            cancelled = job.stop_requested or job.owner in self._cancelled
            self._cancelled.discard(job.owner)
            job.started = True
        try:
            if cancelled:
                job.publish(TrainUpdate("Your queued training was cancelled before it started.", job.latest().losses), done=True)
            else:
                work(job)
        except Exception as exc:  # the thread has no caller: turn any error into the job's last state
            if not isinstance(exc, ReVersionError):
                log.exception("training %s failed", job.name)
                exc = ReVersionError(f"Training failed ({type(exc).__name__}); nothing was saved.")
            job.publish(TrainUpdate(str(exc), job.latest().losses, warning=str(exc)), done=True)
        finally:
            for release in job.on_done:
                try:
                    release()
                except Exception:  # a release that fails must not keep the slot taken
                    log.exception("releasing training %s failed", job.name)
            job.publish(job.latest(), done=True)
            with self._state:
                self._queue.remove(job)
                if self._last.get(job.owner) is job:
                    del self._last[job.owner]  # nothing to follow any more; a public app has many visitors
                self._state.notify_all()


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
