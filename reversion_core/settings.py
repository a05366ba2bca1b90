"""Every knob of relation inversion and generation in one place; defaults are the paper's (appendix A.1)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ReVersionError

DEFAULT_PLACEHOLDER = "<R>"
DEFAULT_GUIDANCE_SCALE = 7.5  # classifier-free guidance weight used for every result in the paper
DEFAULT_INFERENCE_STEPS = 50  # DDIM steps
DEFAULT_VALIDATION_PROMPT = f"circle {DEFAULT_PLACEHOLDER} square"  # the training previews' prompt
DEFAULT_ATTENTION = "sdpa"  # PyTorch's scaled-dot-product attention; "xformers" only when installed
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ATTENTION_CHOICES = ("sdpa", "xformers")
DEVICE_CHOICES = ("cpu", "cuda")  # what --device accepts; None picks CUDA when present
FUSE_CHOICES = ("auto", "on", "off")
STEERING_POSITIVES_CHOICES = ("prepositions", "random_words")
KEEP_CHOICES = ("last", "best")  # which <R> a run saves: its last step's, or its best validation step's
MAX_VALIDATION_PAIRS = 64
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; a run adds small offsets (process, image index)
MAX_LEARNING_RATE = 1.0  # far above any useful rate; larger ones overflow AdamW's step
MAX_RESOLUTION = 2048


def check_seed(seed, what: str = "Seed") -> int:
    """Return ``seed`` if it is a whole number from 0 to 2**63 - 1, else refuse it in one sentence."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ReVersionError(f"{what} {seed!r} is out of range; use a whole number from 0 to 2**63 - 1.")
    return seed


def _check_int(settings, name: str, low: int) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReVersionError(f"Setting {name} must be a whole number, not {value!r}.")
    if value < low:
        raise ReVersionError(f"Setting {name} must be at least {low}, not {value}.")


