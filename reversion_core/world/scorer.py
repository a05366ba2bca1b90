"""The world's scorer: reads an image of the world back into entities, their relation and the appearances shown.

It knows the palette the renderer uses, so on fresh renders it is exact up to anti-aliasing; on a generated
image it reads what is there and says ``None`` ("not found") for what it cannot read, never raising.
Over 400 lines because each of the twelve relations has its own geometric test, and they share the entity reader.
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


# The grid a silhouette is matched over. A generated or degraded image shifts an edge by a fraction of a pixel, rounds
# corners and widens the outline; without sub-pixel shifts and blurs past 1 px, a blurred diamond or triangle matches a
# circle best (measured on degraded renders: 0.937 of shapes read right without shifts, 0.969 with).
_SCALES = np.arange(0.85, 1.151, 0.05)
_SHIFTS = (-0.5, 0.0, 0.5)
_BLURS = (0.0, 0.5, 0.8, 1.1, 1.4)


def _templates(shape: str, cy: float, cx: float, size: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Coverage maps of a shape as the renderer would draw it (4x supersampled, box-filtered), one per (cy, cx, size).

    cy, cx and size broadcast against each other; the result is (n, h, w)."""
    h, w = shape_hw
    ys = ((np.arange(h * 4) + 0.5) / 4)[None, :, None]
    xs = ((np.arange(w * 4) + 0.5) / 4)[None, None, :]
    cy, cx, size = (np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for v in np.broadcast_arrays(cy, cx, size))
    covered = shape_mask(shape, cx, cy, size, ys, xs).view(np.uint8).reshape(-1, h, 4, w * 4)
    rows = (covered[:, :, 0] + covered[:, :, 1] + covered[:, :, 2] + covered[:, :, 3]).reshape(-1, h, w, 4)
    return (rows[..., 0] + rows[..., 1] + rows[..., 2] + rows[..., 3]).astype(np.float32) / 16  # box filter, 4x4


def classify_shape(coverage: np.ndarray) -> str | None:
    """circle / square / triangle / diamond from a filled silhouette (a 0..1 coverage map), or None.

    Each shape is drawn at the silhouette's extent, over a small grid of scales, sub-pixel shifts and blurs, and
    compared by soft overlap; matching whole templates stays right on blurred (generated) images, where corner and
    fill-ratio rules confuse a rounded square with a circle.
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
    crop = coverage[ya : y1 + pad + 1, xa : x1 + pad + 1].astype(np.float32)
    cy, cx = (y0 + y1 + 1) / 2 - ya, (x0 + x1 + 1) / 2 - xa
    dy, dx, scale = (g.ravel() for g in np.meshgrid(_SHIFTS, _SHIFTS, _SCALES, indexing="ij"))
    extent = (h + w) / 2
    best, best_iou, total = None, 0.0, crop.sum()
    for shape in SHAPES:
        size = extent * scale / (0.86 if shape == "square" else 1.0)
        sharp = _templates(shape, cy + dy, cx + dx, size, crop.shape)
        for blur in _BLURS:
            t = ndimage.gaussian_filter(sharp, (0, blur, blur)) if blur else sharp
            both = np.minimum(crop, t).sum((1, 2))  # soft intersection; the union is the sum of both less it
            iou = float((both / np.maximum(total + t.sum((1, 2)) - both, 1e-6)).max())
            if iou > best_iou:
                best, best_iou = shape, iou
    return best if best_iou >= 0.4 else None


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


def _crosses(mask: np.ndarray, other: np.ndarray, silhouette: np.ndarray, full: float = 0.85) -> bool:
    """Does the colour run as a band right across the silhouette, 3+ rows deep and 3+ columns wide, with the
    other colour on both sides of each band (a ribbon round A, not a surface A is painted on)?"""
    def band(m, o, sil):
        width = sil.sum(1)
        across = ((m & sil).sum(1) >= full * np.maximum(width, 1)) & (width >= 4)
        labels, n = ndimage.label(across)
        for k in range(1, n + 1):
            rows = np.nonzero(labels == k)[0]
            if len(rows) >= 3 and o[: rows[0]].sum() >= 3 and o[rows[-1] + 1 :].sum() >= 3:
                return True
        return False
    return band(mask, other, silhouette) and band(mask.T, other.T, silhouette.T)


def _enclosed(outer: np.ndarray, inner: np.ndarray) -> tuple[bool, np.ndarray]:
    """Does ``outer`` enclose ``inner``, even through gaps of up to two pixels in its outline?

    The outline is thickened by a pixel before the outside is flooded in from the image's border, so a few blended
    pixels cannot open a container. Returns the verdict and the region the (thickened) outline encloses."""
    for wall in (outer, ndimage.binary_dilation(outer, np.ones((3, 3), bool))):
        room = ndimage.binary_fill_holes(wall)
        core = inner & ~wall  # a 2-pixel material stripe vanishes under the thickened wall: not a content
        if core.sum() >= 0.4 * inner.sum() and core.sum() >= 4:
            if (core & room).sum() >= 0.95 * core.sum() and room.sum() > 2 * inner.sum():
                return True, room
    return False, room


def _pale(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Background-like pixels: background, its marks, or anything light and grey (a blurred edge of either)."""
    return (idx == 0) | (idx == 1) | ((arr.mean(-1) > 200) & (arr.max(-1) - arr.min(-1) < 40))


