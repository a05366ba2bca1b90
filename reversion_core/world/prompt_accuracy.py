"""How often a base model draws what a prompt in the world's language says, read back by the world's scorer.

Used while training the embedded model (``scripts/train_base_model.py``) and to score it afterwards
(``scripts/evaluate_base_model.py``).
"""
from __future__ import annotations

import numpy as np

from .dataset import held_out_pairs
from .language import HELD_OUT_RELATIONS, sentence, vague_words
from .relations import RELATION_NAMES, RELATIONS
from .render import SIZE, Scene
from .scorer import score


def eval_prompts(per_relation: int, seed: int = 123) -> list[tuple]:
    """Held-out prompts ``(relation, entity_a, entity_b, text)`` (entity pairs never seen in that relation), level 2
    without articles: each named relation by its own phrase, each held-out relation by its first vague word (the
    plain words that come closest)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in RELATION_NAMES:
        pairs = held_out_pairs(r)
        word = vague_words(r)[0] if r in HELD_OUT_RELATIONS else RELATIONS[r].phrase
        for i in rng.permutation(len(pairs))[:per_relation]:
            a, b = pairs[i]
            out.append((r, a, b, sentence(Scene(r, a, b), word, 2, articles=False)))
    return out


def evaluate(pipe, prompts, steps: int, guidance: float, seed: int = 0, batch: int = 64) -> tuple[float, float, dict]:
    """Generate every prompt and read it with the world's scorer. Returns relation and both-entities accuracy over
    the named relations, and relation accuracy per relation (held-out ones included)."""
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
    named = [r for r in relations if r not in HELD_OUT_RELATIONS]
    ent = float(np.mean([e for r, _, e in results if r in named]))
    return float(np.mean([per[r] for r in named])), ent, per
