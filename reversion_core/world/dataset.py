"""A streaming (image, caption) generator over the world, for training a base model, with held-out pairs."""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from .captions import full_caption
from .entities import ALL_ENTITIES, BACKGROUNDS, PATTERNS, Entity
from .relations import RELATION_NAMES
from .render import Scene, render

HELD_OUT_FRACTION = 0.2


def entity_pairs() -> list[tuple[Entity, Entity]]:
    """All ordered pairs of plain entities with different colours (the world never draws two of one colour)."""
    return [(a, b) for a, b in itertools.product(ALL_ENTITIES, ALL_ENTITIES) if a.colour != b.colour]


def held_out_pairs(relation: str) -> list[tuple[Entity, Entity]]:
    """The entity pairs a base model never sees in this relation during training (fixed per relation)."""
    pairs = entity_pairs()
    rng = np.random.default_rng(1000 + RELATION_NAMES.index(relation))
    keep = rng.permutation(len(pairs))[: int(round(HELD_OUT_FRACTION * len(pairs)))]
    return [pairs[i] for i in sorted(keep)]


def training_pairs(relation: str) -> list[tuple[Entity, Entity]]:
    held = set(held_out_pairs(relation))
    return [p for p in entity_pairs() if p not in held]


def random_scene(rng: np.random.Generator, relation: str | None = None, held_out: bool = False) -> Scene:
    """A random scene: plain background most of the time, patterns on some entities."""
    relation = relation or RELATION_NAMES[rng.integers(len(RELATION_NAMES))]
    pairs = held_out_pairs(relation) if held_out else training_pairs(relation)
    a, b = pairs[rng.integers(len(pairs))]
    patterns = [None] * 6 + list(PATTERNS)
    if relation != "made_of":  # B's material replaces surface patterns in made_of
        a = Entity(a.shape, a.colour, patterns[rng.integers(len(patterns))])
        b = Entity(b.shape, b.colour, patterns[rng.integers(len(patterns))])
    background = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=[0.6, 0.2, 0.2])]
    return Scene(relation, a, b, background)


def stream(seed: int = 0, held_out: bool = False, level_weights=(0.15, 0.45, 0.4)) -> Iterator[tuple[np.ndarray, str, Scene]]:
    """Endless ``(image uint8 HxWx3, full caption, scene)`` triples, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    while True:
        scene = random_scene(rng, held_out=held_out)
        level = int(rng.choice(3, p=level_weights)) + 1
        yield render(scene, seed=int(rng.integers(2**31))), full_caption(scene, level), scene
