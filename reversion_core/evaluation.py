"""Evaluation: the paper's comparison and ablation (sections 6.4-6.5, Table 1) as one repeatable run.

For every relation of a benchmark folder and every seed, each method learns (or writes) the relation and generates
``images_per_template`` images for each of the relation's first ``templates_per_relation`` inference templates:

- ``text_to_image``: the relation's own phrase in place of <R> (the paper's Text-to-Image baseline; on the
  embedded world an upper reference, because the base model was taught those phrases);
- ``textual_inversion``: denoising loss only, uniform timesteps, same token, steps and optimiser;
- ``reversion``: the engine's defaults (steering + relation-focal importance sampling);
- ``no_steering`` and ``no_importance_sampling``: the two ablations.

Images are scored by the synthetic world's exact scorer (relation accuracy, entity accuracy, appearance leakage of
the exemplar set's shared nuisance) or, for Stable Diffusion, by CLIP (entity score) and a pluggable relation
classifier (relation score), see :mod:`reversion_core.clip_metrics`.

Scale: run it under ``accelerate launch -m reversion_core evaluate ...``. Training jobs (method x relation x seed)
and generation batches are split across processes; every image's seed comes from its seed, template and image
index, and batches are cut before they are split, so the gathered records equal a one-process run's.
Finished relations and scored batches are cached under the results folder, so an interrupted run resumes.
"""
from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import ReVersionError
from .settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, DEFAULT_PLACEHOLDER, InversionSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCHMARK_DIR = REPO_ROOT / "assets" / "benchmark"
PAPER_BENCHMARK_FILE = Path(__file__).resolve().parent / "data" / "reversion_benchmark.json"


# ----------------------------------------------------------------------------------------------- methods
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
}

