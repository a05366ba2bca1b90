"""Relation folders in and out of the app: a zip of one relation for download, and uploaded files (a relation zip,
our folder's files, a lone ``.safetensors``, an official ``learned_embeds.bin``, an A1111 ``.pt``) imported into a
relations folder under a safe name and token.

Uploads are bounded before they are read: zip members are sized from their headers, then read in chunks that stop at
the limit, so neither a large member nor a header that lies about its size can fill memory or disk. Pickled code is
never executed (``relation_file.read_embedding_file`` loads with ``weights_only=True``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Collection, Sequence

from .errors import ReVersionError
from .relation_file import (
    CARD_FILE, EMBEDS_FILE, PREVIEW_FILE, RelationPrompt, check_name, choose_token, load_relation, save_relation,
)

# A vector is a few KB and a preview a few hundred; these bound what an upload can unpack.
MAX_IMPORT_FILE_BYTES = 8 * 2**20
MAX_IMPORT_TOTAL_BYTES = 16 * 2**20
_IMPORTED_FILES = (EMBEDS_FILE, CARD_FILE, PREVIEW_FILE, "learned_embeds.bin")
_VECTOR_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def export_relation_zip(folder: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A zip of the relation folder ``folder`` (members ``NAME/file``) written into ``out_dir``; returns its path."""
    folder = Path(folder)
    out = Path(out_dir) / f"{folder.name}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.iterdir()):
                if f.is_file():
                    z.write(f, f"{folder.name}/{f.name}")
        os.replace(tmp, out)  # a page downloading the previous zip never reads half a new one
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def stage_relation_files(files: list[Path], work: Path) -> Path:
    """Put uploaded files where ``load_relation`` reads them (unpacking a zip into ``work``); returns a folder or a
    single file. Every size limit is checked before the bytes are read."""
    zips = [f for f in files if f.suffix.lower() == ".zip"]
    too_big = (f"a relation file is at most {MAX_IMPORT_FILE_BYTES // 2**20} MB, a relation zip at most "
               f"{MAX_IMPORT_TOTAL_BYTES // 2**20} MB unpacked")
    if zips:
        try:
            with zipfile.ZipFile(zips[0]) as z:
                wanted = [i for i in z.infolist() if Path(i.filename).name in _IMPORTED_FILES and not i.is_dir()]
                for info in wanted:
                    if info.file_size > MAX_IMPORT_FILE_BYTES:
                        raise ReVersionError(f"{zips[0].name} holds {Path(info.filename).name} of {info.file_size / 2**20:.0f} MB; {too_big}.")
                if sum(i.file_size for i in wanted) > MAX_IMPORT_TOTAL_BYTES:
                    raise ReVersionError(f"{zips[0].name} unpacks to more than {MAX_IMPORT_TOTAL_BYTES // 2**20} MB; {too_big}.")
                total = 0
                for info in wanted:
                    leaf = Path(info.filename).name  # flatten: no member can land outside the work folder
                    written = 0
                    with z.open(info) as member, open(work / leaf, "wb") as out:
                        while chunk := member.read(2**20):
                            written += len(chunk)
                            total += len(chunk)
                            if written > MAX_IMPORT_FILE_BYTES or total > MAX_IMPORT_TOTAL_BYTES:  # the header lied
                                raise ReVersionError(f"{zips[0].name} holds {leaf} larger than its header says; {too_big}.")
                            out.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, RuntimeError):
            raise ReVersionError(f"{zips[0].name} is not a readable zip of a relation folder.") from None
        if not any((work / n).is_file() for n in (EMBEDS_FILE, "learned_embeds.bin")):
            raise ReVersionError(f"{zips[0].name} holds no {EMBEDS_FILE} or learned_embeds.bin.")
        return work
    for f in files:
        if f.is_file() and f.stat().st_size > MAX_IMPORT_FILE_BYTES:
            raise ReVersionError(f"{f.name} is {f.stat().st_size / 2**20:.0f} MB; {too_big}.")
    vectors = [f for f in files if f.suffix.lower() in _VECTOR_SUFFIXES]
    if len(vectors) != 1:
        raise ReVersionError("Upload exactly one vector file (.safetensors or .bin), optionally with its card.json.")
    cards = [f for f in files if f.name == CARD_FILE]
    if vectors[0].name == EMBEDS_FILE and cards:
        shutil.copy(vectors[0], work / EMBEDS_FILE)
        shutil.copy(cards[0], work / CARD_FILE)
        return work
    return vectors[0]


def import_relation_files(
    files: Sequence[str | os.PathLike] | None,
    relations_dir: str | os.PathLike,
    *,
    base_model_id: str,
    embedding_dim: int,
    base_vocab: Collection[str],
    taken_tokens: Callable[[str], Collection[str]],
    check_new: Callable[[str, bool], None],
    work_root: str | os.PathLike,
    name: str | None = None,
    overwrite: bool = False,
) -> str:
    """Import a relation from uploaded files into ``relations_dir`` and return its name.

    ``check_new(name, overwrite)`` refuses a name the caller may not write; ``taken_tokens(name)`` gives the tokens of
    the other relations in use beside it, which the import's token must not collide with.
    """
    from .base_model import same_base_model

    files = [Path(f) for f in files or []]
    if not files:
        raise ReVersionError("No relation file was given; upload a .safetensors, a learned_embeds.bin or a relation .zip.")
    Path(work_root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="import-", dir=work_root))
    try:
        relation = load_relation(stage_relation_files(files, work), None)
        if relation.card.get("imported_from"):
            relation.card = {}
        relation.check_dim(embedding_dim)
        if relation.base_model_id and not same_base_model(relation.base_model_id, base_model_id):
            raise ReVersionError(f"This relation was learned on base model {relation.base_model_id}, not on the loaded {base_model_id}.")
        name = (name or "").strip() or relation.card.get("name") or _stem_name(files)
        if not name:
            raise ReVersionError("Give the relation a name; the file does not say which relation it holds.")
        name = check_name(name)
        check_new(name, overwrite)
        # Only a <word> outside the base vocabulary, its special tokens and the other relations' tokens.
        token = choose_token(relation.token, name, base_vocab, taken_tokens(name))
        card = {**relation.card, "base_model": relation.base_model_id or base_model_id, "imported": True}
        card.pop("name", None)
        preview = relation.read_preview()
        save_relation(RelationPrompt(name, token, relation.vector, card, preview), relations_dir, overwrite=overwrite)
        return name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stem_name(files: list[Path]) -> str | None:
    for f in files:
        if f.suffix.lower() in (*_VECTOR_SUFFIXES, ".zip") and f.stem not in ("learned_embeds", ""):
            return f.stem
    return None
