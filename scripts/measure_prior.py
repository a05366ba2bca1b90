"""Measure the preposition prior of base models' text encoders, side by side.

    python scripts/measure_prior.py --model assets/base-model checkpoints/base-model-v2/text

Each --model is a folder with ``tokenizer/`` and ``text_encoder/`` (a diffusers pipeline folder, or the text stage's
output). Prints, on the input embedding table: mean cosine among the 56 basis prepositions minus mean cosine between
them and the entity words (colours, shapes, patterns) (bar >= 0.3), and the share of each preposition's 5 nearest
vocabulary words that are prepositions, averaged (bar >= 0.8).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reversion_core.prior import preposition_prior  # noqa: E402
from reversion_core.world.entities import COLOURS, PATTERNS, SHAPES  # noqa: E402

SEPARATION_BAR, NEIGHBOUR_BAR = 0.3, 0.8
ENTITY_WORDS = list(COLOURS) + list(SHAPES) + list(PATTERNS)


def measure(folder: str | Path):
    """The :class:`~reversion_core.prior.PriorFigures` of the text encoder in ``folder``."""
    folder = Path(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
    return preposition_prior(encoder.get_input_embeddings().weight.detach(), tokenizer, ENTITY_WORDS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["assets/base-model"])
    p.add_argument("--neighbours", action="store_true", help="also print each preposition's 5 nearest words")
    args = p.parse_args(argv)
    hf_logging.disable_progress_bar()
    figures = {m: measure(m) for m in args.model}
    print("| figure | bar | " + " | ".join(args.model) + " |")
    print("|---|---|" + "---|" * len(args.model))
    rows = [
        ("mean cosine among prepositions", "", "within"),
        ("mean cosine preposition-entity", "", "to_entities"),
        ("separation (difference)", f">= {SEPARATION_BAR}", "separation"),
        ("5-NN that are prepositions", f">= {NEIGHBOUR_BAR}", "neighbour_fraction"),
    ]
    for label, bar, attr in rows:
        print(f"| {label} | {bar} | " + " | ".join(f"{getattr(f, attr):.3f}" for f in figures.values()) + " |")
    for m, f in figures.items():
        ok = f.separation >= SEPARATION_BAR and f.neighbour_fraction >= NEIGHBOUR_BAR
        print(f"{m}: {'meets' if ok else 'does not meet'} both bars")
        if args.neighbours:
            for w, near in f.neighbours.items():
                print(f"  {w}: {', '.join(near)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
