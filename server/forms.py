"""The app's two forms as named values: what one Train click and one Generate click hold.

Each field is named as the app's API parameter it fills, and its default is what the widget shows, read from
:class:`~reversion_core.settings.InversionSettings` and the settings module's constants. A form is built once per click
(``from_values`` drops the values an API caller left out), checked against :data:`TRAIN_BOUNDS`, and turned into the
library's own values: ``TrainForm.settings()`` and ``GenerateForm.request()``. Nothing here imports gradio or torch.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from reversion_core.errors import ReVersionError
from reversion_core.settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, MAX_SEED, InversionSettings

PAPER = InversionSettings()
APP_TRAIN_STEPS = 200  # the paper trains 3000 steps on SD 1.5; the embedded model learns a relation in a few hundred
APP_PREVIEW_EVERY = 50  # the engine previews never by default; the Train tab shows progress every 50 steps
MAX_TRAIN_STEPS = 100_000  # the most steps one run (or one continuation) may ask for
SOURCES = ("Benchmark set", "Upload")
MODES = ("Entities", "Free prompt")
# The Train tab's numeric fields: (label, lowest, highest); the widgets and TrainForm.settings() both read them.
TRAIN_BOUNDS = {
    "steps": ("Steps", 1, MAX_TRAIN_STEPS),
    "learning_rate": ("Learning rate", 1e-7, 0.1),
    "batch_size": ("Batch size", 1, 8),
    "seed": ("Seed", 0, MAX_SEED),
    "lambda_steer": ("Steering weight", 0.0, 10.0),
    "alpha": ("Sampling alpha", 0.0, 1.0),
    "positives": ("Positives per step", 1, 56),
    "temperature": ("Temperature", 1e-3, 10.0),
    "grad_accum": ("Gradient accumulation", 1, 8),
    "preview_every": ("Preview every K steps", 0, MAX_TRAIN_STEPS),
}


def bounded(field_name: str, value: Any, integer: bool = False) -> int | float:
    """A Train tab value checked against :data:`TRAIN_BOUNDS` (finite, in range, whole where it must be)."""
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


class _Form:
    @classmethod
    def from_values(cls, **values: Any):
        """The form from a click's values; a value left out or None takes the field's default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


@dataclass(frozen=True)
class TrainForm(_Form):
    """One Train click: where the exemplars come from, the relation's name, and the method's settings."""

    source: str = SOURCES[0]  # "Benchmark set" (set_name) or "Upload" (files and captions)
    set_name: str = ""
    name: str = ""
    overwrite: bool = False
    steps: int = APP_TRAIN_STEPS
    learning_rate: float = PAPER.learning_rate
    batch_size: int = PAPER.train_batch_size
    seed: int = PAPER.seed
    steering: bool = True
    lambda_steer: float = PAPER.lambda_steer
    importance_sampling: bool = PAPER.importance_sampling
    alpha: float = PAPER.alpha
    positives: int = PAPER.num_positives
    temperature: float = PAPER.temperature
    grad_accum: int = PAPER.gradient_accumulation_steps
    preview_every: int = APP_PREVIEW_EVERY
    preview_prompt: str = PAPER.validation_prompt
    files: tuple[str, ...] = field(default=())
    captions: str = ""

    @property
    def from_benchmark(self) -> bool:
        return self.source != SOURCES[1]

    def settings(self) -> InversionSettings:
        """The run's settings (steering off means lambda_steer = 0); an out-of-range value is refused in one sentence."""
        return replace(
            PAPER,
            max_train_steps=bounded("steps", self.steps, True), learning_rate=bounded("learning_rate", self.learning_rate),
            train_batch_size=bounded("batch_size", self.batch_size, True), seed=bounded("seed", self.seed, True),
            lambda_steer=bounded("lambda_steer", self.lambda_steer) if self.steering else 0.0,
            importance_sampling=bool(self.importance_sampling), alpha=bounded("alpha", self.alpha),
            num_positives=bounded("positives", self.positives, True), temperature=bounded("temperature", self.temperature),
            gradient_accumulation_steps=bounded("grad_accum", self.grad_accum, True),
            preview_every=bounded("preview_every", self.preview_every, True),
            validation_prompt=self.preview_prompt or PAPER.validation_prompt,
        )


@dataclass(frozen=True)
class GenerateForm(_Form):
    """One Generate click: a relation with two entities (mode "Entities") or a free prompt with <R>."""

    relation: str = ""
    mode: str = MODES[0]
    entity_a: str = ""
    entity_b: str = ""
    prompt: str = ""
    suffix: str = ""
    negative: str = ""
    num_images: int = 4
    steps: int = DEFAULT_INFERENCE_STEPS
    guidance: float = DEFAULT_GUIDANCE_SCALE
    seed: int = 0

    @property
    def free(self) -> bool:
        return self.mode == MODES[1]

    def request(self, relation_path: str | os.PathLike | None):
        """The GenerationRequest for ``relation_path`` (the chosen relation's folder, None for a free prompt)."""
        from .gpu_runner import GenerationRequest

        if self.free and not self.prompt.strip():
            raise ReVersionError("Write a prompt containing <R>, such as 'rabbit <R> carrot'.")
        if relation_path is None and not (self.free and self.prompt.strip()):
            raise ReVersionError("Choose a relation, or write a free prompt.")
        return GenerationRequest(
            relation=str(relation_path) if relation_path is not None else None, entity_a=self.entity_a,
            entity_b=self.entity_b, prompt=self.prompt if self.free else None, suffix=self.suffix,
            negative_prompt=self.negative or None, num_images=int(self.num_images), steps=int(self.steps),
            guidance_scale=float(self.guidance), seed=int(self.seed),
        )
