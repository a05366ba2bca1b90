"""Measure the world scorer against the renderer's ground truth, per relation.

    python scripts/scorer_accuracy.py --n 1600 --seed 0

Scenes are random (patterns on entities, all backgrounds); a reading counts as right when the relation (with A
and B in the right roles) and both entities (shape and colour; B's colour only for made_of) match the truth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.world import RELATION_NAMES, render, score  # noqa: E402
from reversion_core.world.dataset import random_scene  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    stats = {r: [0, 0, 0] for r in RELATION_NAMES}
    for i in range(args.n):
        rel = RELATION_NAMES[i % len(RELATION_NAMES)]
        scene = random_scene(rng, rel, held_out=bool(i % 2))
        s = score(render(scene, int(rng.integers(2**31))), rel, scene.entity_a, scene.entity_b)
        stats[rel][0] += 1
        stats[rel][1] += s.relation_ok
        stats[rel][2] += s.entities_ok
    print("| relation | renders | relation read right | entities read right |\n|---|---|---|---|")
    for r, (n, ro, eo) in stats.items():
        print(f"| {r} | {n} | {ro / n:.3f} | {eo / n:.3f} |")
    n = sum(v[0] for v in stats.values())
    print(f"| all | {n} | {sum(v[1] for v in stats.values()) / n:.3f} | {sum(v[2] for v in stats.values()) / n:.3f} |")


if __name__ == "__main__":
    main()
