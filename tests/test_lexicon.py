"""Which caption words are steering negatives, and where the part-of-speech tagger comes from."""
from pathlib import Path

import pytest

from reversion_core import lexicon
from reversion_core.lexicon import BASIS_PREPOSITIONS, FUNCTION_WORDS, content_words, pos_backend


# Table A4 of the paper as printed: four columns, read top to bottom, left to right.
TABLE_A4 = """
aboard     astride    in         regarding
about      at         including  round
above      atop       inside     through
across     before     into       throughout
after      behind     near       to
against    below      of         toward
along      beneath    off        towards
alongside  beside     on         under
amid       between    onto       underneath
amidst     beyond     opposite   up
among      by         out        upon
amongst    down       outside    versus
anti       following  over       with
around     from       past       within
"""


def test_basis_prepositions_are_the_56_of_table_a4_in_its_order():
    rows = [line.split() for line in TABLE_A4.strip().splitlines()]
    columns = [word for column in zip(*rows) for word in column]
    assert len(columns) == 56
    assert BASIS_PREPOSITIONS == tuple(columns)


def test_content_words_are_nouns_and_adjectives_without_function_words():
    words = content_words("a big red circle <R> the small blue square on a dotted background", ["<R>"], "closed-class")
    assert words == ["big", "red", "circle", "small", "blue", "square", "dotted", "background"]


def test_prepositions_function_words_and_placeholders_are_never_negatives():
    caption = "the cat is sitting above and beneath <R> a box with <R>"
    for backend in {"closed-class", pos_backend()}:
        words = content_words(caption, ["<R>"], backend)
        assert not set(words) & (FUNCTION_WORDS | set(BASIS_PREPOSITIONS) | {"<r>", "r"})
        assert {"cat", "box"} <= set(words)


def test_pos_backend_reports_which_decider_is_used():
    assert pos_backend() in {"nltk", "closed-class"}


def test_nltk_tags_decide_when_its_tagger_is_used(monkeypatch):
    import nltk

    tags = {"cat": "NN", "sits": "VBZ", "fluffy": "JJ", "quickly": "RB", "is": "VBZ", "box": "NN"}
    monkeypatch.setattr(nltk, "pos_tag", lambda words: [(w, tags.get(w, "DT")) for w in words])
    words = content_words("the fluffy cat is <R> quickly sits box", ["<R>"], backend="nltk")
    assert words == ["fluffy", "cat", "sits", "box"]  # adverbs dropped by tag, "is" dropped as a function word


# ----------------------------------------------------------------------------------------------- fetching the tagger
@pytest.fixture
def no_tagger(monkeypatch):
    """NLTK as on a fresh host: no tagger data on its search path, no fetch tried yet in this process."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(lexicon, "_fetch_attempted", set())
    return nltk


def fake_download(calls):
    def download(package, download_dir, **kwargs):
        calls.append((package, download_dir))
        (Path(download_dir) / "taggers" / package).mkdir(parents=True)
        return True
    return download


def test_offline_the_closed_class_list_stays_and_nothing_is_fetched(no_tagger, tmp_path):
    calls = []
    assert lexicon.ensure_tagger(tmp_path, download=fake_download(calls), reachable=lambda: False) == "closed-class"
    assert calls == [] and lexicon.pos_backend() == "closed-class"


def test_without_a_data_dir_nothing_is_fetched(no_tagger):
    calls = []
    assert lexicon.ensure_tagger(None, download=fake_download(calls), reachable=lambda: True) == "closed-class"
    assert calls == []


def test_on_a_connected_host_the_tagger_is_fetched_once_into_the_data_dir(no_tagger, tmp_path):
    calls = []
    assert lexicon.ensure_tagger(tmp_path, download=fake_download(calls), reachable=lambda: True) == "nltk"
    assert lexicon.ensure_tagger(tmp_path, download=fake_download(calls), reachable=lambda: True) == "nltk"
    assert calls == [("averaged_perceptron_tagger_eng", str(tmp_path / "nltk_data"))]


def test_a_failed_fetch_is_not_retried_in_the_same_process(no_tagger, tmp_path):
    calls = []

    def failing(package, download_dir, **kwargs):
        calls.append(package)
        raise ValueError("network went away")

    assert lexicon.ensure_tagger(tmp_path, download=failing, reachable=lambda: True) == "closed-class"
    assert lexicon.ensure_tagger(tmp_path, download=failing, reachable=lambda: True) == "closed-class"
    assert calls == ["averaged_perceptron_tagger_eng"]


def test_a_tagger_fetched_before_a_restart_is_found_in_the_data_dir(no_tagger, tmp_path):
    (tmp_path / "nltk_data" / "taggers" / "averaged_perceptron_tagger_eng").mkdir(parents=True)
    calls = []
    assert lexicon.ensure_tagger(tmp_path, download=fake_download(calls), reachable=lambda: False) == "nltk"
    assert calls == []


def test_random_vocabulary_words_are_whole_content_words_drawn_by_the_seed():
    from reversion_core.lexicon import random_vocabulary_words

    nouns = [f"{a}{b}</w>" for a in ("ca", "mo", "ho", "bi", "fi") for b in ("rt", "ne", "le", "ck", "sh", "mp", "nk", "ll")]
    vocabulary = [*nouns, "betwe", "ca", "on</w>", "under</w>", "the</w>", "x</w>", "7</w>", "café</w>", "box</w>"]
    words = random_vocabulary_words(vocabulary, 10, seed=0, exclude=["box"])
    assert len(words) == len(set(words)) == 10
    assert set(words) <= {n.removesuffix("</w>") for n in nouns}  # no piece, preposition, function word or excluded
    assert random_vocabulary_words(vocabulary, 10, seed=0, exclude=["box"]) == words
    assert set(random_vocabulary_words(vocabulary, 10, seed=1, exclude=["box"])) != set(words)
    assert len(random_vocabulary_words(vocabulary, 100, seed=0)) == len(nouns) + 1  # all there are, "box" included
