"""Draw one picture of every exemplar set under assets/benchmark (a row per relation) for the docs.

    python scripts/exemplar_sheet.py --out docs/world-exemplars.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.benchmarks import list_benchmark_sets  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--benchmark", default="assets/benchmark")
    p.add_argument("--out", default="docs/world-exemplars.png")
    p.add_argument("--tile", type=int, default=96)
    args = p.parse_args()
    sets = [Path(args.benchmark) / name for name in list_benchmark_sets(args.benchmark)]
    label_w, t = 260, args.tile
    sheet = Image.new("RGB", (label_w + 6 * (t + 4), len(sets) * (t + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, d in enumerate(sets):
        meta = json.loads((d / "relation.json").read_text())
        y = row * (t + 4)
        draw.text((6, y + 8), f"{meta['name']}", fill="black")
        draw.text((6, y + 26), f"E_A {meta['phrase']} E_B", fill=(60, 60, 60))
        draw.text((6, y + 44), f"shared nuisance: {meta['nuisance_text']}", fill=(150, 30, 30))
        for col, name in enumerate(sorted(json.loads((d / "text.json").read_text()))[:6]):
            im = Image.open(d / name).convert("RGB").resize((t, t), Image.NEAREST)
            sheet.paste(im, (label_w + col * (t + 4), y))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
