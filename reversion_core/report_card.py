"""The report card: does a learned relation work on entities it never saw?

After a training, a person wants one answer: write ``E_A <R> E_B`` with new entities, is the relation there? The card
generates one image per entity pair the exemplars do not use and reads every image:

- on a base model of the embedded world (32 px images, world words in its vocabulary), with the world's scorer:
  relation accuracy, entity accuracy and leakage of the exemplar set's shared nuisance, beside chance level and the
  same figures for the relation's own phrase written in place of ``<R>`` (a reference, same pairs and seeds);
- on any other base model (Stable Diffusion), with CLIP: the entity score, and the relation score of a linear probe
  (:mod:`reversion_core.clip_metrics`) when one is given; where the CLIP weights are missing, a sentence says so.

The figures are saved into the relation's ``card.json`` (``report_card``) and the marked grid into ``report_card.png``
beside it, each written whole and renamed into place.

Over 400 lines because the card's image reading (world or CLIP) is also what training validation reads its images
with (:mod:`reversion_core.validation`), so both score alike, and it sits beside the card that defines it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .errors import ReVersionError
from .relation_file import CARD_FILE, RelationPrompt
from .settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_PLACEHOLDER

# 16 pairs at 25 DDIM steps, plus the phrase reference, take about 30 s on a 2-core CPU with the embedded model
# (docs/performance.md): small enough to wait for, large enough that one image moves a figure by ~6 points.
DEFAULT_PAIRS = 16
DEFAULT_STEPS = 25
MAX_PAIRS = 200
GRID_FILE = "report_card.png"  # the marked grid of the saved card, beside card.json
WORLD_METRICS = ("relation_accuracy", "entity_accuracy", "appearance_leakage")
CLIP_METRICS = ("entity_score", "relation_score")
# Frames of the grid: relation and entities right, relation right but an entity wrong, relation wrong, not read.
MARK_COLOURS = {"right": (40, 170, 60), "entities wrong": (240, 160, 20), "wrong": (220, 40, 40), "not read": (160, 160, 160)}
METRIC_NAMES = {
    "relation_accuracy": "relation right",
    "entity_accuracy": "both entities right",
    "appearance_leakage": "nuisance leaked (lower is better)",
    "entity_score": "CLIP entity score",
    "relation_score": "relation probe agrees",
}


@dataclass
class ScoredImage:
    """One generated image and what the scorer read from it (``None``: not measured)."""

    image: Image.Image
    prompt: str
    seed: int
    relation_ok: bool | None = None
    entities_ok: bool | None = None
    leaked: bool | None = None
    entity_score: float | None = None

    @property
    def mark(self) -> str:
        """What the grid shows: ``right`` (relation and entities), ``entities wrong``, ``wrong`` or ``not read``."""
        if self.relation_ok is None:
            return "not read"
        if not self.relation_ok:
            return "wrong"
        return "entities wrong" if self.entities_ok is False else "right"


@dataclass
class ReportCard:
    """Figures for a relation on held-out entity pairs, with the images they were read from."""

    relation: str
    kind: str  # "world" or "clip"
    base_model: str
    world_relation: str | None
    pairs: list[tuple[str, str]]
    metrics: dict[str, float | None]
    reference: dict[str, float | None] = field(default_factory=dict)  # the relation's own phrase, same pairs/seeds
    reference_prompt: str | None = None
    chance: dict[str, float] = field(default_factory=dict)
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    seed: int = 0
    seconds: float = 0.0
    note: str = ""
    created_at: str = ""
    images: list[ScoredImage] = field(default_factory=list)
    reference_images: list[ScoredImage] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What goes into ``card.json``: the figures and how they were made, no images."""
        return {
            "kind": self.kind, "base_model": self.base_model, "world_relation": self.world_relation,
            "pairs": [list(p) for p in self.pairs], "metrics": self.metrics, "reference": self.reference,
            "reference_prompt": self.reference_prompt, "chance": self.chance, "steps": self.steps,
            "guidance_scale": self.guidance_scale, "seed": self.seed, "seconds": round(self.seconds, 1),
            "note": self.note, "created_at": self.created_at,
        }

    def table(self) -> list[list[str]]:
        """Rows of ``[figure, this relation, the relation's phrase, chance]`` for a small table."""
        return summary_table(self.summary())

    def grid(self, columns: int = 8, cell: int = 96) -> Image.Image:
        """The scored images, whole and pixelated, each framed by its :attr:`ScoredImage.mark` (see ``MARK_COLOURS``)."""
        return marked_grid(self.images, columns, cell)


