"""What the Gradio app needs beyond layout and wiring: benchmark browsing, uploads turned into exemplar sets,
starting and continuing trainings (the threads that run them are in ``training_jobs``), the Train tab's bounds, the
cached generator, relation import and export.

Nothing here imports gradio; ``app.py`` maps these plain values onto components. Heavy modules (torch,
diffusers) are imported on first use so the app serves its first page before they load.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from .errors import ReVersionError
from .exemplars import IMAGE_EXTENSIONS, ExemplarSet, exemplars_from_uploads, load_exemplars, open_image
from .relation_file import (
    CARD_FILE, EMBEDS_FILE, PREVIEW_FILE, RelationPrompt, base_vocabulary, check_name, choose_token, free_relation_name,
    list_relations, load_relation,
)
from .settings import DEFAULT_PLACEHOLDER, InversionSettings
from .training_jobs import (  # noqa: F401  (TrainUpdate, loss_frames and the series names are the app's too)
    MAIN_SERIES, STEER_SERIES, TrainingJob, TrainingSlot, TrainUpdate, clock, loss_frames, loss_rows, read_losses,
    save_exemplars, write_atomic,
)

APP_DIR = Path(__file__).resolve().parent.parent
# Relation imports: a vector is a few KB and a preview a few hundred; these bound what an upload can unpack.
MAX_IMPORT_FILE_BYTES = 8 * 2**20
MAX_IMPORT_TOTAL_BYTES = 16 * 2**20
_IMPORTED_FILES = (EMBEDS_FILE, CARD_FILE, PREVIEW_FILE, "learned_embeds.bin")
DEFAULT_RELATIONS_DIR = APP_DIR / "relations"
DEFAULT_BENCHMARK_DIR = APP_DIR / "assets" / "benchmark"
DISPLAY_SIZE = 256  # the embedded model draws 32x32 images; show them this big, pixels kept sharp
BENCHMARK_THUMB = 256  # exemplar images of a foreign benchmark can be large; the gallery needs no more
UPDATE_EVERY_S = 0.7  # a training refreshes its state (nearest words, status) at most this often
NEAREST_K = 8
CAPTION_SEPARATOR = "|"
LEVEL_NAMES = {1: "1 (entities)", 2: "2 (+ colours)", 3: "3 (+ patterns, background)"}
MAX_UPLOAD_IMAGES = 100  # exemplar images one training takes (the paper uses 2-10); each is shrunk to 1024 px
MAX_TRAIN_STEPS = 100_000  # the most steps one run (or one continuation) may ask for
EXEMPLARS_DIR = "exemplars"  # in a run folder: the exemplars it learned from, for continuing it
LOSSES_FILE = "losses.json"  # in a run folder: the loss plot's rows so far
log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Keep load bars and library notes out of the server log (the UI shows its own status)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def upscale(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Enlarge a small image to about ``size`` pixels with nearest-neighbour, so 32 px images stay crisp."""
    factor = max(1, size // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# ----------------------------------------------------------------------------------------------- benchmark
def list_benchmark_sets(benchmark_dir: str | os.PathLike) -> list[str]:
    """The exemplar sets under ``benchmark_dir``: every sub-folder holding a ``text.json`` (official layout)."""
    root = Path(benchmark_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "text.json").is_file())


def load_benchmark_set(benchmark_dir: str | os.PathLike, name: str) -> ExemplarSet:
    """One exemplar set of the benchmark, by folder name (a name with path separators is refused)."""
    if not name:
        raise ReVersionError("Choose an exemplar set of the benchmark.")
    if name not in list_benchmark_sets(benchmark_dir):
        raise ReVersionError(f"The benchmark has no exemplar set named {name!r}.")
    return load_exemplars(Path(benchmark_dir) / name, max_side=BENCHMARK_THUMB)


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


def split_template(template: str, placeholder: str = DEFAULT_PLACEHOLDER) -> tuple[str, str]:
    """``"red circle <R> blue square"`` -> ``("red circle", "blue square")``."""
    a, _, b = template.replace("{}", placeholder).partition(placeholder)
    return a.strip(), b.strip()


