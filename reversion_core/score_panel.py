"""The report card in the app: a "Score this relation" button, a progress bar, the card's table and its marked grid.

The functions before ``build_score_panel`` are plain Python (no gradio): score a relation for the app, and turn a
fresh or a saved card into what the panel shows. ``build_score_panel`` lays the panel out inside a tab and wires it
to that tab's relation selector; ``app.py`` calls it once for the Train tab and once for the Generate tab.

A card is saved into the relation's ``card.json`` (and its grid into ``report_card.png``) unless the relation is
read-only here: in public mode the shipped relations belong to nobody, so their card is shown but not saved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from PIL import Image

from .errors import ReVersionError
from .relation_file import RelationPrompt, check_name, load_relation
from .report_card import DEFAULT_PAIRS, MAX_PAIRS, ReportCard, save_report_card, saved_report_card, summary_table

if TYPE_CHECKING:
    from .studio import Shelf, Studio

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


def score_for_app(studio: Studio, shelf: Shelf, name: str, pairs: int = DEFAULT_PAIRS,
                progress: Callable[[int, int], None] | None = None) -> CardView:
    """Score the shelf's relation ``name`` on ``pairs`` held-out entity pairs through the studio's GPU runner
    (progress as images are made), save the card where the caller may write, and return its view."""
    from .zerogpu import ScoreProgress, ScoreRequest

    if isinstance(pairs, bool) or not isinstance(pairs, (int, float)) or not math.isfinite(pairs) or pairs != int(pairs):
        raise ReVersionError(f"Score on a whole number of entity pairs from 1 to {MAX_PAIRS}, not {pairs!r}.")
    if not 1 <= int(pairs) <= MAX_PAIRS:
        raise ReVersionError(f"Score on 1 to {MAX_PAIRS} entity pairs, not {pairs}.")
    relation = studio.relation(name, shelf)  # refuses a relation of another base model in one sentence
    card = None
    for item in studio.runner().score(ScoreRequest(str(relation.path), int(pairs))):
        if isinstance(item, ScoreProgress):
            if progress is not None:
                progress(item.done, item.total)
        else:
            card = item
    return save_and_view(relation, card, save=not is_read_only(shelf, relation))


# ----------------------------------------------------------------------------------------------- the panel
@dataclass
class ScorePanel:
    """The panel's components (the app may wire more events to them)."""

    button: Any
    pairs: Any
    text: Any
    table: Any
    grid: Any
    box: Any


def build_score_panel(
    studio: Studio,
    selector: Any,
    owner: Any = None,
    wrap: Callable[[Callable], Callable] | None = None,
    api_name: str | None = None,
    hidden_until_chosen: bool = False,
    refresh_on: Sequence[Any] = (),
    elem_prefix: str = "score",
) -> ScorePanel:
    """Lay out the report-card panel where it is called (inside a tab) and wire it to ``selector``, the component
    whose value names the relation to score. The saved card is shown whenever ``selector`` changes (and on load).

    ``wrap`` turns each handler (which takes ``shelf``) into an event function: the app passes its ``handler``, which
    finds the caller's shelf from the page token in ``owner`` (the last input) and makes errors one sentence; without
    it the shared shelf is used. ``api_name`` makes scoring an API endpoint (else it is private);
    ``hidden_until_chosen`` hides the panel while ``selector`` is empty (the Train tab's, until a run has saved a
    relation); ``refresh_on`` lists more triggers (such as a tab's ``select``) that show the saved card again, since
    another panel may have scored the same relation."""
    import gradio as gr

    wrap = wrap or _shared_shelf(studio)
    visitor = [owner] if owner is not None else []

    @wrap
    def score(relation, pairs=DEFAULT_PAIRS, shelf=None, progress=gr.Progress()):
        """Score a relation on held-out entity pairs (one image each, and one with the relation's phrase): the
        card's paragraph, its table and the marked grid. Saved into the relation's card.json where you may write it."""
        progress(0, desc="Starting")
        view = score_for_app(studio, shelf, relation, DEFAULT_PAIRS if pairs is None else pairs,
                           lambda done, total: progress((done, total), desc="Scoring", unit="images"))
        return view.text, view.table, view.grid

    @wrap
    def show_saved(relation, shelf=None):
        if not relation:
            return gr.Column(visible=not hidden_until_chosen), NO_CARD, [], None
        try:
            view = saved_card_view(load_relation(shelf.relation_path(check_name(relation)), None))
        except ReVersionError:  # the relation's own view says what is wrong with it
            view = CardView("", [], None)
        return gr.Column(visible=True), view.text, view.table, view.grid

    with gr.Column(visible=not hidden_until_chosen, elem_id=f"{elem_prefix}-panel") as box:
        with gr.Row():
            button = gr.Button("Score this relation", elem_id=f"{elem_prefix}-button", scale=3)
            pairs = gr.Number(value=DEFAULT_PAIRS, precision=0, minimum=1, maximum=MAX_PAIRS, label="Entity pairs",
                              elem_id=f"{elem_prefix}-pairs", scale=1)
        text = gr.Markdown(elem_id=f"{elem_prefix}-text")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Report card", interactive=False, elem_id=f"{elem_prefix}-table",
                             column_widths=["55%", "15%", "15%", "15%"])
        grid = gr.Image(label="Scored images (frame: right or wrong)", show_label=False, format="png", interactive=False,
                        elem_classes="pixelated", elem_id=f"{elem_prefix}-grid")  # a label badge would cover the top row
    shown = [box, text, table, grid]
    button.click(score, [selector, pairs, *visitor], [text, table, grid], api_name=api_name, show_progress_on=grid,
                 api_visibility="public" if api_name else "private", concurrency_id="generate")  # one pipeline
    gr.on(None, show_saved, [selector, *visitor], shown, api_visibility="private")  # on load and on change
    if refresh_on:
        gr.on(list(refresh_on), show_saved, [selector, *visitor], shown, api_visibility="private")
    return ScorePanel(button, pairs, text, table, grid, box)


def _shared_shelf(studio: Studio) -> Callable[[Callable], Callable]:
    """Without the app's handler: the studio's shared shelf, and a ReVersionError as a one-sentence Gradio error."""
    import functools
    import inspect

    import gradio as gr

    def wrap(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        visible = signature.replace(parameters=[q for q in signature.parameters.values() if q.name != "shelf"])

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(**visible.bind(*args, **kwargs).arguments, shelf=studio.shared)
            except ReVersionError as exc:
                raise gr.Error(str(exc), print_exception=False) from None

        del wrapper.__wrapped__  # gradio reads the signature below: the shelf is not an input
        wrapper.__signature__ = visible
        return wrapper

    return wrap
