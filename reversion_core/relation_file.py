"""Relation prompts on disk.

A relation is a folder ``relations/<name>/`` holding
- ``learned_embeds.safetensors``: ``{token: tensor[dim]}``, the layout diffusers' ``load_textual_inversion`` reads;
- ``card.json``: name, token, base model id, embedding dim, settings, exemplar captions, final losses, steps, created;
- ``preview.png`` (optional).
Folders are written whole into a temporary folder and renamed into place, so a reader never sees half a relation.
Foreign formats import too: a ``.safetensors`` or a ``learned_embeds.bin`` ``{token: tensor}`` as saved by the
official ReVersion code and diffusers' textual-inversion example, read with ``torch.load(weights_only=True)`` only.
Slightly over 400 lines because writing, listing and crash recovery (the two-rename swap and its repair) share the
folder layout and must change together.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection

import torch
from PIL import Image

from .errors import ReVersionError, quoted

EMBEDS_FILE = "learned_embeds.safetensors"
CARD_FILE = "card.json"
PREVIEW_FILE = "preview.png"
CARD_FORMAT = "reversion-relation/1"
MAX_NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}")
# Temporary and swapped-out folders of save_relation: ".NAME.tmp-PID-xxxx" and ".NAME.old-PID".
_SWAP = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-.*)?")
MAX_PREVIEW_BYTES = 8 * 2**20  # a preview is a strip of a few small images; anything bigger is not ours
MAX_PREVIEW_PIXELS = 4096 * 1024
log = logging.getLogger("reversion_core")


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

    def read_preview(self) -> Image.Image | None:
        """The preview image: the one in memory, else the folder's ``preview.png`` read now, bounded in bytes and pixels.

        A preview that is too large or unreadable is skipped with a logged sentence; the relation stays usable.
        """
        if self.preview is not None or self.path is None or not (self.path / PREVIEW_FILE).is_file():
            return self.preview
        self.preview = read_preview_file(self.path / PREVIEW_FILE)
        return self.preview

    def check_dim(self, expected: int) -> None:
        """Refuse a vector whose size does not match the text encoder's embedding size."""
        if self.dim != expected:
            raise ReVersionError(
                f"Relation {self.name!r} has a vector of size {self.dim} but the base model's text encoder uses size {expected}."
            )


