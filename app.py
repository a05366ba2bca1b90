"""ReVersion Studio: learn a relation prompt <R> from a few exemplar images, then generate with it.

UI only: constants, flags, one builder per tab and small handlers that each call one method of
``reversion_core.studio.Studio``. ``python app.py --help`` lists the flags; each has an environment variable too.
Where it runs decides what it runs (``reversion_core.hosting``): SD 1.5 on ZeroGPU or a CUDA GPU, the embedded model
on the CPU; on Hugging Face Spaces it is public: each visitor trains into a workspace of their own.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import html
import inspect
import logging
import os
import re
import shutil
import tempfile
import threading
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
for _var, _value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_var, _value)  # keep load bars and library notes out of the server log

# Before gradio and the hub are imported: the hub reads HF_HOME once, and on ZeroGPU `spaces` must come before CUDA.
from reversion_core.errors import ReVersionError  # noqa: E402
from reversion_core.workspaces import data_dir, use_data_dir_for_hub_cache  # noqa: E402

try:
    DATA = data_dir()
except ReVersionError as _exc:
    raise SystemExit(str(_exc)) from None
use_data_dir_for_hub_cache(DATA)
from reversion_core.hosting import import_spaces_first  # noqa: E402

import_spaces_first()

import gradio as gr  # noqa: E402

from reversion_core import studio as st  # noqa: E402
from reversion_core.exemplars import exemplars_from_files  # noqa: E402
from reversion_core.forms import MODES, SOURCES, TRAIN_BOUNDS, GenerateForm, TrainForm  # noqa: E402
from reversion_core.relation_file import check_name  # noqa: E402
from reversion_core.score_panel import build_score_panel  # noqa: E402
from reversion_core.settings import ATTENTION_CHOICES, MAX_SEED  # noqa: E402
from reversion_core.training_jobs import loss_frames  # noqa: E402
from reversion_core.workspaces import Limits, Workspaces  # noqa: E402

TITLE = "ReVersion Studio"
DESCRIPTION = (
    "Learn a **relation prompt** `<R>` from a few exemplar images that share one relation between two entities "
    "(ReVersion, SIGGRAPH Asia 2024), watch it being learned, then write `rabbit <R> carrot` to put new entities in "
    "the same relation."
)
DEFAULT_MAX_FILE_SIZE = "64mb"  # per uploaded file; exemplar images are shrunk to 1024 px on load anyway
CAPTIONS_PLACEHOLDER = "One line per image, in upload order; several captions of one image separated by |\n" \
                       "red circle <R> blue square | a red circle <R> a blue square\ngreen triangle <R> yellow square"
STYLE_EXAMPLES = ("", "on a dotted background", "on a striped background")
# raw per-step lines faint, smoothed lines solid (the plot draws them in training_jobs' MAIN_SERIES / STEER_SERIES order)
LOSS_COLOURS = {"total": "rgba(234,88,12,0.3)", "denoise": "rgba(37,99,235,0.3)", "steering": "rgba(22,163,74,0.3)",
                "total (smoothed)": "#ea580c", "denoise (smoothed)": "#2563eb", "steering (smoothed)": "#16a34a"}
# Public mode's limits, each overridable by an environment variable (name: Limits field, type)
LIMIT_VARIABLES = {"REVERSION_MAX_RELATIONS": ("relations_per_visitor", int), "REVERSION_DISK_MB": ("total_disk_mb", float),
                   "REVERSION_UPLOAD_MB": ("upload_mb", float), "REVERSION_MAX_STEPS": ("train_steps", int),
                   "REVERSION_IDLE_HOURS": ("idle_hours", float)}
# Galleries: whole images (contain, square cells) with sharp pixels, each caption under its image (not over its
# lower part), the gallery as tall as its rows.
CSS = """
.pixelated img { image-rendering: pixelated; }
.pixelated .grid-wrap.fixed-height { min-height: 0 !important; max-height: none !important; overflow-y: visible !important; }
.pixelated .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex !important; flex-direction: column; }
.pixelated .thumbnail-lg > img { width: 100% !important; height: auto !important; aspect-ratio: 1 / 1; object-fit: contain !important; }
.pixelated .caption-label { position: static !important; max-width: 100% !important; white-space: pre-line !important;
  overflow: visible !important; text-overflow: clip !important; opacity: 1 !important; border: none !important;
  border-radius: 0 !important; font-size: 0.8rem !important; line-height: 1.3; padding: 4px 6px !important; text-align: left; }
