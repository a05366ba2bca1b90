"""The world's renderer: draws two entities in a relation on a background, deterministically for a seed.

Drawing happens on a 4x supersampled canvas that is box-filtered down, so edges are smooth and sub-pixel jitter
shows. All geometry is in units of the 32-pixel canvas.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .entities import BACKGROUND_MARK_RGB, BACKGROUND_RGB, COLOURS, DARK_FACTOR, INK_RGB, Entity
from .relations import get_relation

SIZE = 32  # the world's image size in pixels
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """What an image shows: the truth the scorer is checked against."""

    relation: str
    entity_a: Entity
    entity_b: Entity
    background: str = "plain"


def _grid(size: int):
    s = size * SUPERSAMPLE
    coords = (np.arange(s) + 0.5) / SUPERSAMPLE * (SIZE / size)  # canvas units at any output size
    return np.meshgrid(coords, coords, indexing="ij")  # yy, xx


def shape_mask(shape: str, cx: float, cy: float, size: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean mask of a filled shape of the given bounding size centred at (cx, cy)."""
    dx, dy, h = xx - cx, yy - cy, size / 2
    if shape == "circle":
        return dx**2 + dy**2 <= h**2
    if shape == "square":
        return (np.abs(dx) <= 0.43 * size) & (np.abs(dy) <= 0.43 * size)
    if shape == "triangle":  # pointing up: apex at the top, base at the bottom
        return (dy >= -h) & (dy <= h) & (np.abs(dx) <= 0.5 * (dy + h))
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= h
    raise ValueError(f"unknown shape {shape!r}")


def _half_width_at_centre(shape: str, size: float) -> float:
    return {"circle": size / 2, "square": 0.43 * size, "triangle": size / 4, "diamond": size / 2}[shape]


def _half_width(shape: str, size: float) -> float:
    """Half the shape's widest extent (a triangle's base, a diamond's waist)."""
    return 0.43 * size if shape == "square" else size / 2


def _half_height(shape: str, size: float) -> float:
    return 0.43 * size if shape == "square" else size / 2


def _dark(rgb):
    return tuple(int(round(c * DARK_FACTOR)) for c in rgb)