def read_preview_file(path: Path) -> Image.Image | None:
    """An RGB image from ``path`` if it is small enough (bytes, then pixels before decoding) and readable, else None."""
    try:
        if path.stat().st_size > MAX_PREVIEW_BYTES:
            log.warning("Preview %s is skipped: the file is larger than %d MB.", path, MAX_PREVIEW_BYTES // 2**20)
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PREVIEW_PIXELS:
                    log.warning("Preview %s is skipped: %dx%d pixels is too large for a preview.", path, image.width, image.height)
                    return None
                return image.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        log.warning("Preview %s is skipped: it is too large to decode safely.", path)
    except (OSError, ValueError, SyntaxError):
        log.warning("Preview %s is skipped: it is not a readable image.", path)
        return None


def check_name(name: str) -> str:
    """Return ``name`` without surrounding spaces if it is a safe folder name, else refuse it.

    Surrounding spaces are dropped (a typo in a text box); a name ending in '.' is refused because Windows drops
    trailing dots, so ``a.`` and ``a`` would be the same folder.
    """
    if isinstance(name, str):
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH:
            raise ReVersionError(f"A relation name has at most {MAX_NAME_LENGTH} characters; {quoted(name)} is too long.")
    if not isinstance(name, str) or ".." in name or not _NAME.fullmatch(name):
        raise ReVersionError(
            f"Relation name {quoted(name)} is not allowed; use letters, digits, '-', '_' or '.' (no path separators or '..')."
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


def is_safe_token(token: Any, base_vocab: Collection[str], taken: Collection[str] = ()) -> bool:
    """Whether ``token`` can be added to a shared tokenizer without changing any other prompt.

    Safe: one ``<...>`` word without whitespace (so it never matches inside ordinary words), not a word or special
    token of the base vocabulary (``base_vocab``: see :func:`base_vocabulary`) and not in ``taken`` (other relations).
    """
    return (
        isinstance(token, str) and 3 <= len(token) <= 100 and token.startswith("<") and token.endswith(">")
        and not any(c.isspace() for c in token) and token not in base_vocab and f"{token.lower()}</w>" not in base_vocab
        and token.lower() not in base_vocab and token not in taken
    )


def base_vocabulary(tokenizer) -> set[str]:
    """The tokens a relation must never take: the base model's words and its special tokens (``<|endoftext|>``...)."""
    added = set(tokenizer.get_added_vocab())
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    return (set(tokenizer.get_vocab()) - added) | special


def choose_token(token: Any, name: str, base_vocab: Collection[str], taken: Collection[str] = ()) -> str:
    """``token`` if :func:`is_safe_token`, else ``<name>`` (spaces as ``_``), counting on (``<name_2>``) while taken."""
    if is_safe_token(token, base_vocab, taken):
        return token
    stem = re.sub(r"\s+", "_", str(name).strip())[:90] or "relation"
    candidate, n = f"<{stem}>", 1
    while not is_safe_token(candidate, base_vocab, taken):
        n += 1
        candidate = f"<{stem}_{n}>"
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=relations_dir))
    try:
        vector = relation.vector.detach().to("cpu", torch.float32).reshape(-1).contiguous()
        save_file({relation.token: vector}, str(tmp / EMBEDS_FILE), metadata={"format": CARD_FORMAT})
        if relation.preview is not None:
            relation.preview.save(tmp / PREVIEW_FILE)
        # The card last: a temporary folder with a readable card is complete (see recover_relations).
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
        old = None
        if target.exists():
            old = relations_dir / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
        # A crash here leaves no NAME, only .NAME.old-PID: recover_relations puts it back.
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    relation.card, relation.path = card, target
    return target


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be between the two renames right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _complete_folder(folder: Path, name: str) -> bool:
    """Whether a temporary folder of save_relation was fully written (its card, written last, reads back)."""
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(card, dict) and card.get("name") == name and (folder / EMBEDS_FILE).is_file()


def recover_relations(relations_dir: str | os.PathLike, name: str | None = None) -> list[str]:
    """Finish or undo saves that a crash interrupted (of ``name`` only, when given); returns what was done.

    A relation whose folder is missing gets back its swapped-out ``.NAME.old-PID`` folder, else a complete
    ``.NAME.tmp-PID-*`` folder; leftovers of a relation that is in place are deleted. Folders of a process that
    is still running are left alone (it may be between its two renames). Problems are logged, never raised.
    """
    relations_dir = Path(relations_dir)
    done: list[str] = []
    try:
        entries = sorted(relations_dir.iterdir(), key=lambda p: (".tmp-" in p.name, p.name))  # .old first
    except OSError:
        return done
    for entry in entries:
        match = _SWAP.fullmatch(entry.name)
        if not match or not entry.is_dir() or (name is not None and match["name"] != name) or _pid_alive(int(match["pid"])):
            continue
        target = relations_dir / match["name"]
        try:
            if not target.exists() and _NAME.fullmatch(match["name"]) and (
                (match["kind"] == "old" and (entry / EMBEDS_FILE).is_file()) or _complete_folder(entry, match["name"])
            ):
                os.replace(entry, target)
                done.append(f"Relation {match['name']!r} was restored from an interrupted save.")
            else:
                shutil.rmtree(entry)
                done.append(f"Removed {entry.name}, left over from an interrupted save.")
        except OSError as exc:
            log.warning("Could not clean up %s after an interrupted save (%s).", entry, exc)
            continue
        log.warning(done[-1])
    return done