"""
PRIVATE = {"api_visibility": "private"}
log = logging.getLogger("reversion_studio")


# ----------------------------------------------------------------------------------------------- config
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=TITLE)
    p.add_argument("--base-model", default=None,
                   help="SD 1.x hub id, diffusers folder or .safetensors (default: SD 1.5 on a GPU, the embedded model on "
                        "CPU; env REVERSION_BASE_MODEL)")
    p.add_argument("--relations-dir", default=env("REVERSION_RELATIONS_DIR", str(APP_DIR / "relations")),
                   help="where relation prompts live; read-only in public mode (env REVERSION_RELATIONS_DIR)")
    p.add_argument("--benchmark-dir", default=env("REVERSION_BENCHMARK_DIR", str(APP_DIR / "assets" / "benchmark")),
                   help="exemplar sets in the ReVersion benchmark layout (env REVERSION_BENCHMARK_DIR)")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--device", choices=["cpu", "cuda"], default=env("REVERSION_DEVICE"),
                   help="default: cuda when present (env REVERSION_DEVICE)")
    p.add_argument("--attention", choices=list(ATTENTION_CHOICES), default=env("REVERSION_ATTENTION"),
                   help="attention backend (default: xformers on a CUDA GPU where it works, else sdpa; env REVERSION_ATTENTION)")
    p.add_argument("--public", action=argparse.BooleanOptionalAction, default=None,
                   help="one workspace per visitor, with quotas (default: on on Hugging Face Spaces; env REVERSION_PUBLIC)")
    p.add_argument("--max-file-size", default=env("REVERSION_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                   help=f"largest accepted upload, such as 64mb (env REVERSION_MAX_FILE_SIZE; default {DEFAULT_MAX_FILE_SIZE})")
    return p.parse_args(argv)


def limits_from_env(env: typing.Mapping[str, str] | None = None) -> Limits:
    """Public mode's limits: the defaults, each replaced by its environment variable when set."""
    env = os.environ if env is None else env
    changes = {}
    for variable, (name, kind) in LIMIT_VARIABLES.items():
        if env.get(variable):
            try:
                changes[name] = kind(env[variable])
            except ValueError:
                raise ReVersionError(f"{variable} must be a {kind.__name__} number, not {env[variable]!r}.") from None
    return dataclasses.replace(Limits(), **changes)


