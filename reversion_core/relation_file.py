"""Relation prompts on disk.

A relation is a folder ``relations/<name>/`` holding
- ``learned_embeds.safetensors``: ``{token: tensor[dim]}``, the layout diffusers' ``load_textual_inversion`` reads;
- ``card.json``: name, token, base model id, embedding dim, settings, exemplar captions, final losses, steps, created;
- ``preview.png`` (optional).
Folders are written whole into a temporary folder and renamed into place, so a reader never sees half a relation.
Foreign formats import too: a ``.safetensors`` or a ``learned_embeds.bin`` ``{token: tensor}`` as saved by the
official ReVersion code and diffusers' textual-inversion example, read with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .errors import ReVersionError

EMBEDS_FILE = "learned_embeds.safetensors"
CARD_FILE = "card.json"
PREVIEW_FILE = "preview.png"
CARD_FORMAT = "reversion-relation/1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}")


@dataclass
class RelationPrompt:
    """One learned relation: its token, its vector (fp32, CPU) and its card."""

    name: str
    token: str
    vector: torch.Tensor
    card: dict[str, Any] = field(default_factory=dict)
    preview: Image.Image | None = None
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.vector.numel())

    @property
    def base_model_id(self) -> str | None:
        return self.card.get("base_model")

    def check_dim(self, expected: int) -> None:
        """Refuse a vector whose size does not match the text encoder's embedding size."""
        if self.dim != expected:
            raise ReVersionError(
                f"Relation {self.name!r} has a vector of size {self.dim} but the base model's text encoder uses size {expected}."
            )


def check_name(name: str) -> str:
    """Return ``name`` without surrounding spaces if it is a safe folder name, else refuse it.

    Surrounding spaces are dropped (a typo in a text box); a name ending in '.' is refused because Windows drops
    trailing dots, so ``a.`` and ``a`` would be the same folder.
    """
    if isinstance(name, str):
        name = name.strip()
    if not isinstance(name, str) or ".." in name or not _NAME.fullmatch(name):
        raise ReVersionError(
            f"Relation name {name!r} is not allowed; use letters, digits, '-', '_' or '.' (no path separators or '..')."
        )
    if name.endswith("."):
        raise ReVersionError(f"Relation name {name!r} is not allowed: it must not end with '.'.")
    return name


def free_relation_name(relations_dir: str | os.PathLike, name: str) -> str:
    """``name`` if no relation folder has it yet, else the first free ``name_2``, ``name_3``, ...

    A name that already ends in ``_N`` counts on from N, so a taken ``above_2`` proposes ``above_3``.
    """
    name = check_name(name)
    relations_dir = Path(relations_dir)
    if not (relations_dir / name).exists():
        return name
    match = re.fullmatch(r"(.+)_(\d+)", name)
    base, n = (match.group(1), int(match.group(2))) if match and int(match.group(2)) >= 2 else (name, 1)
    while True:
        n += 1
        suffix = f"_{n}"
        candidate = base[: 100 - len(suffix)].rstrip(" .") + suffix  # stay within the 100-character name limit
        if not (relations_dir / candidate).exists():
            return candidate


