"""Every knob of relation inversion and generation in one place; defaults are the paper's (appendix A.1)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ReVersionError

DEFAULT_PLACEHOLDER = "<R>"
DEFAULT_GUIDANCE_SCALE = 7.5  # classifier-free guidance weight used for every result in the paper
DEFAULT_INFERENCE_STEPS = 50  # DDIM steps
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ATTENTION_CHOICES = ("sdpa", "xformers")
FUSE_CHOICES = ("auto", "on", "off")


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
    temperature: float = 0.07
    lambda_steer: float = 0.01
    lambda_denoise: float = 1.0
    # Relation-focal importance sampling (section 4.3, eq. 5); False samples t uniformly
    importance_sampling: bool = True
    alpha: float = 0.5
    seed: int = 0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"; the frozen models run in that dtype, <R> stays fp32
    attention: str = "sdpa"  # "sdpa" | "xformers"
    gradient_checkpointing: bool = False
    # Run a step's micro-batches (batch x accumulation samples) through the models as one batch: the same samples,
    # draws and gradient as accumulating them one by one, fewer and larger calls, more activation memory.
    # "auto": together on CPU (per-call overhead dominates there), one by one on a GPU (memory is the limit there).
    fuse_micro_batches: str = "auto"  # "auto" | "on" | "off"
    resolution: int | None = None  # None: the base model's sample size x the VAE scale factor
    preview_every: int = 0  # 0: no previews
    preview_images: int = 2
    preview_steps: int = 25
    validation_prompt: str = "circle <R> square"
    checkpoint_every: int = 0  # 0: no checkpoints
    reference: bool = False  # the official script's way (for benchmarks): VAE every step, fp32, whole table optimised

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ReVersionError for values that cannot work."""
        positive_ints = ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "num_positives")
        for name in positive_ints:
            if int(getattr(self, name)) < 1:
                raise ReVersionError(f"Setting {name} must be at least 1, not {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ReVersionError(f"Setting learning_rate must be positive, not {self.learning_rate}.")
        if not self.temperature > 0:
            raise ReVersionError(f"Setting temperature must be positive, not {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ReVersionError(f"Setting alpha must lie in [0, 1], not {self.alpha}.")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ReVersionError(
                f"Mixed precision {self.mixed_precision!r} is unknown; use one of {', '.join(MIXED_PRECISION_CHOICES)}."
            )
        if self.fuse_micro_batches not in FUSE_CHOICES:
            raise ReVersionError(f"fuse_micro_batches {self.fuse_micro_batches!r} is unknown; use one of {', '.join(FUSE_CHOICES)}.")
        if self.attention not in ATTENTION_CHOICES:
            raise ReVersionError(f"Attention {self.attention!r} is unknown; use one of {', '.join(ATTENTION_CHOICES)}.")
        if not self.placeholder_token.strip() or any(c.isspace() for c in self.placeholder_token):
            raise ReVersionError(f"Placeholder token {self.placeholder_token!r} must be one word with no spaces.")

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