def make_temp_dir(named: str | None = None) -> Path:
    """The app's temp folder: the one named (REVERSION_TEMP_DIR), else a fresh private one (mode 0700, random name)
    that is removed when the app exits; a shared fixed path could be planted with files that the app then serves."""
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="reversion-studio-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------------- handlers
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

    - ``form``: the handler's API parameters are the form's fields (each optional), and it receives the form, built
      once from the click's values, as ``form``;
    - a handler that takes ``shelf`` or ``owner`` also takes the page's ``token`` (after its own values) and gets the
      caller's relations shelf and owner key, from the signed-in user, the page token or the API session;
    - a ReVersionError becomes a one-sentence Gradio error; anything unexpected one sentence too (logged).
    """
    def wrap(fn):
        own = inspect.signature(fn).parameters
        wants_visitor = "shelf" in own or "owner" in own
        params = [p for name, p in own.items() if name not in ("form", "shelf", "owner", "request")]
        if form is not None:
            params = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                      for f in dataclasses.fields(form)] + params
        names = [p.name for p in params]
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
                built = form.from_values(**{n: values.pop(n) for n in [f.name for f in dataclasses.fields(form)]})
                values["form"] = built
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
        wrapper.input_names = names  # the values the page wires, in order (the token follows when wanted)
        return wrapper
    return wrap


def _int_slider(low: int, high: int, value: int, label: str, **kwargs) -> gr.Slider:
    return gr.Slider(low, high, value=value, step=1, precision=0, label=label, **kwargs)


# ----------------------------------------------------------------------------------------------- the page
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


def header_text(studio: st.Studio) -> str:
    rt = studio.runtime
    lines = [f"# {TITLE}", DESCRIPTION, f"Running **{rt.description}**."]
    if studio.workspaces is not None:
        lim = studio.workspaces.limits
        lines.append(
            f"**Public mode**: what you train or import is yours alone, beside the shipped relations (which nobody can "
            f"change). Up to {lim.relations_per_visitor} relations, {lim.train_steps} steps a run, one training at a "
            f"time, uploads up to {lim.upload_mb:g} MB; your relations are removed after {lim.idle_hours:g} hours unused"
            f"{'' if studio.workspaces.persistent else ' or when the app restarts'}; download them as a zip to keep them."
        )
    return "\n\n".join(lines)


def build_train_tab(studio: st.Studio, page: Page) -> None:
    benchmark_sets = st.list_benchmark_sets(studio.benchmark_dir)
    first_set = benchmark_sets[0] if benchmark_sets else None
    defaults = TrainForm()
    lim = studio.workspaces.limits if studio.workspaces is not None else None
    max_steps = min(3000, lim.train_steps) if lim is not None else 3000
    built_name = studio.shared.free_name(first_set) if first_set and not studio.public else (first_set or "")

    @handler(studio)
    def show_set(name):
        if not name:
            return [], defaults.preview_prompt
        view = st.benchmark_view(studio.benchmark_dir, name)
        prompt = view.templates[0] if view.templates else defaults.preview_prompt
        return [(image, caption.split("\n")[0]) for image, caption in view.gallery], prompt  # every level is in Benchmark

    @handler(studio)
    def choose_set(name, shelf):
        return (*show_set(name), shelf.free_name(name) if name else gr.skip())

    @handler(studio)
    def propose_name(set_name, current, shelf):
        """On page load: a free name again (relations may have been added since the page was built), unless the person
        has already typed one."""
        return shelf.free_name(set_name) if set_name and current == built_name else gr.skip()

    def exemplars_and_name(form: TrainForm, shelf):
        if form.from_benchmark:
            exemplars = st.load_benchmark_set(studio.benchmark_dir, form.set_name)
        else:
            shelf.check_upload(form.files)
            exemplars = exemplars_from_files(form.files, form.captions)
        name = form.name.strip() or (shelf.free_name(form.set_name) if form.from_benchmark and form.set_name else "")
        if not name:
            raise ReVersionError("Give the relation a name, such as 'painted_on'.")
        return exemplars, check_name(name)

    @handler(studio, TrainForm)
    def prepare_training(form, shelf, owner):
        """Check a training's inputs without starting it: the status line it would start with, or the error."""
        _, name = exemplars_and_name(form, shelf)
        studio.check_training(name, form.settings(), form.overwrite, shelf)
        studio.slot.forget(owner)
        return studio.slot.waiting_message() if studio.slot.busy() else f"Starting **{name}**: loading the base model..."

    @handler(studio, TrainForm)
    def train(form, shelf, owner, request):
        """Learn a relation from a benchmark set (source 'Benchmark set', set_name from /list_benchmark_sets) or from
        uploaded images with captions (source 'Upload'); streams status, loss plots, previews and nearest words.
        The training runs on the server: a closed connection stops only the stream, /stop stops the run."""
        exemplars, name = exemplars_and_name(form, shelf)
        yield from stream(studio.train(owner, exemplars, name, form.settings(), form.overwrite, shelf), shelf, request)

    @handler(studio)
    def continue_training(name=None, more_steps=None, shelf=None, owner=None, request=None):
        """Train a relation learned in this app for more steps, from where it stopped; streams like /train."""
        if not name:
            raise ReVersionError("Choose a relation to continue.")
        job = studio.continue_training(owner, name, 100 if more_steps is None else more_steps, shelf)
        yield from stream(job.updates(), shelf, request)

    @handler(studio)
    def follow_training(shelf, owner, request):
        yield from stream(studio.follow(owner), shelf, request)

    @handler(studio)
    def stop(owner, request):
        """Stop your running training (it saves the latest <R>) or cancel your queued one."""
        message = studio.slot.stop(owner)
        gr.Info(for_page(message, request))
        return as_markdown(message)

    @handler(studio)
    def continue_choices(current, shelf):
        names = studio.continuable(shelf)
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    def stream(updates, shelf, request):
        """TrainUpdates as the Train tab's outputs; previews are sent again only when they change."""
        previews = None
        for update in updates:
            if update.warning:
                gr.Warning(for_page(update.warning, request))
            # an empty first frame would fix the plot's colour domain to no series at all: send frames once rows exist
            main, steer = loss_frames(update.losses) if update.losses else (gr.skip(), gr.skip())
            saved = relation_choices(studio, shelf, select=update.saved) if update.saved else gr.skip()
            names = studio.continuable(shelf) if update.saved else None
            again = gr.Dropdown(choices=names, value=update.saved if update.saved in names else None) if update.saved else gr.skip()
            new_previews = update.previews if update.previews is not previews else gr.skip()
            previews = update.previews
            yield (as_markdown(update.status), main, steer, new_previews, update.nearest or None, saved, again,
                   update.saved or gr.skip())

    with gr.Tab("Train", id="train") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                page.source = source = gr.Radio(list(SOURCES), value=defaults.source, label="Exemplars from")
                with gr.Group(visible=True) as set_group:
                    page.train_set = train_set = gr.Dropdown(benchmark_sets, value=first_set, label="Benchmark exemplar set")
                    set_gallery = gr.Gallery(label="Exemplars", columns=3, height="auto", elem_classes="pixelated", format="png",
                                             allow_preview=False, object_fit="contain", elem_id="set-gallery")
                with gr.Group(visible=False) as upload_group:
                    files = gr.File(label="Exemplar images (and optionally a text.json)", file_count="multiple",
                                    file_types=["image", ".json"], type="filepath")
                    captions = gr.Textbox(label="Captions with <R>", lines=4, placeholder=CAPTIONS_PLACEHOLDER)
                page.name = name = gr.Textbox(label="Relation name", value=built_name, max_lines=1, elem_id="relation-name")
                overwrite = gr.Checkbox(label="Overwrite an existing relation of the same name" if not studio.public else
                                        "Overwrite one of your relations of the same name", value=False, elem_id="overwrite")
                with gr.Row():
                    steps = _int_slider(1, max_steps, min(defaults.steps, max_steps), "Steps", elem_id="train-steps")
                    seed = gr.Number(value=defaults.seed, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
                with gr.Row():
                    lr = gr.Number(value=defaults.learning_rate, label="Learning rate (x batch x accumulation)",
                                   minimum=TRAIN_BOUNDS["learning_rate"][1], maximum=TRAIN_BOUNDS["learning_rate"][2])
                    batch = _int_slider(*TRAIN_BOUNDS["batch_size"][1:], defaults.batch_size, "Batch size")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        steering = gr.Checkbox(value=defaults.steering, label="Relation-steering contrastive loss")
                        lambda_steer = gr.Number(value=defaults.lambda_steer, label="Steering weight (lambda)",
                                                 minimum=TRAIN_BOUNDS["lambda_steer"][1], maximum=TRAIN_BOUNDS["lambda_steer"][2])
                    with gr.Row():
                        importance = gr.Checkbox(value=defaults.importance_sampling, label="Relation-focal importance sampling")
                        alpha = gr.Slider(0.0, 1.0, value=defaults.alpha, step=0.05, label="Sampling alpha")
                    with gr.Row():
                        positives = _int_slider(*TRAIN_BOUNDS["positives"][1:], defaults.positives, "Positives per step")
                        temperature = gr.Number(value=defaults.temperature, label="Temperature",
                                                minimum=TRAIN_BOUNDS["temperature"][1], maximum=TRAIN_BOUNDS["temperature"][2])
                    with gr.Row():
                        grad_accum = _int_slider(*TRAIN_BOUNDS["grad_accum"][1:], defaults.grad_accum, "Gradient accumulation")
                        preview_every = _int_slider(0, 500, defaults.preview_every, "Preview every K steps (0: never)")
                    validation = gr.Textbox(value=defaults.preview_prompt, label="Preview prompt", max_lines=1)
                with gr.Row():
                    start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
                with gr.Accordion("Continue a relation trained here", open=False, elem_id="continue-box"):
                    with gr.Row():
                        page.continue_name = continue_name = gr.Dropdown(
                            studio.continuable() if not studio.public else [], label="Relation to continue",
                            elem_id="continue-name", scale=2, allow_custom_value=True)  # choices grow
                        more_steps = _int_slider(1, max_steps, 100, "More steps", elem_id="more-steps", scale=2)
                    continue_btn = gr.Button("Continue training", elem_id="continue-start")
            with gr.Column(scale=1):
                train_status = gr.Markdown("Idle.", label="Status", elem_id="train-status")
                loss_plot = gr.LinePlot(x="step", y="loss", color="series", elem_id="loss-plot", height=260, label="Loss",
                                        color_map=LOSS_COLOURS, colors_in_legend=[])
                steer_plot = gr.LinePlot(x="step", y="loss", color="series", height=200, elem_id="steer-plot",
                                         label="Steering loss", color_map=LOSS_COLOURS, colors_in_legend=[])
                gr.Markdown("Orange: total loss, drawn over blue: denoise loss; green: steering loss. Faint: each step; "
                            "solid: smoothed (moving average).", elem_id="loss-key")
                previews = gr.Gallery(label="Previews", columns=2, height="auto", elem_classes="pixelated", format="png",
                                      elem_id="train-previews", object_fit="contain")
                nearest = gr.Label(label="Vocabulary words nearest to <R>", num_top_classes=st.NEAREST_K)
                trained = gr.State(None)  # the relation this page's last run saved: the report card scores it
                build_score_panel(studio, trained, page.owner, handler(studio), hidden_until_chosen=True, elem_prefix="train-score")

    fields = {"source": source, "set_name": train_set, "name": name, "overwrite": overwrite, "steps": steps,
              "learning_rate": lr, "batch_size": batch, "seed": seed, "steering": steering, "lambda_steer": lambda_steer,
              "importance_sampling": importance, "alpha": alpha, "positives": positives, "temperature": temperature,
              "grad_accum": grad_accum, "preview_every": preview_every, "preview_prompt": validation, "files": files,
              "captions": captions}
    def wire() -> None:  # once every tab is built: the outputs include the Generate tab's relation list
        train_inputs = [fields[n] for n in train.input_names] + [page.owner]
        outputs = [train_status, loss_plot, steer_plot, previews, nearest, page.relation, continue_name, trained]
        source.change(lambda s: (gr.Group(visible=s == SOURCES[0]), gr.Group(visible=s == SOURCES[1])), source,
                      [set_group, upload_group], queue=False, **PRIVATE)  # instant toggles
        train_set.change(choose_set, [train_set, page.owner], [set_gallery, validation, name], **PRIVATE)
        # the run lives on the server, so following it needs no worker of the queue
        start_btn.click(prepare_training, train_inputs, train_status, api_name="prepare_training").success(
            train, train_inputs, outputs, api_name="train", concurrency_limit=None)
        continue_btn.click(continue_training, [continue_name, more_steps, page.owner], outputs, api_name="continue_training",
                           concurrency_limit=None)
        stop_btn.click(stop, page.owner, train_status, api_name="stop", concurrency_limit=None)  # never waits behind the run
        tab.select(continue_choices, [continue_name, page.owner], continue_name, **PRIVATE)

        page.on_load += [  # after the page's token is known
            lambda loaded: loaded.then(propose_name, [train_set, name, page.owner], name, queue=False, **PRIVATE),
            lambda loaded: loaded.then(show_set, train_set, [set_gallery, validation], **PRIVATE),
            lambda loaded: loaded.then(continue_choices, [continue_name, page.owner], continue_name, **PRIVATE),
            # a reloaded page owns its training still and follows it again
            lambda loaded: loaded.then(follow_training, page.owner, outputs, concurrency_limit=None, **PRIVATE),
        ]

    page.later.append(wire)


def build_generate_tab(studio: st.Studio, page: Page) -> None:
    defaults = GenerateForm()

    @handler(studio)
    def refresh_relations(current, shelf):
        return relation_choices(studio, shelf, current), unusable_text(studio, shelf)

    @handler(studio)
    def show_relation(name, shelf):
        return studio.relation_card(name, shelf) if name else ("No relation chosen.", None)

    @handler(studio, GenerateForm)
    def generate(form, shelf):
        """Images of entity A <R> entity B (mode 'Entities') or of a free prompt with <R> (mode 'Free prompt')."""
        images, text = studio.generate(form, shelf)
        return images, f"Prompt: `{text}`"

    @handler(studio)
    def import_relation(files, name=None, overwrite=None, shelf=None, request=None):
        """Import a relation file (.safetensors, learned_embeds.bin, a relation .zip) under a name."""
        imported = studio.import_relation(files, name, bool(overwrite), shelf)
        gr.Info(for_page(f"Imported relation {imported}.", request))
        return relation_choices(studio, shelf, select=imported), None

    @handler(studio)
    def download_relation(name, shelf):
        """A relation's folder as a .zip."""
        return gr.File(value=str(studio.export_relation(name, shelf)), visible=True)

    @handler(studio)
    def delete_relation(name, shelf, request):
        if not name:
            raise ReVersionError("Choose a relation first.")
        shelf.workspace.delete(name)
        gr.Info(for_page(f"Deleted relation {name}.", request))
        return relation_choices(studio, shelf), unusable_text(studio, shelf)

    with gr.Tab("Generate", id="generate") as tab:
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Row():
                    on_disk = studio.relation_names_on_disk() if not studio.public else sorted(studio.workspaces.shipped_names())
                    page.relation = relation = gr.Dropdown(on_disk, value=on_disk[0] if on_disk else None, label="Relation",
                                                           scale=4, elem_id="relation-dropdown",
                                                           allow_custom_value=True)  # choices change as relations are added
                    refresh_btn = gr.Button("Refresh", scale=1, size="sm")
                relation_info = gr.Markdown()
                page.unusable = gr.Markdown(elem_id="unusable-relations")
                page.mode = mode = gr.Radio(list(MODES), value=defaults.mode, label="Prompt")
                with gr.Row():
                    page.entity_a = entity_a = gr.Textbox(label="Entity A", placeholder="red circle", max_lines=1, elem_id="entity-a")
                    page.entity_b = entity_b = gr.Textbox(label="Entity B", placeholder="blue square", max_lines=1, elem_id="entity-b")
                prompt = gr.Textbox(label="Free prompt with <R>", placeholder="a yellow triangle <R> a green square",
                                    max_lines=2, visible=False, elem_id="free-prompt")
                suffix = gr.Textbox(label="Style / background (optional)", placeholder="on a striped background", max_lines=1)
                negative = gr.Textbox(label="Negative prompt (optional)", max_lines=1)
                with gr.Row():
                    num_images = _int_slider(1, 8, defaults.num_images, "Images")
                    gen_steps = _int_slider(1, 100, defaults.steps, "Steps")
                with gr.Row():
                    guidance = gr.Slider(1.0, 15.0, value=defaults.guidance, step=0.5, label="Guidance")
                    gen_seed = gr.Number(value=defaults.seed, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
                examples = entity_examples(studio.benchmark_dir)
                if examples:
                    gr.Examples(examples, inputs=[entity_a, entity_b, suffix], label="Examples")
            with gr.Column(scale=1):
                gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_classes="pixelated", format="png",
                                     elem_id="gen-gallery", object_fit="contain")
                used_prompt = gr.Markdown(label="Prompt")
                relation_preview = gr.Image(label="Training preview of this relation", height=320, elem_classes="pixelated",
                                            format="png", interactive=False, elem_id="relation-preview")
                build_score_panel(studio, relation, page.owner, handler(studio), api_name="score_relation",
                                  refresh_on=[tab.select], elem_prefix="gen-score")
                with gr.Accordion("Import or download a relation", open=False, elem_id="import-box"):
                    import_files = gr.File(label="Relation file(s): .safetensors, learned_embeds.bin, card.json or a relation .zip",
                                           file_count="multiple", file_types=[".safetensors", ".bin", ".pt", ".json", ".zip"],
                                           type="filepath", elem_id="import-files")
                    with gr.Row():
                        import_name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="import-name")
                        import_overwrite = gr.Checkbox(label="Overwrite", value=False)
                    import_btn = gr.Button("Import", elem_id="import-button")
                    download_btn = gr.Button("Download the chosen relation (.zip)", elem_id="download-button")
                    download_file = gr.File(label="Download", visible=False, interactive=False, elem_id="download-file")
                    delete_btn = gr.Button("Delete the chosen relation (yours only)", variant="stop", visible=studio.public,
                                           elem_id="delete-button")

    fields = {"relation": relation, "mode": mode, "entity_a": entity_a, "entity_b": entity_b, "prompt": prompt,
              "suffix": suffix, "negative": negative, "num_images": num_images, "steps": gen_steps, "guidance": guidance,
              "seed": gen_seed}
    relation.change(show_relation, [relation, page.owner], [relation_info, relation_preview], **PRIVATE)
    for trigger in (refresh_btn.click, tab.select):
        trigger(refresh_relations, [relation, page.owner], [relation, page.unusable], **PRIVATE)
    mode.change(lambda m: (gr.Textbox(visible=m != MODES[1]), gr.Textbox(visible=m != MODES[1]),
                           gr.Textbox(visible=m == MODES[1])), mode, [entity_a, entity_b, prompt], queue=False, **PRIVATE)
    generate_btn.click(generate, [fields[n] for n in generate.input_names] + [page.owner], [gallery, used_prompt],
                       api_name="generate", concurrency_id="generate")
    import_btn.click(import_relation, [import_files, import_name, import_overwrite, page.owner], [relation, import_files],
                     api_name="import_relation")
    download_btn.click(download_relation, [relation, page.owner], download_file, api_name="download_relation")
    if studio.public:
        delete_btn.click(delete_relation, [relation, page.owner], [relation, page.unusable], api_name="delete_relation")
    page.on_load.append(lambda loaded: loaded.then(refresh_relations, [relation, page.owner], [relation, page.unusable], **PRIVATE))


