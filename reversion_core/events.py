"""What a relation-inversion run reports: one event per optimizer step, preview, validation, checkpoint, and how it
ended.

The app streams these into a plot, the CLI into a progress bar, the evaluation into loss curves, tests assert on
them. Every run ends with exactly one of ``FinishedEvent``, ``StoppedEvent`` or ``FailedEvent``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .relation_file import RelationPrompt
from .report_card import ScoredImage


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
class ValidationEvent:
    """<R> was scored on the run's validation pairs (:mod:`reversion_core.validation`): one point of the quality curve.

    ``figures``: ``relation`` (share of images showing the relation: the world's scorer, or the CLIP relation probe;
    None without one), ``entities`` (share with both entities right on the world; CLIP's entity score elsewhere) and
    ``leakage`` (share showing the exemplars' shared nuisance; world only, else None). ``curve`` is every point so
    far (this one last), each ``{"step", "relation", "entities", "leakage", "seconds"}``; ``best_step`` the step
    with the highest relation score so far (ties: the earlier). ``images`` carry their marks
    (:attr:`ScoredImage.mark`: right, entities wrong, wrong, not read), framed like the report card's.
    """

    step: int
    figures: dict[str, float | None]
    pairs: list[tuple[str, str]]
    images: list[ScoredImage]
    curve: list[dict]
    best_step: int | None
    kind: str  # "world" or "clip"
    seconds: float  # how long this validation took


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
    message: str = ""  # why the run ended early (stop_when_flat), and where the relation went when not where asked


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
    """A NaN or infinite loss or <R> ended the run; the last good <R> (with ``keep="best"``: the best validated one)
    was saved (never over an existing relation)."""

    step: int
    message: str
    relation: RelationPrompt | None = None
    path: Path | None = None


Event = StepEvent | PreviewEvent | ValidationEvent | CheckpointEvent | FinishedEvent | StoppedEvent | FailedEvent
