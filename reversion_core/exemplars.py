"""Exemplar sets: a few images sharing one relation, each with caption templates containing the placeholder.

On disk this is the ReVersion benchmark layout: a folder of images (jpg, png, webp) and ``text.json`` mapping each
image file name to a list of captions, e.g. ``{"1.jpg": ["cat {} box", "a grey cat {} a cardboard box"]}``. The
official placeholder ``{}`` and a literal ``<R>`` are both accepted and normalised to the run's placeholder token.
The synthetic world may add ``relation.json`` and ``templates.json`` beside ``text.json``; both are exposed.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, UnidentifiedImageError

from .errors import ReVersionError, quoted
from .settings import DEFAULT_PLACEHOLDER

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGE_SIDE = 1024  # larger images are shrunk on load; training resizes to a few hundred pixels anyway
MAX_UPLOAD_IMAGES = 100  # exemplar images one upload may hold (the paper uses 2-10)
CAPTION_SEPARATOR = "|"  # between several captions of one image on one line of the caption box
_PLACEHOLDERS = ("{}", DEFAULT_PLACEHOLDER)


@dataclass
class Exemplar:
    """One exemplar image (RGB) and its caption templates, each containing the placeholder token."""

    name: str
    image: Image.Image
    captions: list[str]


@dataclass
class ExemplarSet:
    """The exemplars of one relation, plus the optional world metadata found beside ``text.json``."""

    exemplars: list[Exemplar]
    placeholder_token: str = DEFAULT_PLACEHOLDER
    folder: Path | None = None
    relation: dict[str, Any] | None = None  # relation.json: {"name", "phrase", "description", "nuisance"}
    templates: list[str] | None = None  # templates.json: inference templates "E_A <R> E_B"
    captions_by_image: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.captions_by_image = {e.name: list(e.captions) for e in self.exemplars}

    def __len__(self) -> int:
        return len(self.exemplars)

    @property
    def name(self) -> str:
        """A default relation name: the world's relation name, else the folder name."""
        if self.relation and self.relation.get("name"):
            return str(self.relation["name"])
        return self.folder.name if self.folder else "relation"


def normalise_caption(caption: str, placeholder_token: str = DEFAULT_PLACEHOLDER, image_name: str = "?") -> str:
    """Replace ``{}`` or ``<R>`` with ``placeholder_token``; a caption with no placeholder is refused."""
    if not isinstance(caption, str):
        raise ReVersionError(f"A caption of image {image_name} is not text: {quoted(caption)}.")
    text = " ".join(caption.split())
    if not any(p in text for p in (*_PLACEHOLDERS, placeholder_token)):
        raise ReVersionError(
            f"Caption {quoted(caption)} of image {image_name} has no placeholder; write {{}} or {DEFAULT_PLACEHOLDER} where the relation goes."
        )
    for p in _PLACEHOLDERS:
        text = text.replace(p, placeholder_token)
    return text


def open_image(source: str | os.PathLike | Image.Image, name: str | None = None, max_side: int = MAX_IMAGE_SIDE) -> Image.Image:
    """Open an image as RGB, shrinking it so its longer side is at most ``max_side``; unreadable files are refused."""
    if isinstance(source, Image.Image):
        image = source
    else:
        name = name or Path(source).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source)
                image.draft("RGB", (max_side, max_side))  # JPEGs decode straight at a reduced scale
                image.load()
        except Image.DecompressionBombError:
            raise ReVersionError(f"Image {name} is too large to decode safely; shrink it below 100 megapixels.") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise ReVersionError(f"File {name} is not a readable image (jpg, png or webp).") from None
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        detail = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise ReVersionError(f"{what} in {path.parent} is not valid JSON ({detail}).") from None


