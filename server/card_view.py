"""What the app's report-card panel shows (``ui/score_panel.py`` lays it out): a fresh or a saved card turned into a
paragraph, the table's rows and the marked grid (``Studio.score_relation`` makes a fresh one). No gradio.

A card is saved into the relation's ``card.json`` (and its grid into ``report_card.png``) unless the relation is
read-only here. The shipped relations are: in public mode they belong to nobody, so their card is shown but not
saved; run by one person, their card is kept with that person's data (``runs/NAME/report-card/``, shown from there
while it scored the shipped relation as it is now), never in the shipped files, which git tracks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import CARD_FILE, RelationPrompt, check_name, load_relation
from reversion_core.report_card import ReportCard, save_report_card, saved_report_card, summary_table, validation_record

from .shelves import Shelf
from .training_view import write_atomic

TABLE_HEADERS = ["figure", "<R>", "phrase", "chance"]  # the paragraph above the table says what "phrase" is
LEGEND = ("Frames: green, relation and both entities right; orange, relation right but an entity wrong; red, "
          "relation wrong; grey, not read.")
NO_CARD = "No report card yet: **Score this relation** generates it on entity pairs the exemplars do not show."
UNREADABLE_CARD = "The report card saved in this relation's card.json cannot be read; **Score this relation** makes a new one."
SCORER_NAMES = {"world": "the world's scorer", "clip": "CLIP"}
KEPT_FOLDER = "report-card"  # in a shelf's cards_dir/NAME: the card of a shipped relation, kept with the user's data
SCORED_VERSION = "scored_relation_created_at"  # which version of the shipped relation a kept card scored


@dataclass
class CardView:
    """What the panel shows: a Markdown paragraph, the table's rows and the marked grid (None: no grid)."""

    text: str
    table: list[list[str]]
    grid: Image.Image | None
    validation: dict[str, Any] | None = None  # the quality curve its training recorded (card.json's validation), if any


def describe(summary: dict[str, Any], name: str) -> str:
    """One paragraph on a card: what was scored, how, when and how long it took, and the card's own note."""
    scorer = SCORER_NAMES.get(summary.get("kind"), str(summary.get("kind")))
    pairs = len(summary.get("pairs") or [])
    bits = [f"Report card of **{name}** on {pairs} held-out entity pairs, read by {scorer}"]
    if summary.get("steps") is not None:
        bits.append(f"{summary['steps']} denoising steps")
    if summary.get("seconds") is not None:
        bits.append(f"{float(summary['seconds']):.0f} s")
    if summary.get("created_at"):
        bits.append(f"scored {readable_time(summary['created_at'])}")
    text = ", ".join(bits) + "."
    if summary.get("reference_prompt"):
        text += f" The phrase column writes `{summary['reference_prompt']}` in place of `<R>`."
    if summary.get("note"):
        text += f" {summary['note']}"
    return text


def card_view(card: ReportCard, saved: str) -> CardView:
    """The view of a card just scored; ``saved`` is the sentence that says whether and where it was saved."""
    return CardView(f"{describe(card.summary(), card.relation)} {saved}\n\n{LEGEND}", card.table(), card.grid())


def saved_card_view(relation: RelationPrompt, name: str | None = None) -> CardView:
    """The view of the card saved in a relation's ``card.json``, or a line saying it has none; ``name`` is the
    relation's (default: its folder's)."""
    summary, grid = saved_report_card(relation)
    if summary is None:
        return CardView(NO_CARD, [], None)
    name = name or (relation.path.name if relation.path is not None else relation.name)
    try:
        text, table = describe(summary, name), summary_table(summary)
    except (TypeError, ValueError, AttributeError):  # an imported card.json may hold anything
        return CardView(UNREADABLE_CARD, [], None)
    return CardView(f"{text}\n\n{LEGEND if grid is not None else ''}".strip(), table, grid)


def shelf_card_view(shelf: Shelf, name: str) -> CardView:
    """The saved card of the shelf's relation ``name`` (for a shipped one, the card kept with the user's data when
    there is one); nothing (an empty view) when the relation cannot be read, since its own description says why. The
    view carries the relation's recorded quality curve."""
    try:
        relation = load_relation(shelf.relation_path(check_name(name)), None)
    except ReVersionError:
        return CardView("", [], None)
    kept = kept_card(relation, shelf.cards_dir) if is_read_only(shelf, relation) else None
    return replace(saved_card_view(kept or relation, name), validation=validation_record(relation))


def save_and_view(relation: RelationPrompt, card: ReportCard, save: bool = True, beside: Path | None = None) -> CardView:
    """Save ``card`` into the relation's folder, or for a read-only relation (``save`` false) into ``beside`` (the
    shelf's cards_dir; None: nowhere), and return its view. A card that cannot be written is still shown, with the
    reason."""
    if not save and beside is None:
        return card_view(card, "This is a shipped relation, which is read-only here, so the card is shown but not saved.")
    try:
        path = save_report_card(relation, card) if save else keep_card(relation, card, beside)
    except OSError as exc:
        return card_view(card, f"The card could not be saved ({exc.strerror or type(exc).__name__}); it is shown here only.")
    if not save:
        where = "/".join(path.parts[-4:])
        return card_view(card, f"This is a shipped relation, so the card is kept with your data (`{where}`), not in its files.")
    return card_view(card, f"Saved into `{path.parent.name}/{path.name}`.")


def keep_card(relation: RelationPrompt, card: ReportCard, cards_dir: Path) -> Path:
    """Keep the card of a shipped relation in ``cards_dir/NAME/report-card/`` (a card.json holding the report card and
    which version of the relation it scored, the grid beside it), leaving the relation's own files as they are."""
    folder = Path(cards_dir) / relation.path.name / KEPT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / CARD_FILE, json.dumps({SCORED_VERSION: relation.card.get("created_at")}))
    return save_report_card(replace(relation, card={}, path=folder), card)


def kept_card(relation: RelationPrompt, cards_dir: Path | None) -> RelationPrompt | None:
    """The relation with the card kept for it in ``cards_dir`` instead of its own, when one was kept for the relation
    as it is now (a shipped relation updated since has its new card shown)."""
    if cards_dir is None or relation.path is None:
        return None
    folder = Path(cards_dir) / relation.path.name / KEPT_FOLDER
    try:
        data = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "report_card" not in data or data.get(SCORED_VERSION) != relation.card.get("created_at"):
        return None
    return replace(relation, card=data, path=folder)


def readable_time(stamp: Any) -> str:
    """An ISO time stamp as a person reads it, "1 Jun 2025, 14:03 UTC" (the stamp itself when it is not one)."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    if moment.tzinfo is None:
        return f"{moment.day} {moment:%b %Y, %H:%M}"
    moment = moment.astimezone(timezone.utc)
    return f"{moment.day} {moment:%b %Y, %H:%M} UTC"


def is_read_only(shelf: Shelf, relation: RelationPrompt) -> bool:
    """Whether the caller may not write ``relation``: a shipped relation (in public mode, anything not the visitor's own)."""
    return relation.path is None or relation.path.name not in shelf.own_names()
