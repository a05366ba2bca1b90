"""Captions of world scenes at the ReVersion benchmark's three levels of detail, and the world's vocabulary."""
from __future__ import annotations

from ..lexicon import BASIS_PREPOSITIONS
from .entities import BACKGROUNDS, COLOURS, PATTERNS, SHAPES, Entity
from .relations import RELATIONS
from .render import Scene

PLACEHOLDER = "<R>"
LEVELS = (1, 2, 3)


def _entity_words(e: Entity, level: int) -> str:
    if level == 1:
        return e.shape
    if level == 2:
        return f"a {e.colour} {e.shape}"
    return f"a {e.text}"


def caption(scene: Scene, level: int, relation_text: str = PLACEHOLDER) -> str:
    """``"circle <R> square"`` (1), ``"a red circle <R> a blue square"`` (2), the same with patterns and
    ``", on a dotted background"`` (3). Pass the relation's phrase as ``relation_text`` for a full caption."""
    if level not in LEVELS:
        raise ValueError(f"caption level must be one of {LEVELS}")
    text = f"{_entity_words(scene.entity_a, level)} {relation_text} {_entity_words(scene.entity_b, level)}"
    if level == 3:
        text += f", on a {scene.background} background"
    return text


def full_caption(scene: Scene, level: int) -> str:
    """A caption with the relation's own phrase in place of ``<R>``."""
    return caption(scene, level, RELATIONS[scene.relation].phrase)


def template(entity_a: Entity, entity_b: Entity) -> str:
    """An inference template, ``"red circle <R> blue square"``."""
    return f"{entity_a.text} {PLACEHOLDER} {entity_b.text}"


def world_vocabulary() -> list[str]:
    """Every word a world caption uses, the 56 basis prepositions and a few function words."""
    words = ["a", "an", "the", "and", "background", "with", "is", ","]
    words += list(SHAPES) + list(COLOURS) + list(PATTERNS) + list(BACKGROUNDS)
    for r in RELATIONS.values():
        words += r.phrase.split()
    words += list(BASIS_PREPOSITIONS)
    return list(dict.fromkeys(words))
