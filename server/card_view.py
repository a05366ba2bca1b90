"""What the app's report-card panel shows (``ui/score_panel.py`` lays it out): a fresh or a saved card turned into a
paragraph, the table's rows and the marked grid (``Studio.score_relation`` makes a fresh one). No gradio.

A card is saved into the relation's ``card.json`` (and its grid into ``report_card.png``) unless the relation is
read-only here: in public mode the shipped relations belong to nobody, so their card is shown but not saved.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import RelationPrompt, check_name, load_relation
from reversion_core.report_card import ReportCard, save_report_card, saved_report_card, summary_table, validation_record

from .shelves import Shelf

TABLE_HEADERS = ["figure", "<R>", "phrase", "chance"]  # the paragraph above the table says what "phrase" is
LEGEND = ("Frames: green, relation and both entities right; orange, relation right but an entity wrong; red, "
          "relation wrong; grey, not read.")
NO_CARD = "No report card yet: **Score this relation** generates it on entity pairs the exemplars do not show."
UNREADABLE_CARD = "The report card saved in this relation's card.json cannot be read; **Score this relation** makes a new one."
SCORER_NAMES = {"world": "the world's scorer", "clip": "CLIP"}


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
        bits.append(f"scored {summary['created_at']}")
    text = ", ".join(bits) + "."
    if summary.get("reference_prompt"):
        text += f" The phrase column writes `{summary['reference_prompt']}` in place of `<R>`."
    if summary.get("note"):
        text += f" {summary['note']}"
    return text


def card_view(card: ReportCard, saved: str) -> CardView:
    """The view of a card just scored; ``saved`` is the sentence that says whether and where it was saved."""
    return CardView(f"{describe(card.summary(), card.relation)} {saved}\n\n{LEGEND}", card.table(), card.grid())


def saved_card_view(relation: RelationPrompt) -> CardView:
    """The view of the card saved in a relation's ``card.json``, or a line saying it has none."""
    summary, grid = saved_report_card(relation)
    if summary is None:
        return CardView(NO_CARD, [], None)
    name = relation.path.name if relation.path is not None else relation.name
    try:
        text, table = describe(summary, name), summary_table(summary)
    except (TypeError, ValueError, AttributeError):  # an imported card.json may hold anything
        return CardView(UNREADABLE_CARD, [], None)
    return CardView(f"{text}\n\n{LEGEND if grid is not None else ''}".strip(), table, grid)


def shelf_card_view(shelf: Shelf, name: str) -> CardView:
    """The saved card of the shelf's relation ``name``; nothing (an empty view) when the relation cannot be read,
    since the relation's own description already says why. The view carries the relation's recorded quality curve."""
    try:
        relation = load_relation(shelf.relation_path(check_name(name)), None)
        return replace(saved_card_view(relation), validation=validation_record(relation))
    except ReVersionError:
        return CardView("", [], None)


def save_and_view(relation: RelationPrompt, card: ReportCard, save: bool = True) -> CardView:
    """Save ``card`` into the relation's folder unless ``save`` is false (a read-only relation), and return its view.
    A card that cannot be written is still shown, with the reason."""
    if not save:
        return card_view(card, "This is a shipped relation, which is read-only here, so the card is shown but not saved.")
    try:
        path = save_report_card(relation, card)
    except OSError as exc:
        return card_view(card, f"The card could not be saved ({exc.strerror or type(exc).__name__}); it is shown here only.")
    return card_view(card, f"Saved into `{path.parent.name}/{path.name}`.")


def is_read_only(shelf: Shelf, relation: RelationPrompt) -> bool:
    """Whether the caller may not write ``relation``: in public mode, a shipped relation (not one of the visitor's)."""
    return relation.path is None or relation.path.name not in shelf.own_names()