def load_exemplars(folder: str | os.PathLike, placeholder_token: str = DEFAULT_PLACEHOLDER, max_side: int = MAX_IMAGE_SIDE) -> ExemplarSet:
    """Load an exemplar folder in the ReVersion benchmark layout (images + ``text.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReVersionError(f"Exemplar folder {folder} does not exist.")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    text_json = folder / "text.json"
    if not images:
        raise ReVersionError(f"Exemplar folder {folder} holds no images (jpg, png or webp).")
    if not text_json.is_file():
        raise ReVersionError(f"Exemplar folder {folder} has no text.json mapping each image to its captions.")
    captions = _read_json(text_json, "text.json")
    if not isinstance(captions, dict):
        raise ReVersionError(f"text.json in {folder} must map image file names to lists of captions.")
    for listed in captions:
        if not (folder / listed).is_file():
            raise ReVersionError(f"text.json in {folder} lists {listed}, which is not in the folder.")
    exemplars = []
    for path in images:
        entry = captions.get(path.name)
        if isinstance(entry, str):
            entry = [entry]
        if not entry:
            raise ReVersionError(f"Image {path.name} has no captions in text.json.")
        if not isinstance(entry, list):
            raise ReVersionError(f"text.json in {folder} must map {path.name} to a list of captions, not {entry!r}.")
        exemplars.append(
            Exemplar(path.name, open_image(path, max_side=max_side), [normalise_caption(c, placeholder_token, path.name) for c in entry])
        )
    relation = _read_json(folder / "relation.json", "relation.json") if (folder / "relation.json").is_file() else None
    if relation is not None and not isinstance(relation, dict):
        raise ReVersionError(f"relation.json in {folder} must be an object such as {{\"name\": \"above\"}}.")
    templates = None
    if (folder / "templates.json").is_file():
        listed = _read_json(folder / "templates.json", "templates.json")
        if not isinstance(listed, list):
            raise ReVersionError(f"templates.json in {folder} must be a list of templates such as \"E_A <R> E_B\".")
        templates = [normalise_caption(t, placeholder_token, "templates.json") for t in listed]
    return ExemplarSet(exemplars, placeholder_token, folder, relation, templates)


def exemplars_from_uploads(
    uploads: Sequence[tuple[Image.Image | str | os.PathLike, Sequence[str] | str]],
    placeholder_token: str = DEFAULT_PLACEHOLDER,
    max_side: int = MAX_IMAGE_SIDE,
) -> ExemplarSet:
    """Build an exemplar set from in-memory uploads: ``[(PIL image or path, [captions]), ...]`` (the app's Train tab)."""
    if not uploads:
        raise ReVersionError("No exemplar images were given; upload at least one image with its captions.")
    exemplars = []
    for i, (source, captions) in enumerate(uploads, start=1):
        name = Path(source).name if isinstance(source, (str, os.PathLike)) else f"image {i}"
        if isinstance(captions, str):
            captions = [line for line in captions.splitlines() if line.strip()]
        if not captions:
            raise ReVersionError(f"Image {name} has no captions.")
        image = open_image(source, name, max_side)
        exemplars.append(Exemplar(name, image, [normalise_caption(c, placeholder_token, name) for c in captions]))
    return ExemplarSet(exemplars, placeholder_token)


def exemplars_from_files(files: Sequence[str | os.PathLike] | None, captions_text: str | None) -> ExemplarSet:
    """Exemplars from uploaded files and a caption box (the app's Train tab).

    Captions come from an uploaded ``text.json`` (official layout), else from the box: one line per image in upload
    order, or ``file name: caption`` lines; several captions of one image are separated by ``|``.
    """
    files = [Path(f) for f in files or []]
    jsons = [f for f in files if f.suffix.lower() == ".json"]
    images = [f for f in files if f.suffix.lower() != ".json"]
    if not images:
        raise ReVersionError("No exemplar images were given; upload at least one image with its captions.")
    if len(images) > MAX_UPLOAD_IMAGES:
        raise ReVersionError(f"{len(images)} images were given; a relation is learned from a few, at most {MAX_UPLOAD_IMAGES}.")
    if jsons:
        try:
            mapping = json.loads(jsons[0].read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ReVersionError(f"{jsons[0].name} is not valid JSON; it must map image file names to lists of captions.") from None
        if not isinstance(mapping, dict):
            raise ReVersionError(f"{jsons[0].name} must map image file names to lists of captions.")
        by_name = {str(k): [v] if isinstance(v, str) else list(v or []) for k, v in mapping.items()}
    else:
        by_name = _captions_from_box(images, captions_text)
    uploads = []
    for f in images:
        captions = by_name.get(f.name)
        if not captions:
            raise ReVersionError(f"Image {f.name} has no captions; give every image at least one caption with <R>.")
        uploads.append((f, captions))
    return exemplars_from_uploads(uploads)


def _captions_from_box(images: list[Path], text: str | None) -> dict[str, list[str]]:
    """The caption box read as ``file name: captions`` lines when every line names an image, else one line per image."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    names = {f.name for f in images}
    named = [line.partition(":") for line in lines]
    if lines and all(n.strip() in names and sep for n, sep, _ in named):
        return {n.strip(): _split_captions(rest) for n, _, rest in named}
    if not lines:
        raise ReVersionError("The images have no captions; write one line per image, such as 'cat <R> box'.")
    if len(lines) != len(images):
        raise ReVersionError(f"There are {len(images)} images but {len(lines)} caption lines; write one line per image, in upload order.")
    return {f.name: _split_captions(line) for f, line in zip(images, lines)}


def _split_captions(line: str) -> list[str]:
    return [c.strip() for c in line.split(CAPTION_SEPARATOR) if c.strip()]
