"""``python -m reversion_core score RELATION``: the report card of a relation on entity pairs it never saw.

    python -m reversion_core score above --pairs 16

Prints a small table (this relation, the relation's own phrase, chance) and saves the figures into the relation's
``card.json``; ``--grid FILE`` also writes the scored images, each framed green (right) or red (wrong).
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .generation import RelationGenerator
    from .relation_file import RelationPrompt
    from .report_card import ReportCard

HELP = "score a relation on held-out entity pairs (the report card)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .report_card import DEFAULT_PAIRS, DEFAULT_STEPS
    from .settings import DEFAULT_GUIDANCE_SCALE, DEVICE_CHOICES

    p.add_argument("relation", help="relation name or folder")
    p.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help=f"entity pairs, one image each (default {DEFAULT_PAIRS})")
    p.add_argument("--seed", type=int, default=0, help="pair draw and image seeds (image i uses seed + i)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"DDIM steps (default {DEFAULT_STEPS})")
    p.add_argument("--guidance", type=float, default=None, help=f"classifier-free guidance (default {DEFAULT_GUIDANCE_SCALE})")
    p.add_argument("--scorer", choices=["auto", "world", "clip"], default="auto",
                   help="world: the embedded world's scorer; clip: CLIP (+ --relation-probe); auto: world on a world base model")
    p.add_argument("--no-reference", action="store_true", help="skip the relation's own phrase (halves the time)")
    p.add_argument("--clip-model", help="CLIPModel folder or hub id for the clip scorer")
    p.add_argument("--relation-probe", help="a saved relation probe (.safetensors) for the clip scorer")
    p.add_argument("--grid", help="write the scored images to this PNG")
    p.add_argument("--no-save", action="store_true", help="do not write the figures into the relation's card.json")
    p.add_argument("--base-model", help="default: SD 1.5 on a GPU, else the embedded model")
    p.add_argument("--relations-dir", default="relations")
    p.add_argument("--device", choices=DEVICE_CHOICES)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from .base_model import same_base_model
    from .errors import ReVersionError
    from .generation import RelationGenerator
    from .relation_file import load_relation
    from .settings import DEFAULT_GUIDANCE_SCALE

    generator = RelationGenerator(args.base_model, args.device, relations_dir=args.relations_dir)
    relation = load_relation(args.relation, args.relations_dir)
    if relation.base_model_id and not same_base_model(relation.base_model_id, generator.base_model_id):
        raise ReVersionError(
            f"Relation {relation.name!r} was learned on {relation.base_model_id}, not on the loaded base model "
            f"{generator.base_model_id}; score it with --base-model set to its base model."
        )
    score_and_print(
        relation, generator, pairs=args.pairs, seed=args.seed, steps=args.steps,
        guidance_scale=DEFAULT_GUIDANCE_SCALE if args.guidance is None else args.guidance, scorer=args.scorer,
        reference=not args.no_reference, clip_model=args.clip_model, relation_probe=args.relation_probe,
        save=not args.no_save, grid=args.grid, as_json=args.json,
    )
    return 0


def score_and_print(
    relation: RelationPrompt, generator: RelationGenerator, save: bool = True, grid: str | None = None,
    as_json: bool = False, show_validation: bool = True, **options: Any,
) -> ReportCard:
    """Score ``relation`` with a progress line on stderr, save the card unless ``save`` is false, write the grid
    when asked, and print the table (or the summary as JSON), then the training's validation curve when it has one
    (unless ``show_validation`` is false). ``options`` go to ``score_relation``."""
    import json

    from .report_card import save_report_card, score_relation

    def progress(done: int, total: int) -> None:
        print(f"\rscoring: {done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    card = score_relation(relation, generator, progress=progress, **options)
    if save:
        save_report_card(relation, card)
    if grid:
        card.grid().save(grid)
    if as_json:
        print(json.dumps(card.summary(), indent=2))
        return card
    print(f"report card of {relation.name!r} on {len(card.pairs)} held-out entity pairs ({card.kind} scorer, {card.seconds:.0f} s)")
    reference = card.reference_prompt or "-"
    print(f"{'figure':<34} {'<R>':>6} {'phrase':>7} {'chance':>7}   (phrase: {reference})")
    for name, value, ref, chance in card.table():
        print(f"{name:<34} {value:>6} {ref:>7} {chance:>7}")
    if card.note:
        print(card.note)
    if grid:
        print(grid)
    if show_validation:
        print_validation(relation.card.get("validation"))
    return card


def print_validation(record: dict | None) -> None:
    """The quality curve a relation's training recorded (step, relation, entities, leakage), the kept step and why,
    or why validation was off."""
    from .report_card import validation_rows

    if not isinstance(record, dict):
        return
    if record.get("curve"):
        print(f"validation curve of the training ({record.get('kind')} scorer, {len(record.get('pairs') or [])} entity pairs, "
              f"{record.get('steps')} DDIM steps)")
        print(f"{'step':>6} {'relation':>9} {'entities':>9} {'leakage':>8}")
        for step, relation, entities, leakage, kept in validation_rows(record):
            print(f"{step:>6} {relation:>9} {entities:>9} {leakage:>8}{'  <- kept' if kept else ''}")
    for line in (record.get("note"), record.get("why")):
        if line:
            print(line)