def build_benchmark_tab(studio: st.Studio, page: Page) -> None:
    benchmark_sets = st.list_benchmark_sets(studio.benchmark_dir)

    @handler(studio)
    def browse(name):
        """A benchmark set: its exemplars with captions, every caption, its description and inference templates."""
        if not name:
            return [], [], "No exemplar sets found.", []
        view = st.benchmark_view(studio.benchmark_dir, name)
        return view.gallery, view.captions, view.description, [[t] for t in view.templates]

    @handler(studio)
    def train_on_set(name, shelf):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        return gr.Tabs(selected="train"), SOURCES[0], name, shelf.free_name(name)

    @handler(studio)
    def generate_with_set(name, current, shelf):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        relation = studio.relation_for_set(name, shelf)
        if relation is None:
            raise ReVersionError(f"No relation has been learned from {name!r} yet; press 'Train on these' first.")
        view = st.benchmark_view(studio.benchmark_dir, name)
        a, b = st.split_template(view.templates[0]) if view.templates else (gr.skip(), gr.skip())
        return gr.Tabs(selected="generate"), relation_choices(studio, shelf, select=relation), MODES[0], a, b

    with gr.Tab("Benchmark", id="benchmark"):
        with gr.Row():
            bench_set = gr.Dropdown(benchmark_sets, value=benchmark_sets[0] if benchmark_sets else None, label="Relation", scale=3)
            to_train_btn = gr.Button("Train on these", scale=1, elem_id="to-train")
            to_generate_btn = gr.Button("Generate with this relation", scale=1, elem_id="to-generate")
        description = gr.Markdown(label="Description")
        gallery = gr.Gallery(label="Exemplars (captions under each image)", columns=6, height="auto", elem_classes="pixelated",
                             format="png", elem_id="bench-gallery", object_fit="contain")
        with gr.Row():
            captions = gr.Dataframe(headers=["image", "level", "caption"], label="Captions at every level",
                                    interactive=False, wrap=True, max_height=360)
            templates = gr.Dataframe(headers=["inference template"], label="Inference templates", interactive=False,
                                     max_height=360)

    shown = [gallery, captions, description, templates]
    bench_set.change(browse, bench_set, shown, api_name="benchmark_set")
    to_train_btn.click(train_on_set, [bench_set, page.owner], [page.tabs, page.source, page.train_set, page.name], **PRIVATE)
    to_generate_btn.click(generate_with_set, [bench_set, page.relation, page.owner],
                          [page.tabs, page.relation, page.mode, page.entity_a, page.entity_b], **PRIVATE)
    page.on_load.append(lambda loaded: loaded.then(browse, bench_set, shown, **PRIVATE))