# ----------------------------------------------------------------------------------------------- uploads
def exemplars_from_files(files: Sequence[str | os.PathLike] | None, captions_text: str | None) -> ExemplarSet:
    """Exemplars from uploaded files and a caption box.

    Captions come from an uploaded ``text.json`` (official layout), else from the box: one line per image in upload
    order, or ``file name: caption`` lines; several captions of one image are separated by ``|``.
    """
    files = [Path(f) for f in files or []]
    jsons = [f for f in files if f.suffix.lower() == ".json"]
    images = [f for f in files if f.suffix.lower() != ".json"]
    if not images:
        raise ReVersionError("No exemplar images were given; upload at least one image with its captions.")
    if len(images) > MAX_UPLOAD_IMAGES:
        raise ReVersionError(f"{len(images)} images were given; a relation is learned from a few, at most {MAX_UPLOAD_IMAGES}.")
    by_name: dict[str, list[str]] = {}
    if jsons:
        try:
            mapping = json.loads(jsons[0].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ReVersionError(f"{jsons[0].name} is not valid JSON; it must map image file names to lists of captions.") from None
        if not isinstance(mapping, dict):
            raise ReVersionError(f"{jsons[0].name} must map image file names to lists of captions.")
        by_name = {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in mapping.items()}
    else:
        lines = [line.strip() for line in (captions_text or "").splitlines() if line.strip()]
        names = {f.name for f in images}
        named = [line.partition(":") for line in lines]
        if lines and all(n.strip() in names and sep for n, sep, _ in named):
            by_name = {n.strip(): _split_captions(rest) for n, _, rest in named}
        else:
            if not lines:
                raise ReVersionError("The images have no captions; write one line per image, such as 'cat <R> box'.")
            if len(lines) != len(images):
                raise ReVersionError(
                    f"There are {len(images)} images but {len(lines)} caption lines; write one line per image, in upload order."
                )
            by_name = {f.name: _split_captions(line) for f, line in zip(images, lines)}
    uploads = []
    for f in images:
        captions = by_name.get(f.name)
        if not captions:
            raise ReVersionError(f"Image {f.name} has no captions; give every image at least one caption with <R>.")
        uploads.append((f, captions))
    return exemplars_from_uploads(uploads)


def _split_captions(line: str) -> list[str]:
    return [c.strip() for c in line.split(CAPTION_SEPARATOR) if c.strip()]


# ----------------------------------------------------------------------------------------------- the studio
class Studio:
    """The app's state: one base model (loaded lazily, shared by generation), the relations folder, the benchmark
    folder and the training slot."""

    def __init__(
        self,
        base_model: str | os.PathLike | None = None,
        relations_dir: str | os.PathLike = DEFAULT_RELATIONS_DIR,
        benchmark_dir: str | os.PathLike = DEFAULT_BENCHMARK_DIR,
        temp_dir: str | os.PathLike | None = None,
        device: str | None = None,
        attention: str = "sdpa",
        runs_dir: str | os.PathLike | None = None,
    ) -> None:
        from .base_model import resolve_source  # cheap: no torch model is loaded

        self.base_model = resolve_source(base_model)
        self.relations_dir = Path(relations_dir)
        self.benchmark_dir = Path(benchmark_dir)
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reversion-studio-"))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.device, self.attention = device, attention
        # checkpoints of the app's runs, where the CLI keeps its own (``--resume runs/NAME`` reads them too)
        self.runs_dir = Path(runs_dir) if runs_dir else self.relations_dir.parent / "runs"
        self.slot = TrainingSlot()
        self._generator = None
        # Loading models is serialised: accelerate's empty-weights loading patches torch.nn globally, so a model
        # built in one thread while another loads would get meta tensors.
        self._model_lock = threading.RLock()
        self._generator_error: ReVersionError | None = None

    # ------------------------------------------------------------------------------------------- base model
    def warm_up(self) -> threading.Thread:
        """Load the generation pipeline in the background so the first image does not wait for it."""
        thread = threading.Thread(target=self._warm, daemon=True, name="reversion-warm-up")
        thread.start()
        return thread

    def _warm(self) -> None:
        try:
            self.generator()
        except ReVersionError:
            pass  # remembered; shown when someone generates

    def generator(self):
        """The shared RelationGenerator with its pipeline loaded (first call loads it; errors are one sentence)."""
        with self._model_lock:
            if self._generator is None:
                if self._generator_error is not None:
                    raise self._generator_error
                from .generation import RelationGenerator

                quiet_libraries()
                try:
                    generator = RelationGenerator(self.base_model, device=self.device, attention=self.attention,
                                                  relations_dir=self.relations_dir)
                    generator.pipeline  # noqa: B018  (load now, under the lock)
                except ReVersionError as exc:
                    self._generator_error = exc
                    raise
                self._generator = generator
            return self._generator

    def base_model_id(self) -> str:
        return self.generator().base_model_id

    @property
    def model_lock(self) -> threading.RLock:
        """Held while the shared pipeline is used (generation, report cards) or a training's models load."""
        return self._model_lock

    # ------------------------------------------------------------------------------------------- relations
    def relations(self) -> list[RelationPrompt]:
        """Relations in the relations folder that were learned on the loaded base model."""
        return list_relations(self.relations_dir, self.base_model_id())

    def relation_names(self) -> list[str]:
        return [r.path.name for r in self.relations() if r.path is not None]

    def relation_names_on_disk(self) -> list[str]:
        """Every readable relation's name, whatever its base model (cheap: no model is loaded)."""
        return [r.path.name for r in list_relations(self.relations_dir) if r.path is not None]

    def free_name(self, name: str) -> str:
        """``name`` when no relation has it yet, else the first free ``name_2``, ``name_3``, ..."""
        return free_relation_name(self.relations_dir, name)

    def relation(self, name: str) -> RelationPrompt:
        """One relation of the relations folder, checked against the loaded base model."""
        from .base_model import same_base_model

        if not name:
            raise ReVersionError("Choose a relation first.")
        relation = load_relation(check_name(name), self.relations_dir)
        if not same_base_model(relation.base_model_id, self.base_model_id()):
            raise ReVersionError(f"Relation {name!r} was learned on another base model ({relation.base_model_id}).")
        return relation

    def relation_for_set(self, set_name: str) -> str | None:
        """The relation learned from a benchmark set: the one named after it, else one whose card names it."""
        names = self.relation_names()
        if set_name in names:
            return set_name
        for r in self.relations():
            if (r.card.get("relation") or {}).get("name") == set_name and r.path is not None:
                return r.path.name
        return None

    def relation_card(self, name: str) -> tuple[str, Image.Image | None]:
        """Markdown describing a relation, and its preview image (upscaled) when it has one."""
        if not name:
            return "No relation chosen.", None
        r = self.relation(name)
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

    def export_relation(self, name: str) -> Path:
        """A zip of the relation's folder in the temp dir, for download."""
        relation = self.relation(name)
        out = self.temp_dir / "downloads" / f"{relation.path.name}.zip"
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(relation.path.iterdir()):
                if f.is_file():
                    z.write(f, f"{relation.path.name}/{f.name}")
        return out

    def import_relation(self, files: Sequence[str | os.PathLike] | None, name: str | None = None, overwrite: bool = False) -> str:
        """Import a relation from uploaded files into the relations folder and return its name.

        Accepted: our relation folder's files (``learned_embeds.safetensors`` + ``card.json``), a zip of such a
        folder, a lone ``.safetensors``, or an official ``learned_embeds.bin``. Pickled code is never executed.
        """
        from .base_model import same_base_model
        from .relation_file import save_relation

        files = [Path(f) for f in files or []]
        if not files:
            raise ReVersionError("No relation file was given; upload a .safetensors, a learned_embeds.bin or a relation .zip.")
        work = Path(tempfile.mkdtemp(prefix="import-", dir=self.temp_dir))
        try:
            source = self._staged_relation(files, work)
            relation = load_relation(source, None)
            if relation.card.get("imported_from"):
                relation.card = {}
            generator = self.generator()
            relation.check_dim(generator.embedding_dim)
            here = generator.base_model_id
            if relation.base_model_id and not same_base_model(relation.base_model_id, here):
                raise ReVersionError(f"This relation was learned on base model {relation.base_model_id}, not on the loaded {here}.")
            name = (name or "").strip() or relation.card.get("name") or _stem_name(files)
            if not name:
                raise ReVersionError("Give the relation a name; the file does not say which relation it holds.")
            name = check_name(name)
            self.check_new_relation(name, overwrite)
            # Only a <word> outside the base vocabulary, its special tokens and the other relations' tokens.
            others = {r.token for r in list_relations(self.relations_dir) if r.path is None or r.path.name != name}
            token = choose_token(relation.token, name, base_vocabulary(generator.pipeline.tokenizer), others)
            card = {**relation.card, "base_model": relation.base_model_id or here, "imported": True}
            card.pop("name", None)
            preview = relation.read_preview()
            save_relation(RelationPrompt(name, token, relation.vector, card, preview), self.relations_dir, overwrite=overwrite)
            return name
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _staged_relation(files: list[Path], work: Path) -> Path:
        """Put the uploaded files where ``load_relation`` reads them; returns a folder or a single file.

        Zip members are sized from their headers before anything is read, then read in chunks that stop at the
        limit, so neither a large member nor a header that lies about its size can fill memory or disk.
        """
        zips = [f for f in files if f.suffix.lower() == ".zip"]
        mb = MAX_IMPORT_FILE_BYTES // 2**20
        too_big = f"a relation file is at most {mb} MB, a relation zip at most {MAX_IMPORT_TOTAL_BYTES // 2**20} MB unpacked"
        if zips:
            try:
                with zipfile.ZipFile(zips[0]) as z:
                    wanted = [i for i in z.infolist() if Path(i.filename).name in _IMPORTED_FILES and not i.is_dir()]
                    for info in wanted:
                        if info.file_size > MAX_IMPORT_FILE_BYTES:
                            raise ReVersionError(f"{zips[0].name} holds {Path(info.filename).name} of {info.file_size / 2**20:.0f} MB; {too_big}.")
                    if sum(i.file_size for i in wanted) > MAX_IMPORT_TOTAL_BYTES:
                        raise ReVersionError(f"{zips[0].name} unpacks to more than {MAX_IMPORT_TOTAL_BYTES // 2**20} MB; {too_big}.")
                    total = 0
                    for info in wanted:
                        leaf = Path(info.filename).name  # flatten: no member can land outside the work folder
                        written = 0
                        with z.open(info) as member, open(work / leaf, "wb") as out:
                            while chunk := member.read(2**20):
                                written += len(chunk)
                                total += len(chunk)
                                if written > MAX_IMPORT_FILE_BYTES or total > MAX_IMPORT_TOTAL_BYTES:  # the header lied
                                    raise ReVersionError(f"{zips[0].name} holds {leaf} larger than its header says; {too_big}.")
                                out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, RuntimeError):
                raise ReVersionError(f"{zips[0].name} is not a readable zip of a relation folder.") from None
            if not any((work / n).is_file() for n in (EMBEDS_FILE, "learned_embeds.bin")):
                raise ReVersionError(f"{zips[0].name} holds no {EMBEDS_FILE} or learned_embeds.bin.")
            return work
        for f in files:
            if f.is_file() and f.stat().st_size > MAX_IMPORT_FILE_BYTES:
                raise ReVersionError(f"{f.name} is {f.stat().st_size / 2**20:.0f} MB; {too_big}.")
        vectors = [f for f in files if f.suffix.lower() in (".safetensors", ".bin", ".pt", ".pth")]
        if len(vectors) != 1:
            raise ReVersionError("Upload exactly one vector file (.safetensors or .bin), optionally with its card.json.")
        cards = [f for f in files if f.name == CARD_FILE]
        if vectors[0].name == EMBEDS_FILE and cards:
            shutil.copy(vectors[0], work / EMBEDS_FILE)
            shutil.copy(cards[0], work / CARD_FILE)
            return work
        return vectors[0]

    # ------------------------------------------------------------------------------------------- generation
    def generate(
        self, relation: str | None, entity_a: str, entity_b: str, prompt: str | None, suffix: str, negative_prompt: str,
        num_images: int, steps: int, guidance: float, seed: int,
    ) -> tuple[list[tuple[Image.Image, str]], str]:
        """Images (upscaled) with their seeds as captions, and the prompt that made them."""
        rel = self.relation(relation) if relation else None
        if rel is None and not (prompt and prompt.strip()):
            raise ReVersionError("Choose a relation, or write a free prompt.")
        generator = self.generator()
        with self._model_lock:  # one pipeline, one caller at a time
            result = generator.generate(
                rel.path if rel is not None else None, entity_a=entity_a, entity_b=entity_b, prompt=prompt or None,
                suffix=suffix or "", negative_prompt=negative_prompt or None, num_images=int(num_images),
                seed=int(seed), steps=int(steps), guidance_scale=float(guidance),
            )
        return [(upscale(im), f"seed {s}") for im, s in zip(result.images, result.seeds)], result.prompt

    # ------------------------------------------------------------------------------------------- training
    def check_new_relation(self, name: str, overwrite: bool = False) -> None:
        """Refuse an unsafe name, and an existing one unless the person ticked 'Overwrite'."""
        check_name(name)
        if (self.relations_dir / name).exists() and not overwrite:
            raise ReVersionError(f"A relation named {name!r} already exists; tick 'Overwrite' or choose another name.")

    def train(
        self, owner: str | None, exemplars: ExemplarSet, name: str, settings: InversionSettings, overwrite: bool = False,
    ) -> Iterator[TrainUpdate]:
        """Start a training on the server and follow it; the last update names the saved relation."""
        yield from self.start_training(owner, exemplars, name, settings, overwrite).updates()

    def start_training(
        self, owner: str | None, exemplars: ExemplarSet, name: str, settings: InversionSettings, overwrite: bool = False,
    ) -> TrainingJob:
        """Queue a training of a new relation; it runs in a server thread until it ends, page or no page."""
        self.check_new_relation(name, overwrite)
        settings = replace(settings, attention=self.attention)

        def make():
            from .inversion import Inversion

            return Inversion(exemplars, name, settings, base_model=self.base_model, relations_dir=self.relations_dir,
                             overwrite=overwrite, device=self.device)

        job = TrainingJob(owner, name)
        return self.slot.submit(job, lambda job: self._run_training(job, make, exemplars))

    def continuable(self) -> list[str]:
        """Relations that can be trained further: those whose last run left its checkpoint in the runs folder."""
        return [n for n in self.relation_names_on_disk() if any((self.runs_dir / n).glob("step-*.pt"))]

    def continue_training(self, owner: str | None, name: str, more_steps: int) -> TrainingJob:
        """Queue ``more_steps`` further steps of a relation trained here, from its last checkpoint: the same optimizer
        state and random stream, so the result is the one a longer run would have given."""
        from .inversion import Inversion

        relation = self.relation(name)
        if not 1 <= int(more_steps) <= MAX_TRAIN_STEPS:
            raise ReVersionError(f"Train between 1 and {MAX_TRAIN_STEPS} more steps, not {more_steps}.")
        run = self.runs_dir / relation.path.name
        checkpoints = sorted(run.glob("step-*.pt"))
        if not checkpoints or not (run / EXEMPLARS_DIR).is_dir():
            raise ReVersionError(f"Relation {name!r} has no checkpoint to continue from; only relations trained in this app can be continued.")
        state = Inversion._read_checkpoint(checkpoints[-1])
        if state["step"] != relation.card.get("steps"):
            raise ReVersionError(
                f"Relation {name!r} is at step {relation.card.get('steps')} but its checkpoint is at step {state['step']}; it cannot be continued."
            )
        settings = replace(InversionSettings.from_dict(state["settings"]), max_train_steps=int(state["step"]) + int(more_steps))
        exemplars = load_exemplars(run / EXEMPLARS_DIR, settings.placeholder_token)
        history = read_losses(run / LOSSES_FILE)

        def make():
            return Inversion(exemplars, relation.path.name, settings, base_model=self.base_model, relations_dir=self.relations_dir,
                             overwrite=True, resume_from=checkpoints[-1], device=self.device)

        job = TrainingJob(owner, relation.path.name, history)
        return self.slot.submit(job, lambda job: self._run_training(job, make, exemplars))

    def follow(self, owner: str | None) -> Iterator[TrainUpdate]:
        """The updates of ``owner``'s running or waiting training, if any (a reloaded page picks it up again)."""
        job = self.slot.job_of(owner)
        if job is not None:
            yield from job.updates()

    def _run_training(self, job: TrainingJob, make: Callable[[], Any], exemplars: ExemplarSet) -> None:
        """The body of a training thread: build the run, then turn its events into the job's state."""
        from .inspect import nearest_words
        from .inversion import FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent

        quiet_libraries()
        with self._model_lock:
            inversion = make()
        with job._changed:
            job.inversion = inversion
            if job.stop_requested:  # Stop pressed while the model loaded
                inversion.stop()
        name, total = job.name, inversion.settings.max_train_steps
        rows = list(job.latest().losses)
        previews: list[tuple[Image.Image, str]] = []
        nearest: dict[str, float] = {}
        job.publish(TrainUpdate(f"Training **{name}**: step {inversion.start_step} of {total}.", list(rows)))
        last_ui = 0.0
        for event in inversion:
            if isinstance(event, StepEvent):
                rows += loss_rows(event.step, event.loss, event.denoise_loss, event.steer_loss)
                now = time.monotonic()
                if now - last_ui < UPDATE_EVERY_S and event.step < event.total_steps:
                    continue
                last_ui = now
                nearest = dict(nearest_words(inversion.current_vector().detach(), inversion.pipe, NEAREST_K))
                done = event.step - inversion.start_step
                rate = done / event.elapsed if event.elapsed > 0 else 0.0
                status = (f"Training **{name}**: step {event.step} of {event.total_steps} · {rate:.2f} steps/s · "
                          f"elapsed {clock(event.elapsed)} · about {clock(event.eta)} left · loss {event.loss:.4f}")
                job.publish(TrainUpdate(status, list(rows), previews, nearest))
            elif isinstance(event, PreviewEvent):
                previews = [(upscale(im), f"step {event.step}: {event.prompt}") for im in event.images]
                job.publish(TrainUpdate(f"Training **{name}**: preview at step {event.step}.", list(rows), previews, nearest))
            elif isinstance(event, (FinishedEvent, StoppedEvent, FailedEvent)):
                if event.relation is not None and _finite(event.relation.vector):
                    nearest = dict(nearest_words(event.relation.vector, inversion.pipe, NEAREST_K))
                # a relation saved elsewhere than the relations folder (its fallback when that failed) is not listed
                listed = event.path is not None and event.path.parent.resolve() == self.relations_dir.resolve()
                saved = event.path.name if listed else None
                elsewhere = getattr(event, "message", "") if not isinstance(event, FailedEvent) else ""
                if isinstance(event, FailedEvent):
                    where = f" It was saved as **{saved}**." if saved else ""
                    status = f"Failed at step {event.step}. {event.message}{where}"
                    job.publish(TrainUpdate(status, rows, previews, nearest, saved, warning=status), done=True)
                    return
                if saved is not None:
                    self._save_run(inversion, saved, event.step, exemplars, rows)
                verb = "Finished" if isinstance(event, FinishedEvent) else "Stopped"
                took = f"at step {event.step} in {clock(event.elapsed)}"
                if elsewhere:
                    status = f"{verb} {took}. {elsewhere}"
                elif saved is None:
                    status = f"{verb} {took}; the relation could not be saved."
                elif saved != name:
                    status = (f"{verb} {took}; saved as **{saved}** (the existing **{name}** was kept), ready in the "
                              "Generate tab.")
                else:
                    status = f"{verb} {took}; relation **{saved}** is saved and ready in the Generate tab."
                job.publish(TrainUpdate(status, rows, previews, nearest, saved), done=True)
                return

    def _save_run(self, inversion, name: str, step: int, exemplars: ExemplarSet, rows: list[dict[str, Any]]) -> None:
        """Keep what continuing ``name`` later needs beside the relation: its checkpoint, exemplars and loss history."""
        run = self.runs_dir / name
        try:
            inversion.checkpoint_dir = run
            latest = inversion.save_checkpoint(step)
            for old in run.glob("step-*.pt"):
                if old != latest:
                    old.unlink(missing_ok=True)
            save_exemplars(exemplars, run / EXEMPLARS_DIR)
            write_atomic(run / LOSSES_FILE, json.dumps(rows))
        except OSError as exc:  # the relation itself is saved; only continuing it later is lost
            log.warning("could not keep the run of %s for continuing (%s)", name, exc)