@dataclass
class InversionSettings:
    """How to learn one relation prompt. ``InversionSettings()`` is the paper's recipe."""

    placeholder_token: str = DEFAULT_PLACEHOLDER
    initializer_token: str = "and"
    max_train_steps: int = 3000  # optimizer steps
    train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2.5e-4
    scale_lr: bool = True  # multiply by batch x accumulation x processes, as the official training command does
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    # Relation-steering contrastive learning (section 4.2, eq. 4)
    num_positives: int = 8
    # Where the positives come from: the 56 basis prepositions (the paper), or, to test the premise that the text
    # encoder's preposition prior is what steering uses, as many content words drawn at random from the vocabulary.
    steering_positives: str = "prepositions"  # "prepositions" | "random_words"
    temperature: float = 0.07
    lambda_steer: float = 0.01
    lambda_denoise: float = 1.0
    # Relation-focal importance sampling (section 4.3, eq. 5); False samples t uniformly
    importance_sampling: bool = True
    alpha: float = 0.5
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"; the frozen models run in that dtype, <R> stays fp32
    attention: str = DEFAULT_ATTENTION  # "sdpa" | "xformers"
    gradient_checkpointing: bool = False
    # Run a step's micro-batches (batch x accumulation samples) through the models as one batch: the same samples,
    # draws and gradient as accumulating them one by one, fewer and larger calls, more activation memory.
    # "auto": together on CPU (per-call overhead dominates there), one by one on a GPU (memory is the limit there).
    fuse_micro_batches: str = "auto"  # "auto" | "on" | "off"
    resolution: int | None = None  # None: the base model's sample size x the VAE scale factor
    preview_every: int = 0  # 0: no previews
    preview_images: int = 2
    preview_steps: int = 25
    validation_prompt: str = DEFAULT_VALIDATION_PROMPT
    checkpoint_every: int = 0  # 0: no checkpoints
    # Validation during training (reversion_core.validation): every validate_every steps, and at the last step of a
    # run that long, "E_A <R> E_B" is generated on validation_pairs entity pairs that neither the exemplars nor the
    # evaluation's templates use, and read by the report card's scorer. Observing only: the learned <R> is the same.
    # The defaults cost under 15% of the training time on the embedded model on a 2-core CPU (docs/performance.md).
    validate_every: int = 100  # 0: off
    validation_pairs: int = 8
    validation_steps: int = 10  # DDIM steps of a validation image
    keep: str = "last"  # "last" | "best": the <R> of the validation step with the highest relation score
    stop_when_flat: int = 0  # end the run after this many validations without a gain (0: never)
    reference: bool = False  # the official script's way (for benchmarks): VAE every step, fp32, whole table optimised

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ReVersionError for values that cannot work (one sentence naming the setting)."""
        for name in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "num_positives", "preview_images", "preview_steps",
                     "validation_pairs", "validation_steps"):
            _check_int(self, name, low=1)
        for name in ("preview_every", "checkpoint_every", "validate_every", "stop_when_flat"):
            _check_int(self, name, low=0)
        self._validate_validation()
        for name in ("learning_rate", "temperature", "lambda_steer", "lambda_denoise", "alpha", "adam_beta1", "adam_beta2",
                     "adam_weight_decay", "adam_epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ReVersionError(f"Setting {name} must be a finite number, not {value!r}.")
        if not 0 < self.learning_rate <= MAX_LEARNING_RATE:
            raise ReVersionError(f"Setting learning_rate must lie in (0, {MAX_LEARNING_RATE:g}], not {self.learning_rate:g}.")
        if not self.temperature > 0:
            raise ReVersionError(f"Setting temperature must be positive, not {self.temperature}.")
        for name in ("lambda_steer", "lambda_denoise", "adam_weight_decay"):
            if getattr(self, name) < 0:
                raise ReVersionError(f"Setting {name} must not be negative, not {getattr(self, name):g}.")
        if not self.adam_epsilon > 0:
            raise ReVersionError(f"Setting adam_epsilon must be positive, not {self.adam_epsilon:g}.")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ReVersionError(f"Setting {name} must lie in [0, 1), not {getattr(self, name):g}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ReVersionError(f"Setting alpha must lie in [0, 1], not {self.alpha}.")
        check_seed(self.seed)
        if self.resolution is not None:
            _check_int(self, "resolution", low=8)
            if self.resolution % 8 or self.resolution > MAX_RESOLUTION:
                raise ReVersionError(f"Setting resolution must be a multiple of 8 from 8 to {MAX_RESOLUTION}, not {self.resolution}.")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ReVersionError(
                f"Mixed precision {self.mixed_precision!r} is unknown; use one of {', '.join(MIXED_PRECISION_CHOICES)}."
            )
        if self.fuse_micro_batches not in FUSE_CHOICES:
            raise ReVersionError(f"fuse_micro_batches {self.fuse_micro_batches!r} is unknown; use one of {', '.join(FUSE_CHOICES)}.")
        if self.steering_positives not in STEERING_POSITIVES_CHOICES:
            raise ReVersionError(
                f"Steering positives {self.steering_positives!r} are unknown; use one of {', '.join(STEERING_POSITIVES_CHOICES)}."
            )
        if self.attention not in ATTENTION_CHOICES:
            raise ReVersionError(f"Attention {self.attention!r} is unknown; use one of {', '.join(ATTENTION_CHOICES)}.")
        for name in ("placeholder_token", "initializer_token", "validation_prompt"):
            if not isinstance(getattr(self, name), str):
                raise ReVersionError(f"Setting {name} must be text, not {getattr(self, name)!r}.")
        if not self.placeholder_token.strip() or any(c.isspace() for c in self.placeholder_token):
            raise ReVersionError(f"Placeholder token {self.placeholder_token!r} must be one word with no spaces.")
        if not any(p in self.validation_prompt for p in ("<R>", "{}", self.placeholder_token)):
            raise ReVersionError(
                f"The preview prompt {self.validation_prompt!r} has no {DEFAULT_PLACEHOLDER}; write where the relation goes, as in {DEFAULT_VALIDATION_PROMPT!r}."
            )

    def _validate_validation(self) -> None:
        if self.validation_pairs > MAX_VALIDATION_PAIRS:
            raise ReVersionError(f"Setting validation_pairs must be at most {MAX_VALIDATION_PAIRS}, not {self.validation_pairs}.")
        if self.validation_steps > 1000:
            raise ReVersionError(f"Setting validation_steps must be at most 1000, not {self.validation_steps}.")
        if self.keep not in KEEP_CHOICES:
            raise ReVersionError(f"Setting keep {self.keep!r} is unknown; use one of {', '.join(KEEP_CHOICES)}.")
        if not self.validate_every and (self.keep == "best" or self.stop_when_flat):
            what = "keep 'best'" if self.keep == "best" else "stop_when_flat"
            raise ReVersionError(f"Setting {what} needs validation during training; set validate_every above 0.")

    def effective_learning_rate(self, num_processes: int = 1) -> float:
        """The learning rate AdamW uses: 2.5e-4 x 2 x 4 = 2e-3 by default (``scale_lr``), else the base rate."""
        if not self.scale_lr:
            return self.learning_rate
        return self.learning_rate * self.train_batch_size * self.gradient_accumulation_steps * num_processes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "InversionSettings":
        """Build settings from a card or checkpoint; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
