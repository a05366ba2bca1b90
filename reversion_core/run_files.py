"""What a relation-inversion run writes, and where: the run folder's layout, its checkpoints to continue from, and
the relation folder at its end.

A run folder is ``runs/NAME/`` beside the relations folder (``relations/NAME/`` holds the relation itself):
- ``step-XXXXXX.pt``: checkpoints. Each holds <R>, the optimizer state, the step and the random stream, so a continued
  run gives the result an uninterrupted one would have; only tensors and plain values are stored, read back with
  ``weights_only=True``, so no pickled code runs;
- ``exemplars/``: a copy of the exemplars in the benchmark layout, so a run continues from its folder alone;
- ``losses.json``: the app's loss plot so far (the app continues its plot from it);
- ``preview-*.png``: the CLI's preview images.
The relation at the end never replaces an existing one unless asked, and when its folder cannot be written it goes
somewhere else rather than being lost.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ReVersionError
from .exemplars import ExemplarSet
from .relation_file import RelationPrompt, clean_leftovers, free_relation_name, load_relation, recover_relations, save_relation
from .settings import InversionSettings

CHECKPOINT_FORMAT = "reversion-checkpoint/1"
RUNS_FOLDER = "runs"  # beside the relations folder: one run folder per relation
CHECKPOINT_PATTERN = "step-*.pt"
EXEMPLARS_DIR = "exemplars"  # in a run folder: the exemplars it learns from, for continuing it
LOSSES_FILE = "losses.json"  # in a run folder: the app's loss plot rows so far


# ----------------------------------------------------------------------------------------------- the layout
def runs_dir(relations_dir: str | os.PathLike) -> Path:
    """Where the run folders of the relations in ``relations_dir`` go by default: ``runs/`` beside it."""
    return Path(relations_dir).parent / RUNS_FOLDER


def checkpoints(folder: str | os.PathLike) -> list[Path]:
    """A run folder's checkpoints, oldest first (an empty list when there are none or no folder)."""
    return sorted(Path(folder).glob(CHECKPOINT_PATTERN))


def kept_exemplars(checkpoint: str | os.PathLike) -> Path:
    """The exemplar copy beside a checkpoint file or in a run folder; one sentence when there is none."""
    checkpoint = Path(checkpoint)
    folder = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / EXEMPLARS_DIR
    if not (folder / "text.json").is_file():
        raise ReVersionError(
            f"{folder} does not exist (checkpoints written before exemplars were kept beside them); give the exemplar folder to learn from."
        )
    return folder


def keep_only(folder: Path, latest: Path) -> None:
    """Remove every checkpoint of ``folder`` but ``latest``."""
    for old in checkpoints(folder):
        if old != latest:
            old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------- checkpoints


def read_checkpoint(source: str | os.PathLike) -> dict:
    """The state saved in a checkpoint file, or in the latest ``step-*.pt`` of a folder; one sentence when unusable."""
    path = Path(source)
    if path.is_dir():
        found = checkpoints(path)
        if not found:
            raise ReVersionError(f"Folder {path} holds no checkpoints ({CHECKPOINT_PATTERN}).")
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


def checkpoint_state(step: int, name: str, settings: InversionSettings, base_model: str, vector: torch.Tensor, optimizer,
                     rng: torch.Generator, scaler, losses: dict[str, float], validation: dict | None = None) -> dict:
    """What a checkpoint holds: <R>, the optimizer's state, the step and the random stream (and a mixed-precision
    run's gradient scaler), with the run's name, token, base model, settings, last losses and validation curve."""
    return {
        "step": step, "name": name, "token": settings.placeholder_token, "base_model": base_model,
        "settings": settings.to_dict(), "vector": vector.detach().float().cpu(), "optimizer": optimizer.state_dict(),
        "rng": rng.get_state(), "scaler": scaler.state_dict() if scaler is not None else None, "losses": dict(losses),
        "validation": validation,
    }


def write_checkpoint(folder: Path, step: int, state: dict, started_at: float) -> Path:
    """Write ``state`` (with the format tag) to ``folder/step-XXXXXX.pt`` through a temporary file and a rename;
    temporary files that an earlier crash left (older than ``started_at``) are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".ckpt.*"):  # of a write a crash interrupted
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < started_at:
                leftover.unlink()
    path = folder / CHECKPOINT_PATTERN.replace("*", f"{step:06d}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt.")
    os.close(fd)
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------- continuing and saving
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


def plan_run(relations_dir: Path, name: str, checkpoint: dict | None, settings: InversionSettings, overwrite: bool,
             checkpoint_dir: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """Where a run writes, checked before any model is loaded: a save of ``name`` that a crash interrupted is
    repaired, an existing relation is refused unless ``overwrite`` (or a resumed run already saved it), and the folders
    must be writable. Returns the run folder for checkpoints (``runs/NAME`` by default) and the relation a resumed
    run already saved (None)."""
    recover_relations(relations_dir, name)
    saved = already_saved(relations_dir, name, checkpoint, settings) if checkpoint else None
    if (relations_dir / name).exists() and not overwrite and saved is None:
        raise ReVersionError(f"{relations_dir / name} already holds a relation; choose another name or allow overwriting.")
    run = Path(checkpoint_dir) if checkpoint_dir else runs_dir(relations_dir) / name
    check_writable(relations_dir, "Relations folder")
    if settings.checkpoint_every:
        check_writable(run, "Checkpoint folder")
    return run, saved


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


# ----------------------------------------------------------------------------------------------- the exemplar copy
def save_exemplars(exemplars: ExemplarSet, folder: Path) -> Path:
    """Write an exemplar set as a benchmark-layout folder (lossless PNGs in their order, text.json, relation.json and
    templates.json when known), replacing ``folder`` whole."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        captions = {}
        for k, e in enumerate(exemplars.exemplars):
            file = f"{k:03d}-{Path(e.name).stem}.png"  # numbered: loading sorts by name, so the order is kept
            e.image.save(tmp / file)
            captions[file] = list(e.captions)
        (tmp / "text.json").write_text(json.dumps(captions, indent=1), encoding="utf-8")
        if exemplars.relation:
            (tmp / "relation.json").write_text(json.dumps(exemplars.relation), encoding="utf-8")
        if exemplars.templates:
            (tmp / "templates.json").write_text(json.dumps(exemplars.templates), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