def summary_table(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows from a saved card (``card.json``'s ``report_card``) or :meth:`ReportCard.summary`."""
    rows = []
    reference, chance = summary.get("reference") or {}, summary.get("chance") or {}
    for key, value in (summary.get("metrics") or {}).items():
        rows.append([METRIC_NAMES.get(key, key), _fmt(value), _fmt(reference.get(key)), _fmt(chance.get(key))])
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def marked_grid(images: Sequence[ScoredImage], columns: int = 8, cell: int = 96) -> Image.Image:
    """Images scaled up without smoothing, in a grid, each with a frame that says right or wrong."""
    columns = max(1, min(columns, len(images) or 1))
    rows = max(1, -(-len(images) // columns))
    pad = max(3, cell // 24)
    sheet = Image.new("RGB", (columns * (cell + 2 * pad), rows * (cell + 2 * pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, item in enumerate(images):
        x, y = (i % columns) * (cell + 2 * pad), (i // columns) * (cell + 2 * pad)
        colour = MARK_COLOURS[item.mark]
        draw.rectangle([x, y, x + cell + 2 * pad - 1, y + cell + 2 * pad - 1], fill=colour)
        sheet.paste(item.image.convert("RGB").resize((cell, cell), Image.NEAREST), (x + pad, y + pad))
    return sheet


# ----------------------------------------------------------------------------------------------- which scorer
def world_relation_of(relation: RelationPrompt) -> str | None:
    """The world relation a relation was learned from: its card's exemplar-set relation, or its own name."""
    return world_relation_named(relation.card.get("relation"), relation.name)


def world_relation_named(info: Any, name: str | None) -> str | None:
    """The world relation an exemplar set's ``relation.json`` (``info``) names, else the one called ``name``, else None."""
    from .world import get_relation

    candidates = [info.get("name") if isinstance(info, dict) else None, name]
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                return get_relation(candidate).name
            except ValueError:
                continue
    return None


def is_world_model(pipe) -> bool:
    """Does the pipeline draw the embedded world: 32 px images and every shape and colour word one token?"""
    from .world import COLOURS, SHAPES, SIZE

    size = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    vocab = pipe.tokenizer.get_vocab()
    return size == SIZE and all(f"{w}</w>" in vocab for w in (*SHAPES, *COLOURS))


def exemplar_pairs(relation: RelationPrompt) -> set[tuple[str, str]]:
    """The (entity A, entity B) pairs the exemplars show, as plain ``"colour shape"`` texts."""
    return world_pairs_shown(relation.card.get("relation"), relation.card.get("exemplar_captions"))


def world_pairs_shown(info: Any, captions_by_image: Any) -> set[tuple[str, str]]:
    """The plain world entity pairs an exemplar set shows: its ``relation.json``'s scenes (``info``) and its captions
    (``{image: [caption, ...]}``) that name a colour and a shape on each side of the placeholder."""
    from .world import parse_entity

    texts: list[tuple[str, str]] = []
    if isinstance(info, dict):
        texts += [(s.get("entity_a", ""), s.get("entity_b", "")) for s in info.get("scenes", []) if isinstance(s, dict)]
    if isinstance(captions_by_image, dict):
        for lines in captions_by_image.values():
            for line in lines if isinstance(lines, list) else []:
                left, sep, right = str(line).partition(DEFAULT_PLACEHOLDER)
                if sep:
                    texts.append((left, right.split(",")[0]))
    pairs = set()
    for a, b in texts:
        try:
            pairs.add((parse_entity(a).plain().text, parse_entity(b).plain().text))
        except ValueError:
            continue  # a level-1 caption ("circle <R> square") names no colour
    return pairs


def held_out_pairs(relation: RelationPrompt, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` random pairs of plain entities with distinct colours that the exemplars do not show (same shapes allowed)."""
    from .world.dataset import entity_pairs

    seen = exemplar_pairs(relation)
    pool = [(a.text, b.text) for a, b in entity_pairs() if (a.text, b.text) not in seen]
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in order]


# ----------------------------------------------------------------------------------------------- the card
def score_relation(
    relation: RelationPrompt | str | os.PathLike,
    generator,
    pairs: int | Sequence[tuple[str, str]] = DEFAULT_PAIRS,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    scorer: str = "auto",
    reference: bool = True,
    clip_model: str | os.PathLike | None = None,
    relation_probe: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReportCard:
    """Generate on held-out entity pairs with ``generator`` (a :class:`~reversion_core.generation.RelationGenerator`)
    and read the images. ``scorer``: ``"world"``, ``"clip"`` or ``"auto"`` (world on a world base model)."""
    from .relation_file import load_relation

    start = time.perf_counter()
    # 1. The relation, and the scorer that reads its images: the world's on a world base model, else CLIP.
    if not isinstance(relation, RelationPrompt):
        relation = load_relation(relation, generator.relations_dir)
    if scorer not in ("auto", "world", "clip"):
        raise ReVersionError(f"Scorer {scorer!r} is unknown; use world, clip or auto.")
    world_name = world_relation_of(relation)
    if scorer == "auto":
        scorer = "world" if world_name and is_world_model(generator.pipeline) else "clip"
    if scorer == "world" and world_name is None:
        raise ReVersionError(
            f"Relation {relation.name!r} does not say which world relation it shows (its card names none), so the world "
            "scorer cannot judge it; train it from a benchmark set or score it with CLIP."
        )
    # 2. The entity pairs the exemplars do not show, and the sampler's settings.
    if isinstance(pairs, int):
        if not 1 <= pairs <= MAX_PAIRS:
            raise ReVersionError(f"Score on 1 to {MAX_PAIRS} entity pairs, not {pairs}.")
        pairs = held_out_pairs(relation, pairs, seed)
    pairs = [(str(a), str(b)) for a, b in pairs]
    if not pairs:
        raise ReVersionError("Give at least one entity pair to score on.")
    if not 1 <= int(steps) <= 1000:
        raise ReVersionError(f"The number of denoising steps must be between 1 and 1000, not {steps}.")

    # 3. One image per pair with <R>, and one with the relation's own phrase (same pairs and seeds) as a reference.
    phrase = None
    if reference and world_name is not None:
        from .world import RELATIONS

        phrase = RELATIONS[world_name].phrase
    total = len(pairs) * (2 if phrase else 1)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    seeds = [int(seed) + i for i in range(len(pairs))]
    token = generator.install(relation)
    images = _generate(generator, [f"{a} {token} {b}" for a, b in pairs], seeds, steps, guidance_scale, tick)
    ref_images = _generate(generator, [f"{a} {phrase} {b}" for a, b in pairs], seeds, steps, guidance_scale, tick) if phrase else []

    # 4. The card: every image read, the figures beside the phrase's and chance.
    card = ReportCard(
        relation=relation.name, kind=scorer, base_model=generator.base_model_id, world_relation=world_name,
        pairs=pairs, metrics={}, reference_prompt=f"E_A {phrase} E_B" if phrase else None, steps=int(steps),
        guidance_scale=float(guidance_scale), seed=int(seed),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if scorer == "world":
        from .world import RELATION_NAMES

        info = relation.card.get("relation")
        nuisance = info.get("nuisance") if isinstance(info, dict) else None
        card.images = read_world(images, pairs, seeds, world_name, nuisance, token)
        card.reference_images = read_world(ref_images, pairs, seeds, world_name, nuisance, phrase)
        card.metrics = world_figures(card.images, nuisance)
        card.reference = world_figures(card.reference_images, nuisance) if ref_images else {}
        card.chance = {"relation_accuracy": 1.0 / len(RELATION_NAMES)}
        if not nuisance:
            card.note = "The exemplars share no recorded nuisance appearance, so leakage is not measured."
    else:
        card.images = [ScoredImage(im, f"{a} {token} {b}", s) for im, (a, b), s in zip(images, pairs, seeds)]
        card.reference_images = [ScoredImage(im, f"{a} {phrase} {b}", s) for im, (a, b), s in zip(ref_images, pairs, seeds)]
        card.metrics, card.reference, card.note = _clip_figures(card, world_name, clip_model, relation_probe)
    card.seconds = time.perf_counter() - start
    return card


def _generate(generator, prompts: list[str], seeds: list[int], steps: int, guidance: float, tick) -> list[Image.Image]:
    return generator.generate_prompts(prompts, seeds, steps=steps, guidance_scale=guidance, on_image=tick)


# ----------------------------------------------------------------------------------------------- reading images
# The pieces the card and the training's validation (:mod:`reversion_core.validation`) both read images with.
def read_world(images, pairs, seeds, world_name, nuisance, relation_text) -> list[ScoredImage]:
    """Each image read by the world's scorer against its pair (relation right, entities right, nuisance shown)."""
    from .world import parse_entity, score, shows_appearance

    out = []
    for image, (a, b), s in zip(images, pairs, seeds):
        result = score(image, world_name, parse_entity(a), parse_entity(b))
        leaked = bool(shows_appearance(image, nuisance, result.reading)) if nuisance else None
        out.append(ScoredImage(image, f"{a} {relation_text} {b}", s, bool(result.relation_ok), bool(result.entities_ok), leaked))
    return out


def world_figures(items: Sequence[ScoredImage], nuisance) -> dict[str, float | None]:
    """Relation accuracy, entity accuracy and (when the exemplars share a nuisance) leakage over scored images."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {
        "relation_accuracy": mean(i.relation_ok for i in items),
        "entity_accuracy": mean(i.entities_ok for i in items),
        "appearance_leakage": mean(i.leaked for i in items) if nuisance else None,
    }


def read_clip(items: Sequence[ScoredImage], pairs: Sequence[tuple[str, str]], clip, classifier=None, label: str | None = None) -> dict[str, float | None]:
    """CLIP's entity score of each image (and, with a relation ``classifier``, whether it shows ``label``), written
    into the items; returns the mean figures (``relation_score`` None without a classifier)."""
    if not items:
        return {"entity_score": None, "relation_score": None}
    scores = clip.entity_scores([i.image for i in items], list(pairs)[: len(items)])
    for item, value in zip(items, scores):
        item.entity_score = float(value)
    figures = {"entity_score": float(np.mean(scores)), "relation_score": None}
    if classifier is not None and label is not None:
        predicted = classifier.predict([i.image for i in items])
        for item, p in zip(items, predicted):
            item.relation_ok = p == label
        figures["relation_score"] = float(np.mean([p == label for p in predicted]))
    return figures


def _clip_figures(card: ReportCard, world_name, clip_model, relation_probe):
    from .clip_metrics import DEFAULT_CLIP_MODEL, ClipFeatures, ClipProbeClassifier, LinearProbe

    try:
        clip = ClipFeatures(clip_model or DEFAULT_CLIP_MODEL)
    except ReVersionError as exc:
        return {k: None for k in CLIP_METRICS}, {}, f"No CLIP score: {exc}"
    classifier, label = None, world_name or card.relation
    note = ("No relation score: pass a relation probe (a LinearProbe .safetensors) with --relation-probe (in the app, "
            "or its variable REVERSION_RELATION_PROBE) to measure it.")
    if relation_probe is not None:
        classifier = ClipProbeClassifier(clip, LinearProbe.load(relation_probe))
        if label not in classifier.labels:
            note, classifier = f"The relation probe knows {', '.join(classifier.labels)}, not {label!r}; no relation score.", None
        else:
            note = ""
            card.chance = {"relation_score": 1.0 / len(classifier.labels)}
    metrics = read_clip(card.images, card.pairs, clip, classifier, label)
    reference = read_clip(card.reference_images, card.pairs, clip, classifier, label) if card.reference_images else {}
    return metrics, reference, note


def save_report_card(relation: RelationPrompt, card: ReportCard, grid: bool = True) -> Path:
    """Put ``card.summary()`` into the relation's ``card.json`` and, with ``grid``, the marked grid into
    ``report_card.png`` beside it; each file is written whole, then renamed into place (the grid first, so the card
    never names a grid that is not there)."""
    if relation.path is None or not (Path(relation.path) / CARD_FILE).is_file():
        raise ReVersionError(f"Relation {relation.name!r} has no folder with a card to save the report card into.")
    path = Path(relation.path) / CARD_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ReVersionError(f"{path} is not a relation card; the report card was not saved.")
    summary = card.summary()
    if grid and card.images:
        _write_whole(path.parent / GRID_FILE, lambda f: card.grid().save(f, format="PNG"), binary=True)
        summary["grid"] = GRID_FILE
    data["report_card"] = summary
    _write_whole(path, lambda f: json.dump(data, f, indent=2, default=str))
    relation.card = data
    return path


def _write_whole(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through a temporary file in its folder, renamed into place (removed if anything fails)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validation_record(relation: RelationPrompt) -> dict[str, Any] | None:
    """The quality curve a relation's training recorded (``card.json``'s ``validation``: curve, pairs, kept step, why),
    or None when it was trained without validation."""
    record = relation.card.get("validation")
    return record if isinstance(record, dict) and (record.get("curve") or record.get("note")) else None


def validation_rows(record: dict[str, Any]) -> list[list[str]]:
    """Rows of ``[step, relation right, both entities right, nuisance leaked, "kept" or ""]`` for a small table."""
    kept = record.get("kept_step")
    return [
        [str(p.get("step")), _fmt(p.get("relation")), _fmt(p.get("entities")), _fmt(p.get("leakage")), "kept" if p.get("step") == kept else ""]
        for p in record.get("curve") or []
    ]


def saved_report_card(relation: RelationPrompt) -> tuple[dict[str, Any] | None, Image.Image | None]:
    """The report card saved in a relation's ``card.json`` (None when it has none) and its grid image when the card
    names one that is still readable (read bounded, like a preview)."""
    from .relation_file import read_preview_file

    summary = relation.card.get("report_card")
    if not isinstance(summary, dict):
        return None, None
    grid = None
    if summary.get("grid") == GRID_FILE and relation.path is not None and (Path(relation.path) / GRID_FILE).is_file():
        grid = read_preview_file(Path(relation.path) / GRID_FILE)
    return summary, grid
