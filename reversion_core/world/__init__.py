"""The synthetic relation world: entities, relations with canonical layouts, a renderer, captions at three levels
of detail, an exact scorer, a streaming dataset and the benchmark's exemplar sets."""
from .captions import caption, full_caption, template, world_vocabulary
from .entities import ALL_ENTITIES, BACKGROUNDS, COLOURS, PATTERNS, SHAPES, Entity, parse_entity
from .relations import RELATION_NAMES, RELATIONS, Relation, get_relation
from .render import SIZE, Scene, render, render_image
from .scorer import Reading, Score, read_scene, score, shows_appearance

__all__ = [
    "ALL_ENTITIES", "BACKGROUNDS", "COLOURS", "PATTERNS", "SHAPES", "RELATION_NAMES", "RELATIONS", "SIZE",
    "Entity", "Reading", "Relation", "Scene", "Score", "caption", "full_caption", "get_relation", "parse_entity",
    "read_scene", "render", "render_image", "score", "shows_appearance", "template", "world_vocabulary",
]
