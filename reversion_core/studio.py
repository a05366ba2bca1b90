"""What the Gradio app needs beyond layout and wiring: benchmark browsing, uploads turned into exemplar sets,
the single training slot and its stream of UI updates, the cached generator, relation import and export.

Nothing here imports gradio; ``app.py`` maps these plain values onto components. Heavy modules (torch,
diffusers) are imported on first use so the app serves its first page before they load.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from PIL import Image

from .errors import ReVersionError
from .exemplars import IMAGE_EXTENSIONS, ExemplarSet, exemplars_from_uploads, load_exemplars, open_image
from .relation_file import (
    CARD_FILE, EMBEDS_FILE, PREVIEW_FILE, RelationPrompt, base_vocabulary, check_name, choose_token, list_relations, load_relation,
)
from .settings import DEFAULT_PLACEHOLDER, InversionSettings

APP_DIR = Path(__file__).resolve().parent.parent
# Relation imports: a vector is a few KB and a preview a few hundred; these bound what an upload can unpack.
MAX_IMPORT_FILE_BYTES = 8 * 2**20
MAX_IMPORT_TOTAL_BYTES = 16 * 2**20
_IMPORTED_FILES = (EMBEDS_FILE, CARD_FILE, PREVIEW_FILE, "learned_embeds.bin")
DEFAULT_RELATIONS_DIR = APP_DIR / "relations"
DEFAULT_BENCHMARK_DIR = APP_DIR / "assets" / "benchmark"
DISPLAY_SIZE = 256  # the embedded model draws 32x32 images; show them this big, pixels kept sharp
BENCHMARK_THUMB = 256  # exemplar images of a foreign benchmark can be large; the gallery needs no more
UPDATE_EVERY_S = 0.7  # the UI gets at most this many training updates a second (previews and the end always)
NEAREST_K = 8
CAPTION_SEPARATOR = "|"
LEVEL_NAMES = {1: "1 (entities)", 2: "2 (+ colours)", 3: "3 (+ patterns, background)"}


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


# ----------------------------------------------------------------------------------------------- training
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


def loss_frames(rows: list[dict[str, Any]]):
    """Two plot tables: total and denoise loss (similar scales), and the steering loss (a larger scale)."""
    import pandas as pd

    # explicit dtypes: an empty first frame must already read as numbers, or the plot treats the axes as categories
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64", "series": "str"})
    return frame[frame.series != "steering"].reset_index(drop=True), frame[frame.series == "steering"].reset_index(drop=True)


def _clock(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class TrainingSlot:
    """The machine's one training slot: who holds it, the running Inversion, and stop requests.

    The app's queue already runs one training at a time; the slot tells others that they wait and lets only the
    session that started a run stop it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = threading.Lock()
        self.owner: str | None = None
        self.inversion = None
        self.name: str | None = None
        self._cancelled: set[str] = set()

    def busy(self) -> bool:
        return self._lock.locked()

    def waiting_message(self) -> str:
        return f"Waiting: another training ({self.name or 'starting'}) is running; yours starts as soon as it ends."

    def stop(self, owner: str | None) -> str:
        """Stop ``owner``'s run (it saves the latest <R>), or cancel its queued one."""
        with self._state:
            if self.inversion is not None and (owner is None or owner == self.owner):
                self.inversion.stop()
                return "Stopping after this step; the latest <R> will be saved."
            if self.busy() and owner == self.owner:
                self._cancelled.add(owner)
                return "Stopping as soon as the base model has loaded; the starting <R> will be saved."
            if self.busy() and owner != self.owner:
                if owner is not None:
                    self._cancelled.add(owner)
                return "The running training belongs to another session; your queued training, if any, was cancelled."
            return "No training of yours is running."

    def forget(self, owner: str | None) -> None:
        """A fresh Start click: an earlier Stop of this session must not cancel the new run."""
        with self._state:
            self._cancelled.discard(owner)

    def run(self, owner: str | None, make: Callable[[], Any]) -> Iterator[Any]:
        """Hold the slot while iterating the Inversion that ``make()`` builds; always frees the slot."""
        with self._lock:
            with self._state:
                if owner is not None and owner in self._cancelled:
                    self._cancelled.discard(owner)
                    return
                self.owner = owner
            try:
                inversion = make()
                with self._state:
                    self.inversion = inversion
                    self.name = inversion.name
                    if owner is not None and owner in self._cancelled:  # Stop pressed while the model loaded
                        inversion.stop()
                yield inversion
            finally:
                with self._state:
                    if self.inversion is not None:
                        self.inversion.stop()  # a closed stream (browser gone) must not leave the loop running
                    self.owner = self.inversion = self.name = None
                    self._cancelled.discard(owner)


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
    ) -> None:
        from .base_model import resolve_source  # cheap: no torch model is loaded

        self.base_model = resolve_source(base_model)
        self.relations_dir = Path(relations_dir)
        self.benchmark_dir = Path(benchmark_dir)
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="reversion-studio-"))
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.device = device
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
                    generator = RelationGenerator(self.base_model, device=self.device, relations_dir=self.relations_dir)
                    generator.pipeline  # noqa: B018  (load now, under the lock)
                except ReVersionError as exc:
                    self._generator_error = exc
                    raise
                self._generator = generator
            return self._generator

    def base_model_id(self) -> str:
        return self.generator().base_model_id

    # ------------------------------------------------------------------------------------------- relations
    def relations(self) -> list[RelationPrompt]:
        """Relations in the relations folder that were learned on the loaded base model."""
        return list_relations(self.relations_dir, self.base_model_id())

    def relation_names(self) -> list[str]:
        return [r.path.name for r in self.relations() if r.path is not None]

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
        """Train a relation in the slot, yielding UI updates; the last one names the saved relation."""
        self.check_new_relation(name, overwrite)
        from .inspect import nearest_words
        from .inversion import FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent

        def make():
            from .inversion import Inversion

            quiet_libraries()
            with self._model_lock:
                return Inversion(exemplars, name, settings, base_model=self.base_model, relations_dir=self.relations_dir,
                                 overwrite=overwrite, device=self.device)

        rows: list[dict[str, Any]] = []
        previews: list[tuple[Image.Image, str]] = []
        nearest: dict[str, float] = {}
        started = False
        for inversion in self.slot.run(owner, make):
            started = True
            yield TrainUpdate(f"Training **{name}**: step 0 of {settings.max_train_steps}.", rows)
            last_ui = 0.0
            for event in inversion:
                if isinstance(event, StepEvent):
                    rows += loss_rows(event.step, event.loss, event.denoise_loss, event.steer_loss)
                    now = time.monotonic()
                    if now - last_ui < UPDATE_EVERY_S and event.step < event.total_steps:
                        continue
                    last_ui = now
                    nearest = dict(nearest_words(inversion.current_vector().detach(), inversion.pipe, NEAREST_K))
                    rate = event.step / event.elapsed if event.elapsed > 0 else 0.0
                    status = (f"Training **{name}**: step {event.step} of {event.total_steps} · {rate:.2f} steps/s · "
                              f"elapsed {_clock(event.elapsed)} · about {_clock(event.eta)} left · loss {event.loss:.4f}")
                    yield TrainUpdate(status, rows, previews, nearest)
                elif isinstance(event, PreviewEvent):
                    previews = [(upscale(im), f"step {event.step}: {event.prompt}") for im in event.images]
                    yield TrainUpdate(f"Training **{name}**: preview at step {event.step}.", rows, previews, nearest)
                elif isinstance(event, (FinishedEvent, StoppedEvent, FailedEvent)):
                    if event.relation is not None:
                        nearest = dict(nearest_words(event.relation.vector, inversion.pipe, NEAREST_K))
                    if isinstance(event, FailedEvent):
                        saved = event.path.name if event.path else None
                        yield TrainUpdate(event.message, rows, previews, nearest, saved, warning=event.message)
                    else:
                        verb = "Finished" if isinstance(event, FinishedEvent) else "Stopped"
                        status = (f"{verb} at step {event.step} in {_clock(event.elapsed)}; relation **{name}** is saved "
                                  "and ready in the Generate tab.")
                        yield TrainUpdate(status, rows, previews, nearest, event.path.name if event.path else name)
        if not started:
            yield TrainUpdate("Your queued training was cancelled before it started.", rows)


def _stem_name(files: list[Path]) -> str | None:
    for f in files:
        if f.suffix.lower() in (".safetensors", ".bin", ".pt", ".pth", ".zip") and f.stem not in ("learned_embeds", ""):
            return f.stem
    return None


def app_settings(
    steps: int, learning_rate: float, batch_size: int, seed: int, steering: bool, lambda_steer: float,
    importance_sampling: bool, alpha: float, num_positives: int, temperature: float, grad_accum: int,
    preview_every: int, validation_prompt: str,
) -> InversionSettings:
    """Settings from the Train tab's controls (steering off means lambda_steer = 0)."""
    return InversionSettings(
        max_train_steps=int(steps), learning_rate=float(learning_rate), train_batch_size=int(batch_size), seed=int(seed),
        lambda_steer=float(lambda_steer) if steering else 0.0, importance_sampling=bool(importance_sampling),
        alpha=float(alpha), num_positives=int(num_positives), temperature=float(temperature),
        gradient_accumulation_steps=int(grad_accum), preview_every=int(preview_every), preview_images=2,
        preview_steps=20, validation_prompt=validation_prompt or "circle <R> square",
    )
