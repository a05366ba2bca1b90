"""What one click asks for, as named values: the Train click (``TrainForm``) and the requests the GPU runner carries
out (``TrainingRequest``, ``GenerationRequest``, ``ScoreRequest``), with the bounds of the Train tab's numbers.

Inside the code a value has the name of what it sets: ``InversionSettings``' field names (diffusers' and the CLI's)
and ``RelationGenerator.generate``'s parameter names. Only the app's API keeps the shorter names its clients already
call (``API_NAMES``; ``ui/wiring.py`` translates at the door). A click's numbers are checked once, against
``TRAIN_BOUNDS`` (the widgets read their bounds from it too), the settings are built once (they check themselves),
and the request then travels unchanged from the click to the loop. Nothing here imports gradio or torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from reversion_core.errors import ReVersionError, quoted
from reversion_core.exemplars import ExemplarSet
from reversion_core.report_card import DEFAULT_STEPS as CARD_STEPS
from reversion_core.settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, MAX_SEED, InversionSettings
from reversion_core.settings import MAX_VALIDATION_PAIRS

PAPER = InversionSettings()
APP_TRAIN_STEPS = 200  # the paper trains 3000 steps on SD 1.5; the embedded model learns a relation in a few hundred
APP_PREVIEW_EVERY = 50  # the engine previews never by default; the Train tab shows progress every 50 steps
MAX_TRAIN_STEPS = 3000  # the most steps one run (or one continuation) may ask for: the paper's whole schedule
MAX_PREVIEW_EVERY = 500
MAX_STOP_WHEN_FLAT = 20  # validations without a gain before an early stop; more is as good as never
MAX_TEXT = 300  # characters of one Generate text box: CLIP reads 77 tokens, a few hundred characters of words
SOURCES = ("Benchmark set", "Upload")
MODES = ("Entities", "Free prompt")
# The Train tab's numbers, by the setting each sets: (label, lowest, highest). The widgets and TrainForm read them.
TRAIN_BOUNDS = {
    "max_train_steps": ("Steps", 1, MAX_TRAIN_STEPS),
    "learning_rate": ("Learning rate", 1e-7, 0.1),
    "train_batch_size": ("Batch size", 1, 8),
    "seed": ("Seed", 0, MAX_SEED),
    "lambda_steer": ("Steering weight", 0.0, 10.0),
    "alpha": ("Sampling alpha", 0.0, 1.0),
    "num_positives": ("Positives per step", 1, 56),
    "temperature": ("Temperature", 1e-3, 10.0),
    "gradient_accumulation_steps": ("Gradient accumulation", 1, 8),
    "preview_every": ("Preview every K steps", 0, MAX_PREVIEW_EVERY),
    "validate_every": ("Validate every K steps", 0, MAX_TRAIN_STEPS),
    "validation_pairs": ("Validation pairs", 1, MAX_VALIDATION_PAIRS),
    "stop_when_flat": ("Stop after N validations without a gain", 0, MAX_STOP_WHEN_FLAT),
}
# The API parameters whose names differ from the values they fill (the names clients of /train and /generate call).
API_NAMES = {
    "max_train_steps": "steps", "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "num_positives": "positives", "validation_prompt": "preview_prompt", "negative_prompt": "negative",
    "guidance_scale": "guidance",
}


def check_number(label: str, value: Any, low: float | None, high: float | None, integer: bool = False) -> int | float:
    """``value`` as a number, refused in one sentence naming ``label`` when it is not one (``"abc"``), not finite,
    outside ``low``..``high`` (None: unbounded) or, where a whole number is meant, not whole (``2.5`` steps)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if integer and isinstance(value, int) and not isinstance(value, bool):
        number = value  # keep big seeds exact
    outside = low is not None and number < low or high is not None and number > high
    if not math.isfinite(number) or outside or integer and number != int(number):
        kind = "a whole number" if integer else "a number"
        shown = [f"{int(b)}" if integer else f"{b:g}" for b in (low, high) if b is not None]
        span = f" from {shown[0]} to {shown[1]}" if len(shown) == 2 else ""
        raise ReVersionError(f"{label} must be {kind}{span}, not {quoted(value)}.")
    return int(number) if integer else float(number)


def bounded(name: str, value: Any, integer: bool = False) -> int | float:
    """A Train tab value checked against :data:`TRAIN_BOUNDS` (finite, in range, whole where it must be)."""
    label, low, high = TRAIN_BOUNDS[name]
    return check_number(label, value, low, high, integer)


