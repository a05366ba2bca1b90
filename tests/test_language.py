"""The caption language of the base model's training data."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import CLIPTokenizer

from reversion_core.lexicon import BASIS_PREPOSITIONS
from reversion_core.tokenizer_files import write_clip_tokenizer
from reversion_core.world import Entity, Scene
from reversion_core.world.captions import world_vocabulary
from reversion_core.world.dataset import random_scene
from reversion_core.world.language import (
    HELD_OUT_RELATIONS, SENSES, SYNONYMS, choose_word, sentence, slot_words, training_caption,
)
from reversion_core.world.relations import RELATION_NAMES, RELATIONS


def test_every_basis_preposition_has_a_relation_slot_meaning():
    assert set(BASIS_PREPOSITIONS) <= set(SENSES)


def test_every_basis_preposition_occurs_in_training_captions():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(6000):
        seen.add(choose_word(RELATION_NAMES[int(rng.integers(len(RELATION_NAMES)))], rng))
    assert set(BASIS_PREPOSITIONS) <= seen


def test_every_relation_can_be_captioned():
    assert all(slot_words(r) for r in RELATION_NAMES)


def test_held_out_relations_are_never_named():
    rng = np.random.default_rng(1)
    for name in HELD_OUT_RELATIONS:
        own = {RELATIONS[name].phrase, *SYNONYMS.get(name, ())}
        words = {choose_word(name, rng) for _ in range(500)}
        assert not words & own
        assert {SENSES[w].kind for w in words} == {"vague", "neutral"}
        assert all(len(SENSES[w].relations) > 1 for w in words)  # each word also captions another layout


def test_named_relations_are_captioned_by_their_phrase():
    rng = np.random.default_rng(2)
    for name in RELATION_NAMES:
        if name not in HELD_OUT_RELATIONS:
            assert RELATIONS[name].phrase in {choose_word(name, rng) for _ in range(200)}


def test_a_converse_word_swaps_the_entities():
    scene = Scene("above", Entity("circle", "red"), Entity("square", "blue"))
    assert sentence(scene, "over", 2, articles=False) == "red circle over blue square"
    assert sentence(scene, "below", 2, articles=False) == "blue square below red circle"
    assert sentence(scene, "above", 3) == "a red circle above a blue square, on a plain background"


def test_unknown_slot_word_is_refused():
    with pytest.raises(ValueError, match="'sideways' is not a relation-slot word"):
        sentence(Scene("above", Entity("circle", "red"), Entity("square", "blue")), "sideways", 2)


def test_every_caption_word_is_one_token(tmp_path):
    write_clip_tokenizer(tmp_path, world_vocabulary())
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    for _ in range(300):
        text = training_caption(random_scene(rng), rng)
        words = text.replace(",", " ,").split()
        assert len(tok.tokenize(text)) == len(words), text