WORLD_METRICS = ("relation_accuracy", "entity_accuracy", "appearance_leakage")
CLIP_METRICS = ("relation_score", "entity_score")
METRIC_LABELS = {
    "relation_accuracy": "Relation accuracy (higher is better)",
    "entity_accuracy": "Entity accuracy, both entities right (higher is better)",
    "appearance_leakage": "Appearance leakage, nuisance shown unasked (lower is better)",
    "relation_score": "Relation score (higher is better)",
    "entity_score": "Entity score, CLIP(image, 'E_A, E_B') (higher is better)",
}


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
    train_steps: int = 3000
    train_settings: dict[str, Any] = field(default_factory=dict)  # extra InversionSettings for every learned method
    inference_steps: int = DEFAULT_INFERENCE_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    batch_size: int = 25  # images per generation batch; batches are cut before they are split across processes
    entity_articles: bool = False  # write "a E_A <R> a E_B" instead of the templates' "E_A <R> E_B"
    base_model: str | None = None  # None: $REVERSION_BASE_MODEL, else the embedded model, else SD 1.5
    scorer: str = "auto"  # "world" | "clip" | "auto" (world when every relation is a world relation)
    clip_model: str | None = None  # for the clip scorer; None: clip_metrics.DEFAULT_CLIP_MODEL
    relation_probe: str | None = None  # a saved LinearProbe (.safetensors)
    probe_images: str | None = None  # or a folder of labelled images (<relation>/...) to train one
    device: str | None = None
    out_dir: str = "results/evaluation"
    save_images: bool = False

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ReVersionError(f"Unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}.")
        if not self.methods:
            raise ReVersionError("Choose at least one method to evaluate.")
        if not self.seeds:
            raise ReVersionError("Give at least one seed.")
        for name in ("templates_per_relation", "images_per_template", "train_steps", "inference_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ReVersionError(f"Evaluation setting {name} must be at least 1, not {getattr(self, name)}.")
        if self.scorer not in ("auto", "world", "clip"):
            raise ReVersionError(f"Scorer {self.scorer!r} is unknown; use world, clip or auto.")
        known = {f.name for f in fields(InversionSettings)}
        bad = [k for k in self.train_settings if k not in known or k in ("max_train_steps", "seed")]
        if bad:
            raise ReVersionError(f"train_settings may not set {bad[0]!r}; use one of the inversion settings other than max_train_steps and seed.")

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


# ----------------------------------------------------------------------------------------------- benchmark
@dataclass
class BenchmarkRelation:
    """One relation to evaluate: its exemplar folder, phrase, inference templates and shared nuisance (world only)."""

    name: str
    folder: Path
    phrase: str | None
    templates: list[str]
    nuisance: dict | None = None


def paper_templates(name: str | None = None) -> dict[str, list[str]] | list[str]:
    """The ReVersion Benchmark's inference templates ("E_A <R> E_B"), from ``reversion_core/data``."""
    data = json.loads(PAPER_BENCHMARK_FILE.read_text(encoding="utf-8"))["relations"]
    out = {r: [f"{a} {DEFAULT_PLACEHOLDER} {b}" for a in d["entities_a"] for b in d["entities_b"]] for r, d in data.items()}
    if name is None:
        return out
    if name not in out:
        raise ReVersionError(f"The ReVersion benchmark has no relation {name!r}; it has {', '.join(out)}.")
    return out[name]


def paper_relations() -> dict[str, dict[str, Any]]:
    """The ten relations of the paper: phrase, description and entity lists."""
    return json.loads(PAPER_BENCHMARK_FILE.read_text(encoding="utf-8"))["relations"]


def load_benchmark(benchmark_dir: str | os.PathLike, names: Sequence[str] | None = None, templates_per_relation: int = 100) -> list[BenchmarkRelation]:
    """Read relation folders (exemplars + text.json). Phrase and templates come from ``relation.json`` /
    ``templates.json`` beside them, else from the paper's benchmark data under the folder's name."""
    root = Path(benchmark_dir)
    if not root.is_dir():
        raise ReVersionError(f"Benchmark folder {root} does not exist.")
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "text.json").is_file())
    names = list(names) if names else available
    paper = paper_relations()
    out = []
    for name in names:
        folder = root / name
        if name not in available:
            raise ReVersionError(f"Benchmark folder {root} has no relation {name!r} (it has: {', '.join(available) or 'none'}).")
        meta = json.loads((folder / "relation.json").read_text(encoding="utf-8")) if (folder / "relation.json").is_file() else {}
        phrase = meta.get("phrase") or paper.get(name, {}).get("phrase")
        if (folder / "templates.json").is_file():
            templates = json.loads((folder / "templates.json").read_text(encoding="utf-8"))
        elif name in paper:
            templates = paper_templates(name)
        else:
            raise ReVersionError(f"Relation {name!r} has no templates.json and is not one of the paper's relations; add inference templates.")
        templates = [" ".join(t.replace("{}", DEFAULT_PLACEHOLDER).split()) for t in templates][: int(templates_per_relation)]
        if any(t.count(DEFAULT_PLACEHOLDER) != 1 for t in templates):
            raise ReVersionError(f"Every inference template of {name!r} must contain {DEFAULT_PLACEHOLDER} once.")
        out.append(BenchmarkRelation(name, folder, phrase, templates, meta.get("nuisance")))
    return out


def split_template(template: str) -> tuple[str, str]:
    """``"red circle <R> blue square"`` -> ``("red circle", "blue square")``."""
    a, _, b = template.partition(DEFAULT_PLACEHOLDER)
    return a.strip(), b.strip()


def with_articles(template: str) -> str:
    """``"red circle <R> blue square"`` -> ``"a red circle <R> a blue square"``."""

    def article(entity: str) -> str:
        return f"{'an' if entity[:1].lower() in 'aeiou' else 'a'} {entity}"

    a, b = split_template(template)
    return f"{article(a)} {DEFAULT_PLACEHOLDER} {article(b)}"


def image_seed(seed: int, template_index: int, image_index: int) -> int:
    """The seed of one image: a function of the run's seed and the image's place, never of the process."""
    return int(seed) * 1_000_000 + int(template_index) * 1_000 + int(image_index)


