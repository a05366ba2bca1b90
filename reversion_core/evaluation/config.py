"""What an evaluation compares and at which scale: the methods, the metrics, the config and its presets, and the
training jobs and image seeds they imply. Every number of a run follows from its ``EvaluationConfig``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..benchmarks import DEFAULT_BENCHMARK_DIR
from ..errors import ReVersionError
from ..settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, KEEP_CHOICES, InversionSettings


# ----------------------------------------------------------------------------------------------- methods and metrics
@dataclass(frozen=True)
class Method:
    label: str
    overrides: dict[str, Any] | None  # InversionSettings changes from the defaults; None: nothing is learned


METHODS: dict[str, Method] = {
    "text_to_image": Method("Text-to-Image (relation phrase)", None),
    "textual_inversion": Method("Textual Inversion", {"lambda_steer": 0.0, "importance_sampling": False}),
    "reversion": Method("ReVersion", {}),
    "no_steering": Method("ReVersion w/o steering", {"lambda_steer": 0.0}),
    "no_importance_sampling": Method("ReVersion w/o importance sampling", {"importance_sampling": False}),
    # The premise of steering: if the encoder's preposition prior is what it uses, positives without it do no better
    # than no steering at all.
    "random_positives": Method("ReVersion, random-word positives", {"steering_positives": "random_words"}),
}



# What a training with validation on keeps for the evaluation: the engine's keep choices (the last step's <R>, the
# best validation step's) and "early", the <R> a run with keep "best" and stop_when_flat = EARLY_STOP would have
# saved (the best validated step up to where its curve first counted that many validations without a gain).
KEPT = (*KEEP_CHOICES, "early")
EARLY_STOP = 3


def trained_by(method: str) -> str:
    """The method whose training gives a method's relation: itself, or ``reversion`` for ``reversion@best``."""
    return method.partition("@")[0]


def method_info(method: str) -> Method:
    """A method of :data:`METHODS`, or ``METHOD@best`` / ``METHOD@last`` / ``METHOD@early``: the <R> of the best
    validation step, of the last step, or the one an early-stopped run would have kept (:data:`KEPT`), all from that
    method's one training (validation on), so comparing them costs one set of trainings."""
    base, _, kept = method.partition("@")
    if base not in METHODS or (kept and (kept not in KEPT or METHODS[base].overrides is None)):
        raise ReVersionError(
            f"Unknown method {method!r}; choose from {', '.join(METHODS)} (a learned one may end in @best, @last or @early)."
        )
    if not kept:
        return METHODS[base]
    what = {"best": "<R> of the best validation step", "last": "<R> of the last step",
            "early": f"stopped when flat ({EARLY_STOP} validations), best step kept"}[kept]
    return Method(f"{METHODS[base].label}, {what}", METHODS[base].overrides)


WORLD_METRICS = ("relation_accuracy", "entity_accuracy", "appearance_leakage")
CLIP_METRICS = ("relation_score", "entity_score")
METRIC_LABELS = {
    "relation_accuracy": "Relation accuracy (higher is better)",
    "entity_accuracy": "Entity accuracy, both entities right (higher is better)",
    "appearance_leakage": "Appearance leakage, nuisance shown unasked (lower is better)",
    "relation_score": "Relation score (higher is better)",
    "entity_score": "Entity score, CLIP(image, 'E_A, E_B') (higher is better)",
}
SCORER_CHOICES = ("auto", "world", "clip")
SAMPLE_TEMPLATES = 8  # the sample sheets show image 0 of the first templates, first seed


