"""Which caption words are steering negatives."""
from reversion_core.lexicon import BASIS_PREPOSITIONS, FUNCTION_WORDS, content_words, pos_backend


def test_basis_prepositions_are_the_56_of_table_a4():
    assert len(BASIS_PREPOSITIONS) == 56 and {"above", "beneath", "toward", "with"} <= set(BASIS_PREPOSITIONS)


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