# ----------------------------------------------------------------------------------------------- scorers
class WorldScorer:
    """The synthetic world's exact scorer: relation and entity accuracy, and leakage of the set's nuisance."""

    kind = "world"
    metrics = WORLD_METRICS

    def __init__(self) -> None:
        from .world import RELATION_NAMES

        self.chance = {"relation_accuracy": 1.0 / len(RELATION_NAMES)}

    def score(self, images, relation: BenchmarkRelation, pairs: Sequence[tuple[str, str]]) -> list[dict[str, float | None]]:
        from .world import parse_entity, score, shows_appearance

        out = []
        for image, (a, b) in zip(images, pairs):
            s = score(image, relation.name, parse_entity(a), parse_entity(b))
            leak = None
            if relation.nuisance and not _asks_for(relation.nuisance, a, b):
                leak = float(shows_appearance(image, relation.nuisance))
            out.append({"relation_accuracy": float(s.relation_ok), "entity_accuracy": float(s.entities_ok), "appearance_leakage": leak})
        return out


def _asks_for(nuisance: dict, entity_a: str, entity_b: str) -> bool:
    """Does the prompt itself ask for the nuisance appearance (then showing it is no leak)?"""
    pattern, target = nuisance["pattern"], nuisance["target"]
    if target == "background":
        return False  # inference templates never describe the background
    words = (entity_a if target == "entity_a" else entity_b).split()
    return pattern in words


class ClipScorer:
    """For Stable Diffusion: the CLIP entity score and a relation classifier's relation score (appendix A.3)."""

    kind = "clip"
    metrics = CLIP_METRICS

    def __init__(self, clip, classifier=None) -> None:
        self.clip, self.classifier = clip, classifier
        self.chance = {"relation_score": 1.0 / len(classifier.labels)} if classifier is not None else {}

    def score(self, images, relation: BenchmarkRelation, pairs: Sequence[tuple[str, str]]) -> list[dict[str, float | None]]:
        entity = self.clip.entity_scores(images, pairs)
        predicted = self.classifier.predict(images) if self.classifier is not None else [None] * len(images)
        return [
            {"relation_score": None if p is None else float(p == relation.name), "entity_score": float(e)}
            for e, p in zip(entity, predicted)
        ]


def make_scorer(config: EvaluationConfig, relations: Sequence[BenchmarkRelation], device=None, save_probe: bool = True):
    """The world scorer for world relations, else CLIP + the relation probe."""
    from .world import RELATION_NAMES

    kind = config.scorer
    if kind == "auto":
        kind = "world" if all(r.name in RELATION_NAMES for r in relations) else "clip"
    if kind == "world":
        missing = [r.name for r in relations if r.name not in RELATION_NAMES]
        if missing:
            raise ReVersionError(f"The world scorer only knows the world's relations; {missing[0]!r} is not one (use --scorer clip).")
        return WorldScorer()
    from .clip_metrics import DEFAULT_CLIP_MODEL, ClipFeatures, ClipProbeClassifier, LinearProbe, labelled_images, train_relation_probe

    clip = ClipFeatures(config.clip_model or DEFAULT_CLIP_MODEL, device=device or "cpu")
    classifier = None
    if config.relation_probe:
        classifier = ClipProbeClassifier(clip, LinearProbe.load(config.relation_probe))
    elif config.probe_images:
        images, labels = labelled_images(config.probe_images)
        probe = train_relation_probe(clip, images, labels)
        if save_probe:
            probe.save(Path(config.out_dir) / "relation_probe.safetensors")
        classifier = ClipProbeClassifier(clip, probe)
    if classifier is not None:
        unknown = [r.name for r in relations if r.name not in classifier.labels]
        if unknown:
            raise ReVersionError(f"The relation classifier knows {', '.join(classifier.labels)} but not {unknown[0]!r}.")
    return ClipScorer(clip, classifier)


# ----------------------------------------------------------------------------------------------- processes
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def process_state(device: str | None = None):
    """Accelerate's view of this process (index, count, device); under ``accelerate launch`` it joins the group."""
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=cpu, timeout=timedelta(hours=24))  # a slow training job must not time a waiting process out


@contextlib.contextmanager
def one_process_world():
    """Let the engine train one relation alone inside a multi-process launch.

    ``Inversion`` joins the launch's process group for data-parallel training of one relation; here each process
    trains different relations, so it must see a world of one. Accelerate's shared state and the launcher's
    environment are put back afterwards; the process group itself is untouched.
    """
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _DISTRIBUTED_ENV}
    saved = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState, GradientState)]
    for key in _DISTRIBUTED_ENV:
        os.environ.pop(key, None)
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        for cls, state in saved:
            cls._shared_state.clear()
            cls._shared_state.update(state)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ----------------------------------------------------------------------------------------------- learning