def _gap_along(pale: np.ndarray, lines: range, start: int, stop: int, vertical: bool) -> int:
    """The fewest background-like pixels between two entities over a few rows (or columns): 0 when they touch."""
    best = None
    for k in lines:
        if not 0 <= k < pale.shape[1 if vertical else 0]:
            continue
        seg = pale[max(start, 0) : max(stop, 0), k] if vertical else pale[k, max(start, 0) : max(stop, 0)]
        best = int(seg.sum()) if best is None else min(best, int(seg.sum()))
    return 99 if best is None else best


def _palette_mixture(colours: np.ndarray) -> tuple[str, str] | None:
    """Which two palette colours, A then B, a set of stripe-phase mean colours are mixtures of.

    Each phase mean lies on the line from A to B (blur mixes them), B's share over the whole being about 2/5."""
    names, rgb = list(COLOURS), np.array(list(COLOURS.values()), np.float32)
    mean = colours.mean(0)
    best, best_cost = None, np.inf
    for i in range(len(names)):
        for j in range(len(names)):
            if i == j:
                continue
            d = rgb[j] - rgb[i]
            t = (colours - rgb[i]) @ d / (d @ d)
            off = np.linalg.norm(colours - (rgb[i] + t[:, None] * d), axis=1).mean()
            share = float(((mean - rgb[i]) @ d) / (d @ d))
            cost = off + abs(share - 0.4) * np.linalg.norm(d)
            if cost < best_cost:
                best, best_cost = (names[i], names[j]), cost
    return best


STRIPE_PERIOD = 5  # the renderer's made_of material: 2 of every 5 diagonals


