"""The world's scorer: reads an image of the world back into entities, their relation and the appearances shown.

It knows the palette the renderer uses, so on fresh renders it is exact up to anti-aliasing; on a generated
image it reads what is there and says ``None`` ("not found") for what it cannot read, never raising.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .entities import COLOURS, SHAPES, Entity
from .relations import RELATIONS
from .render import SIZE, shape_mask

_NAMES = ["background", "mark", "ink"] + list(COLOURS) + [f"dark {c}" for c in COLOURS]
_HUES = np.array([colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0] * 360 for rgb in COLOURS.values()])
_VALUES = np.array([max(rgb) for rgb in COLOURS.values()], np.float32)
MIN_ENTITY_PIXELS = 10
_SHAPELESS_B = ("made_of", "wrapped_in")  # B is a material or a ribbon there: only its colour is drawn


@dataclass
class FoundEntity:
    """An entity read from an image; ``shape`` or ``pattern`` is ``None`` where it could not be read."""

    colour: str
    shape: str | None
    pattern: str | None
    bbox: tuple[int, int, int, int]  # y0, x0, y1, x1 inclusive
    pixels: int

    def matches(self, e: Entity, check_shape: bool = True) -> bool:
        return self.colour == e.colour and (not check_shape or self.shape == e.shape)


@dataclass
class Reading:
    """Everything the scorer read from one image."""

    entities: list[FoundEntity] = field(default_factory=list)
    relation: str | None = None  # a world relation name, or None when none is recognised
    layout: str | None = None  # what the geometry looked like, e.g. "below" or "side by side", for messages
    entity_a: FoundEntity | None = None
    entity_b: FoundEntity | None = None
    background: str = "plain"


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        if image.size != (SIZE, SIZE):
            image = image.resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError("the scorer reads RGB images")
    if arr.dtype != np.uint8:  # floats in [0, 1]
        arr = np.clip(np.round(arr * 255), 0, 255).astype(np.uint8)
    if arr.shape[:2] != (SIZE, SIZE):
        return _as_array(Image.fromarray(arr))
    return arr


def classify_pixels(image) -> np.ndarray:
    """Index into ``_NAMES`` for every pixel, -1 where it is none of them.

    Chromatic pixels are read by hue (so an edge blended with the background keeps its colour) and by brightness
    relative to their colour (a pattern's dark marks); grey pixels by lightness alone.
    """
    arr = _as_array(image).astype(np.float32)
    hi, lo = arr.max(-1), arr.min(-1)
    chroma, light = hi - lo, arr.mean(-1)
    idx = np.full(arr.shape[:2], -1, np.int64)
    grey = chroma < 30
    idx[grey & (light > 225)] = 0
    idx[grey & (light >= 150) & (light <= 215)] = 1
    idx[grey & (light < 70)] = 2
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(hi == r, ((g - b) / safe) % 6, np.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    dist = np.abs((hue[..., None] - _HUES + 180) % 360 - 180)
    nearest = dist.argmin(-1)
    colour = (chroma >= 45) & (dist.min(-1) <= 30)
    dark = hi < 0.78 * _VALUES[nearest]
    idx[colour] = np.where(dark, 3 + len(COLOURS) + nearest, 3 + nearest)[colour]
    return idx


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())


def _template(shape: str, cy: float, cx: float, size: float, shape_hw: tuple[int, int]) -> np.ndarray:
    """A shape's coverage map as the renderer would draw it (4x supersampled, box-filtered)."""
    h, w = shape_hw
    ys = (np.arange(h * 4) + 0.5) / 4
    xs = (np.arange(w * 4) + 0.5) / 4
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return shape_mask(shape, cx, cy, size, yy, xx).reshape(h, 4, w, 4).mean(axis=(1, 3))


def classify_shape(coverage: np.ndarray) -> str | None:
    """circle / square / triangle / diamond from a filled silhouette (a 0..1 coverage map), or None.

    Each shape is drawn at the silhouette's extent and compared by soft overlap; matching whole templates stays
    right on blurred (generated) images, where corner and fill-ratio rules confuse a rounded square with a circle.
    """
    coverage = np.clip(coverage, 0.0, 1.0)
    mask = coverage >= 0.5
    if mask.sum() < MIN_ENTITY_PIXELS:
        return None
    y0, x0, y1, x1 = _bbox(mask)
    h, w = y1 - y0 + 1, x1 - x0 + 1
    if max(h, w) > 2.2 * min(h, w):
        return None
    pad = 3
    ya, xa = max(0, y0 - pad), max(0, x0 - pad)
    crop = coverage[ya : y1 + pad + 1, xa : x1 + pad + 1]
    cy, cx = (y0 + y1 + 1) / 2 - ya, (x0 + x1 + 1) / 2 - xa
    extent = (h + w) / 2
    best, best_iou = None, 0.0
    for shape in SHAPES:
        for scale in (0.9, 1.0, 1.1):
            size = extent * scale / (0.86 if shape == "square" else 1.0)
            sharp = _template(shape, cy, cx, size, crop.shape)
            for blur in (0.0, 0.5, 0.8):  # a generated image is softer than a render
                t = ndimage.gaussian_filter(sharp, blur) if blur else sharp
                iou = np.minimum(crop, t).sum() / max(np.maximum(crop, t).sum(), 1e-6)
                if iou > best_iou:
                    best, best_iou = shape, iou
    return best if best_iou >= 0.6 else None


def _geometry_bbox(mask: np.ndarray, bright: np.ndarray) -> tuple[int, int, int, int]:
    """Rows from the whole entity (a dark stripe at its top still counts), columns from its bright body."""
    y0, _, y1, _ = _bbox(mask)
    _, x0, _, x1 = _bbox(bright)
    return y0, x0, y1, x1


def _pattern(idx: np.ndarray, colour: str, mask: np.ndarray) -> str | None:
    dark = (idx == _NAMES.index(f"dark {colour}")) & mask
    if dark.sum() < 0.12 * mask.sum() or dark.sum() < 4:
        return None
    # Stripes darken whole rows of the entity; dots never more than half a row.
    rows = [(d.sum(), m.sum()) for d, m in zip(dark, mask)]
    return "striped" if sum(m >= 4 and d >= 0.65 * m for d, m in rows) >= 2 else "dotted"


def _background(idx: np.ndarray) -> str:
    marks = idx == _NAMES.index("mark")
    if marks.sum() < 12:
        return "plain"
    # Diagonal stripes continue down-left; the 2x2 dots of a dotted background mostly do not.
    along = (marks[:-1, 1:] & marks[1:, :-1]).sum() / max(1, marks[:-1, 1:].sum())
    return "striped" if along > 0.6 else "dotted"


def _darkness(image, idx) -> np.ndarray:
    """How much ink each pixel holds, 0..1: dark greys fully, ink blended into the background or an entity's
    edge partly; bright entity colours none."""
    light = _as_array(image).astype(np.float32).mean(-1)
    dark = np.clip((200.0 - light) / 175.0, 0.0, 1.0)
    bright = (idx >= 3) & (idx < 3 + len(COLOURS))
    return np.where(bright, 0.0, np.where(idx >= 3 + len(COLOURS), np.maximum(dark, 0.6), dark))


def _ink(dark, y0, y1, x0, x1) -> float:
    """Total darkness in a box (clipped to the image)."""
    y0, x0 = max(y0, 0), max(x0, 0)
    return float(dark[y0 : y1 + 1, x0 : x1 + 1].sum())


def _crosses(mask: np.ndarray, silhouette: np.ndarray, full: float = 0.85) -> bool:
    """Does the colour run as a band across the whole silhouette, both along 3+ rows and down 3+ columns?"""
    def runs(m, sil):
        width = sil.sum(1)
        across = (m & sil).sum(1) >= full * np.maximum(width, 1)
        across &= width >= 4
        longest = run = 0
        for a in across:
            run = run + 1 if a else 0
            longest = max(longest, run)
        return longest >= 3
    return runs(mask, silhouette) and runs(mask.T, silhouette.T)


def read_scene(image) -> Reading:
    """Read entities, relation and background from a world image (PIL or uint8/float array)."""
    try:
        return _read(image)
    except ValueError:
        raise
    except Exception:  # a generated image must never crash the scorer
        return Reading()


def _read(image) -> Reading:
    idx = classify_pixels(image)
    dark = _darkness(image, idx)
    reading = Reading(background=_background(idx))
    if (idx == 0).mean() < 0.2:  # hardly any background: noise or something else, not a world scene
        return reading
    arr = _as_array(image).astype(np.float32)
    chroma = arr.max(-1) - arr.min(-1)
    masks, cover, bright = {}, {}, {}
    for i, (c, rgb) in enumerate(COLOURS.items()):
        is_bright, is_dark = idx == 3 + i, idx == 3 + len(COLOURS) + i
        cov = np.where(is_bright, np.minimum(1.0, chroma / (max(rgb) - min(rgb))), 0.0) + is_dark
        m = cov >= 0.5
        if m.sum() >= MIN_ENTITY_PIXELS and (is_bright & m).sum() >= MIN_ENTITY_PIXELS // 2:
            masks[c], cover[c], bright[c] = m, cov, is_bright & m
    colours = sorted(masks, key=lambda c: -masks[c].sum())[:2]
    found = {}
    for c in colours:
        solid = ndimage.binary_fill_holes(ndimage.binary_closing(masks[c], iterations=1) | masks[c])
        # Geometry comes from the bright body: a nose or string blended into the edge reads as a dark shade.
        found[c] = FoundEntity(
            c, classify_shape(np.where(solid & ~masks[c], 1.0, cover[c])), _pattern(idx, c, masks[c]),
            _geometry_bbox(masks[c], bright[c]), int(masks[c].sum()),
        )
    reading.entities = list(found.values())
    if len(colours) < 2:
        return reading
    x, y = colours
    mx, my = masks[x], masks[y]
    # Containment: one colour lies within the other's filled silhouette.
    for outer, inner in ((x, y), (y, x)):
        filled = ndimage.binary_fill_holes(masks[outer])
        if (masks[inner] & filled).sum() >= 0.8 * masks[inner].sum() and filled.sum() > 2 * masks[inner].sum():
            density = masks[outer].sum() / max(1, filled.sum() - masks[inner].sum())
            reading.relation = "painted_on" if density > 0.7 else "inside"
            reading.entity_a, reading.entity_b = found[inner], found[outer]
            return reading
    union = ndimage.binary_fill_holes(ndimage.binary_closing(mx | my, iterations=1) | mx | my)
    bx, by = found[x].bbox, found[y].bbox
    iy = max(0, min(bx[2], by[2]) - max(bx[0], by[0]) + 1)
    ix = max(0, min(bx[3], by[3]) - max(bx[1], by[1]) + 1)
    small = min((bx[2] - bx[0] + 1) * (bx[3] - bx[1] + 1), (by[2] - by[0] + 1) * (by[3] - by[1] + 1))
    if iy * ix > 0.6 * small:  # two colours in one silhouette: B's ribbon round A, or A made of B's material
        ribbon = [c for c in (x, y) if _crosses(masks[c], union)]
        if len(ribbon) == 1:
            b = ribbon[0]
            a = y if b == x else x
            reading.relation = "wrapped_in"
        else:
            a, b = (x, y) if mx.sum() >= my.sum() else (y, x)
            reading.relation = "made_of"
        reading.entity_a = FoundEntity(a, classify_shape(np.maximum(union, cover[a] + cover[b])), None, _bbox(union), found[a].pixels)
        reading.entity_b = FoundEntity(b, None, None, found[b].bbox, found[b].pixels)
        return reading
    cy = {c: (found[c].bbox[0] + found[c].bbox[2]) / 2 for c in colours}
    cx = {c: (found[c].bbox[1] + found[c].bbox[3]) / 2 for c in colours}
    if abs(cy[x] - cy[y]) >= abs(cx[x] - cx[y]):
        top, bottom = (x, y) if cy[x] < cy[y] else (y, x)
        t, u = found[top].bbox, found[bottom].bbox
        gap = u[0] - t[2] - 1
        mid = int(round((cx[top] + cx[bottom]) / 2))
        string = _ink(dark, t[2] + 2, u[0] - 2, mid - 2, mid + 2) if gap > 3 else 0.0
        if gap >= 3 and string >= 0.6 * (gap - 2):  # a dark line runs through the gap
            reading.relation, reading.entity_a, reading.entity_b = "hanging_from", found[bottom], found[top]
        elif gap <= 1:
            cart = _ink(dark, u[2] + 1, u[2] + 4, int(cx[bottom]) - 5, int(cx[bottom]) + 6)  # wheels under B
            reading.relation = "rides" if cart >= 4.0 else "on_top_of"
            reading.entity_a, reading.entity_b = found[top], found[bottom]
        else:
            reading.relation, reading.entity_a, reading.entity_b = "above", found[top], found[bottom]
        return reading
    left, right = (x, y) if cx[x] < cx[y] else (y, x)
    l, r = found[left].bbox, found[right].bbox

    def facing(bb, outward_left: bool) -> int:  # +1 points out, -1 points in, 0 no nose
        mid = (bb[0] + bb[2]) // 2
        lo = _ink(dark, mid - 3, mid + 3, bb[1] - 3, bb[1] - 1)
        hi = _ink(dark, mid - 3, mid + 3, bb[3] + 1, bb[3] + 3)
        out, inn = (lo, hi) if outward_left else (hi, lo)
        if max(out, inn) < 1.5 or max(out, inn) < 1.5 * min(out, inn):
            return 0
        return 1 if out > inn else -1

    reading.entity_a, reading.entity_b = found[left], found[right]
    gap = r[1] - l[3] - 1
    mid = int(round((cy[left] + cy[right]) / 2))
    if gap >= 4:  # a dark arm bridging the gap, thickest at the clasp in the middle: shaking hands
        # (noses facing each other may touch too, but their ink is thickest at the bodies, thinnest between)
        arm = [_ink(dark, mid - 5, mid + 6, col, col) for col in range(l[3] + 2, r[1] - 1)]
        centre, half = (len(arm) - 1) / 2, max(1.0, 0.2 * len(arm))
        clasp = max(v for i, v in enumerate(arm) if abs(i - centre) <= half)
        if min(arm) >= 0.5 and clasp > max(arm[0], arm[-1]) + 0.5:
            reading.relation = "shakes_hands_with"
            return reading
    if gap <= 2:  # touching, with dark arms round them above and below where they meet
        jx = (l[3] + r[1]) // 2
        top, bot = min(l[0], r[0]), max(l[2], r[2])
        if _ink(dark, top - 3, mid - 2, jx - 1, jx + 1) >= 2.0 and _ink(dark, mid + 2, bot + 3, jx - 1, jx + 1) >= 2.0:
            reading.relation = "hugs"
            return reading
    fl, fr = facing(l, True), facing(r, False)
    if fl == fr == 1:
        reading.relation = "back_to_back"
    elif fl == fr == -1:
        reading.relation = "face_to_face"
    else:
        reading.layout = "side by side"
    return reading


@dataclass
class Score:
    relation_ok: bool
    entities_ok: bool
    reading: Reading


def score(image, relation: str, entity_a: Entity, entity_b: Entity) -> Score:
    """Is the image the relation between these entities? Relation and entities are judged separately."""
    reading = read_scene(image)
    rel = RELATIONS[relation]
    relation_ok = reading.relation == rel.name
    got = (reading.entity_a, reading.entity_b)
    if None in got:
        # No relation read: judge the entities by what was found, in any order.
        ents = {f.colour: f for f in reading.entities}
        fa, fb = ents.get(entity_a.colour), ents.get(entity_b.colour)
        entities_ok = bool(fa and fb and fa.shape == entity_a.shape and fb.shape == entity_b.shape)
        return Score(False, entities_ok, reading)
    check_b_shape = rel.name not in _SHAPELESS_B and reading.relation not in _SHAPELESS_B

    def ok(ga, gb):
        return ga.matches(entity_a) and gb.matches(entity_b, check_shape=check_b_shape)

    entities_ok = ok(*got) or ((rel.symmetric or not relation_ok) and ok(got[1], got[0]))
    if relation_ok and not rel.symmetric and not (got[0].colour == entity_a.colour and got[1].colour == entity_b.colour):
        relation_ok = False  # the right layout with the roles swapped (by colour) is the wrong relation
    return Score(relation_ok, entities_ok, reading)


def shows_appearance(image, appearance: dict) -> bool:
    """Does the image show ``{"target": "background"|"entity_a"|"entity_b"|"any", "pattern": ...}``?"""
    reading = read_scene(image)
    if appearance["target"] == "background":
        return reading.background == appearance["pattern"]
    return any(e.pattern == appearance["pattern"] for e in reading.entities)