# ----------------------------------------------------------------------------------------------- configuration
@dataclass
class EvaluationConfig:
    """Everything that decides the numbers; written verbatim to ``config.json`` beside the tables."""

    preset: str = "custom"
    benchmark_dir: str = str(DEFAULT_BENCHMARK_DIR)
    relations: list[str] | None = None  # None: every relation folder in benchmark_dir
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    templates_per_relation: int = 100
    images_per_template: int = 10
    train_steps: int = InversionSettings.max_train_steps
    train_settings: dict[str, Any] = field(default_factory=dict)  # extra InversionSettings for every learned method
    inference_steps: int = DEFAULT_INFERENCE_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    batch_size: int = 25  # images per generation batch; batches are cut before they are split across processes
    entity_articles: bool = False  # write "a E_A <R> a E_B" instead of the templates' "E_A <R> E_B"
    base_model: str | None = None  # None: the runtime's rule ($REVERSION_BASE_MODEL, else SD 1.5 on a GPU, else the embedded model)
    scorer: str = "auto"  # "world" | "clip" | "auto" (world when every relation is a world relation)
    clip_model: str | None = None  # for the clip scorer; None: clip_metrics.DEFAULT_CLIP_MODEL
    relation_probe: str | None = None  # a saved LinearProbe (.safetensors)
    probe_images: str | None = None  # or a folder of labelled images (<relation>/...) to train one
    device: str | None = None
    out_dir: str = "results/evaluation"
    save_images: bool = False

    def validate(self) -> None:
        for method in self.methods:
            method_info(method)  # refuses an unknown one
        if not self.methods:
            raise ReVersionError("Choose at least one method to evaluate.")
        if not self.seeds:
            raise ReVersionError("Give at least one seed.")
        for name in ("templates_per_relation", "images_per_template", "train_steps", "inference_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ReVersionError(f"Evaluation setting {name} must be at least 1, not {getattr(self, name)}.")
        if self.scorer not in SCORER_CHOICES:
            raise ReVersionError(f"Scorer {self.scorer!r} is unknown; use world, clip or auto.")
        known = {f.name for f in fields(InversionSettings)}
        bad = [k for k in self.train_settings if k not in known or k in ("max_train_steps", "seed")]
        if bad:
            raise ReVersionError(f"train_settings may not set {bad[0]!r}; use one of the inversion settings other than max_train_steps and seed.")
        kept = [m for m in self.methods if "@" in m]
        if kept and not self.train_settings.get("validate_every", InversionSettings.validate_every):
            raise ReVersionError(f"Method {kept[0]!r} needs validation during training; do not set validate_every to 0.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EvaluationConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Presets. "quick" is for CI (about a minute on 2 CPU cores); "headline" is the committed run on the embedded world
# (the paper's optimiser and batch, 300 of its 3000 steps, 1 of its 10 images per template, 20 of its 50 DDIM steps;
# about 1.5 hours with 2 processes on 2 shared CPU cores); "paper" is the paper's scale.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        relations=["above", "on_top_of"], seeds=[0, 1], templates_per_relation=6, images_per_template=1,
        train_steps=4, train_settings={"gradient_accumulation_steps": 1}, inference_steps=10, batch_size=6,
    ),
    "headline": dict(
        relations=None, seeds=[0, 1, 2], templates_per_relation=100, images_per_template=1, train_steps=300,
        inference_steps=20, batch_size=50,
    ),
    "paper": dict(relations=None, seeds=[0, 1, 2], templates_per_relation=100, images_per_template=10, train_steps=3000,
                  inference_steps=50, batch_size=25),
}


def preset_config(name: str, **overrides: Any) -> EvaluationConfig:
    """A preset's config with ``overrides`` applied (None values are ignored)."""
    if name not in PRESETS:
        raise ReVersionError(f"Preset {name!r} is unknown; use one of {', '.join(PRESETS)}.")
    values = {**PRESETS[name], "preset": name, "out_dir": f"results/evaluation/{name}"}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return EvaluationConfig.from_dict(values)


# ----------------------------------------------------------------------------------------------- jobs and seeds
@dataclass(frozen=True)
class Job:
    """One relation prompt to learn: a method, a relation, a seed."""

    method: str
    relation: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.relation}-s{self.seed}"

    @property
    def token(self) -> str:
        return f"<{self.method}-{self.relation}-s{self.seed}>"


def method_settings(config: EvaluationConfig, method: str, seed: int) -> InversionSettings:
    """The inversion settings of one learned method: defaults, then the run's train_settings, then the method's switches."""
    overrides = method_info(method).overrides
    if overrides is None:
        raise ReVersionError(f"Method {method!r} learns nothing.")
    values = {**InversionSettings().to_dict(), **config.train_settings, **overrides, "max_train_steps": int(config.train_steps), "seed": int(seed)}
    return InversionSettings.from_dict(values)


def image_seed(seed: int, template_index: int, image_index: int) -> int:
    """The seed of one image: a function of the run's seed and the image's place, never of the process."""
    return int(seed) * 1_000_000 + int(template_index) * 1_000 + int(image_index)
