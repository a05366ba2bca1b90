"""The caption language of the base model's training data: what may stand in the relation slot, and what it means.

Every one of the paper's 56 basis prepositions stands in the relation slot ("red circle <word> blue square") of
some training captions, with a stable meaning, so the text encoder learns them as one class of words:

- a named relation is captioned with its own phrase or a synonym from the basis list ("over" for above);
- a converse word swaps the entities ("blue square below red circle" captions red circle above blue square);
- a vague word is shared by a group of layouts ("beside" for all four side-by-side layouts);
- a neutral word has no drawable meaning and captions any layout at random, as a relation word that says nothing.

Held-out relations (:data:`HELD_OUT_RELATIONS`) are drawn in training but captioned only with their group's vague
words or neutral words, never their own phrase or a synonym: the base model can draw them, yet no words select
them. Their prompts are learned by inversion from their exemplar sets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lexicon import BASIS_PREPOSITIONS
from .entities import Entity
from .relations import RELATION_NAMES, RELATIONS
from .render import Scene

# Three of the paper's relations that no English preposition names. Each shares its vague words with layouts that
# have names (back to back and hugs with face to face and shaking hands; wrapped in with inside, painted on and
# made of), so a prompt with the vague word draws the held-out layout only some of the time.
HELD_OUT_RELATIONS: tuple[str, ...] = ("back_to_back", "hugs", "wrapped_in")

# Synonyms from the basis list, by relation: "A <word> B" shows relation(A, B).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "above": ("over",),
    "on_top_of": ("on", "atop", "upon", "onto"),
    "inside": ("inside", "in", "within", "into"),
    "painted_on": ("across",),
    "made_of": ("of", "through", "throughout"),
    "hanging_from": ("from", "off"),
    "face_to_face": ("toward", "towards", "opposite", "versus", "against"),
    "rides": ("aboard", "astride"),
}
# Converse words: "A <word> B" shows relation(B, A).
CONVERSES: dict[str, tuple[str, ...]] = {
    "above": ("below", "beneath"),
    "on_top_of": ("under", "underneath"),
    "inside": ("around", "round"),
}
# Vague words, each shared by every layout of its group.
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "side by side": (("face_to_face", "back_to_back", "shakes_hands_with", "hugs"), ("beside", "alongside", "near", "by")),
    "overlapping": (("inside", "painted_on", "made_of", "wrapped_in"), ("with", "amid", "amidst")),
}


@dataclass(frozen=True)
class Sense:
    """What a relation-slot word means: the layouts it captions, and whether its subject is the scene's B."""

    relations: tuple[str, ...]
    converse: bool = False
    kind: str = "phrase"  # phrase, synonym, converse, vague, neutral


def _senses() -> dict[str, Sense]:
    senses: dict[str, Sense] = {}
    for name in RELATION_NAMES:
        if name not in HELD_OUT_RELATIONS:
            senses[RELATIONS[name].phrase] = Sense((name,))
    for name, words in SYNONYMS.items():
        senses.update({w: Sense((name,), kind="synonym") for w in words if name in RELATIONS})
    for name, words in CONVERSES.items():
        senses.update({w: Sense((name,), converse=True, kind="converse") for w in words})
    for members, words in GROUPS.values():
        present = tuple(m for m in members if m in RELATIONS)
        senses.update({w: Sense(present, kind="vague") for w in words})
    for w in BASIS_PREPOSITIONS:
        senses.setdefault(w, Sense(RELATION_NAMES, kind="neutral"))
    return senses


SENSES: dict[str, Sense] = _senses()
NEUTRAL_WORDS: tuple[str, ...] = tuple(w for w, s in SENSES.items() if s.kind == "neutral")

# How often each kind of word captions a scene of a named relation; held-out scenes take vague or neutral words.
NAMED_WEIGHTS = {"phrase": 0.4, "synonym": 0.25, "converse": 0.1, "vague": 0.15, "neutral": 0.1}
HELD_OUT_WEIGHTS = {"vague": 0.85, "neutral": 0.15}


def slot_words(relation: str) -> dict[str, list[str]]:
    """The words that may caption a scene of ``relation``, by kind (kinds with no word are left out)."""
    out: dict[str, list[str]] = {}
    for word, sense in SENSES.items():
        if relation in sense.relations:
            out.setdefault(sense.kind, []).append(word)
    return out


def vague_words(relation: str) -> tuple[str, ...]:
    """The vague words shared by ``relation``'s group (empty when it is in none)."""
    return tuple(slot_words(relation).get("vague", ()))


def _entity(e: Entity, level: int, articles: bool) -> str:
    words = e.shape if level == 1 else (f"{e.colour} {e.shape}" if level == 2 else e.text)
    return f"a {words}" if articles and level > 1 else words


def sentence(scene: Scene, word: str, level: int, articles: bool = True) -> str:
    """The caption of ``scene`` at ``level`` (1-3, as in :mod:`.captions`) with ``word`` in the relation slot,
    entities swapped when ``word`` is a converse."""
    if word not in SENSES:
        raise ValueError(f"{word!r} is not a relation-slot word of the caption language")
    a, b = (scene.entity_b, scene.entity_a) if SENSES[word].converse else (scene.entity_a, scene.entity_b)
    text = f"{_entity(a, level, articles)} {word} {_entity(b, level, articles)}"
    if level == 3:
        text += f", on a {scene.background} background"
    return text


def choose_word(relation: str, rng: np.random.Generator) -> str:
    """Draw a relation-slot word for a scene of ``relation``: a kind by its weight, then a word of that kind."""
    words = slot_words(relation)
    weights = HELD_OUT_WEIGHTS if relation in HELD_OUT_RELATIONS else NAMED_WEIGHTS
    kinds = [k for k in weights if k in words]
    p = np.array([weights[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    return words[kind][int(rng.integers(len(words[kind])))]


def training_caption(scene: Scene, rng: np.random.Generator, level_weights=(0.15, 0.3, 0.3, 0.25)) -> str:
    """One training caption of ``scene``: a slot word drawn by :func:`choose_word`, at level 1, 2 or 3, or level 2
    without articles ("red circle over blue square", the form of inference templates), by ``level_weights``."""
    word = choose_word(scene.relation, rng)
    form = int(rng.choice(4, p=np.asarray(level_weights) / np.sum(level_weights)))
    return sentence(scene, word, (1, 2, 3, 2)[form], articles=form != 3)
