"""What the app's tabs share: handlers wrapped so their bodies are one call into the studio (named values in, one
sentence out on error, the caller's shelf of relations), number widgets checked in one sentence, the clearing of a
refused action's error marks, the components more than one tab uses, and small helpers.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import logging
import re
import types
from abc import ABCMeta
from dataclasses import dataclass

import gradio as gr

from reversion_core.errors import ReVersionError, quoted
from server import studio as st
from server.forms import API_NAMES, check_number

PRIVATE = {"api_visibility": "private"}  # wiring of the page itself, not part of the app's API
log = logging.getLogger("reversion_studio")


def for_page(text: str, request: gr.Request | None) -> str:
    """Toast text: the page renders it as HTML (so ``<R>`` is escaped, once); API clients get it as it is."""
    headers = getattr(request, "headers", None) or {}
    return html.escape(text) if headers.get("x-gradio-user") == "app" else text


def as_markdown(status: str) -> str:
    """A status line for a Markdown output: tokens such as <R> in code spans, so the page shows them (not as tags)."""
    return re.sub(r"(?<!`)(<[^<>\s`]+>)(?!`)", r"`\1`", status)


def visitor_key(token: str | None, request: gr.Request | None, profile: gr.OAuthProfile | None) -> str | None:
    """Who calls: the signed-in user, else the page's own token (kept in the browser across reloads), else the API
    client's session."""
    if profile is not None and getattr(profile, "username", None):
        return f"user:{profile.username}"
    if token:
        return f"page:{token}"
    session = getattr(request, "session_hash", None)
    return f"session:{session}" if session else None


