"""How often a base model draws what a prompt in the world's language says, read back by the world's scorer.

Used while training the embedded model (``scripts/train_base_model.py``) and to score it afterwards
(``scripts/evaluate_base_model.py``).
"""
from __future__ import annotations

import numpy as np

from .dataset import held_out_pairs
from .language import HELD_OUT_RELATIONS, SENSES, sentence, vague_words
from .relations import RELATION_NAMES, RELATIONS
from .render import SIZE, Scene
from .scorer import score


def eval_prompts(per_relation: int, seed: int = 123, held_out_by: str = "vague") -> list[tuple]:
    """Held-out prompts ``(relation, entity_a, entity_b, text)`` (entity pairs never seen in that relation), level 2
    without articles: each named relation by its own phrase, each held-out relation by its first vague word (the
    plain words that come closest; ``held_out_by="vague"``) or by its own phrase, which its captions never use
    (``"phrase"``: how far words alone reach a relation that inversion has to find)."""
    if held_out_by not in ("vague", "phrase"):
        raise ValueError(f"held_out_by must be 'vague' or 'phrase', not {held_out_by!r}")
    rng = np.random.default_rng(seed)
    out = []
    for r in RELATION_NAMES:
        pairs = held_out_pairs(r)
        word = vague_words(r)[0] if r in HELD_OUT_RELATIONS and held_out_by == "vague" else RELATIONS[r].phrase
        for i in rng.permutation(len(pairs))[:per_relation]:
            a, b = pairs[i]
            # a held-out relation's phrase is no word of the caption language: written in the same level-2 form
            text = (sentence(Scene(r, a, b), word, 2, articles=False) if word in SENSES
                    else f"{a.colour} {a.shape} {word} {b.colour} {b.shape}")
            out.append((r, a, b, text))
    return out


def evaluate(pipe, prompts, steps: int, guidance: float, seed: int = 0, batch: int = 64,
             entities_per_relation: dict | None = None) -> tuple[float, float, dict]:
    """Generate every prompt and read it with the world's scorer. Returns relation and both-entities accuracy over
    the named relations, and relation accuracy per relation (held-out ones included); ``entities_per_relation``, when
    given, is filled with both-entities accuracy per relation."""
    import torch

    results = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            g = torch.Generator().manual_seed(seed + i)
            imgs = pipe([p[3] for p in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                        output_type="np", height=SIZE, width=SIZE).images
            for (r, a, b, _), img in zip(chunk, imgs):
                s = score(img, r, a, b)
                results.append((r, s.relation_ok, s.entities_ok))
    relations = list(dict.fromkeys(r for r, _, _ in results))
    per = {r: float(np.mean([ok for rr, ok, _ in results if rr == r])) for r in relations}
    if entities_per_relation is not None:
        entities_per_relation.update({r: float(np.mean([e for rr, _, e in results if rr == r])) for r in relations})
    named = [r for r in relations if r not in HELD_OUT_RELATIONS]
    ent = float(np.mean([e for r, _, e in results if r in named]))
    return float(np.mean([per[r] for r in named])), ent, per
