"""Trainings that belong to the server: each runs in its own thread, the GPU runner's events turned into its latest
state (status, loss rows, previews, nearest words, the saved name); pages follow it and may come and go. One slot
runs them one after another. The loss plot and what a run keeps are in :mod:`server.training_view`.

Nothing here imports gradio or torch.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

from reversion_core.errors import ReVersionError
from reversion_core.events import CheckpointEvent, FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent
from reversion_core.events import ValidationEvent
from reversion_core.report_card import validation_record

from .benchmark_view import upscale
from .forms import TrainingRequest
from .gpu_runner import GpuRunner, NearestWords, TrainingReady
from .training_view import clock, keep_for_continuing, loss_rows
from .validation_view import CurveView, ended_view, event_view, with_note

FOLLOW_EVERY_S = 1.0  # a page following a training gets its state at most this often (the end at once)
UPDATE_EVERY_S = 0.7  # a training refreshes its status at most this often
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
    validation: CurveView | None = None  # the quality curve so far, the latest validation images, the run's note


class TrainingJob:
    """One training on the server: it runs in its own thread, whatever happens to the page that started it.

    The thread writes the latest state (status, loss rows, previews, nearest words, the saved name); any number of
    pages follow it with :meth:`updates`, and a page that goes away only stops following.
    """

    def __init__(self, owner: str | None, name: str, rows: list[dict[str, Any]] | None = None,
                 validation: CurveView | None = None, request: TrainingRequest | None = None) -> None:
        self.owner, self.name = owner, name
        self.request = request  # what the run was asked for: a reloaded page shows its settings
        self.running = False  # its model is loaded and its steps have begun
        self.on_stop: list[Callable[[], None]] = []  # how to tell the run to stop (it may run in another process)
        self.stop_requested = False
        self.on_done: list[Callable[[], None]] = []  # called once when the job has ended, run or not
        self.done = False
        self.started = False
        self._changed = threading.Condition()
        self._version = 0
        self._update = TrainUpdate(f"Starting **{name}**: loading the base model...", list(rows or []), validation=validation)
        self.validation = validation  # the curve so far: every update carries it, so a page that follows late sees it

    def publish(self, update: TrainUpdate, done: bool = False) -> None:
        with self._changed:
            if update.validation is None:
                update = replace(update, validation=self.validation)
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
        self._cancelled: set[str] = set()  # owners whose run on its way must not start (Stop pressed meanwhile)
        self._starting: set[str] = set()  # owners whose Start's run is on its way to the queue (see starting)
        self._last: dict[str | None, TrainingJob] = {}

    @property
    def running(self) -> TrainingJob | None:
        with self._state:
            return self._queue[0] if self._queue and self._queue[0].started else None

    def busy(self) -> bool:
        with self._state:
            return bool(self._queue)

    def waiting_message(self) -> str:
        # never the other run's name: in public mode it is another visitor's
        return "Waiting: another training is running; yours starts as soon as it ends."

    def job_of(self, owner: str | None) -> TrainingJob | None:
        """The owner's latest job while it runs or waits (what a reloaded page follows)."""
        with self._state:
            job = self._last.get(owner)
            return job if job is not None and not job.done else None

    def stop(self, owner: str | None) -> str:
        """Stop ``owner``'s run (it saves the latest <R>), or cancel its queued one or the one on its way."""
        with self._state:
            mine = [job for job in self._queue if job.owner == owner or owner is None]
            head = self._queue[0] if self._queue else None
            if head is not None and head in mine:
                head.stop()
                if head.running:
                    return "Stopping after this step; the latest <R> will be saved."
                return "Stopping as soon as the base model has loaded; the <R> of its first step will be saved."
            on_its_way = owner is not None and owner in self._starting  # Stop pressed between a Start and its run
            if on_its_way:
                self._cancelled.add(owner)
            for job in mine:
                job.stop()
            if head is not None:
                if mine or on_its_way:
                    return "The running training belongs to another session; your queued training was cancelled."
                return "The running training belongs to another session; you have no training running or waiting."
            if on_its_way:
                return "Your training was cancelled before it started."
            return "No training of yours is running."

    @contextmanager
    def starting(self, owner: str | None) -> Iterator[None]:
        """Hold while a Start's run is on its way to the queue (checked, then submitted): a Stop meanwhile cancels it.
        An earlier Stop of this session does not: a fresh Start wins over it."""
        with self._state:
            self._cancelled.discard(owner)
            if owner is not None:
                self._starting.add(owner)
        try:
            yield
        finally:
            with self._state:
                self._starting.discard(owner)

    def submit(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> TrainingJob:
        """Queue ``job``; a server thread runs ``work(job)`` when the slot is free (skipped if cancelled first)."""
        with self._state:
            self._queue.append(job)
            self._last[job.owner] = job
            if job.owner in self._cancelled:  # stopped on its way here
                self._cancelled.discard(job.owner)
                job.stop_requested = True
        if len(self._queue) > 1:
            job.publish(TrainUpdate(self.waiting_message(), job.latest().losses))
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"training-{job.name}").start()
        return job

    def _run(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> None:
        with self._state:
            while self._queue[0] is not job:
                self._state.wait()
            cancelled = job.stop_requested
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


# ----------------------------------------------------------------------------------------------- a run's thread
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
            job.validation = with_note(job.validation, event.validation_note)
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
        elif isinstance(event, ValidationEvent):
            job.validation = event_view(event, job.validation.note if job.validation is not None else "")
            job.publish(TrainUpdate(f"Training **{name}**: validation at step {event.step}.", list(rows), previews, nearest))
        elif isinstance(event, CheckpointEvent):
            kept = event
        elif isinstance(event, (FinishedEvent, StoppedEvent, FailedEvent)):
            final = end_update(name, event, rows, previews, request, kept is not None)
            if event.relation is not None:  # the card says which step was kept and why
                job.validation = ended_view(job.validation, validation_record(event.relation))
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