def save_relation(relation: RelationPrompt, relations_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``relations_dir/<name>/`` atomically and return its path; an existing relation is kept unless ``overwrite``."""
    from safetensors.torch import save_file

    name = check_name(relation.name)
    relations_dir = Path(relations_dir)
    target = relations_dir / name
    if target.exists() and not overwrite:
        raise ReVersionError(f"{target} already holds a relation; choose another name or allow overwriting.")
    relations_dir.mkdir(parents=True, exist_ok=True)
    card = {
        "format": CARD_FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **relation.card,
        "name": name,
        "token": relation.token,
        "embedding_dim": relation.dim,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=relations_dir))
    try:
        vector = relation.vector.detach().to("cpu", torch.float32).reshape(-1).contiguous()
        save_file({relation.token: vector}, str(tmp / EMBEDS_FILE), metadata={"format": CARD_FORMAT})
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
        if relation.preview is not None:
            relation.preview.save(tmp / PREVIEW_FILE)
        old = None
        if target.exists():
            old = relations_dir / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    relation.card, relation.path = card, target
    return target


def _tensor_from_dict(state: Any, source: Path, token: str | None) -> tuple[str, torch.Tensor]:
    """Pick the single embedding out of the dict layouts people use and return (token, vector[dim])."""
    if not isinstance(state, dict) or not state:
        raise ReVersionError(f"{source.name} is not a relation file: expected a {{token: tensor}} dictionary.")
    if "string_to_param" in state:  # Automatic1111 .pt layout
        state = dict(state["string_to_param"])
        state = {token or f"<{source.stem}>": next(iter(state.values()))} if state else {}
    if "emb_params" in state:
        state = {token or f"<{source.stem}>": state["emb_params"]}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        raise ReVersionError(f"{source.name} is not a relation file: expected exactly one token with one tensor, found {len(tensors)}.")
    key, vector = next(iter(tensors.items()))
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1:
        raise ReVersionError(f"{source.name} holds a tensor of shape {tuple(vector.shape)}; a relation prompt is one vector.")
    if not torch.is_floating_point(vector) or not torch.isfinite(vector).all():
        raise ReVersionError(f"{source.name} does not hold a finite floating-point vector.")
    return str(key), vector.detach().to(torch.float32).clone()


def read_embedding_file(path: str | os.PathLike, token: str | None = None) -> tuple[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``.bin``/``.pt`` ``{token: tensor}`` file without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ReVersionError(f"Relation file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            raise ReVersionError(f"{path.name} is not a readable .safetensors file.") from None
    elif suffix in (".bin", ".pt", ".pth"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ReVersionError(
                f"{path.name} contains pickled code, which is never executed; it must hold only a {{token: tensor}} dictionary."
            ) from None
        except Exception:  # truncated zip, not a torch file at all, ...
            raise ReVersionError(f"{path.name} is not a readable torch file holding a {{token: tensor}} dictionary.") from None
    else:
        raise ReVersionError(f"{path.name} is not a relation file; use a relation folder, .safetensors or .bin.")
    key, vector = _tensor_from_dict(state, path, token)
    return token or key, vector


def load_relation(source: str | os.PathLike, relations_dir: str | os.PathLike | None = "relations", token: str | None = None) -> RelationPrompt:
    """Load a relation from its folder, a relation name under ``relations_dir``, or a foreign ``.safetensors``/``.bin`` file."""
    path = Path(source)
    if not path.exists() and relations_dir is not None and not any(sep in str(source) for sep in ("/", "\\")):
        source = check_name(str(source))
        candidate = Path(relations_dir) / source
        if not candidate.is_dir():
            known = ", ".join(r.name for r in list_relations(relations_dir)) or "none"
            raise ReVersionError(f"No relation named {source!r} in {relations_dir} (known: {known}).")
        path = candidate
    if path.is_dir():
        if not (path / EMBEDS_FILE).is_file():
            bins = [p for p in (path / "learned_embeds.bin",) if p.is_file()]
            if not bins:
                raise ReVersionError(f"Folder {path} is not a relation: it has no {EMBEDS_FILE}.")
            key, vector = read_embedding_file(bins[0], token)
            return RelationPrompt(path.name, key, vector, {}, None, path)
        key, vector = read_embedding_file(path / EMBEDS_FILE, token)
        card = {}
        if (path / CARD_FILE).is_file():
            try:
                card = json.loads((path / CARD_FILE).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raise ReVersionError(f"The card of relation {path.name} is not valid JSON.") from None
        preview = None
        if (path / PREVIEW_FILE).is_file():
            try:
                preview = Image.open(path / PREVIEW_FILE).convert("RGB")
            except OSError:
                preview = None
        if card.get("embedding_dim") not in (None, vector.numel()):
            raise ReVersionError(f"Relation {path.name} is damaged: its card says size {card['embedding_dim']} but its vector has size {vector.numel()}.")
        return RelationPrompt(card.get("name", path.name), token or card.get("token", key), vector, card, preview, path)
    if path.is_file():
        key, vector = read_embedding_file(path, token)
        name = path.parent.name if path.stem == "learned_embeds" else path.stem
        return RelationPrompt(name, key, vector, {"imported_from": str(path)}, None, path)
    raise ReVersionError(f"Relation {str(source)!r} does not exist.")


def list_relations(relations_dir: str | os.PathLike = "relations", base_model_id: str | None = None) -> list[RelationPrompt]:
    """Every readable relation under ``relations_dir`` (sorted by name), optionally only those for one base model."""
    from .base_model import same_base_model

    relations_dir = Path(relations_dir)
    if not relations_dir.is_dir():
        return []
    found = []
    for folder in sorted(relations_dir.iterdir()):
        if folder.name.startswith(".") or not (folder / EMBEDS_FILE).is_file():
            continue
        try:
            relation = load_relation(folder, None)
        except ReVersionError:
            continue  # a damaged folder must not hide the others
        if base_model_id is None or same_base_model(relation.base_model_id, base_model_id):
            found.append(relation)
    return found
