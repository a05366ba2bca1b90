"""What a relation prompt is: token, size, base model, card, and the vocabulary words nearest to it.

The nearest words are the readable trace of what was learned: the paper's Fig. 2 argument is that a good
relation prompt lands among prepositions rather than among nouns and adjectives.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ReVersionError
from .relation_file import RelationPrompt, load_relation


def check_k(k) -> int:
    """Return ``k`` if it is a usable number of nearest words (at least 1), else refuse it in one sentence."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ReVersionError(f"The number of nearest words (-k) must be at least 1, not {k!r}.")
    return k


def nearest_words(vector: torch.Tensor, pipeline, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` whole-word vocabulary tokens with the highest cosine similarity to ``vector``.

    Special tokens, added tokens (other relations) and byte pieces (single characters, word fragments) are skipped.
    """
    check_k(k)
    tokenizer = pipeline.tokenizer
    table = pipeline.text_encoder.get_input_embeddings().weight.detach().float().cpu()
    added = set(tokenizer.get_added_vocab())
    words, rows = [], []
    for token, index in tokenizer.get_vocab().items():
        if token in added or not token.endswith("</w>") or index >= len(table):
            continue
        word = token[: -len("</w>")]
        if len(word) < 2 or not word.isalpha():
            continue
        words.append(word)
        rows.append(index)
    if not rows:
        return []
    similarity = F.cosine_similarity(table[rows], vector.float().reshape(1, -1), dim=-1)
    best = similarity.topk(min(k, len(rows)))
    return [(words[i], round(float(v), 4)) for v, i in zip(best.values.tolist(), best.indices.tolist())]


def describe_relation(
    source: RelationPrompt | str | os.PathLike, relations_dir: str | os.PathLike | None = "relations", pipeline=None, k: int = 10
) -> dict[str, Any]:
    """A summary of a relation (folder, name, or foreign file); ``nearest`` is filled when ``pipeline`` is given."""
    relation = source if isinstance(source, RelationPrompt) else load_relation(source, relations_dir)
    summary: dict[str, Any] = {
        "name": relation.name,
        "token": relation.token,
        "vector_size": relation.dim,
        "vector_norm": round(float(relation.vector.norm()), 4),
        "base_model": relation.base_model_id,
        "path": str(relation.path) if relation.path else None,
        "card": relation.card,
        "nearest": None,
    }
    if pipeline is not None:
        relation.check_dim(int(pipeline.text_encoder.get_input_embeddings().weight.shape[1]))
        summary["nearest"] = nearest_words(relation.vector, pipeline, k)
    return summary
