"""What the app's tabs share: handlers wrapped so their bodies are one call into the studio (named values in, one
sentence out on error, the caller's shelf of relations), the components more than one tab uses, and small helpers.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import inspect
import logging
import re
from dataclasses import dataclass

import gradio as gr

from reversion_core.errors import ReVersionError
from server import studio as st
from server.forms import API_NAMES

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
    - a ReVersionError becomes a one-sentence Gradio error; anything unexpected one sentence too (logged).
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
            if isinstance(exc, ReVersionError):
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


def int_slider(low: int, high: int, value: int, label: str, **kwargs) -> gr.Slider:
    return gr.Slider(low, high, value=value, step=1, precision=0, label=label, **kwargs)


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
