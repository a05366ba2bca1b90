"""The app's per-visitor state and what each tab asks of it: one base model, loaded once and lent through a GPU
runner; whose relations a request sees (a shelf: one shared folder, or in public mode each visitor's workspace);
generation, import and download; trainings built from a click, started, continued and followed (their threads are in
``training_jobs``, their plot in ``training_view``); and report cards.

Methods take and return plain values; ``ui/`` maps them onto components, and nothing here imports gradio. Heavy
modules (diffusers, transformers) are imported on first use, so the app serves its first page before they load.
"""
from __future__ import annotations

import math
import os
import tempfile
import threading
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image

from reversion_core import run_files
from reversion_core.benchmarks import DEFAULT_BENCHMARK_DIR
from reversion_core.errors import ReVersionError
from reversion_core.exemplars import ExemplarSet, exemplars_from_files, load_exemplars
from reversion_core.quiet import quiet_libraries
from reversion_core.relation_file import RelationPrompt, base_vocabulary, check_name, load_relation
from reversion_core.relation_zip import export_relation_zip, import_relation_files
from reversion_core.report_card import DEFAULT_PAIRS, MAX_PAIRS, validation_record
from reversion_core.run_files import EXEMPLARS_DIR, LOSSES_FILE, checkpoints, read_checkpoint
from reversion_core.settings import InversionSettings

from .benchmark_view import load_benchmark_set, upscale
from .card_view import CardView, is_read_only, readable_time, save_and_view
from .forms import MAX_TRAIN_STEPS, GenerationRequest, ScoreRequest, TrainForm, TrainingRequest
from .hosting import HostedRuntime
from .page_keys import PageKeys
from .shelves import Shelf, SharedShelf, UnusableRelation, VisitorShelf, split_relations
from .training_jobs import TrainingJob, TrainingSlot, TrainUpdate, run_training
from .training_view import read_losses
from .validation_view import record_view
from .workspaces import Workspaces