@dataclass(frozen=True)
class Job:
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
    overrides = METHODS[method].overrides
    if overrides is None:
        raise ReVersionError(f"Method {method!r} learns nothing.")
    values = {**InversionSettings().to_dict(), **config.train_settings, **overrides, "max_train_steps": int(config.train_steps), "seed": int(seed)}
    return InversionSettings.from_dict(values)


def weights_fingerprint(pipe) -> str:
    """A cheap fingerprint of a pipeline's weights (names, shapes and the ends of every tensor): cached results
    from another base model, or from an earlier checkpoint of the same one, are never reused."""
    digest = hashlib.sha1()
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        for name, tensor in part.state_dict().items():
            flat = tensor.detach().reshape(-1).float().cpu()
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(torch_bytes(flat[:32]) + torch_bytes(flat[-32:]))
    return digest.hexdigest()[:16]


def torch_bytes(tensor) -> bytes:
    return tensor.numpy().tobytes()


def folder_fingerprint(folder: Path) -> str:
    """Hash of an exemplar folder's files (names and bytes)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def learn(
    job: Job, relation: BenchmarkRelation, config: EvaluationConfig, base_fingerprint: str, log: Callable[[str], None] = print,
    process: int = 0,
) -> dict[str, Any]:
    """Train one relation prompt, or reuse the one a previous run trained with the same settings, exemplars and
    base weights; write its loss curve (CSV) and what it was trained from (JSON) under ``training/``."""
    from .inversion import FailedEvent, FinishedEvent, Inversion, StepEvent, StoppedEvent

    out = Path(config.out_dir)
    settings = method_settings(config, job.method, job.seed)
    relations_dir = out / "relations" / job.method
    curve = out / "training" / job.method / f"{job.name}.csv"
    made_from = {"settings": settings.to_dict(), "base_weights": base_fingerprint, "exemplars": folder_fingerprint(relation.folder)}
    sidecar = curve.with_suffix(".json")
    if (relations_dir / job.name / "card.json").is_file() and curve.is_file() and sidecar.is_file():
        previous = json.loads(sidecar.read_text())
        if previous.get("made_from") == json.loads(json.dumps(made_from)) and previous.get("status") == "finished":
            return {**previous["summary"], "status": "cached", "process": process}
    start = time.perf_counter()
    with one_process_world():
        run = Inversion(
            relation.folder, job.name, settings, base_model=config.base_model, relations_dir=relations_dir, overwrite=True,
            checkpoint_dir=out / "checkpoints" / job.method / job.name, device=config.device,
        )
        rows, status, message = [], "finished", ""
        for event in run:
            if isinstance(event, StepEvent):
                rows.append((event.step, event.loss, event.denoise_loss, event.steer_loss))
            elif isinstance(event, FailedEvent):
                status, message = "failed", event.message
            elif isinstance(event, StoppedEvent):
                status = "stopped"
            elif isinstance(event, FinishedEvent):
                status = "finished"
    curve.parent.mkdir(parents=True, exist_ok=True)
    with open(curve, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "denoise_loss", "steer_loss"])
        writer.writerows(rows)
    elapsed = time.perf_counter() - start
    log(f"learned {job.method} {job.name} in {elapsed:.0f}s ({status}{': ' + message if message else ''})")
    summary = {"job": asdict(job), "status": status, "message": message, "elapsed_s": round(elapsed, 1), "process": process}
    if rows:
        summary["final_denoise_loss"] = round(sum(r[2] for r in rows[-20:]) / len(rows[-20:]), 5)
    sidecar.write_text(json.dumps({"made_from": made_from, "status": status, "summary": summary}, indent=1, default=str))
    return summary


# ----------------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Unit:
    """One generation batch: some (template, image) places of one job."""

    job: Job
    places: tuple[tuple[int, int], ...]


def generation_units(config: EvaluationConfig, relations: Sequence[BenchmarkRelation]) -> list[Unit]:
    """Every batch of the run, cut the same way whatever the number of processes."""
    units = []
    for method in config.methods:
        for relation in relations:
            for seed in config.seeds:
                places = [(t, i) for t in range(len(relation.templates)) for i in range(config.images_per_template)]
                for start in range(0, len(places), config.batch_size):
                    units.append(Unit(Job(method, relation.name, int(seed)), tuple(places[start : start + config.batch_size])))
    return units


class Sampler:
    """The base model once per process; installs each learned relation under its own token and generates batches."""

    def __init__(self, config: EvaluationConfig, device) -> None:
        from .generation import RelationGenerator

        self.config = config
        self.generator = RelationGenerator(config.base_model, device=device)
        self.pipe = self.generator.pipeline
        self.pipe.set_progress_bar_config(disable=True)
        self.base_model_id = self.generator.base_model_id
        self.base_fingerprint = weights_fingerprint(self.pipe)

    def prompts(self, job: Job, relation: BenchmarkRelation, templates: Sequence[str]) -> tuple[list[str], str]:
        """The prompts of a batch and what stands for <R> (the phrase, or the learned vector's hash)."""
        if METHODS[job.method].overrides is None:
            if not relation.phrase:
                raise ReVersionError(f"Relation {relation.name!r} has no phrase for the Text-to-Image method; add one to relation.json.")
            return [t.replace(DEFAULT_PLACEHOLDER, relation.phrase) for t in templates], relation.phrase
        from .relation_file import load_relation

        learned = load_relation(Path(self.config.out_dir) / "relations" / job.method / job.name, None)
        token = self.generator.install(learned, token=job.token)
        digest = hashlib.sha1(learned.vector.numpy().tobytes()).hexdigest()[:16]
        return [t.replace(DEFAULT_PLACEHOLDER, token) for t in templates], digest

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]):
        import torch

        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]  # CPU generators: the same noise on any device
        return self.pipe(
            list(prompts), num_inference_steps=int(self.config.inference_steps), guidance_scale=float(self.config.guidance_scale),
            generator=generators,
        ).images