def handler(studio: st.Studio, form: type | None = None):
    """An event handler with its wiring concerns taken care of, so its body is one call into the studio.

    - ``form``: the handler's API parameters are the form's fields (each optional, under the API's name for it,
      ``server.forms.API_NAMES``), and it receives the form, built once from the click's values, as ``form``;
    - a handler that takes ``shelf`` or ``owner`` also takes the page's ``token`` (after its own values) and gets the
      caller's relations shelf and owner key, from the signed-in user, the page token or the API session;
    - a ReVersionError becomes a one-sentence Gradio error (one line in the log); anything unexpected one sentence too
      (its traceback logged).
    """
    def wrap(fn):
        own = inspect.signature(fn).parameters
        wants_visitor = "shelf" in own or "owner" in own
        params = [p for name, p in own.items() if name not in ("form", "shelf", "owner", "request")]
        names = [p.name for p in params]
        form_fields = [f.name for f in dataclasses.fields(form)] if form is not None else []
        params = [inspect.Parameter(API_NAMES.get(n, n), inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                  for n in form_fields] + params
        if wants_visitor:
            params.append(inspect.Parameter("token", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
        params += [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
                   inspect.Parameter("profile", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                     annotation=gr.OAuthProfile | None)]
        signature = inspect.Signature(params)

        def call(args, kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values, request = dict(bound.arguments), bound.arguments["request"]
            token, profile = values.pop("token", None), values.pop("profile")
            values.pop("request")
            if form is not None:
                values["form"] = form.from_values(**{n: values.pop(API_NAMES.get(n, n)) for n in form_fields})
            if wants_visitor:
                key = visitor_key(token, request, profile)
                if "owner" in own:
                    values["owner"] = key
                if "shelf" in own:
                    values["shelf"] = studio.shelf(key)
            if "request" in own:
                values["request"] = request
            return values, request

        def convert(exc: Exception, request) -> gr.Error:
            if isinstance(exc, ReVersionError):  # a person's mistake or a limit: one line in the log, no traceback
                log.info("refused %s: %s", fn.__name__, exc)
                return gr.Error(for_page(str(exc), request), print_exception=False)
            log.exception("unexpected error in %s", fn.__name__)
            return gr.Error(f"Something went wrong ({type(exc).__name__}); the app keeps serving, please try again.",
                            print_exception=False)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                request = kwargs.get("request")
                try:
                    values, request = call(args, kwargs)
                    yield from fn(**values)
                except gr.Error:
                    raise
                except Exception as exc:
                    raise convert(exc, request) from None
        else:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                request = kwargs.get("request")
                try:
                    values, request = call(args, kwargs)
                    return fn(**values)
                except gr.Error:
                    raise
                except Exception as exc:
                    raise convert(exc, request) from None
        del wrapper.__wrapped__  # gradio must read the signature below, not the body's
        wrapper.__signature__ = signature
        wrapper.__annotations__ = {"request": gr.Request, "profile": gr.OAuthProfile | None}
        wrapper.input_names = form_fields + names  # the values the page wires, in order (the token follows when wanted)
        return wrapper
    return wrap


class _NoStub(type(gr.Number)):
    """Gradio's component metaclass without the .pyi stub it writes beside the module of every component subclass
    (to type its events; the subclasses below add none, and a fresh clone must stay clean)."""

    def __new__(mcs, name, bases, attrs):
        return ABCMeta.__new__(mcs, name, bases, attrs)


def _checked(widget, payload):
    """A number widget's value checked in one sentence that names the widget (its label, less any "(...)"), as the
    API's checks word it: a value that is no number ("abc"), out of range, or not whole where a whole number is meant
    (2.5 steps). Gradio's own check rounds 2.5 to 2, answers "abc" with a generic error and logs a traceback."""
    if payload is None:
        return None
    name = re.sub(r"\s*\(.*\)$", "", widget.label or "") or "The value"
    try:
        return check_number(name, payload, widget.minimum, widget.maximum, integer=widget.precision == 0)
    except ReVersionError as exc:
        log.info("refused %s: %s", name, exc)
        raise gr.Error(str(exc), print_exception=False) from None


class CheckedNumber(gr.Number, metaclass=_NoStub):
    """A number box checked by :func:`_checked` (a class, not a patched instance: gradio rebuilds a widget from its
    class when an event updates it)."""

    is_template = True  # drawn by gradio's own number box

    def preprocess(self, payload):
        return _checked(self, payload)


class CheckedSlider(gr.Slider, metaclass=_NoStub):
    """A slider checked by :func:`_checked`."""

    is_template = True

    def preprocess(self, payload):
        return _checked(self, payload)


def int_slider(low: int, high: int, value: int, label: str, **kwargs) -> CheckedSlider:
    return CheckedSlider(low, high, value=value, step=1, precision=0, label=label, **kwargs)


def quiet_refusals(blocks: gr.Blocks) -> None:
    """Make gradio's own checks of the inputs (a choice not in the list, a value of the wrong type) refuse as the app's
    do: one sentence for the caller and one line in the log, where gradio logs a traceback (and answers a value of
    the wrong type with a generic error). Call it once the page is built. (A widget that an event rebuilds for one
    session, such as a dropdown given new choices, is then checked by gradio alone: none of those refuses values.)"""
    for block in blocks.blocks.values():
        if isinstance(block, gr.components.Component) and not isinstance(block, (gr.State, gr.BrowserState, CheckedNumber,
                                                                                   CheckedSlider)):
            block.preprocess = types.MethodType(_preprocess_quietly, block)


def _preprocess_quietly(block, payload):
    try:
        return type(block).preprocess(block, payload)
    except gr.Error as exc:
        if not exc.print_exception:  # already one of the app's sentences, logged
            raise
        message = exc.message
        choices = [c[1] if isinstance(c, tuple) else c for c in getattr(block, "choices", None) or []]
        if choices:  # gradio's sentence repeats the value whole, however long
            message = f"{block.label or 'The choice'} must be one of {', '.join(map(repr, choices))}, not {quoted(payload)}."
    except (TypeError, ValueError, AttributeError):
        message = f"{getattr(block, 'label', None) or 'An input'} cannot be {quoted(payload)}."
    log.info("refused %s: %s", getattr(block, "label", None) or type(block).__name__, message)
    raise gr.Error(message, print_exception=False) from None


def clear_error_marks(event, outputs: list) -> None:
    """After a refused ``event`` (its toast says why), clear the red "Error" mark gradio leaves on each of its outputs:
    left alone it covers the output's value and keeps it from taking clicks until the output's next update."""
    skips = gr.skip() if len(outputs) == 1 else tuple(gr.skip() for _ in outputs)
    event.failure(lambda: skips, None, outputs, show_progress="hidden", queue=False, **PRIVATE)


@dataclass
class Page:
    """Components that more than one tab reads or writes."""

    tabs: gr.Tabs
    owner: gr.State  # the page's token (from the browser's storage), for the visitor's shelf and trainings
    relation: gr.Dropdown | None = None
    unusable: gr.Markdown | None = None
    mode: gr.Radio | None = None
    entity_a: gr.Textbox | None = None
    entity_b: gr.Textbox | None = None
    source: gr.Radio | None = None
    train_set: gr.Dropdown | None = None
    name: gr.Textbox | None = None
    continue_name: gr.Dropdown | None = None
    later: list = dataclasses.field(default_factory=list)  # wiring that needs components of a later tab
    on_load: list = dataclasses.field(default_factory=list)  # wiring to run once the page's token is known


def relation_choices(studio: st.Studio, shelf, current: str | None = None, select: str | None = None):
    """The Generate tab's relations; the page's choice is left alone while it is still valid (a refresh that answers
    late must not undo a choice made meanwhile)."""
    names = studio.relation_names(shelf)
    if select is None and current in names:
        return gr.Dropdown(choices=names)
    return gr.Dropdown(choices=names, value=select if select is not None else (names[0] if names else None))


def unusable_text(studio: st.Studio, shelf) -> str:
    """The relations learned on another base model, each with why it cannot be used here."""
    lines = [f"- **{u.relation.path.name if u.relation.path else u.relation.name}**: {u.reason}" for u in studio.unusable(shelf)]
    return "Relations for another base model (not usable here):\n" + "\n".join(lines) if lines else ""
