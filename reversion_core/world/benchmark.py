"""Exemplar sets of the world in the ReVersion benchmark layout, with their inference templates.

``assets/benchmark/<relation>/`` holds 6 exemplar images, ``text.json`` (file name -> captions at three levels,
``<R>`` for the relation), ``templates.json`` (100 inference templates ``"E_A <R> E_B"`` over entity pairs the set
does not use, pairs the base model never saw in this relation first), ``relation.json`` (phrase, description and
the nuisance appearance every exemplar shares although the relation does not need it, so leakage can be measured)
and ``validation.json`` (the entity pairs a training validates on: neither the exemplars' nor the templates' pairs,
see :mod:`reversion_core.validation`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..validation import SPLIT_SIZE, choose_pairs, template_pairs, world_pool, write_split
from .captions import LEVELS, caption, template
from .dataset import entity_pairs, held_out_pairs, training_pairs
from .entities import Entity, parse_entity
from .relations import RELATION_NAMES, RELATIONS
from .render import Scene, render_image

EXEMPLARS_PER_SET = 6
TEMPLATES_PER_SET = 100
EXEMPLAR_SIZE = 128  # stored larger than the model's 32 px so the sets are pleasant to browse

# The appearance each set shares that its relation does not need.
NUISANCE: dict[str, dict] = {
    "above": {"target": "background", "pattern": "dotted"},
    "inside": {"target": "entity_a", "pattern": "striped"},
    "on_top_of": {"target": "background", "pattern": "striped"},
    "back_to_back": {"target": "entity_a", "pattern": "dotted"},
    "face_to_face": {"target": "background", "pattern": "dotted"},
    "painted_on": {"target": "background", "pattern": "striped"},
    "made_of": {"target": "background", "pattern": "dotted"},
    "hanging_from": {"target": "entity_b", "pattern": "dotted"},
    "shakes_hands_with": {"target": "entity_b", "pattern": "striped"},
    "hugs": {"target": "entity_a", "pattern": "striped"},
    "wrapped_in": {"target": "background", "pattern": "striped"},
    "rides": {"target": "background", "pattern": "dotted"},
}


def nuisance_text(nuisance: dict) -> str:
    where = {"background": "background", "entity_a": "entity A", "entity_b": "entity B"}[nuisance["target"]]
    return f"{nuisance['pattern']} {where}"


def exemplar_scenes(relation: str, seed: int = 0) -> list[tuple[Scene, int]]:
    """The scenes (and render seeds) of a relation's exemplar set."""
    rng = np.random.default_rng(seed * 100 + RELATION_NAMES.index(relation))
    pairs = training_pairs(relation)
    nuisance = NUISANCE[relation]
    out = []
    for i in rng.permutation(len(pairs))[:EXEMPLARS_PER_SET]:
        a, b = pairs[i]
        background = "plain"
        if nuisance["target"] == "background":
            background = nuisance["pattern"]
        elif nuisance["target"] == "entity_a":
            a = Entity(a.shape, a.colour, nuisance["pattern"])
        else:
            b = Entity(b.shape, b.colour, nuisance["pattern"])
        out.append((Scene(relation, a, b, background), int(rng.integers(2**31))))
    return out


def inference_templates(relation: str, exemplar_pairs: set, count: int = TEMPLATES_PER_SET, seed: int = 0) -> list[str]:
    """``count`` templates over plain entity pairs not in the exemplars; held-out pairs first."""
    rng = np.random.default_rng(seed + 7 * RELATION_NAMES.index(relation))
    held = [p for p in held_out_pairs(relation) if p not in exemplar_pairs]
    rest = [p for p in entity_pairs() if p not in exemplar_pairs and p not in set(held)]
    chosen = [held[i] for i in rng.permutation(len(held))][:count]
    chosen += [rest[i] for i in rng.permutation(len(rest))][: count - len(chosen)]
    return [template(a, b) for a, b in chosen]


def validation_split(relation: str, exemplar_pairs: set, templates: list[str]) -> list[tuple[str, str]]:
    """The set's validation pairs: plain entity pairs that are neither an exemplar's (``exemplar_pairs``: plain
    Entity pairs) nor a template's, in an order fixed by the relation's name (what a run would choose without the file)."""
    exclude = {(a.text, b.text) for a, b in exemplar_pairs} | template_pairs(templates)
    return choose_pairs(world_pool(), exclude, relation, SPLIT_SIZE)


def write_validation_split(folder: str | os.PathLike) -> Path:
    """Add ``validation.json`` to a world set written earlier, from its ``relation.json`` and ``templates.json``
    (no other file changes)."""
    folder = Path(folder)
    meta = json.loads((folder / "relation.json").read_text())
    used = {(parse_entity(s["entity_a"]).plain(), parse_entity(s["entity_b"]).plain()) for s in meta["scenes"]}
    templates = json.loads((folder / "templates.json").read_text())
    return write_split(folder, validation_split(meta["name"], used, templates))


def write_exemplar_set(relation: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write one relation's set atomically (a temporary folder renamed into place)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    scenes = exemplar_scenes(relation, seed)
    texts = {}
    for i, (scene, render_seed) in enumerate(scenes):
        name = f"{i}.png"
        render_image(scene, render_seed, EXEMPLAR_SIZE).save(tmp / name)
        texts[name] = [caption(scene, level) for level in LEVELS]
    plain_pairs = {(s.entity_a.plain(), s.entity_b.plain()) for s, _ in scenes}
    rel = RELATIONS[relation]
    meta = {
        "name": rel.name, "phrase": rel.phrase, "description": rel.description, "kind": rel.kind,
        "symmetric": rel.symmetric, "nuisance": NUISANCE[relation], "nuisance_text": nuisance_text(NUISANCE[relation]),
        "scenes": [
            {"file": f"{i}.png", "entity_a": s.entity_a.text, "entity_b": s.entity_b.text, "background": s.background, "seed": sd}
            for i, (s, sd) in enumerate(scenes)
        ],
    }
    (tmp / "text.json").write_text(json.dumps(texts, indent=2) + "\n")
    templates = inference_templates(relation, plain_pairs, seed=seed)
    (tmp / "templates.json").write_text(json.dumps(templates, indent=1) + "\n")
    (tmp / "relation.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_split(tmp, validation_split(relation, plain_pairs, templates))
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


def write_benchmark(root: str | os.PathLike, seed: int = 0) -> list[Path]:
    """Write every relation's exemplar set under ``root``."""
    return [write_exemplar_set(r, Path(root) / r, seed) for r in RELATION_NAMES]
