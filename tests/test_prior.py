"""The preposition prior's two figures: computed right on a hand-made table, read from a model folder, and met by
the shipped base model once it is trained on the caption language."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from reversion_core.prior import preposition_prior, vocabulary_words
from reversion_core.tokenizer_files import write_clip_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "base-model"


def _script():
    spec = importlib.util.spec_from_file_location("measure_prior", ROOT / "scripts" / "measure_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def hand_made(tmp_path):
    words = ["above", "below", "over", "red", "circle", "and"]
    write_clip_tokenizer(tmp_path, words)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    table = torch.zeros(len(tok), 2)
    rows = {"above": (1, 0), "below": (1, 1), "over": (1, -1), "red": (0, 1), "circle": (-1, 0), "and": (0, -1)}
    for w, v in rows.items():
        table[tok.convert_tokens_to_ids(f"{w}</w>")] = torch.tensor(v, dtype=torch.float32)
    return table, tok, words


def test_separation_is_within_cosine_minus_cosine_to_entities(hand_made):
    table, tok, words = hand_made
    f = preposition_prior(table, tok, ["red", "circle"], prepositions=["above", "below", "over"], vocabulary=words, k=2)
    r = math.sqrt(0.5)
    within = (r + r + 0) / 3
    to_entities = (0 + r - r - 1 - r - r) / 6
    assert f.within == pytest.approx(within, abs=1e-6)
    assert f.to_entities == pytest.approx(to_entities, abs=1e-6)
    assert f.separation == pytest.approx(within - to_entities, abs=1e-6)


def test_neighbour_fraction_counts_prepositions_among_nearest_words(hand_made):
    table, tok, words = hand_made
    f = preposition_prior(table, tok, ["red", "circle"], prepositions=["above", "below", "over"], vocabulary=words, k=2)
    assert set(f.neighbours["above"]) == {"below", "over"}
    assert set(f.neighbours["below"]) == {"above", "red"}
    assert set(f.neighbours["over"]) == {"above", "and"}
    assert f.neighbour_fraction == pytest.approx((1 + 0.5 + 0.5) / 3, abs=1e-6)


def test_vocabulary_words_are_the_whole_word_tokens(hand_made):
    _, tok, words = hand_made
    assert vocabulary_words(tok) == sorted(words + ["a"])  # "a</w>" is a byte token every CLIP vocabulary has


def test_script_measures_a_model_folder(tiny_model_dir):
    f = _script().measure(tiny_model_dir)
    assert len(f.neighbours) == 56 and all(len(n) == 5 for n in f.neighbours.values())
    assert -1.0 <= f.separation <= 2.0 and 0.0 <= f.neighbour_fraction <= 1.0


def test_shipped_model_has_the_preposition_prior():
    from reversion_core.world.captions import world_vocabulary

    vocab = CLIPTokenizer.from_pretrained(MODEL / "tokenizer").get_vocab()
    missing = [w for w in world_vocabulary() if w.isalpha() and f"{w}</w>" not in vocab]
    if missing:
        pytest.skip(f"the shipped base model predates the caption language (no token for {', '.join(missing[:3])})")
    script = _script()
    f = script.measure(MODEL)
    assert f.separation >= script.SEPARATION_BAR, f"separation {f.separation:.3f}"
    assert f.neighbour_fraction >= script.NEIGHBOUR_BAR, f"5-NN prepositions {f.neighbour_fraction:.3f}"