def entity_examples(benchmark_dir: Path, count: int = 6) -> list[list[str]]:
    """A few (entity A, entity B, style) examples from the benchmark's inference templates."""
    out: list[list[str]] = []
    for k, name in enumerate(st.list_benchmark_sets(benchmark_dir)[:count]):
        try:
            templates = st.benchmark_view(benchmark_dir, name).templates
        except ReVersionError:
            continue
        if templates:
            out.append([*st.split_template(templates[0]), STYLE_EXAMPLES[k % len(STYLE_EXAMPLES)]])
    return out


def build_demo(studio: st.Studio) -> gr.Blocks:
    """The page: a header saying what runs where, then the Train, Generate and Benchmark tabs."""
    def list_relations(request: gr.Request) -> list[str]:
        """The names of the relations learned on the loaded base model (the Generate tab's choices)."""
        return studio.relation_names(studio.shelf(visitor_key(None, request, None)))

    def list_benchmark_sets() -> list[str]:
        """The names of the benchmark's exemplar sets (the values of train's set_name)."""
        return st.list_benchmark_sets(studio.benchmark_dir)

    def page_owner(stored):
        """The page's owner token, kept in the browser so a reload still owns its training and finds its relations."""
        token = stored or uuid.uuid4().hex
        return token, token

    with gr.Blocks(title=TITLE) as demo:
        stored_owner = gr.BrowserState("", storage_key="reversion-studio-owner")
        page = Page(tabs=None, owner=gr.State(None))
        with gr.Row():
            gr.Markdown(header_text(studio), elem_id="header")
            if studio.public and os.environ.get("OAUTH_CLIENT_ID"):  # the Space enables sign-in (hf_oauth: true)
                gr.LoginButton(scale=0)
        with gr.Tabs() as page.tabs:
            build_train_tab(studio, page)
            build_generate_tab(studio, page)
            build_benchmark_tab(studio, page)
        for wire in page.later:
            wire()
        for fn in (list_relations, list_benchmark_sets):
            fn.__annotations__ = typing.get_type_hints(fn)  # real types (not strings) give the API its return type
            gr.api(fn, api_name=fn.__name__)
        loaded = demo.load(page_owner, stored_owner, [stored_owner, page.owner], queue=False, **PRIVATE)
        for wire in page.on_load:
            wire(loaded)
    return demo