def _tensor_from_dict(state: Any, source: Path, token: str | None) -> tuple[str, torch.Tensor]:
    """Pick the single embedding out of the dict layouts people use and return (token, vector[dim])."""
    if not isinstance(state, dict) or not state:
        raise ReVersionError(f"{source.name} is not a relation file: expected a {{token: tensor}} dictionary.")
    if "string_to_param" in state:  # Automatic1111 .pt layout: {"string_to_param": {"*": tensor[n, dim]}, "name", "step", ...}
        params = state["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise ReVersionError(f"{source.name} is an Automatic1111 embedding without exactly one entry in string_to_param.")
        state = {token or f"<{source.stem}>": next(iter(params.values()))}
    if "emb_params" in state:
        state = {token or f"<{source.stem}>": state["emb_params"]}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        raise ReVersionError(f"{source.name} is not a relation file: expected exactly one token with one tensor, found {len(tensors)}.")
    key, vector = next(iter(tensors.items()))
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1 or vector.numel() == 0:
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


# Card fields other code reads, and the types they must have.
_CARD_TYPES = {"base_model": str, "embedding_dim": int, "steps": int, "status": str, "created_at": str, "relation": dict}


def _read_card(folder: Path) -> dict[str, Any]:
    """The folder's card as a dict (empty when there is none); a card of the wrong shape is refused in one sentence."""
    if not (folder / CARD_FILE).is_file():
        return {}
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ReVersionError(f"The card of relation {folder.name} is not valid JSON.") from None
    if not isinstance(card, dict):
        raise ReVersionError(f"The card of relation {folder.name} is damaged: it is not a JSON object.")
    for key, kind in _CARD_TYPES.items():
        value = card.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ReVersionError(f"The card of relation {folder.name} is damaged: its {key} is not {'a number' if kind is int else 'an object' if kind is dict else 'text'}.")
    return card


def load_relation(source: str | os.PathLike, relations_dir: str | os.PathLike | None = "relations", token: str | None = None) -> RelationPrompt:
    """Load a relation from its folder, a relation name under ``relations_dir``, or a foreign ``.safetensors``/``.bin`` file."""
    path = Path(source)
    if not path.exists() and relations_dir is not None and not any(sep in str(source) for sep in ("/", "\\")):
        source = check_name(str(source))
        candidate = Path(relations_dir) / source
        if not candidate.is_dir():
            recover_relations(relations_dir, source)
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
        card = _read_card(path)
        if card.get("embedding_dim") not in (None, vector.numel()):
            raise ReVersionError(f"Relation {path.name} is damaged: its card says size {card['embedding_dim']} but its vector has size {vector.numel()}.")
        name = card.get("name") if isinstance(card.get("name"), str) and card.get("name") else path.name
        card_token = card.get("token") if isinstance(card.get("token"), str) and card.get("token") else key
        return RelationPrompt(name, token or card_token, vector, card, None, path)
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
    recover_relations(relations_dir)
    found = []
    for folder in sorted(relations_dir.iterdir()):
        if folder.name.startswith(".") or not (folder / EMBEDS_FILE).is_file():
            continue
        try:
            relation = load_relation(folder, None)
        except ReVersionError as exc:
            log.warning("Relation folder %s is skipped: %s", folder, exc)  # a damaged folder must not hide the others
            continue
        except Exception as exc:  # unreadable in a way not foreseen: still only this folder is lost
            log.warning("Relation folder %s is skipped: it could not be read (%s).", folder, type(exc).__name__)
            continue
        if base_model_id is None or same_base_model(relation.base_model_id, base_model_id):
            found.append(relation)
    return found


def clean_leftovers(relations_dir: str | os.PathLike, name: str, before: float) -> None:
    """Recover an interrupted save of ``name``, then delete its leftover ``.NAME.*`` folders older than ``before``
    (a run's start): temporary folders of an older save whose process has ended."""
    import glob

    relations_dir = Path(relations_dir)
    recover_relations(relations_dir, name)
    try:
        entries = list(relations_dir.glob(f".{glob.escape(name)}.*"))
    except OSError:
        return
    for entry in entries:
        match = _SWAP.fullmatch(entry.name)
        ours = match["name"] == name if match else re.fullmatch(r"[a-z0-9_]{8}", entry.name[len(name) + 2 :]) is not None
        try:
            if ours and entry.is_dir() and entry.stat().st_mtime < before and not (match and _pid_alive(int(match["pid"]))):
                shutil.rmtree(entry)
        except OSError as exc:
            log.warning("Could not remove %s (%s).", entry, exc)
