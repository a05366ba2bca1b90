"""The Gradio app's session state and streaming: the base model and its GPU runner, whose shelf of relations a
request sees (one shared folder, or in public mode each visitor's workspace), trainings started, continued, followed
and turned from the engine's events into the Train tab's updates (the threads that run them are in
``training_jobs``), and benchmark browsing.

Nothing here imports gradio; ``app.py`` maps these plain values onto components. Heavy modules (torch, diffusers)
are imported on first use so the app serves its first page before they load. Slightly over 400 lines: the
training's start, continue, follow and stop paths share the job and shelf state kept here.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from reversion_core import benchmarks
from reversion_core.benchmarks import DEFAULT_BENCHMARK_DIR, list_benchmark_sets, split_template  # noqa: F401  (the app's too)
from reversion_core.errors import ReVersionError
from reversion_core.exemplars import ExemplarSet, load_exemplars
from reversion_core.quiet import quiet_libraries
from .forms import MAX_TRAIN_STEPS, GenerateForm
from .hosting import HostedRuntime, UnusableRelation, split_relations
from reversion_core.relation_file import RelationPrompt, base_vocabulary, check_name, load_relation
from reversion_core.relation_zip import export_relation_zip, import_relation_files
from reversion_core.settings import InversionSettings
from reversion_core import run_files
from reversion_core.run_files import EXEMPLARS_DIR, LOSSES_FILE, checkpoints, read_checkpoint, save_exemplars
from .training_jobs import TrainingJob, TrainingSlot, TrainUpdate, clock, loss_rows, read_losses, write_atomic
from .shelves import SharedShelf, VisitorShelf
from .workspaces import Workspaces

APP_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RELATIONS_DIR = APP_DIR / "relations"
DISPLAY_SIZE = 256  # the embedded model draws 32x32 images; show them this big, pixels kept sharp
BENCHMARK_THUMB = 256  # exemplar images of a foreign benchmark can be large; the gallery needs no more
UPDATE_EVERY_S = 0.7  # a training refreshes its status at most this often
LEVEL_NAMES = {1: "1 (entities)", 2: "2 (+ colours)", 3: "3 (+ patterns, background)"}
Shelf = SharedShelf | VisitorShelf
log = logging.getLogger(__name__)


def upscale(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Enlarge a small image to about ``size`` pixels with nearest-neighbour, so 32 px images stay crisp."""
    factor = max(1, size // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# ----------------------------------------------------------------------------------------------- benchmark
def load_benchmark_set(benchmark_dir: str | os.PathLike, name: str) -> ExemplarSet:
    """One exemplar set of the benchmark, its images no larger than the app shows or trains on."""
    return benchmarks.load_benchmark_set(benchmark_dir, name, max_side=BENCHMARK_THUMB)


@dataclass
class BenchmarkView:
    """What the Benchmark tab shows for one exemplar set."""

    name: str
    gallery: list[tuple[Image.Image, str]]
    captions: list[list[str]]  # rows: image, level, caption
    description: str  # markdown
    templates: list[str]


def benchmark_view(benchmark_dir: str | os.PathLike, name: str) -> BenchmarkView:
    """The gallery (each image with its captions), the caption table, the description and the templates of a set."""
    exemplars = load_benchmark_set(benchmark_dir, name)
    gallery, rows = [], []
    for e in exemplars.exemplars:
        gallery.append((upscale(e.image), "\n".join(e.captions)))
        for level, text in enumerate(e.captions, start=1):
            rows.append([e.name, LEVEL_NAMES.get(level, str(level)) if len(e.captions) == 3 else str(level), text])
    meta = exemplars.relation or {}
    lines = [f"### {meta.get('phrase') or exemplars.name}"]
    if meta.get("description"):
        lines.append(meta["description"])
    if meta.get("nuisance_text"):
        lines.append(f"Every exemplar also shares a **{meta['nuisance_text']}** that the relation does not need; a good "
                     "relation prompt leaves it out.")
    lines.append(f"{len(exemplars)} exemplar images, {len(rows)} captions, {len(exemplars.templates or [])} inference templates.")
    return BenchmarkView(exemplars.name, gallery, rows, "\n\n".join(lines), list(exemplars.templates or []))


# ----------------------------------------------------------------------------------------------- the studio
class Studio:
    """The app's state: one base model (loaded once, shared by generation and training through a GpuRunner), the
    relations (one shared folder, or with ``workspaces`` one workspace per visitor beside the shipped ones), the
    benchmark folder and the training slot."""

    def __init__(
        self,
        base_model: str | os.PathLike | None = None,
        relations_dir: str | os.PathLike = DEFAULT_RELATIONS_DIR,
        benchmark_dir: str | os.PathLike = DEFAULT_BENCHMARK_DIR,
        temp_dir: str | os.PathLike | None = None,
        device: str | None = None,
        attention: str = "sdpa",
        runs_dir: str | os.PathLike | None = None,
        *,
        runtime: HostedRuntime | None = None,
        workspaces: Workspaces | None = None,
        cap_s: float | None = None,
    ) -> None:
        if runtime is None:  # a library caller: the given base model (default: the runtime's rule), not public
            from reversion_core.runtime import resolve_source
            from .hosting import pick_runtime

            runtime = pick_runtime({}, base_model=resolve_source(base_model, device), device=device, attention=attention, public=False)
        self.runtime, self.workspaces, self.cap_s = runtime, workspaces, cap_s
        self.relations_dir = Path(relations_dir)  # shipped (public mode) or shared relations
        self.benchmark_dir = Path(benchmark_dir)
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reversion-studio-"))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # checkpoints of the app's runs, where the CLI keeps its own (``--resume runs/NAME`` reads them too)
        self.shared = SharedShelf(self.relations_dir, Path(runs_dir) if runs_dir else run_files.runs_dir(self.relations_dir))
        self.slot = TrainingSlot()
        self._runner = None
        self._runner_error: ReVersionError | None = None
        self._load_lock = threading.Lock()

    @property
    def public(self) -> bool:
        return self.workspaces is not None

    def shelf(self, visitor: str | None = None) -> Shelf:
        """The relations a request sees: in public mode the visitor's workspace (``visitor`` a browser key or a user
        name), else the shared folder."""
        if self.workspaces is None:
            return self.shared
        if not visitor:
            raise ReVersionError("This visitor has no session key; reload the page.")
        return VisitorShelf(self.workspaces.for_visitor(visitor))

    # ------------------------------------------------------------------------------------------- base model
    def warm_up(self) -> threading.Thread:
        """Load the base model in the background so the first image does not wait for it."""
        def warm() -> None:
            try:
                self.runner()
            except ReVersionError:
                pass  # remembered; shown when someone generates

        thread = threading.Thread(target=warm, daemon=True, name="reversion-warm-up")
        thread.start()
        return thread

    def runner(self):
        """The GpuRunner over the loaded base model (the first call loads it; errors are one sentence, remembered)."""
        with self._load_lock:
            if self._runner is None:
                if self._runner_error is not None:
                    raise self._runner_error
                from reversion_core.generation import RelationGenerator
                from .gpu_runner import GpuRunner

                quiet_libraries(hide_warnings=False)
                rt = self.runtime
                try:
                    generator = RelationGenerator(rt.base_model, device=rt.device, dtype=rt.precision, attention=rt.attention,
                                                  relations_dir=self.relations_dir)
                    self._runner = GpuRunner(generator, rt, cap_s=self.cap_s)  # loads the pipeline
                except ReVersionError as exc:
                    self._runner_error = exc
                    raise
            return self._runner

    def generator(self):
        """The shared RelationGenerator with its pipeline loaded."""
        return self.runner().generator

    def base_model_id(self) -> str:
        return self.generator().base_model_id

    # ------------------------------------------------------------------------------------------- relations
    def relations(self, shelf: Shelf | None = None) -> list[RelationPrompt]:
        """The shelf's relations learned on the loaded base model."""
        return split_relations((shelf or self.shared).relations(), self.base_model_id())[0]

    def unusable(self, shelf: Shelf | None = None) -> list[UnusableRelation]:
        """The shelf's relations learned on another base model, each with the sentence that says why."""
        return split_relations((shelf or self.shared).relations(), self.base_model_id())[1]

    def relation_names(self, shelf: Shelf | None = None) -> list[str]:
        return [r.path.name for r in self.relations(shelf) if r.path is not None]

    def relation_names_on_disk(self, shelf: Shelf | None = None) -> list[str]:
        """Every readable relation's name on the shelf, whatever its base model (cheap: no model is loaded)."""
        return [r.path.name for r in (shelf or self.shared).relations() if r.path is not None]

    def relation(self, name: str, shelf: Shelf | None = None) -> RelationPrompt:
        """One relation of the shelf, checked against the loaded base model."""
        from reversion_core.base_model import same_base_model

        if not name:
            raise ReVersionError("Choose a relation first.")
        relation = load_relation((shelf or self.shared).relation_path(check_name(name)), None)
        if not same_base_model(relation.base_model_id, self.base_model_id()):
            raise ReVersionError(f"Relation {name!r} was learned on another base model ({relation.base_model_id}).")
        return relation

    def relation_for_set(self, set_name: str, shelf: Shelf | None = None) -> str | None:
        """The relation learned from a benchmark set: the one named after it, else one whose card names it."""
        relations = self.relations(shelf)
        names = [r.path.name for r in relations if r.path is not None]
        if set_name in names:
            return set_name
        for r in relations:
            if (r.card.get("relation") or {}).get("name") == set_name and r.path is not None:
                return r.path.name
        return None

    def relation_card(self, name: str, shelf: Shelf | None = None) -> tuple[str, Image.Image | None]:
        """Markdown describing a relation, and its preview image (upscaled) when it has one."""
        if not name:
            return "No relation chosen.", None
        r = self.relation(name, shelf)
        card = r.card
        bits = [f"**{r.name}**, token `{r.token}`, vector size {r.dim}"]
        if card.get("steps") is not None:
            bits.append(f"{card['steps']} steps ({card.get('status', 'finished')})")
        if (card.get("relation") or {}).get("description"):
            bits.append(card["relation"]["description"])
        if card.get("created_at"):
            bits.append(f"created {card['created_at']}")
        preview = r.read_preview()  # read now, bounded; a damaged preview only hides the image
        return " · ".join(bits), upscale(preview) if preview is not None else None

    def export_relation(self, name: str, shelf: Shelf | None = None) -> Path:
        """A zip of the relation's folder in the temp dir, for download (each request its own folder)."""
        relation = self.relation(name, shelf)
        return export_relation_zip(relation.path, self.temp_dir / "downloads" / uuid.uuid4().hex)

    def import_relation(self, files: Sequence[str | os.PathLike] | None, name: str | None = None, overwrite: bool = False,
                        shelf: Shelf | None = None) -> str:
        """Import a relation from uploaded files onto the shelf and return its name (see relation_zip)."""
        shelf = shelf or self.shared
        incoming = shelf.check_upload(files)
        generator = self.generator()

        def taken(name: str) -> set[str]:
            return {r.token for r in shelf.relations() if r.path is None or r.path.name != name}

        return import_relation_files(
            files, shelf.relations_dir, base_model_id=generator.base_model_id, embedding_dim=generator.embedding_dim,
            base_vocab=base_vocabulary(generator.pipeline.tokenizer), taken_tokens=taken,
            check_new=lambda n, o: shelf.check_new(n, o, incoming), work_root=self.temp_dir, name=name, overwrite=overwrite,
        )

    # ------------------------------------------------------------------------------------------- generation
    def generate(self, form: GenerateForm, shelf: Shelf | None = None) -> tuple[list[tuple[Image.Image, str]], str]:
        """Images (upscaled) with their seeds as captions, and the prompt that made them."""
        relation = self.relation(form.relation, shelf) if form.relation else None
        request = form.request(relation.path if relation is not None else None)
        result = self.runner().generate(request)
        return [(upscale(im), f"seed {s}") for im, s in zip(result.images, result.seeds)], result.prompt

    # ------------------------------------------------------------------------------------------- training
    def check_training(self, name: str, settings: InversionSettings, overwrite: bool = False,
                       shelf: Shelf | None = None, incoming: int = 0) -> None:
        """Everything a training is refused for before it starts: the name, the quotas (``incoming`` bytes of exemplars
        it will keep), the visitor's one training place and the GPU time cap."""
        shelf = shelf or self.shared
        shelf.check_new(name, overwrite, incoming)
        shelf.check_steps(settings.max_train_steps)
        with shelf.training():  # refused now, not after the page was told it starts
            pass
        if self.cap_s is not None:
            self.runner().check_training(settings)

    def train(self, owner: str | None, exemplars: ExemplarSet, name: str, settings: InversionSettings,
              overwrite: bool = False, shelf: Shelf | None = None, incoming: int = 0) -> Iterator[TrainUpdate]:
        """Start a training on the server and follow it; the last update names the saved relation."""
        yield from self.start_training(owner, exemplars, name, settings, overwrite, shelf, incoming).updates()

    def start_training(self, owner: str | None, exemplars: ExemplarSet, name: str, settings: InversionSettings,
                       overwrite: bool = False, shelf: Shelf | None = None, incoming: int = 0) -> TrainingJob:
        """Queue a training of a new relation; it runs in a server thread until it ends, page or no page."""
        shelf = shelf or self.shared
        self.check_training(name, settings, overwrite, shelf, incoming)
        return self._submit(owner, shelf, name, exemplars, settings, overwrite)

    def continuable(self, shelf: Shelf | None = None) -> list[str]:
        """Relations that can be trained further: the shelf's own whose last run left its checkpoint."""
        shelf = shelf or self.shared
        return sorted(n for n in shelf.own_names() if checkpoints(shelf.runs_dir / n))

    def continue_training(self, owner: str | None, name: str, more_steps: int, shelf: Shelf | None = None) -> TrainingJob:
        """Queue ``more_steps`` further steps of a relation trained here, from its last checkpoint: the same optimizer
        state and random stream, so the result is the one a longer run would have given."""
        shelf = shelf or self.shared
        relation = self.relation(name, shelf)
        if not 1 <= int(more_steps) <= MAX_TRAIN_STEPS:
            raise ReVersionError(f"Train between 1 and {MAX_TRAIN_STEPS} more steps, not {more_steps}.")
        run = shelf.runs_dir / relation.path.name
        kept = checkpoints(run)
        if relation.path.name not in shelf.own_names() or not kept or not (run / EXEMPLARS_DIR).is_dir():
            raise ReVersionError(f"Relation {name!r} has no checkpoint to continue from; only relations trained in this app can be continued.")
        state = read_checkpoint(kept[-1])
        if state["step"] != relation.card.get("steps"):
            raise ReVersionError(
                f"Relation {name!r} is at step {relation.card.get('steps')} but its checkpoint is at step {state['step']}; it cannot be continued."
            )
        settings = replace(InversionSettings.from_dict(state["settings"]), max_train_steps=int(state["step"]) + int(more_steps))
        shelf.check_steps(int(more_steps))
        if self.cap_s is not None:
            self.runner().check_training(replace(settings, max_train_steps=int(more_steps)))
        exemplars = load_exemplars(run / EXEMPLARS_DIR, settings.placeholder_token)
        return self._submit(owner, shelf, relation.path.name, exemplars, settings, True, kept[-1], read_losses(run / LOSSES_FILE))

    def follow(self, owner: str | None) -> Iterator[TrainUpdate]:
        """The updates of ``owner``'s running or waiting training, if any (a reloaded page picks it up again)."""
        job = self.slot.job_of(owner)
        if job is not None:
            yield from job.updates()

    def _submit(self, owner, shelf: Shelf, name: str, exemplars: ExemplarSet, settings: InversionSettings,
                overwrite: bool, resume_from: Path | None = None, rows: list | None = None) -> TrainingJob:
        from .gpu_runner import TrainingRequest, request_stop

        hold = ExitStack()
        hold.enter_context(shelf.training())  # public mode: one training per visitor, running or queued
        stop_file = self.temp_dir / "stop" / uuid.uuid4().hex
        request = TrainingRequest(exemplars, name, replace(settings, attention=self.runtime.attention),
                                  str(shelf.relations_dir), overwrite, str(stop_file),
                                  str(resume_from) if resume_from else None, str(shelf.runs_dir))
        job = TrainingJob(owner, name, rows)
        job.on_stop.append(lambda: request_stop(stop_file))
        job.on_done += [hold.close, lambda: stop_file.unlink(missing_ok=True)]
        return self.slot.submit(job, lambda job: self._run_training(job, request, shelf))

    def _run_training(self, job: TrainingJob, request, shelf: Shelf) -> None:
        """The body of a training thread: the runner's events turned into the job's updates."""
        from reversion_core.inversion import CheckpointEvent, FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent
        from .gpu_runner import NearestWords, TrainingReady

        runner = self.runner()
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
                final = self._end(job.name, event, rows, previews, request, shelf, kept)
        if final is not None:  # the runner's last NearestWords comes after the end event
            job.publish(replace(final, nearest=nearest), done=True)

    def _end(self, name: str, event, rows, previews, request, shelf: Shelf, kept) -> TrainUpdate:
        """The last update of a run from its end event; a finished or stopped run keeps what continuing it needs."""
        from reversion_core.inversion import FailedEvent, FinishedEvent

        # a relation saved elsewhere than the shelf's folder (its fallback when that failed) is not listed
        listed = event.path is not None and event.path.parent.resolve() == shelf.relations_dir.resolve()
        saved = event.path.name if listed else None
        if isinstance(event, FailedEvent):
            where = f" It was saved as **{saved}**." if saved else ""
            status = f"Failed at step {event.step}. {event.message}{where}"
            return TrainUpdate(status, rows, previews, {}, saved, warning=status)
        if saved is not None and kept is not None:
            self._save_run(shelf.runs_dir / saved, request.exemplars, rows)
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

    @staticmethod
    def _save_run(run: Path, exemplars: ExemplarSet, rows: list) -> None:
        """Keep what continuing a relation later needs beside its checkpoint: its exemplars and loss history."""
        try:
            save_exemplars(exemplars, run / EXEMPLARS_DIR)
            write_atomic(run / LOSSES_FILE, json.dumps(rows))
        except OSError as exc:  # the relation itself is saved; only continuing it later is lost
            log.warning("could not keep the run of %s for continuing (%s)", run.name, exc)
