"""``python -m reversion_core world ...``: render scenes, grids and the benchmark's exemplar sets."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ReVersionError
from .benchmark import write_benchmark, write_exemplar_set
from .captions import full_caption
from .dataset import random_scene
from .entities import BACKGROUNDS, parse_entity
from .relations import RELATION_NAMES, get_relation
from .render import Scene, render


HELP = "render scenes, grids and exemplar sets of the synthetic relation world"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="world_command", required=True)
    r = sub.add_parser("render", help="one scene to a PNG")
    r.add_argument("--relation", required=True, choices=RELATION_NAMES)
    r.add_argument("--entity-a", required=True, help='e.g. "red circle" or "striped blue square"')
    r.add_argument("--entity-b", required=True)
    r.add_argument("--background", default="plain", choices=BACKGROUNDS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--out", required=True)
    g = sub.add_parser("grid", help="a grid of random scenes (one row per relation) with their captions")
    g.add_argument("--per-relation", type=int, default=8)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--out", required=True)
    b = sub.add_parser("benchmark", help="write every relation's exemplar set (ReVersion layout)")
    b.add_argument("--out", default="assets/benchmark")
    b.add_argument("--relation", choices=RELATION_NAMES, help="only this relation")
    b.add_argument("--seed", type=int, default=0)


MAX_SIZE = 4096


def _check(args) -> None:
    """Refuse sizes, counts and seeds the renderer cannot use, in one sentence each."""
    if getattr(args, "size", None) is not None and not 8 <= args.size <= MAX_SIZE:
        raise ReVersionError(f"--size must be from 8 to {MAX_SIZE} pixels, not {args.size}.")
    if getattr(args, "per_relation", None) is not None and not 1 <= args.per_relation <= 1000:
        raise ReVersionError(f"--per-relation must be from 1 to 1000, not {args.per_relation}.")
    if not 0 <= args.seed < 2**63:
        raise ReVersionError(f"--seed {args.seed} is out of range; use a whole number from 0 to 2**63 - 1.")


def _save(image: Image.Image, out: str) -> None:
    try:
        image.save(out)
    except ValueError:
        raise ReVersionError(f"--out {out} needs an image extension such as .png.") from None
    except OSError as exc:
        raise ReVersionError(f"Could not write {out} ({exc.strerror or type(exc).__name__}).") from None


def run(args) -> int:
    _check(args)
    if args.world_command == "render":
        try:
            a, b = parse_entity(args.entity_a), parse_entity(args.entity_b)
        except ValueError as e:
            raise ReVersionError(str(e)) from None
        if a.colour == b.colour:
            raise ReVersionError("The two entities need different colours, or the world cannot tell them apart.")
        scene = Scene(get_relation(args.relation).name, a, b, args.background)
        _save(Image.fromarray(render(scene, args.seed, args.size)), args.out)
        print(f"{full_caption(scene, 3)} -> {args.out}")
    elif args.world_command == "grid":
        rng = np.random.default_rng(args.seed)
        rows = []
        for rel in RELATION_NAMES:
            tiles = [render(random_scene(rng, rel), int(rng.integers(2**31)), args.size) for _ in range(args.per_relation)]
            rows.append(np.concatenate(tiles, 1))
        _save(Image.fromarray(np.concatenate(rows, 0)), args.out)
        print(f"{len(RELATION_NAMES)} relations x {args.per_relation} scenes -> {args.out}")
    else:
        try:
            folders = [write_exemplar_set(args.relation, Path(args.out) / args.relation, args.seed)] if args.relation else write_benchmark(args.out, args.seed)
        except OSError as exc:
            raise ReVersionError(f"Could not write the exemplar sets to {args.out} ({exc.strerror or type(exc).__name__}).") from None
        for f in folders:
            print(f"wrote {f}")
    return 0
