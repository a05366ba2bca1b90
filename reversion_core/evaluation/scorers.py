"""How an evaluation scores images: the synthetic world's exact scorer (relation and entity accuracy, leakage of
the exemplar set's shared nuisance) or, for Stable Diffusion, CLIP's entity score and a relation classifier's
relation score (appendix A.3; see :mod:`reversion_core.clip_metrics`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..benchmarks import BenchmarkRelation
from ..errors import ReVersionError
from .config import CLIP_METRICS, WORLD_METRICS, EvaluationConfig

if TYPE_CHECKING:
    from ..clip_metrics import ClipFeatures, RelationClassifier


class WorldScorer:
    """The synthetic world's exact scorer: relation and entity accuracy, and leakage of the set's nuisance."""

    kind = "world"
    metrics = WORLD_METRICS

    def __init__(self) -> None:
        from ..world import RELATION_NAMES

        self.chance = {"relation_accuracy": 1.0 / len(RELATION_NAMES)}

    def score(self, images, relation: BenchmarkRelation, pairs: Sequence[tuple[str, str]]) -> list[dict[str, float | None]]:
        from ..world import parse_entity, score, shows_appearance

        out = []
        for image, (a, b) in zip(images, pairs):
            s = score(image, relation.name, parse_entity(a), parse_entity(b))
            leak = None
            if relation.nuisance and not _asks_for(relation.nuisance, a, b):
                leak = float(shows_appearance(image, relation.nuisance, s.reading))
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
    """For Stable Diffusion: the CLIP entity score and a relation classifier's relation score (appendix A.3).

    The classifier is any :class:`~reversion_core.clip_metrics.RelationClassifier` (``labels`` and
    ``predict(images)``), such as the provided CLIP linear probe.
    """

    kind = "clip"
    metrics = CLIP_METRICS

    def __init__(self, clip: "ClipFeatures", classifier: "RelationClassifier | None" = None) -> None:
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
    from ..world import RELATION_NAMES

    kind = config.scorer
    if kind == "auto":
        kind = "world" if all(r.name in RELATION_NAMES for r in relations) else "clip"
    if kind == "world":
        missing = [r.name for r in relations if r.name not in RELATION_NAMES]
        if missing:
            raise ReVersionError(f"The world scorer only knows the world's relations; {missing[0]!r} is not one (use --scorer clip).")
        return WorldScorer()
    from ..clip_metrics import DEFAULT_CLIP_MODEL, ClipFeatures, ClipProbeClassifier, LinearProbe, labelled_images, train_relation_probe

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