class _Canvas:
    def __init__(self, size: int, background: str):
        self.yy, self.xx = _grid(size)
        self.per_unit = SUPERSAMPLE * size / SIZE  # supersampled pixels per canvas unit
        self.rgb = np.empty(self.yy.shape + (3,), np.float32)
        self.rgb[:] = BACKGROUND_RGB
        iy, ix = np.floor(self.yy).astype(int), np.floor(self.xx).astype(int)
        if background == "dotted":
            self.paint((iy % 6 >= 2) & (iy % 6 <= 3) & (ix % 6 >= 2) & (ix % 6 <= 3), BACKGROUND_MARK_RGB)
        elif background == "striped":
            self.paint((iy + ix) % 6 <= 1, BACKGROUND_MARK_RGB)
        elif background != "plain":
            raise ValueError(f"unknown background {background!r}")

    def paint(self, mask: np.ndarray, rgb) -> None:
        self.rgb[mask] = rgb

    def entity(self, e: Entity, cx: float, cy: float, size: float, hollow: float = 0.0) -> np.ndarray:
        mask = shape_mask(e.shape, cx, cy, size, self.yy, self.xx)
        if hollow:
            mask &= ~ndimage.binary_erosion(mask, iterations=int(round(hollow * self.per_unit)))
        return self.fill(mask, e)

    def fill(self, mask: np.ndarray, e: Entity) -> np.ndarray:
        """Paint a region in the entity's colour and pattern."""
        self.paint(mask, COLOURS[e.colour])
        iy, ix = np.floor(self.yy).astype(int), np.floor(self.xx).astype(int)
        if e.pattern == "striped":
            self.paint(mask & ((iy // 2) % 2 == 0), _dark(COLOURS[e.colour]))
        elif e.pattern == "dotted":
            self.paint(mask & (iy % 4 >= 1) & (iy % 4 <= 2) & (ix % 4 >= 1) & (ix % 4 <= 2), _dark(COLOURS[e.colour]))
        return mask

    def nose(self, e: Entity, cx: float, cy: float, size: float, direction: int, depth: float = 2.5) -> None:
        """A dark triangular nose on the entity's left (-1) or right (+1) side: what makes a shape 'pointed'."""
        base = cx + direction * (max(_half_width_at_centre(e.shape, size), 0.43 * size) + 1.0)  # 1 px apart
        u = (self.xx - base) * direction  # distance outwards from the base
        self.paint((u >= 0) & (u <= depth) & (np.abs(self.yy - cy) <= 2.8 * (1 - u / depth)), INK_RGB)

    def disc(self, cx: float, cy: float, radius: float) -> np.ndarray:
        return (self.xx - cx) ** 2 + (self.yy - cy) ** 2 <= radius**2

    def image(self) -> np.ndarray:
        s = self.rgb.shape[0] // SUPERSAMPLE
        small = self.rgb.reshape(s, SUPERSAMPLE, s, SUPERSAMPLE, 3).mean(axis=(1, 3))
        return np.clip(np.round(small), 0, 255).astype(np.uint8)


def render(scene: Scene, seed: int = 0, size: int = SIZE) -> np.ndarray:
    """Draw a scene as an ``(size, size, 3)`` uint8 array; the same scene and seed give the same pixels."""
    rng = np.random.default_rng(seed)
    j = lambda amount=1.0: float(rng.uniform(-amount, amount))  # noqa: E731 - bounded jitter
    a, b = scene.entity_a, scene.entity_b
    c = _Canvas(size, scene.background)
    name = get_relation(scene.relation).name
    if name == "above":
        c.entity(a, (16 + j()), (8 + j()), (10 + j(0.5)))
        c.entity(b, (16 + j()), (24 + j()), (10 + j(0.5)))
    elif name == "on_top_of":
        bs, as_ = 14 + j(0.7), 9 + j(0.7)
        bx, by = 16 + j(), 22.5 + j()
        ay = by - _half_height(b.shape, bs) - _half_height(a.shape, as_) + 0.4  # touching B's top
        c.entity(b, bx, by, bs)
        c.entity(a, (bx + j()), ay, as_)
    elif name in ("inside", "painted_on"):
        bs, bx, by = 26 + j(0.5), 16 + j(0.5), 16 + j(0.5)
        c.entity(b, bx, by, bs, hollow=2.2 if name == "inside" else 0.0)
        ay = by + (4.5 if b.shape == "triangle" else 0)  # the triangle's room is low
        c.entity(a, (bx + j(0.5)), (ay + j(0.5)), ((8.5 if name == "inside" else 9.5) + j(0.4)))
    elif name == "made_of":
        s, cx, cy = 24 + j(0.7), 16 + j(0.7), 16 + j(0.7)
        mask = c.entity(a.plain(), cx, cy, s)
        iy, ix = np.floor(c.yy).astype(int), np.floor(c.xx).astype(int)
        c.paint(mask & ((ix - iy) % 5 <= 1), COLOURS[b.colour])  # B's material runs through A
    elif name in ("back_to_back", "face_to_face"):
        out = name == "back_to_back"
        for e, cx, direction in ((a, 10.5 if out else 7.5, -1 if out else 1), (b, 21.5 if out else 24.5, 1 if out else -1)):
            x, y, s = cx + j(0.7), 16 + j(), 9 + j(0.5)
            c.nose(e, x, y, s, direction, depth=2.5)
            c.entity(e, x, y, s)
    elif name == "hanging_from":
        bx, by, bs = 16 + j(0.7), 7.5 + j(0.7), 9 + j(0.5)
        ax, ay, as_ = 16 + j(0.7), 24 + j(0.7), 9 + j(0.5)
        sx = (ax + bx) / 2
        top, bottom = by + _half_height(b.shape, bs) - 0.5, ay - _half_height(a.shape, as_) + 0.5
        c.paint((np.abs(c.xx - sx) <= 0.8) & (c.yy >= top) & (c.yy <= bottom), INK_RGB)
        c.entity(b, bx, by, bs)
        c.entity(a, ax, ay, as_)
    elif name == "shakes_hands_with":
        ax, bx, y = 7.5 + j(0.7), 24.5 + j(0.7), 16 + j()
        hy = y + 2 + j(0.3)  # the hands meet a little below the middle, where arms reach out
        c.paint((np.abs(c.yy - hy) <= 0.7) & (c.xx >= ax) & (c.xx <= bx), INK_RGB)
        c.paint(c.disc((ax + bx) / 2 + j(0.4), hy, 1.7), INK_RGB)  # the clasp
        c.entity(a, ax, y + j(0.4), 9 + j(0.5))
        c.entity(b, bx, y + j(0.4), 9 + j(0.5))
    elif name == "hugs":
        sa, sb, jx, y = 10 + j(0.5), 10 + j(0.5), 16 + j(0.7), 16 + j(0.7)
        # Arms: a dark ring round the point where they touch, seen only where the bodies do not hide it.
        ring = np.hypot(c.xx - jx, c.yy - y)
        c.paint(np.abs(ring - 6.6) <= 0.65, INK_RGB)
        c.entity(a, jx - _half_width(a.shape, sa) + 0.3, y + j(0.4), sa)
        c.entity(b, jx + _half_width(b.shape, sb) - 0.3, y + j(0.4), sb)
    elif name == "wrapped_in":
        s, cx, cy = 22 + j(0.7), 16 + j(0.7), 16 + j(0.7)
        mask = c.entity(a, cx, cy, s)
        rx, ry = cx + j(0.5), cy + (2.5 if a.shape == "triangle" else 0) + j(0.5)  # the triangle's mass is low
        c.fill(mask & ((np.abs(c.xx - rx) <= 2.5) | (np.abs(c.yy - ry) <= 2.5)), b)  # B's ribbon crosses A
    elif name == "rides":
        bs, as_ = 12 + j(0.5), 8 + j(0.5)
        bx, by = 16 + j(0.7), 18.5 + j(0.7)
        bottom = by + _half_height(b.shape, bs)
        c.paint((np.abs(c.xx - bx) <= 0.45 * bs + 0.5) & (c.yy >= bottom + 0.2) & (c.yy <= bottom + 1.4), INK_RGB)
        for side in (-1, 1):  # the cart's wheels
            c.paint(c.disc(bx + side * 0.3 * bs, bottom + 2.9, 1.7), INK_RGB)
        c.entity(b, bx, by, bs)
        c.entity(a, bx + j(0.7), by - _half_height(b.shape, bs) - _half_height(a.shape, as_) + 0.4, as_)
    else:  # pragma: no cover - every relation above has a layout
        raise ValueError(f"no layout for {name!r}")
    return c.image()


def render_many(scenes: list[Scene], seeds: list[int], workers: int = 1, chunk: int = 500) -> np.ndarray:
    """:func:`render` of each scene with its seed, stacked ``(n, SIZE, SIZE, 3)``; with ``workers`` > 1 the scenes
    are drawn by that many forked processes, ``chunk`` at a time, and the pixels are the same as with one."""
    workers = min(workers, -(-len(scenes) // chunk))
    if workers <= 1:
        return np.stack([render(s, seed=sd) for s, sd in zip(scenes, seeds)])
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return np.stack(pool.starmap(render, zip(scenes, seeds), chunksize=chunk))


def render_image(scene: Scene, seed: int = 0, size: int = SIZE) -> Image.Image:
    """:func:`render` as a PIL image."""
    return Image.fromarray(render(scene, seed, size))