def make_studio(args: argparse.Namespace, temp_dir: Path) -> st.Studio:
    """The studio for these flags and this machine: the runtime it picks, and in public mode the visitors' workspaces."""
    from reversion_core.hosting import pick_runtime
    from reversion_core.zerogpu import default_cap

    runtime = pick_runtime(base_model=args.base_model, device=args.device, attention=args.attention, public=args.public)
    workspaces = Workspaces(args.relations_dir, DATA, limits_from_env()) if runtime.public else None
    if workspaces is not None:
        workspaces.start_cleanup()
    return st.Studio(relations_dir=args.relations_dir, benchmark_dir=args.benchmark_dir, temp_dir=temp_dir,
                     runtime=runtime, workspaces=workspaces, cap_s=default_cap(runtime))


def fetch_tagger() -> threading.Thread:
    """Fetch NLTK's tagger into the data dir where the network allows (in the background), and log which one is in use."""
    from reversion_core.lexicon import ensure_tagger

    def fetch() -> None:
        log.info("caption words: %s part-of-speech tagger", ensure_tagger(DATA))

    thread = threading.Thread(target=fetch, daemon=True, name="reversion-tagger")
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    temp_dir = make_temp_dir(os.environ.get("REVERSION_TEMP_DIR"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp_dir / "gradio"))  # uploads and outputs stay in the app's temp dir
    try:
        studio = make_studio(args, temp_dir)
    except ReVersionError as exc:
        raise SystemExit(str(exc)) from None
    log.info("running %s%s", studio.runtime.description, " in public mode" if studio.public else "")
    fetch_tagger()
    demo = build_demo(studio)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(studio.relations_dir), str(APP_DIR / "assets"), str(temp_dir)]  # never the visitors' workspaces
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                max_file_size=args.max_file_size, css=CSS, footer_links=["api"], show_error=False,
                prevent_thread_lock=True)
    studio.warm_up()  # load the base model in the background once the page is served
    demo.block_thread()


if __name__ == "__main__":
    main()
