"""The relation lexicon: the paper's 56 basis prepositions (Table A4) and the words that are never negatives."""
from __future__ import annotations

import os
import random
import re
import socket
from pathlib import Path
from typing import Callable, Iterable

# Table A4 of the ReVersion paper, in the paper's order (read column by column).
BASIS_PREPOSITIONS: tuple[str, ...] = (
    "aboard", "about", "above", "across", "after", "against", "along", "alongside", "amid", "amidst",
    "among", "amongst", "anti", "around",
    "astride", "at", "atop", "before", "behind", "below", "beneath", "beside", "between", "beyond",
    "by", "down", "following", "from",
    "in", "including", "inside", "into", "near", "of", "off", "on", "onto", "opposite",
    "out", "outside", "over", "past",
    "regarding", "round", "through", "throughout", "to", "toward", "towards", "under", "underneath", "up",
    "upon", "versus", "with", "within",
)
assert len(BASIS_PREPOSITIONS) == 56 and len(set(BASIS_PREPOSITIONS)) == 56

# Closed-class English words: determiners, pronouns, conjunctions, auxiliaries, particles, prepositions,
# number words and a few adverbs of degree. They carry no appearance, so they are never steering negatives.
FUNCTION_WORDS: frozenset[str] = frozenset(BASIS_PREPOSITIONS) | frozenset(
    """
    a an the this that these those some any each every either neither no all both few many much more most
    other another such what which whose whatever whichever several enough own same
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself
    we us our ours ourselves they them their theirs themselves one ones someone something anyone anything
    everyone everything nobody nothing who whom
    and or but nor so yet if then than because while whereas although though unless whether as
    be am is are was were been being have has had having do does did doing done
    will would shall should can could may might must ought
    not no yes very too also just only quite rather almost even still again ever never
    there here where when how why now
    for like unlike via per beneath besides despite during except inside minus plus since until till upon
    next close far left right top bottom front back side together apart 
    zero two three four five six seven eight nine ten first second third
    it's that's there's isn't aren't don't doesn't
    """.split()
)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CONTENT_TAGS = ("NN", "JJ", "VB")  # nouns, adjectives, verbs (Penn Treebank prefixes)
_NLTK_TAGGER = "taggers/averaged_perceptron_tagger_eng"
NLTK_TAGGER_PACKAGE = "averaged_perceptron_tagger_eng"
NLTK_DATA_FOLDER = "nltk_data"  # inside the app's data dir
NLTK_HOST = ("raw.githubusercontent.com", 443)  # where nltk.download fetches its index and packages
_fetch_attempted: set[str] = set()  # data folders this process already tried to fill


def pos_backend() -> str:
    """Which part-of-speech decider is in use: ``"nltk"`` when NLTK and its tagger data are present, else ``"closed-class"``."""
    try:
        import nltk

        nltk.data.find(_NLTK_TAGGER)
        return "nltk"
    except (ImportError, LookupError, OSError):
        return "closed-class"


def _host_reachable(timeout: float = 3.0) -> bool:
    """Whether NLTK's download host answers (a quick TCP connect), so an offline machine never waits on a download."""
    try:
        with socket.create_connection(NLTK_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def ensure_tagger(
    data_dir: str | os.PathLike | None,
    download: Callable[..., object] | None = None,
    reachable: Callable[[], bool] | None = None,
) -> str:
    """Use NLTK's tagger where it can be had, and return the backend now in use (as ``pos_backend()``).

    The data dir's ``nltk_data`` folder joins NLTK's search path, so a tagger fetched before a restart is found again.
    When the tagger is still missing and NLTK's host is reachable, it is fetched into that folder, at most once per
    process; offline, or without a data dir, the closed-class word list stays in use.
    """
    try:
        import nltk
    except ImportError:
        return "closed-class"
    if data_dir is None:
        return pos_backend()
    folder = str(Path(data_dir) / NLTK_DATA_FOLDER)
    if folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
    if pos_backend() == "nltk" or folder in _fetch_attempted:
        return pos_backend()
    _fetch_attempted.add(folder)
    if not (reachable or _host_reachable)():
        return "closed-class"
    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        (download or nltk.download)(NLTK_TAGGER_PACKAGE, download_dir=folder, quiet=True, raise_on_error=True)
    except Exception:  # a failed fetch (network, disk) only means: keep the closed-class list
        pass
    return pos_backend()


def caption_words(caption: str, placeholder_tokens: Iterable[str] = ("<R>",)) -> list[str]:
    """Lower-case words of a caption with placeholder tokens removed."""
    text = caption.lower()
    for token in placeholder_tokens:
        text = text.replace(token.lower(), " ")
    return _WORD.findall(text)


def content_words(caption: str, placeholder_tokens: Iterable[str] = ("<R>",), backend: str | None = None) -> list[str]:
    """The steering negatives of one caption: its nouns, adjectives and verbs, in order, without repeats.

    Function words, prepositions and placeholder tokens are never negatives, whichever backend decides.
    """
    backend = backend or pos_backend()
    placeholder_tokens = tuple(placeholder_tokens)
    words = caption_words(caption, placeholder_tokens)
    if backend == "nltk":
        import nltk

        tagged = nltk.pos_tag(words)
        words = [w for w, tag in tagged if tag.startswith(_CONTENT_TAGS)]
    placeholders = {p.lower() for p in placeholder_tokens}
    keep = [w for w in words if w not in FUNCTION_WORDS and w not in placeholders and len(w) > 1 and not w.isdigit()]
    return list(dict.fromkeys(keep))


def random_vocabulary_words(vocabulary: Iterable[str], n: int, seed: int, exclude: Iterable[str] = ()) -> list[str]:
    """``n`` content words drawn at random (reproducibly, by ``seed``) from a tokenizer's vocabulary: the control for
    the preposition prior. Whole words of two or more letters (not word pieces); no function word or basis
    preposition, nothing in ``exclude`` (a caption's own words: a positive that is also a negative contradicts
    itself). Fewer when the vocabulary has fewer: a world's small vocabulary holds little besides its own words."""
    excluded = FUNCTION_WORDS | {w.lower() for w in exclude}
    vocabulary = list(vocabulary)
    if any(w.endswith("</w>") for w in vocabulary):  # CLIP's BPE marks word ends; the rest are pieces ("betwe")
        vocabulary = [w.removesuffix("</w>") for w in vocabulary if w.endswith("</w>")]
    words = {w.lower() for w in vocabulary}
    candidates = sorted(w for w in words if len(w) > 1 and w.isascii() and w.isalpha() and w not in excluded)
    return random.Random(seed).sample(candidates, min(n, len(candidates)))

