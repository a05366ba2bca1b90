"""What the app shows of images and exemplar sets: small images enlarged with sharp pixels, and one benchmark set as
the Benchmark tab shows it (each image with its captions, every caption at every level, its description and its
inference templates). Nothing here imports gradio.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image

from reversion_core import benchmarks
from reversion_core.exemplars import ExemplarSet

DISPLAY_SIZE = 256  # the embedded model draws 32x32 images; show them this big, pixels kept sharp
BENCHMARK_THUMB = 256  # exemplar images of a foreign benchmark can be large; the gallery needs no more
LEVEL_NAMES = {1: "1 (entities)", 2: "2 (+ colours)", 3: "3 (+ patterns, background)"}


def upscale(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """Enlarge a small image to about ``size`` pixels with nearest-neighbour, so 32 px images stay crisp."""
    factor = max(1, size // max(image.size))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


# ----------------------------------------------------------------------------------------------- benchmark
def load_benchmark_set(benchmark_dir: str | os.PathLike, name: str) -> ExemplarSet:
    """One exemplar set of the benchmark, its images no larger than the app shows or trains on."""
    return benchmarks.load_benchmark_set(benchmark_dir, name, max_side=BENCHMARK_THUMB)


@dataclass
class BenchmarkView:
    """What the Benchmark tab shows for one exemplar set."""

    name: str
    gallery: list[tuple[Image.Image, str]]
    captions: list[list[str]]  # rows: image, level, caption
    description: str  # markdown
    templates: list[str]


def benchmark_view(benchmark_dir: str | os.PathLike, name: str) -> BenchmarkView:
    """The gallery (each image with its captions), the caption table, the description and the templates of a set."""
    exemplars = load_benchmark_set(benchmark_dir, name)
    gallery, rows = [], []
    for e in exemplars.exemplars:
        gallery.append((upscale(e.image), "\n".join(e.captions)))
        for level, text in enumerate(e.captions, start=1):
            rows.append([e.name, LEVEL_NAMES.get(level, str(level)) if len(e.captions) == 3 else str(level), text])
    meta = exemplars.relation or {}
    lines = [f"### {meta.get('phrase') or exemplars.name}"]
    if meta.get("description"):
        lines.append(meta["description"])
    if meta.get("nuisance_text"):
        lines.append(f"Every exemplar also shares a **{meta['nuisance_text']}** that the relation does not need; a good "
                     "relation prompt leaves it out.")
    lines.append(f"{len(exemplars)} exemplar images, {len(rows)} captions, {len(exemplars.templates or [])} inference templates.")
    return BenchmarkView(exemplars.name, gallery, rows, "\n\n".join(lines), list(exemplars.templates or []))
