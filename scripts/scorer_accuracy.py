"""Measure the world scorer against the renderer's ground truth, per relation, on fresh renders, on renders made
to look generated, or on the base model's VAE reconstructions of renders.

    python scripts/scorer_accuracy.py --n 2400 --seed 0                      # fresh renders
    python scripts/scorer_accuracy.py --n 2400 --seed 0 --images degraded    # blurred, colours blended, noise
    python scripts/scorer_accuracy.py --n 1200 --seed 0 --images vae --model assets/base-model

Scenes are random (patterns on entities, all backgrounds); a reading counts as right when the relation (with A
and B in the right roles) and both entities (shape and colour; B's colour only for made_of and wrapped_in) match the
truth. ``--confusion`` also prints which relation each was read as.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.world import RELATION_NAMES, render, score  # noqa: E402
from reversion_core.world.dataset import random_scene  # noqa: E402
from reversion_core.world.degrade import degrade  # noqa: E402


def vae_reconstruct(model: str, images: list[np.ndarray]) -> list[np.ndarray]:
    """Decode the VAE encoder's mean latents of uint8 images: what the base model's VAE keeps of them."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            x = torch.from_numpy(np.stack(images[i : i + 64])).permute(0, 3, 1, 2).float() / 127.5 - 1
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            out += list(((y + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", choices=["fresh", "degraded", "vae"], default="fresh")
    p.add_argument("--strength", type=float, default=1.0, help="degradation strength for --images degraded")
    p.add_argument("--model", default="assets/base-model", help="base model whose VAE --images vae uses")
    p.add_argument("--confusion", action="store_true", help="also print what each relation was read as")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    scenes, images = [], []
    for i in range(args.n):
        rel = RELATION_NAMES[i % len(RELATION_NAMES)]
        scene = random_scene(rng, rel, held_out=bool(i % 2))
        image = render(scene, int(rng.integers(2**31)))
        if args.images == "degraded":
            image = degrade(image, rng, args.strength)
        scenes.append(scene)
        images.append(image)
    if args.images == "vae":
        images = vae_reconstruct(args.model, images)
    stats = {r: [0, 0, 0] for r in RELATION_NAMES}
    read_as = {r: Counter() for r in RELATION_NAMES}
    for scene, image in zip(scenes, images):
        s = score(image, scene.relation, scene.entity_a, scene.entity_b)
        stats[scene.relation][0] += 1
        stats[scene.relation][1] += s.relation_ok
        stats[scene.relation][2] += s.entities_ok
        read_as[scene.relation][s.reading.relation or "none"] += 1
    print(f"images: {args.images}" + (f" (strength {args.strength})" if args.images == "degraded" else ""))
    print("| relation | images | relation read right | entities read right |\n|---|---|---|---|")
    for r, (n, ro, eo) in stats.items():
        print(f"| {r} | {n} | {ro / n:.3f} | {eo / n:.3f} |")
    n = sum(v[0] for v in stats.values())
    print(f"| all | {n} | {sum(v[1] for v in stats.values()) / n:.3f} | {sum(v[2] for v in stats.values()) / n:.3f} |")
    if args.confusion:
        print("\nread as (truth: counts)")
        for r, c in read_as.items():
            print(f"{r}: " + ", ".join(f"{k} {v}" for k, v in c.most_common()))


if __name__ == "__main__":
    main()