def _material_stripes(arr: np.ndarray, pale: np.ndarray) -> tuple[np.ndarray, tuple[str, str]] | None:
    """A large silhouette whose colour repeats every 5 pixels along one diagonal and not along the other: A made
    of B's material, however much blur has blended the stripes. Returns the silhouette and the colours (A, B)."""
    labels, n = ndimage.label(ndimage.binary_opening(~pale, np.ones((2, 2), bool)))
    if n == 0:
        return None
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n + 1))
    body = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    inner = ndimage.binary_erosion(body, iterations=2)
    if inner.sum() < 120:
        return None
    yy, xx = np.nonzero(inner)
    pix = arr[yy, xx]

    def phases(key):
        return np.array([pix[key == k].mean(0) if (key == k).sum() >= 8 else pix.mean(0) for k in range(STRIPE_PERIOD)])

    along, across = phases((xx - yy) % STRIPE_PERIOD), phases((xx + yy) % STRIPE_PERIOD)
    spread = lambda c: float(np.linalg.norm(c - c.mean(0), axis=1).max())  # noqa: E731
    if spread(along) < 10 or spread(along) < 2.8 * spread(across):
        return None
    return body, _palette_mixture(along)


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
    arr = _as_array(image).astype(np.float32)
    pale = _pale(arr, idx)
    # Hardly any background: noise or something else, not a world scene. A blurred striped background is partly pale
    # greys of neither background class: with some true background left, those count too (noise has few of either).
    background = (idx == 0).mean()
    if background < 0.2 and not (background >= 0.1 and pale.mean() >= 0.35):
        return reading
    chroma = arr.max(-1) - arr.min(-1)
    material = _material_stripes(arr, pale)
    if material is not None:  # read from the stripes' pattern, not their colours, which blur blends
        body, (a, b) = material
        box, pixels = _bbox(body), int(body.sum())
        a_found = FoundEntity(a, classify_shape(body.astype(np.float32)), None, box, pixels)
        reading.entities = [a_found, FoundEntity(b, None, None, box, pixels)]
        reading.relation, reading.entity_a, reading.entity_b = "made_of", a_found, reading.entities[1]
        return reading
    masks, cover, bright, tint = {}, {}, {}, {}
    for i, (c, rgb) in enumerate(COLOURS.items()):
        is_bright, is_dark = idx == 3 + i, idx == 3 + len(COLOURS) + i
        tint[c] = is_bright | is_dark  # every pixel of this hue, however washed out: a blurred outline's too
        cov = np.where(is_bright, np.minimum(1.0, chroma / (max(rgb) - min(rgb))), 0.0) + is_dark
        m = cov >= 0.5
        if m.sum() >= MIN_ENTITY_PIXELS and (is_bright & m).sum() >= MIN_ENTITY_PIXELS // 2:
            masks[c], cover[c], bright[c] = m, cov, is_bright & m
    colours = sorted(masks, key=lambda c: -masks[c].sum())[:2]
    silhouette = {}  # each colour's filled outline, as coverage: what its shape is read from
    for c in colours:
        solid = ndimage.binary_fill_holes(ndimage.binary_closing(masks[c], iterations=1) | masks[c])
        silhouette[c] = np.where(solid & ~masks[c], 1.0, cover[c])
    # Containment: one colour lies within the other's filled silhouette.
    container = None
    for outer, inner in ((colours[0], colours[1]), (colours[1], colours[0])) if len(colours) == 2 else ():
        enclosed, room = _enclosed(masks[outer] | tint[outer], masks[inner])
        if enclosed:
            container = outer, inner, room
            # The container's silhouette is the region its outline encloses, even where blur opened the outline.
            filled = ndimage.binary_erosion(room, np.ones((3, 3), bool)) | masks[outer]
            silhouette[outer] = np.where(filled & ~masks[outer], 1.0, cover[outer])
            break
    # Geometry comes from the bright body: a nose or string blended into the edge reads as a dark shade.
    found = {
        c: FoundEntity(c, classify_shape(silhouette[c]), _pattern(idx, c, masks[c]), _geometry_bbox(masks[c], bright[c]), int(masks[c].sum()))
        for c in colours
    }
    reading.entities = list(found.values())
    if len(colours) < 2:
        return reading
    x, y = colours
    mx, my = masks[x], masks[y]
    if container is not None:
        outer, inner, room = container
        # A hollow container leaves background between its wall and its content; a painted surface does not.
        hollow = ndimage.binary_erosion(room, iterations=3) & ~ndimage.binary_dilation(masks[inner], iterations=1)
        reading.relation = "inside" if (pale & hollow).sum() > 0.25 * max(1, hollow.sum()) else "painted_on"
        reading.entity_a, reading.entity_b = found[inner], found[outer]
        return reading
    union = ndimage.binary_fill_holes(ndimage.binary_closing(mx | my, iterations=1) | mx | my)
    bx, by = found[x].bbox, found[y].bbox
    iy = max(0, min(bx[2], by[2]) - max(bx[0], by[0]) + 1)
    ix = max(0, min(bx[3], by[3]) - max(bx[1], by[1]) + 1)
    small = min((bx[2] - bx[0] + 1) * (bx[3] - bx[1] + 1), (by[2] - by[0] + 1) * (by[3] - by[1] + 1))
    if iy * ix > 0.6 * small:  # two colours in one silhouette: B's ribbon round A, or A made of B's material
        ribbon = [c for c, o in ((x, y), (y, x)) if _crosses(masks[c], tint[o], union)]
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
        # Touching: no background between them straight below A (blur moves edges, never opens a gap).
        ax = int(round(cx[top]))
        touching = _gap_along(pale, range(ax - 1, ax + 2), int(cy[top]), int(cy[bottom]) + 1, vertical=True) <= 1
        if gap >= 3 and string >= 0.6 * (gap - 2):  # a dark line runs through the gap
            reading.relation, reading.entity_a, reading.entity_b = "hanging_from", found[bottom], found[top]
        elif touching:
            cart = _ink(dark, u[2] + 1, u[2] + 4, int(cx[bottom]) - 5, int(cx[bottom]) + 6)  # wheels under B
            reading.relation = "rides" if cart >= 4.0 else "on_top_of"
            reading.entity_a, reading.entity_b = found[top], found[bottom]
        else:
            reading.relation, reading.entity_a, reading.entity_b = "above", found[top], found[bottom]
        return reading
    left, right = (x, y) if cx[x] < cx[y] else (y, x)
    l, r = found[left].bbox, found[right].bbox

    # Noses and arms are grey however blurred (an entity's dark pattern is not); a patterned background is neither.
    grey_ink = np.where((chroma < 60) & (idx != _NAMES.index("mark")), np.clip((215.0 - arr.mean(-1)) / 175.0, 0, 1), 0.0)

    def facing(bb, outward_left: bool) -> int:  # +1 points out, -1 points in, 0 no nose
        mid = (bb[0] + bb[2]) // 2
        lo = _ink(grey_ink, mid - 3, mid + 3, bb[1] - 4, bb[1] - 1)  # blur can pull a pointed edge in by a pixel
        hi = _ink(grey_ink, mid - 3, mid + 3, bb[3] + 1, bb[3] + 4)
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
    rows = range(max(l[0], r[0]), min(l[2], r[2]) + 1)
    if _gap_along(pale, rows, int(cx[left]), int(cx[right]) + 1, vertical=False) <= 3:
        # touching, with dark arms round them above and below where they meet
        jx = (l[3] + r[1]) // 2
        top, bot = min(l[0], r[0]), max(l[2], r[2])
        if _ink(grey_ink, top - 5, mid - 2, jx - 3, jx + 3) >= 1.5 and _ink(grey_ink, mid + 2, bot + 5, jx - 3, jx + 3) >= 1.5:
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


def shows_appearance(image, appearance: dict, reading: Reading | None = None) -> bool:
    """Does the image show ``{"target": "background"|"entity_a"|"entity_b"|"any", "pattern": ...}``? ``reading``: the
    image's :func:`read_scene` when it was already read (``score(...).reading``), so it is not read twice."""
    reading = reading or read_scene(image)
    if appearance["target"] == "background":
        return reading.background == appearance["pattern"]
    return any(e.pattern == appearance["pattern"] for e in reading.entities)
