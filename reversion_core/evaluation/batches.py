"""The evaluation's images: generation batches cut the same way whatever the number of processes, generated with
each learned relation (or the relation's phrase), scored, and cached under the results folder so an interrupted
run resumes where it stopped."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..benchmarks import BenchmarkRelation, split_template, with_articles
from ..errors import ReVersionError
from ..settings import DEFAULT_PLACEHOLDER
from .config import SAMPLE_TEMPLATES, EvaluationConfig, Job, image_seed, method_info
from .training import weights_fingerprint


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
        from ..generation import RelationGenerator

        self.config = config
        self.generator = RelationGenerator(config.base_model, device=device)
        self.pipe = self.generator.pipeline
        self.pipe.set_progress_bar_config(disable=True)
        self.base_model_id = self.generator.base_model_id
        self.base_fingerprint = weights_fingerprint(self.pipe)

    def prompts(self, job: Job, relation: BenchmarkRelation, templates: Sequence[str]) -> tuple[list[str], str]:
        """The prompts of a batch and what stands for <R> (the phrase, or the learned vector's hash)."""
        if method_info(job.method).overrides is None:
            if not relation.phrase:
                raise ReVersionError(f"Relation {relation.name!r} has no phrase for the Text-to-Image method; add one to relation.json.")
            return [t.replace(DEFAULT_PLACEHOLDER, relation.phrase) for t in templates], relation.phrase
        from ..relation_file import load_relation

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


def run_unit(unit: Unit, relation: BenchmarkRelation, sampler: Sampler, scorer, config: EvaluationConfig) -> tuple[list[dict], list[tuple]]:
    """Generate and score one batch (or read it from the cache). Returns records and sample images."""
    templates = [relation.templates[t] for t, _ in unit.places]
    written = [with_articles(t) for t in templates] if config.entity_articles else templates
    seeds = [image_seed(unit.job.seed, t, i) for t, i in unit.places]
    prompts, stands_for = sampler.prompts(unit.job, relation, written)
    shared = {
        "base_model": sampler.base_model_id, "weights": sampler.base_fingerprint, "steps": config.inference_steps, "guidance": config.guidance_scale,
        "scorer": scorer.kind, "nuisance": relation.nuisance,
    }
    # The cache is keyed by what decides the images, not by the method's name: two methods whose <R> is the same vector
    # (reversion@best and reversion@early often are) share their images. Entries of the first key, which named the job,
    # are still read.
    written_with = [p.replace(unit.job.token, f"<R {stands_for}>") for p in prompts]
    key_data = {"relation": relation.name, "places": unit.places, "prompts": written_with, "r": stands_for, "seeds": seeds, **shared}
    named = {"unit": [asdict(unit.job), unit.places], "prompts": prompts, "r": stands_for, "seeds": seeds, **shared}
    key, named_key = (hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest() for d in (key_data, named))
    cache_dir = Path(config.out_dir) / "cache"
    for found in (cache_dir / f"{named_key}.json", cache_dir / f"{key}.json"):
        if found.is_file():
            cached = json.loads(found.read_text())
            method = unit.job.method  # the seed and the places are the key's; the method and its token are not
            records = [{**r, "method": method, "prompt": p} for r, p in zip(cached["records"], prompts)]
            samples = [({**r, "method": method}, _png_from_b64(s)) for r, s in cached["samples"]]
            return records, [(r["method"], r["relation"], r["template_index"], im) for r, im in samples]
    cache = cache_dir / f"{key}.json"
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
