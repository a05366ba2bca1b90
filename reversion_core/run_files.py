"""What a relation-inversion run writes: checkpoints to continue from, and the relation folder at its end.

A checkpoint (``step-XXXXXX.pt``) holds <R>, the optimizer state, the step and the random stream, so a continued
run gives the result an uninterrupted one would have; only tensors and plain values are stored, read back with
``weights_only=True``, so no pickled code runs. The relation at the end never replaces an existing one unless
asked, and when its folder cannot be written it goes somewhere else rather than being lost.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from .errors import ReVersionError
from .relation_file import RelationPrompt, clean_leftovers, free_relation_name, load_relation, save_relation
from .settings import InversionSettings

CHECKPOINT_FORMAT = "reversion-checkpoint/1"


def read_checkpoint(source: str | os.PathLike) -> dict:
    """The state saved in a checkpoint file, or in the latest ``step-*.pt`` of a folder; one sentence when unusable."""
    path = Path(source)
    if path.is_dir():
        found = sorted(path.glob("step-*.pt"))
        if not found:
            raise ReVersionError(f"Folder {path} holds no checkpoints (step-*.pt).")
        path = found[-1]
    if not path.is_file():
        raise ReVersionError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ReVersionError(f"{path.name} is not a readable checkpoint of this project.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ReVersionError(f"{path.name} is not a checkpoint of this project.")
    return state


def write_checkpoint(folder: Path, step: int, state: dict, started_at: float) -> Path:
    """Write ``state`` (with the format tag) to ``folder/step-XXXXXX.pt`` through a temporary file and a rename;
    temporary files that an earlier crash left (older than ``started_at``) are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".ckpt.*"):  # of a write a crash interrupted
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < started_at:
                leftover.unlink()
    path = folder / f"step-{step:06d}.pt"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt.")
    os.close(fd)
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def check_resumable(state: dict, settings: InversionSettings, embedding_dim: int) -> None:
    """Refuse, in one sentence, a checkpoint that this run cannot continue (other token, vector size or step count)."""
    if state["token"] != settings.placeholder_token:
        raise ReVersionError(f"The checkpoint learned token {state['token']!r} but this run uses {settings.placeholder_token!r}.")
    if state["vector"].numel() != embedding_dim:
        raise ReVersionError(
            f"The checkpoint's vector has size {state['vector'].numel()} but the base model's text encoder uses size {embedding_dim}."
        )
    if state["step"] > settings.max_train_steps:  # equal: every step is done and only the save is left (a crash during it)
        raise ReVersionError(f"The checkpoint is at step {state['step']}, already past the run's {settings.max_train_steps} steps.")


def already_saved(relations_dir: Path, name: str, state: dict, settings: InversionSettings) -> Path | None:
    """The relation folder when a resumed run's last checkpoint was already saved there in full, else None."""
    target = relations_dir / name
    if state["step"] < settings.max_train_steps or not target.is_dir():
        return None
    try:
        saved = load_relation(target, None)
    except ReVersionError:
        return None
    from .validation import kept_in_checkpoint

    kept = kept_in_checkpoint(state, settings)  # with keep="best", the best validated <R>, not the last
    same = saved.card.get("steps") == state["step"] and torch.equal(saved.vector, kept.float().reshape(-1))
    return target if same else None


def check_writable(folder: Path, what: str) -> None:
    """Refuse, before any step, a folder where the run could not save (one sentence)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".write-check-", dir=folder)
        os.rmdir(probe)
    except OSError as exc:
        raise ReVersionError(f"{what} {folder} is not writable ({exc.strerror or type(exc).__name__}); choose another folder.") from None


def save_run_relation(
    relation: RelationPrompt, relations_dir: Path, name: str, overwrite: bool, status: str, started_at: float,
) -> tuple[Path, str]:
    """Save a run's relation as ``relations_dir/name`` and say where, when that is not where it was asked to go.

    A stopped or failed run never replaces an existing relation: it takes a free name (``above_2``). When the
    save fails (folder unwritable, name taken meanwhile), a free name, then a private temporary folder is used.
    Leftovers of saves interrupted since ``started_at`` are cleaned first.
    """
    clean_leftovers(relations_dir, name, started_at)
    target = relations_dir / name
    message = ""
    if overwrite and status != "finished" and target.exists():
        relation.name = free_relation_name(relations_dir, name)
        overwrite = False
        message = f"The existing relation {name!r} was kept; this {status} run was saved as {relation.name!r}."
    try:
        return save_relation(relation, relations_dir, overwrite=overwrite), message
    except (ReVersionError, OSError) as exc:
        taken = isinstance(exc, ReVersionError) and target.exists()
        reason = "another relation took that name meanwhile" if taken else getattr(exc, "strerror", None) or str(exc)
    for attempt in ("free name", "temporary folder"):
        try:
            if attempt == "free name":
                relation.name = free_relation_name(relations_dir, name)
                path = save_relation(relation, relations_dir)
            else:
                path = save_relation(relation, tempfile.mkdtemp(prefix="reversion-unsaved-"))
        except (ReVersionError, OSError):
            continue
        return path, f"The relation could not be saved as {str(target)!r} ({reason}); it was saved to {str(path)!r} instead."
    raise ReVersionError(f"The relation could not be saved as {str(target)!r} ({reason}), nor anywhere else.")
