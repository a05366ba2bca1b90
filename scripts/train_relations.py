"""Train the shipped relation prompts: one <R> per world relation, from its exemplar set, on the embedded model.

The shipped ones in relations/ (300 steps each, seed 0; their cards record it) came from:

    python scripts/train_relations.py --relation above back_to_back face_to_face hanging_from inside made_of \
        on_top_of painted_on --out relations

Each run uses the engine's defaults (InversionSettings()) except --steps and --seed; the card records every setting
and the final losses. A preview grid (4 inference templates x 2 seeds, scored by the world's scorer) is written
beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.runtime import DEFAULT_BASE_MODEL  # noqa: E402
from reversion_core.benchmarks import load_benchmark, split_template  # noqa: E402
from reversion_core.generation import RelationGenerator  # noqa: E402
from reversion_core.inversion import FailedEvent, FinishedEvent, Inversion, StepEvent  # noqa: E402
from reversion_core.settings import InversionSettings  # noqa: E402
from reversion_core.world import RELATION_NAMES, parse_entity, score  # noqa: E402


def preview_grid(generator: RelationGenerator, relation_dir: Path, templates: list[str], per: int = 2, tile: int = 96):
    images, oks = [], []
    for t in templates:
        a, b = split_template(t)
        result = generator.generate(relation_dir, entity_a=a, entity_b=b, num_images=per, seed=0)
        images += result.images
        oks += [score(im, relation_dir.name, parse_entity(a), parse_entity(b)).relation_ok for im in result.images]
    grid = Image.new("RGB", (per * tile, len(templates) * tile), "white")
    for i, im in enumerate(images):
        grid.paste(im.resize((tile, tile), Image.NEAREST), ((i % per) * tile, (i // per) * tile))
    fd, tmp = tempfile.mkstemp(dir=relation_dir, suffix=".png")
    os.close(fd)
    grid.save(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, relation_dir / "preview.png")
    return float(np.mean(oks))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-model", default=str(DEFAULT_BASE_MODEL))
    p.add_argument("--benchmark", default="assets/benchmark")
    p.add_argument("--out", default="relations")
    p.add_argument("--steps", type=int, default=300,
                   help="optimisation steps per relation (default: 300, what the shipped relations had; the paper's is 3000)")
    p.add_argument("--relation", nargs="*", default=list(RELATION_NAMES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    log = {}
    for rel in args.relation:
        settings = InversionSettings(max_train_steps=args.steps, seed=args.seed)
        t0 = time.time()
        run = Inversion(Path(args.benchmark) / rel, name=rel, settings=settings, base_model=args.base_model,
                        relations_dir=args.out, overwrite=args.overwrite, checkpoint_dir=Path("runs") / "relations" / rel)
        curve = []
        final = None
        for event in run:
            if isinstance(event, StepEvent):
                curve.append((event.step, event.loss, event.denoise_loss, event.steer_loss))
                if event.step % 100 == 0:
                    print(f"{rel} step {event.step} loss {event.loss:.4f} denoise {event.denoise_loss:.4f} steer {event.steer_loss:.4f}", flush=True)
            final = event
        if isinstance(final, FailedEvent) or not isinstance(final, FinishedEvent):
            raise SystemExit(f"{rel}: {final}")
        seconds = time.time() - t0
        gen = RelationGenerator(args.base_model, relations_dir=args.out)
        (relation,) = load_benchmark(args.benchmark, [rel], templates_per_relation=4)
        templates = relation.templates
        acc = preview_grid(gen, Path(args.out) / rel, templates)
        log[rel] = {"steps": args.steps, "seconds": round(seconds, 1), "preview_relation_accuracy": acc,
                    "first_loss": curve[0][1:], "last_loss": curve[-1][1:]}
        print(f"{rel}: {args.steps} steps in {seconds:.0f}s, preview relation accuracy {acc:.2f}", flush=True)
        Path("runs").mkdir(exist_ok=True)
        np.savetxt(Path("runs") / f"relation-curve-{rel}.csv", np.array(curve), delimiter=",", header="step,loss,denoise,steer", fmt="%.5f")
    list_as_shipped(Path(args.out), args.relation)
    print(json.dumps(log, indent=1))


def list_as_shipped(out: Path, names: list[str]) -> None:
    """Add ``names`` to ``out/shipped.txt``, the list of relations the app ships and never writes into."""
    listed = out / "shipped.txt"
    lines = listed.read_text(encoding="utf-8").splitlines() if listed.is_file() else ["# The relations that ship with ReVersion Studio."]
    lines += [name for name in names if name not in lines]
    listed.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