class _Form:
    @classmethod
    def from_values(cls, **values: Any):
        """The form from a click's values; a value left out or None takes the field's default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


@dataclass(frozen=True)
class TrainForm(_Form):
    """One Train click: where the exemplars come from, the relation's name, and the method's settings, each named as
    the ``InversionSettings`` field it sets."""

    source: str = SOURCES[0]  # "Benchmark set" (set_name) or "Upload" (files and captions)
    set_name: str = ""
    name: str = ""
    overwrite: bool = False
    max_train_steps: int = APP_TRAIN_STEPS
    learning_rate: float = PAPER.learning_rate
    train_batch_size: int = PAPER.train_batch_size
    seed: int = PAPER.seed
    steering: bool = True
    lambda_steer: float = PAPER.lambda_steer
    importance_sampling: bool = PAPER.importance_sampling
    alpha: float = PAPER.alpha
    num_positives: int = PAPER.num_positives
    temperature: float = PAPER.temperature
    gradient_accumulation_steps: int = PAPER.gradient_accumulation_steps
    preview_every: int = APP_PREVIEW_EVERY
    validation_prompt: str = PAPER.validation_prompt
    files: tuple[str, ...] = field(default=())
    captions: str = ""
    # the quality curve (issue 25); last, so that clients calling /train by position keep working
    keep: str = PAPER.keep
    validate_every: int = PAPER.validate_every
    validation_pairs: int = PAPER.validation_pairs
    stop_when_flat: int = PAPER.stop_when_flat

    @property
    def from_benchmark(self) -> bool:
        return self.source != SOURCES[1]

    @classmethod
    def of_run(cls, request: TrainingRequest) -> TrainForm:
        """The form a run was started with, as far as its request keeps it (its name and settings, not where its
        exemplars came from): what a reloaded page shows while it follows the run."""
        s = request.settings
        return cls(name=request.name, overwrite=request.overwrite, steering=s.lambda_steer > 0,
                   importance_sampling=s.importance_sampling, validation_prompt=s.validation_prompt, keep=s.keep,
                   **{name: getattr(s, name) for name in TRAIN_BOUNDS})

    def settings(self, attention: str, mixed_precision: str) -> InversionSettings:
        """The run's settings, built once, in the app's attention and precision (its trainings share the models it
        loaded); steering off means lambda_steer = 0; an out-of-range number is refused in one sentence."""
        whole = {"max_train_steps", "train_batch_size", "seed", "num_positives", "gradient_accumulation_steps", "preview_every"}
        whole |= {"validate_every", "validation_pairs", "stop_when_flat"}
        numbers = {name: bounded(name, getattr(self, name), name in whole) for name in TRAIN_BOUNDS}
        if not self.steering:
            numbers["lambda_steer"] = 0.0
        return InversionSettings(
            **numbers, importance_sampling=bool(self.importance_sampling),
            validation_prompt=self.validation_prompt or PAPER.validation_prompt, attention=attention,
            mixed_precision=mixed_precision, keep=self.keep,
        )


@dataclass
class TrainingRequest:
    """One training, from the click to the loop: built once by the studio, carried unchanged through the queue and
    the GPU runner to :class:`~reversion_core.inversion.Inversion` (on ZeroGPU, pickled into the GPU worker)."""

    exemplars: ExemplarSet
    name: str
    settings: InversionSettings
    relations_dir: str  # where the relation is saved
    runs_dir: str | None = None  # when set, the last step's checkpoint is kept in runs_dir/<saved name>, for continuing
    overwrite: bool = False
    stop_file: str | None = None  # created by gpu_runner.request_stop(); the run then stops after its current step
    resume_from: str | None = None  # a checkpoint to go on from (its optimizer state and random stream)
    start_step: int = 0  # the checkpoint's step: the steps to run are the settings' less these
    losses: list[dict[str, Any]] = field(default_factory=list)  # the loss plot's rows so far, when continuing
    incoming: int = 0  # bytes of uploaded exemplars the run keeps (public mode's disk quota)
    validation: dict[str, Any] | None = None  # the card's validation record (the quality curve so far), when continuing
    clip_model: str | None = None  # what validation reads images with off the embedded world (the app's --clip-model)
    relation_probe: str | None = None

    @property
    def steps(self) -> int:
        """The optimizer steps this request runs."""
        return self.settings.max_train_steps - self.start_step


@dataclass(frozen=True)
class GenerationRequest(_Form):
    """One Generate click: a relation with two entities (mode "Entities") or a free prompt with <R> (mode "Free
    prompt"); every other value is ``RelationGenerator.generate``'s parameter of the same name."""

    relation: str = ""  # the relation's name (the studio hands the runner its folder)
    mode: str = MODES[0]
    entity_a: str = ""
    entity_b: str = ""
    prompt: str = ""
    suffix: str = ""
    negative_prompt: str = ""
    num_images: int = 4
    steps: int = DEFAULT_INFERENCE_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    seed: int = 0

    @property
    def free(self) -> bool:
        return self.mode == MODES[1]

    def check_texts(self) -> None:
        """Refuse a text far longer than the text encoder reads, in one sentence (one only a little too long is
        generated, and the result says where it was cut)."""
        for label, text in (("Entity A", self.entity_a), ("Entity B", self.entity_b), ("The prompt", self.prompt),
                            ("The style", self.suffix), ("The negative prompt", self.negative_prompt)):
            if isinstance(text, str) and len(text) > MAX_TEXT:
                raise ReVersionError(f"{label} has {len(text):,} characters; the text encoder reads only about 75 words, "
                                     f"so write at most {MAX_TEXT}.")


@dataclass
class ScoreRequest:
    """One "Score this relation" click: the relation's folder and how many held-out entity pairs to score it on."""

    relation: str
    pairs: int
    steps: int = CARD_STEPS
    reference: bool = True  # also generate with the relation's own phrase (doubles the images)
    clip_model: str | None = None  # the CLIP model that reads the images off the embedded world (the app's --clip-model)
    relation_probe: str | None = None  # the linear probe that gives CLIP's relation score (the app's --relation-probe)
