"""Entities of the relation world: a shape, a colour and an optional surface pattern."""
from __future__ import annotations

from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
# Surface patterns are appearance only: darker bands or dots of the entity's own colour.
PATTERNS: tuple[str, ...] = ("striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("plain", "dotted", "striped")

BACKGROUND_RGB = (245, 245, 245)
BACKGROUND_MARK_RGB = (185, 185, 185)  # dots or stripes of a patterned background
INK_RGB = (25, 25, 25)  # noses of pointed shapes and strings
DARK_FACTOR = 0.55  # a pattern's marks are the entity colour at this brightness


@dataclass(frozen=True)
class Entity:
    """One thing the world can draw, e.g. ``Entity("circle", "red")`` or a striped blue square."""

    shape: str
    colour: str
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; the world draws {', '.join(SHAPES)}.")
        if self.colour not in COLOURS:
            raise ValueError(f"Unknown colour {self.colour!r}; the world knows {', '.join(COLOURS)}.")
        if self.pattern is not None and self.pattern not in PATTERNS:
            raise ValueError(f"Unknown pattern {self.pattern!r}; the world knows {', '.join(PATTERNS)}.")

    @property
    def text(self) -> str:
        """The words a caption uses for it: ``"striped red circle"``."""
        return " ".join(w for w in (self.pattern, self.colour, self.shape) if w)

    def plain(self) -> "Entity":
        return Entity(self.shape, self.colour)


ALL_ENTITIES: tuple[Entity, ...] = tuple(Entity(s, c) for c in COLOURS for s in SHAPES)


def parse_entity(text: str) -> Entity:
    """Read ``"red circle"``, ``"a striped blue square"`` or ``"circle"`` (colour defaults to red is NOT done:
    a colour is required) into an :class:`Entity`; raise ``ValueError`` with one sentence otherwise."""
    words = [w for w in text.lower().replace(",", " ").split() if w not in ("a", "an", "the")]
    shape = [w for w in words if w in SHAPES]
    colour = [w for w in words if w in COLOURS]
    pattern = [w for w in words if w in PATTERNS]
    unknown = [w for w in words if w not in SHAPES and w not in COLOURS and w not in PATTERNS]
    if unknown or len(shape) != 1 or len(colour) != 1 or len(pattern) > 1:
        raise ValueError(
            f"{text!r} is not an entity of the world: write a colour and a shape, e.g. 'red circle' "
            f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; optional pattern: {', '.join(PATTERNS)})."
        )
    return Entity(shape[0], colour[0], pattern[0] if pattern else None)