def _png_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _png_from_b64(text: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def _md5(image) -> str:
    return hashlib.md5(image.convert("RGB").tobytes()).hexdigest()


SAMPLE_TEMPLATES = 8  # the sample sheets show image 0 of the first templates, first seed


def run_unit(unit: Unit, relation: BenchmarkRelation, sampler: Sampler, scorer, config: EvaluationConfig) -> tuple[list[dict], list[tuple]]:
    """Generate and score one batch (or read it from the cache). Returns records and sample images."""
    templates = [relation.templates[t] for t, _ in unit.places]
    written = [with_articles(t) for t in templates] if config.entity_articles else templates
    seeds = [image_seed(unit.job.seed, t, i) for t, i in unit.places]
    prompts, stands_for = sampler.prompts(unit.job, relation, written)
    key_data = {
        "unit": [asdict(unit.job), unit.places], "prompts": prompts, "r": stands_for, "seeds": seeds,
        "base_model": sampler.base_model_id, "weights": sampler.base_fingerprint, "steps": config.inference_steps, "guidance": config.guidance_scale,
        "scorer": scorer.kind, "nuisance": relation.nuisance,
    }
    key = hashlib.sha1(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()
    cache = Path(config.out_dir) / "cache" / f"{key}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        return cached["records"], [(r["method"], r["relation"], r["template_index"], _png_from_b64(s)) for r, s in cached["samples"]]
    images = sampler(prompts, seeds)
    pairs = [split_template(t) for t in templates]
    scores = scorer.score(images, relation, pairs)
    records, samples = [], []
    for (t, i), seed, prompt, (a, b), image, values in zip(unit.places, seeds, prompts, pairs, images, scores):
        record = {
            "method": unit.job.method, "relation": relation.name, "seed": unit.job.seed, "template_index": t, "image_index": i,
            "image_seed": seed, "prompt": prompt, "entity_a": a, "entity_b": b, **values, "image_md5": _md5(image),
        }
        records.append(record)
        if unit.job.seed == config.seeds[0] and i == 0 and t < SAMPLE_TEMPLATES:
            samples.append((record, image))
        if config.save_images:
            folder = Path(config.out_dir) / "images" / unit.job.method / relation.name / f"s{unit.job.seed}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"t{t:03d}-i{i:02d}.png")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key_data, "records": records, "samples": [(r, _png_b64(im)) for r, im in samples]}, default=str))
    os.replace(tmp, cache)
    return records, [(r["method"], r["relation"], r["template_index"], im) for r, im in samples]


# ----------------------------------------------------------------------------------------------- aggregation
@dataclass
class Cell:
    mean: float | None
    std: float | None
    per_seed: list[float | None]


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    records: list[dict]
    metrics: tuple[str, ...]
    relations: list[str]
    tables: dict[str, dict[str, dict[str, Cell]]]  # metric -> method -> relation (and "mean") -> cell
    chance: dict[str, float]
    training: list[dict]
    out_dir: Path
    elapsed_s: float = 0.0


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _cell(per_seed: list[float | None]) -> Cell:
    values = [v for v in per_seed if v is not None]
    if not values:
        return Cell(None, None, per_seed)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None  # one seed: no spread
    return Cell(mean, std, per_seed)


def aggregate(records: Sequence[dict], metrics: Sequence[str], methods: Sequence[str], relations: Sequence[str], seeds: Sequence[int]):
    """metric -> method -> relation -> Cell: the per-seed rate over images, then mean and sample std over seeds.
    The "mean" column averages relations within each seed first, so its spread is the spread of seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["relation"], r["seed"]), []).append(r)
    tables = {}
    for metric in metrics:
        table = {}
        for method in methods:
            rate = {(rel, s): _mean(r[metric] for r in groups.get((method, rel, s), [])) for rel in relations for s in seeds}
            row = {rel: _cell([rate[rel, s] for s in seeds]) for rel in relations}
            row["mean"] = _cell([_mean(rate[rel, s] for rel in relations) for s in seeds])
            table[method] = row
        tables[metric] = table
    return tables


# ----------------------------------------------------------------------------------------------- the run
def evaluate(config: EvaluationConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> EvaluationResult:
    """Learn, generate, score and report; every process returns the same gathered result, the main one writes files."""
    config.validate()
    started, wall = datetime.now(timezone.utc), time.perf_counter()
    state = process_state(config.device)
    main = state.is_main_process
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    say = log or (lambda message: print(prefix + message, file=sys.stderr, flush=True))
    relations = load_benchmark(config.benchmark_dir, config.relations, config.templates_per_relation)
    by_name = {r.name: r for r in relations}
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = config.device or (str(state.device) if state.device.type != "cpu" else "cpu")

    sampler = Sampler(config, device)  # loads the base model once per process

    # 1. Learn: each process trains its share of the (method, relation, seed) jobs, alone.
    jobs = [Job(m, r.name, int(s)) for m in config.methods if METHODS[m].overrides is not None for r in relations for s in config.seeds]
    mine = jobs[state.process_index :: state.num_processes]
    if main:
        say(f"learning {len(jobs)} relation prompts ({config.train_steps} steps each) on {state.num_processes} process(es)")
    training = [learn(job, by_name[job.relation], config, sampler.base_fingerprint, say, state.process_index) for job in mine]
    state.wait_for_everyone()

    # 2. Generate and score: batches are cut first, then split, so the records do not depend on the process count.
    scorer = make_scorer(config, relations, device, save_probe=main)
    units = generation_units(config, relations)
    records, samples = [], []
    with state.split_between_processes(units) as my_units:
        bar = _progress(len(my_units), progress and main, "batches")
        for unit in my_units:
            recs, samp = run_unit(unit, by_name[unit.job.relation], sampler, scorer, config)
            records += recs
            samples += samp
            bar.update(1)
        bar.close()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        records, samples, training = gather_object(records), gather_object(samples), gather_object(training)
    training.sort(key=lambda t: jobs.index(Job(**t["job"])))
    records.sort(key=lambda r: (config.methods.index(r["method"]), [x.name for x in relations].index(r["relation"]), r["seed"], r["template_index"], r["image_index"]))

    tables = aggregate(records, scorer.metrics, config.methods, [r.name for r in relations], [int(s) for s in config.seeds])
    result = EvaluationResult(
        config, records, tuple(scorer.metrics), [r.name for r in relations], tables, dict(scorer.chance), training, out,
        time.perf_counter() - wall,
    )
    if main:
        from .evaluation_report import write_report

        write_report(result, samples, started, state.num_processes, sampler.base_model_id)
    state.wait_for_everyone()
    return result


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, unit: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)
