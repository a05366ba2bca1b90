"""The preposition prior of a text encoder: do the 56 basis prepositions form a region of its input embedding table?

The steering loss pulls ``<R>`` toward the basis prepositions' rows of the input embedding table and away from the
caption's content words; that is meaningful only if those rows form a region of their own. Two figures say whether
they do:

- separation: mean cosine among the prepositions minus mean cosine between them and the entity words;
- neighbour fraction: of each preposition's k nearest vocabulary words (cosine), the share that are prepositions,
  averaged over the prepositions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .lexicon import BASIS_PREPOSITIONS


@dataclass
class PriorFigures:
    """The two figures, their parts, and each preposition's nearest words."""

    separation: float
    within: float  # mean cosine between two different prepositions
    to_entities: float  # mean cosine between a preposition and an entity word
    neighbour_fraction: float
    neighbours: dict[str, list[str]]


def vocabulary_words(tokenizer) -> list[str]:
    """The whole words a CLIP tokenizer holds as one token: ``word</w>`` entries of two letters or more, and "a"."""
    words = []
    for token in tokenizer.get_vocab():
        if token.endswith("</w>"):
            w = token[: -len("</w>")]
            if w.isalpha() and (len(w) >= 2 or w == "a"):
                words.append(w)
    return sorted(words)


def word_vectors(table: torch.Tensor, tokenizer, words: Sequence[str]) -> torch.Tensor:
    """Each word's row of the input embedding table (the mean of its pieces when it is several tokens, as the
    steering loss embeds it)."""
    rows = []
    for w in words:
        ids = tokenizer.encode(w, add_special_tokens=False)
        rows.append(table[ids].float().mean(0))
    return torch.stack(rows)


def _cosines(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T


def preposition_prior(
    table: torch.Tensor,
    tokenizer,
    entity_words: Sequence[str],
    prepositions: Sequence[str] = BASIS_PREPOSITIONS,
    vocabulary: Sequence[str] | None = None,
    k: int = 5,
) -> PriorFigures:
    """Measure the prior on ``table`` (the text encoder's input embedding weight, vocabulary x width).

    ``vocabulary`` is where neighbours are looked for (default: :func:`vocabulary_words`); a preposition is never
    its own neighbour.
    """
    vocabulary = list(vocabulary if vocabulary is not None else vocabulary_words(tokenizer))
    preps = list(prepositions)
    p = word_vectors(table, tokenizer, preps)
    e = word_vectors(table, tokenizer, entity_words)
    pp = _cosines(p, p)
    n = len(preps)
    within = float((pp.sum() - pp.diagonal().sum()) / (n * (n - 1)))
    to_entities = float(_cosines(p, e).mean())
    v = word_vectors(table, tokenizer, vocabulary)
    pv = _cosines(p, v)
    prep_set = set(preps)
    neighbours, fractions = {}, []
    for i, word in enumerate(preps):
        order = torch.argsort(pv[i], descending=True).tolist()
        near = [vocabulary[j] for j in order if vocabulary[j] != word][:k]
        neighbours[word] = near
        fractions.append(sum(w in prep_set for w in near) / k)
    return PriorFigures(within - to_entities, within, to_entities, sum(fractions) / len(fractions), neighbours)
