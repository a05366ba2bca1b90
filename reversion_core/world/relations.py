"""The world's relations: each a phrase, a one-line description and a canonical layout with bounded jitter.

Layouts are canonical on purpose: a small text-to-image model learns "where" only when each relation always
looks the same up to a pixel or two (free placement stayed at chance in our base-model trials).
Coordinates are in units of the 32-pixel canvas; the renderer scales them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    name: str
    phrase: str  # what stands in place of <R> in a full caption
    description: str
    kind: str  # directional, containment, contact, orientation, surface, material, suspension, interaction, covering
    symmetric: bool = False  # the scorer accepts A and B in either order


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("above", "above", "A floats above B with a clear gap between them; A on top, B below.", "directional"),
        Relation("inside", "is inside", "A sits inside B, which is drawn as a hollow outline around it.", "containment"),
        Relation("on_top_of", "rests on top of", "A rests on B's top edge, touching it; B is larger and below.", "contact"),
        Relation(
            "back_to_back", "sits back to back with",
            "A and B stand side by side, each pointing away from the other.", "orientation", symmetric=True,
        ),
        Relation(
            "face_to_face", "faces", "A and B stand side by side, pointing towards each other.", "orientation",
            symmetric=True,
        ),
        Relation("painted_on", "is painted on", "A is drawn as a small motif on the solid surface of B.", "surface"),
        Relation("made_of", "is made of", "A's silhouette is made of B's material: A's colour banded with B's.", "material"),
        Relation("hanging_from", "hangs from", "A hangs below B on a dark string; B on top, A below.", "suspension"),
        # Appended after the first eight: held-out pairs and benchmark seeds follow a relation's index.
        Relation(
            "shakes_hands_with", "shakes hands with",
            "A and B stand apart side by side, joined by a dark arm with a clasp in the middle.", "interaction",
            symmetric=True,
        ),
        Relation(
            "hugs", "hugs", "A and B stand side by side touching, dark arms around them above and below where they meet.",
            "interaction", symmetric=True,
        ),
        Relation("wrapped_in", "is wrapped in", "A is tied up like a parcel in a cross of B's ribbon.", "covering"),
        Relation("rides", "rides", "A sits on top of B, and B stands on a dark cart with two wheels.", "interaction"),
    )
}
RELATION_NAMES: tuple[str, ...] = tuple(RELATIONS)


def get_relation(name: str) -> Relation:
    """Look a relation up by name (``"above"``) or phrase (``"is inside"``)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in RELATIONS:
        return RELATIONS[key]
    for r in RELATIONS.values():
        if r.phrase == name.strip().lower():
            return r
    raise ValueError(f"Unknown world relation {name!r}; the world has {', '.join(RELATION_NAMES)}.")
