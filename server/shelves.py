"""Whose relations a request sees and may write: a shelf.

- ``SharedShelf``: the app run by one person or a team (not public): one relations folder that everyone reads and
  writes, 'Overwrite' replaces any relation but the shipped ones (listed in the folder's ``shipped.txt``, tracked in
  git): the app never writes into those, and keeps their report cards in ``runs/`` instead.
- ``VisitorShelf``: public mode: the shipped relations (read-only) and the visitor's own workspace
  (``workspaces.Workspace``), with the workspaces' quotas.

Both answer the same questions, so the app's handlers do not branch on the mode. A shelf may also hold relations
learned on another base model than the app runs: ``split_relations`` sets them apart, each with the reason.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Iterable, Sequence

from reversion_core.base_model import base_model_label, same_base_model
from reversion_core.errors import ReVersionError
from reversion_core.relation_file import EMBEDS_FILE, RelationPrompt, check_name, free_relation_name, list_relations
from reversion_core.run_files import runs_dir

from .workspaces import Limits, Workspace

SHIPPED_LIST = "shipped.txt"  # in a shared relations folder: the relations that came with the app, one name a line


class SharedShelf:
    """One relations folder for everyone (the app is not public)."""

    public = False
    limits: Limits | None = None

    def __init__(self, relations_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> None:
        self.relations_dir, self.runs_dir = Path(relations_dir), Path(runs_dir)
        self.cards_dir: Path | None = self.runs_dir  # where the report cards of the shipped relations are kept

    def shipped_names(self) -> set[str]:
        """The relations that came with the app (``shipped.txt``; none without one): the app never writes into them."""
        try:
            lines = (self.relations_dir / SHIPPED_LIST).read_text(encoding="utf-8").splitlines()
        except OSError:
            return set()
        return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}

    def relations(self) -> list[RelationPrompt]:
        """Every readable relation this shelf shows, whatever its base model."""
        return list_relations(self.relations_dir)

    def relation_path(self, name: str) -> Path:
        check_name(name)
        path = self.relations_dir / name
        if not (path / EMBEDS_FILE).is_file():
            raise ReVersionError(f"There is no relation named {name!r}.")
        return path

    def own_names(self) -> AbstractSet[str]:
        """Relations this shelf may overwrite and continue (all of them here but the shipped ones)."""
        return {r.path.name for r in self.relations() if r.path is not None} - self.shipped_names()

    def free_name(self, name: str) -> str:
        return free_relation_name(self.relations_dir, name)

    def check_new(self, name: str, overwrite: bool = False, incoming: int = 0) -> None:
        """Refuse an unsafe name, a shipped relation's, and an existing one unless the person ticked 'Overwrite'."""
        name = check_name(name)
        if name in self.shipped_names():
            raise ReVersionError(f"{name!r} is one of the shipped relations, which the app never changes; choose another name.")
        if (self.relations_dir / name).exists() and not overwrite:
            raise ReVersionError(f"A relation named {name!r} already exists; tick 'Overwrite' or choose another name.")

    def check_steps(self, steps: int) -> None:
        pass

    def check_upload(self, files: Sequence[str | os.PathLike] | None) -> int:
        return 0  # the server's --max-file-size bounds each file

    def training(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # anyone may queue trainings; the slot runs them one after another


class VisitorShelf:
    """Public mode: the shipped relations, read-only, and one visitor's own workspace."""

    public = True
    cards_dir: Path | None = None  # a shipped relation's report card is shown, not saved

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.relations_dir = workspace.relations_dir
        self.runs_dir = runs_dir(workspace.relations_dir)
        self.limits = workspace.owner.limits

    def relations(self) -> list[RelationPrompt]:
        return self.workspace.relations()

    def relation_path(self, name: str) -> Path:
        return self.workspace.relation_path(name)

    def own_names(self) -> AbstractSet[str]:
        return set(self.workspace.own_names())

    def free_name(self, name: str) -> str:
        """``name`` when neither a shipped relation nor one of the visitor's has it, else the first free ``name_N``."""
        name = check_name(name)
        shipped = self.workspace.owner.shipped_names()
        while name in shipped or (self.relations_dir / name).exists():
            match = re.fullmatch(r"(.+)_(\d+)", name)
            base, n = (match.group(1), int(match.group(2))) if match and int(match.group(2)) >= 2 else (name, 1)
            suffix = f"_{n + 1}"
            name = base[: 100 - len(suffix)].rstrip(" .") + suffix  # stay within the 100-character name limit
        return name

    def check_new(self, name: str, overwrite: bool = False, incoming: int = 0) -> None:
        self.workspace.check_new_relation(name, overwrite, incoming)

    def check_steps(self, steps: int) -> None:
        self.workspace.owner.check_train_steps(steps)

    def check_upload(self, files: Sequence[str | os.PathLike] | None) -> int:
        return self.workspace.owner.check_upload(files)

    def training(self) -> contextlib.AbstractContextManager:
        return self.workspace.training()

    def delete(self, name: str) -> None:
        """Delete one of the visitor's relations and what continuing it needed (shipped ones cannot be deleted)."""
        self.workspace.delete(name)
        shutil.rmtree(self.runs_dir / check_name(name), ignore_errors=True)


Shelf = SharedShelf | VisitorShelf


# ----------------------------------------------------------------------------------------------- another base model
@dataclass(frozen=True)
class UnusableRelation:
    """A relation made for another base model, with the sentence that says why it cannot be used here."""

    relation: RelationPrompt
    reason: str


def split_relations(
    relations: Iterable[RelationPrompt], base_model_id: str
) -> tuple[list[RelationPrompt], list[UnusableRelation]]:
    """Relations usable with the base model ``base_model_id`` and, apart, those that are not, each with its reason.

    ``relations`` is what ``relation_file.list_relations(folder)`` returns without a base-model filter.
    """
    usable, unusable = [], []
    here = base_model_label(base_model_id)
    for relation in relations:
        theirs = relation.base_model_id
        if same_base_model(theirs, base_model_id):
            usable.append(relation)
        elif not theirs:
            unusable.append(UnusableRelation(relation, (
                f"Relation {relation.name!r} does not record which base model it was learned on, so it cannot be "
                f"used with the {here} this app runs; import its file through the app to attach a base model."
            )))
        else:
            unusable.append(UnusableRelation(relation, (
                f"Relation {relation.name!r} was learned on the {base_model_label(theirs)} ({theirs}) and this app runs "
                f"the {here} ({base_model_id}); a relation prompt only works with the base model it was learned on."
            )))
    return usable, unusable
