"""What a relation-inversion run reports: one event per optimizer step, preview, checkpoint, and how it ended.

The app streams these into a plot, the CLI into a progress bar, the evaluation into loss curves, tests assert on
them. Every run ends with exactly one of ``FinishedEvent``, ``StoppedEvent`` or ``FailedEvent``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .relation_file import RelationPrompt


@dataclass
class StepEvent:
    """One optimizer step done (``gradient_accumulation_steps`` micro-batches)."""

    step: int
    total_steps: int
    loss: float
    denoise_loss: float
    steer_loss: float
    lr: float
    elapsed: float  # seconds since the run (or the resumed part of it) began
    eta: float  # seconds left, from the mean step time so far


@dataclass
class PreviewEvent:
    step: int
    prompt: str
    images: list[Image.Image]


@dataclass
class CheckpointEvent:
    step: int
    path: Path


@dataclass
class FinishedEvent:
    step: int
    relation: RelationPrompt
    path: Path | None  # None on non-main processes of a multi-GPU run
    elapsed: float
    message: str = ""  # set when the relation went somewhere else than asked (see Inversion._save)


@dataclass
class StoppedEvent:
    """``stop()`` was called (or Ctrl-C): the latest <R> was saved."""

    step: int
    relation: RelationPrompt
    path: Path | None
    elapsed: float
    message: str = ""  # set when the relation went somewhere else than asked (see Inversion._save)


@dataclass
class FailedEvent:
    """A NaN or infinite loss or <R> ended the run; the last good <R> was saved (never over an existing relation)."""

    step: int
    message: str
    relation: RelationPrompt | None = None
    path: Path | None = None


Event = StepEvent | PreviewEvent | CheckpointEvent | FinishedEvent | StoppedEvent | FailedEvent