APP_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RELATIONS_DIR = APP_DIR / "relations"


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
        clip_model: str | None = None,
        relation_probe: str | None = None,
    ) -> None:
        if runtime is None:  # a library caller: the given base model (default: the runtime's rule), not public
            from reversion_core.runtime import resolve_source

            from .hosting import pick_runtime

            runtime = pick_runtime({}, base_model=resolve_source(base_model, device), device=device, attention=attention, public=False)
        self.runtime, self.workspaces, self.cap_s = runtime, workspaces, cap_s
        self.clip_model, self.relation_probe = clip_model, relation_probe  # read images off the embedded world
        self.relations_dir = Path(relations_dir)  # shipped (public mode) or shared relations
        self.benchmark_dir = Path(benchmark_dir)
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reversion-studio-"))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # checkpoints of the app's runs, where the CLI keeps its own (``--resume runs/NAME`` reads them too)
        self.shared = SharedShelf(self.relations_dir, Path(runs_dir) if runs_dir else run_files.runs_dir(self.relations_dir))
        self.slot = TrainingSlot()
        self.page_keys = PageKeys(workspaces.secret if workspaces is not None else None)  # public: keys survive restarts
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
            bits.append(f"created {readable_time(card['created_at'])}")
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
    def generate(self, request: GenerationRequest, shelf: Shelf | None = None) -> tuple[list[tuple[Image.Image, str]], str, list[str]]:
        """Images (upscaled) with their seeds as captions, the prompt that made them, and notes for the person (such as
        a prompt cut to the text encoder's length)."""
        request.check_texts()
        relation = self.relation(request.relation, shelf) if request.relation else None
        if request.free and not request.prompt.strip():
            raise ReVersionError("Write a prompt containing <R>, such as 'rabbit <R> carrot'.")
        if relation is None and not request.free:
            raise ReVersionError("Choose a relation, or write a free prompt.")
        result = self.runner().generate(request, str(relation.path) if relation is not None else None)
        return [(upscale(im), f"seed {s}") for im, s in zip(result.images, result.seeds)], result.prompt, result.notes

    # ------------------------------------------------------------------------------------------- training
    def training_request(self, form: TrainForm, shelf: Shelf | None = None) -> TrainingRequest:
        """The training a Train click asks for, built once, and checked for everything it could be refused for."""
        shelf = shelf or self.shared
        # 1. The exemplars: a benchmark set, or uploaded images with captions (their bytes count against the quota).
        incoming = 0
        if form.from_benchmark:
            exemplars = load_benchmark_set(self.benchmark_dir, form.set_name)
        else:
            incoming = shelf.check_upload(form.files)
            exemplars = exemplars_from_files(form.files, form.captions)
        # 2. The name: the one given, else a free one after the benchmark set.
        name = form.name.strip() or (shelf.free_name(form.set_name) if form.from_benchmark and form.set_name else "")
        if not name:
            raise ReVersionError("Give the relation a name, such as 'painted_on'.")
        name = check_name(name)
        # 3. The settings, in this runtime's attention and precision (its trainings share the models it loaded).
        settings = form.settings(attention=self.runtime.attention, mixed_precision=self.runtime.precision)
        # 4. The request, then the quotas, the visitor's one training place and the GPU time cap.
        request = self.new_training(exemplars, name, settings, shelf, overwrite=form.overwrite, incoming=incoming)
        self.check_training(request, shelf)
        return request

    def new_training(self, exemplars: ExemplarSet, name: str, settings: InversionSettings, shelf: Shelf | None = None,
                     **options) -> TrainingRequest:
        """A training of ``exemplars`` into the shelf's relation ``name``: saved in the shelf's folder, its checkpoint
        kept in the shelf's run folder, stopped through a file of its own. ``options`` are TrainingRequest's."""
        shelf = shelf or self.shared
        return TrainingRequest(exemplars, name, settings, str(shelf.relations_dir), str(shelf.runs_dir),
                               stop_file=str(self.temp_dir / "stop" / uuid.uuid4().hex), clip_model=self.clip_model,
                               relation_probe=self.relation_probe, **options)

    def check_training(self, request: TrainingRequest, shelf: Shelf | None = None) -> None:
        """Everything a new training is refused for before it starts: the name, the quotas (the exemplar bytes it
        keeps), the visitor's one training place and the GPU time cap."""
        shelf = shelf or self.shared
        shelf.check_new(request.name, request.overwrite, request.incoming)
        shelf.check_steps(request.steps)
        with shelf.training():  # refused now, not after the page was told it starts
            pass
        if self.cap_s is not None:
            self.runner().check_training(request)

    def start_training(self, owner: str | None, request: TrainingRequest, shelf: Shelf | None = None) -> TrainingJob:
        """Queue a training of a new relation; it runs in a server thread until it ends, page or no page."""
        shelf = shelf or self.shared
        with self.slot.starting(owner):  # on its way: a Stop from now on cancels it
            self.check_training(request, shelf)  # again: quotas may have filled since the click was checked
            return self._submit(owner, request, shelf)

    def train(self, owner: str | None, request: TrainingRequest, shelf: Shelf | None = None) -> Iterator[TrainUpdate]:
        """Start a training on the server and follow it; the last update names the saved relation."""
        yield from self.start_training(owner, request, shelf).updates()

    def continuable(self, shelf: Shelf | None = None) -> list[str]:
        """Relations that can be trained further: the shelf's own whose last run left its checkpoint."""
        shelf = shelf or self.shared
        return sorted(n for n in shelf.own_names() if checkpoints(shelf.runs_dir / n))

    def continue_training(self, owner: str | None, name: str, more_steps: int, shelf: Shelf | None = None) -> TrainingJob:
        """Queue ``more_steps`` further steps of a relation trained here, from its last checkpoint: the same optimizer
        state and random stream, so the result is the one a longer run would have given."""
        shelf = shelf or self.shared
        # 1. The relation, its run folder and its last checkpoint, which must be where the relation is.
        relation = self.relation(name, shelf)
        if not 1 <= int(more_steps) <= MAX_TRAIN_STEPS:
            raise ReVersionError(f"Train between 1 and {MAX_TRAIN_STEPS} more steps, not {more_steps}.")
        run = shelf.runs_dir / relation.path.name
        kept = checkpoints(run)
        if relation.path.name not in shelf.own_names() or not kept or not (run / EXEMPLARS_DIR).is_dir():
            raise ReVersionError(f"Relation {name!r} has no checkpoint to continue from; only relations trained in this app can be continued.")
        state = read_checkpoint(kept[-1])
        step = int(state["step"])
        if step != relation.card.get("steps"):
            raise ReVersionError(
                f"Relation {name!r} is at step {relation.card.get('steps')} but its checkpoint is at step {step}; it cannot be continued."
            )
        # 2. The checkpoint's settings, further, in this runtime's attention and precision; its kept exemplars and plot.
        settings = InversionSettings.from_dict({
            **state["settings"], "max_train_steps": step + int(more_steps), "attention": self.runtime.attention,
            "mixed_precision": self.runtime.precision,
        })
        request = self.new_training(
            load_exemplars(run / EXEMPLARS_DIR, settings.placeholder_token), relation.path.name, settings, shelf,
            overwrite=True, resume_from=str(kept[-1]), start_step=step, losses=read_losses(run / LOSSES_FILE),
            validation=validation_record(relation),
        )
        # 3. The visitor's steps limit and the GPU time cap, for the steps still to run.
        with self.slot.starting(owner):
            shelf.check_steps(request.steps)
            if self.cap_s is not None:
                self.runner().check_training(request)
            return self._submit(owner, request, shelf)

    def follow(self, owner: str | None) -> Iterator[TrainUpdate]:
        """The updates of ``owner``'s running or waiting training, if any (a reloaded page picks it up again)."""
        job = self.slot.job_of(owner)
        if job is not None:
            yield from job.updates()

    def followed_form(self, owner: str | None) -> TrainForm | None:
        """The settings of ``owner``'s running or waiting training (a reloaded page shows them), if any."""
        job = self.slot.job_of(owner)
        return TrainForm.of_run(job.request) if job is not None and job.request is not None else None

    def _submit(self, owner: str | None, request: TrainingRequest, shelf: Shelf) -> TrainingJob:
        from .gpu_runner import request_stop

        hold = ExitStack()
        hold.enter_context(shelf.training())  # public mode: one training per visitor, running or queued
        stop_file = Path(request.stop_file)
        job = TrainingJob(owner, request.name, request.losses, record_view(request.validation), request)
        job.on_stop.append(lambda: request_stop(stop_file))
        job.on_done += [hold.close, lambda: stop_file.unlink(missing_ok=True)]
        return self.slot.submit(job, lambda job: run_training(job, self.runner(), request))

    # ------------------------------------------------------------------------------------------- report cards
    def score_relation(self, name: str, pairs: int = DEFAULT_PAIRS, shelf: Shelf | None = None,
                       progress: Callable[[int, int], None] | None = None) -> CardView:
        """Score the shelf's relation ``name`` on ``pairs`` held-out entity pairs through the GPU runner (progress as
        images are made), save the card where the caller may write, and return its view."""
        from .gpu_runner import ScoreProgress

        shelf = shelf or self.shared
        if isinstance(pairs, bool) or not isinstance(pairs, (int, float)) or not math.isfinite(pairs) or pairs != int(pairs):
            raise ReVersionError(f"Score on a whole number of entity pairs from 1 to {MAX_PAIRS}, not {pairs!r}.")
        if not 1 <= int(pairs) <= MAX_PAIRS:
            raise ReVersionError(f"Score on 1 to {MAX_PAIRS} entity pairs, not {pairs}.")
        relation = self.relation(name, shelf)  # refuses a relation of another base model in one sentence
        card = None
        score = ScoreRequest(str(relation.path), int(pairs), clip_model=self.clip_model, relation_probe=self.relation_probe)
        for item in self.runner().score(score):
            if isinstance(item, ScoreProgress):
                if progress is not None:
                    progress(item.done, item.total)
            else:
                card = item
        return save_and_view(relation, card, save=not is_read_only(shelf, relation), beside=shelf.cards_dir)
