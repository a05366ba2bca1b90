"""Score the embedded base model on held-out prompts that use each relation's own phrase.

    python scripts/evaluate_base_model.py --model assets/base-model --per-relation 25 --steps 50 --guidance 7.5

Prompts are level-2 captions without articles ("red circle is inside blue square") over entity pairs the model never
saw in that relation during training, each held-out relation by its vague word ("red circle beside blue square"), or with ``--held-out-by phrase`` by its
own phrase, which the captions never use ("red circle hugs blue square");
each image is read by the world's scorer. The summary figures are over the named relations. Prints a Markdown table and writes it (plus a
JSON copy) next to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/...` from a clone, nothing installed

from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402

from reversion_core.world.relations import RELATION_NAMES  # noqa: E402
from reversion_core.world.prompt_accuracy import eval_prompts, evaluate  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/base-model")
    p.add_argument("--per-relation", type=int, default=25)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[7.5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out-by", choices=("vague", "phrase"), default="vague",
                   help="prompt the held-out relations by their first vague word (default) or by their own phrase")
    p.add_argument("--out", default=None, help="write the table here (.md) and a .json beside it")
    args = p.parse_args(argv)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = eval_prompts(args.per_relation, seed=321, held_out_by=args.held_out_by)
    rows, results = [], {}
    for g in args.guidance:
        t = time.time()
        entities = {}
        rel, ent, per = evaluate(pipe, prompts, steps=args.steps, guidance=g, seed=args.seed, entities_per_relation=entities)
        results[str(g)] = {"relation_accuracy": rel, "entity_accuracy": ent, "per_relation": per,
                           "entities_per_relation": entities, "seconds": time.time() - t}
        rows.append(f"| {g} | {rel:.3f} | {ent:.3f} | " + " | ".join(f"{per[r]:.2f}" for r in RELATION_NAMES) + " |")
    header = "| guidance | relation acc. | both entities | " + " | ".join(RELATION_NAMES) + " |"
    table = "\n".join([header, "|" + "---|" * (3 + len(RELATION_NAMES))] + rows)
    note = (f"{len(prompts)} held-out prompts ({args.per_relation} per relation), {args.steps} DDIM steps, seed {args.seed}, "
            f"held-out relations by their {'own phrase' if args.held_out_by == 'phrase' else 'vague word'}, model {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(table)
    print(note)
    if args.out:
        Path(args.out).write_text(table + "\n\n" + note + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"note": note, "results": results}, indent=2))


if __name__ == "__main__":
    main()