def _finite(vector) -> bool:
    import torch

    return bool(torch.isfinite(vector).all())


def _stem_name(files: list[Path]) -> str | None:
    for f in files:
        if f.suffix.lower() in (".safetensors", ".bin", ".pt", ".pth", ".zip") and f.stem not in ("learned_embeds", ""):
            return f.stem
    return None


MAX_SEED = 2**63 - 1  # torch seeds are 64-bit signed
# The Train tab's fields: (label, lowest, highest); the widgets and app_settings both read them.
TRAIN_BOUNDS = {
    "steps": ("Steps", 1, MAX_TRAIN_STEPS),
    "learning_rate": ("Learning rate", 1e-7, 0.1),
    "batch_size": ("Batch size", 1, 8),
    "seed": ("Seed", 0, MAX_SEED),
    "lambda_steer": ("Steering weight", 0.0, 10.0),
    "alpha": ("Sampling alpha", 0.0, 1.0),
    "num_positives": ("Positives per step", 1, 56),
    "temperature": ("Temperature", 1e-3, 10.0),
    "grad_accum": ("Gradient accumulation", 1, 8),
    "preview_every": ("Preview every K steps", 0, MAX_TRAIN_STEPS),
}


def bounded(field_name: str, value: Any, integer: bool = False) -> int | float:
    """A Train tab value checked against :data:`TRAIN_BOUNDS` (finite, in range, whole where it must be)."""
    import math

    label, low, high = TRAIN_BOUNDS[field_name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if integer and isinstance(value, int) and not isinstance(value, bool):
        number = value  # keep big seeds exact
    if not math.isfinite(number) or not low <= number <= high or integer and number != int(number):
        kind = "a whole number" if integer else "a number"
        raise ReVersionError(f"{label} must be {kind} from {low:g} to {high:g}, not {value!r}.")
    return int(number) if integer else float(number)


def app_settings(
    steps: int, learning_rate: float, batch_size: int, seed: int, steering: bool, lambda_steer: float,
    importance_sampling: bool, alpha: float, num_positives: int, temperature: float, grad_accum: int,
    preview_every: int, validation_prompt: str,
) -> InversionSettings:
    """Settings from the Train tab's controls (steering off means lambda_steer = 0); out-of-range values are refused."""
    return InversionSettings(
        max_train_steps=bounded("steps", steps, True), learning_rate=bounded("learning_rate", learning_rate),
        train_batch_size=bounded("batch_size", batch_size, True), seed=bounded("seed", seed, True),
        lambda_steer=bounded("lambda_steer", lambda_steer) if steering else 0.0, importance_sampling=bool(importance_sampling),
        alpha=bounded("alpha", alpha), num_positives=bounded("num_positives", num_positives, True),
        temperature=bounded("temperature", temperature), gradient_accumulation_steps=bounded("grad_accum", grad_accum, True),
        preview_every=bounded("preview_every", preview_every, True), preview_images=2, preview_steps=20,
        validation_prompt=validation_prompt or "circle <R> square",
    )
