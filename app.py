"""ReVersion Studio: learn a relation prompt <R> from a few exemplar images, then generate with it.

UI only: layout and event wiring. Every handler is a small call into ``reversion_core`` (``reversion_core.studio``
holds the app-side helpers). ``python app.py --help`` lists the flags; each has an environment variable too.
"""
from __future__ import annotations

import argparse
import atexit
import functools
import html
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import typing
import uuid
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
for _var, _value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_var, _value)  # keep load bars and library notes out of the server log

import gradio as gr  # noqa: E402

from reversion_core.errors import ReVersionError  # noqa: E402
from reversion_core import studio as st  # noqa: E402
from reversion_core.settings import ATTENTION_CHOICES  # noqa: E402

TITLE = "ReVersion Studio"
DESCRIPTION = (
    "Learn a **relation prompt** `<R>` from a few exemplar images that share one relation between two entities "
    "(ReVersion, SIGGRAPH Asia 2024), watch it being learned, then write `rabbit <R> carrot` to put new entities in "
    "the same relation. Runs on CPU with the embedded miniature base model; `--base-model` switches to SD 1.5."
)
DEFAULT_STEPS = 200  # the paper trains 3000 steps on SD 1.5; the embedded model learns a relation in a few hundred
DEFAULT_PREVIEW_EVERY = 50
DEFAULT_GEN_STEPS = 25
DEFAULT_VALIDATION_PROMPT = "circle <R> square"
DEFAULT_MAX_FILE_SIZE = "64mb"  # per uploaded file; exemplar images are shrunk to 1024 px on load anyway
CAPTIONS_PLACEHOLDER = "One line per image, in upload order; several captions of one image separated by |\n" \
                       "red circle <R> blue square | a red circle <R> a blue square\ngreen triangle <R> yellow square"
STYLE_EXAMPLES = ("", "on a dotted background", "on a striped background")
# raw per-step lines faint, smoothed lines solid (the plot draws them in studio's MAIN_SERIES / STEER_SERIES order)
LOSS_COLOURS = {"total": "rgba(234,88,12,0.3)", "denoise": "rgba(37,99,235,0.3)", "steering": "rgba(22,163,74,0.3)",
                "total (smoothed)": "#ea580c", "denoise (smoothed)": "#2563eb", "steering (smoothed)": "#16a34a"}
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
log = logging.getLogger("reversion_studio")


# ----------------------------------------------------------------------------------------------- config
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=TITLE)
    p.add_argument("--base-model", default=env("REVERSION_BASE_MODEL"),
                   help="SD 1.x hub id, diffusers folder or .safetensors (default: the embedded model; env REVERSION_BASE_MODEL)")
    p.add_argument("--relations-dir", default=env("REVERSION_RELATIONS_DIR", str(APP_DIR / "relations")),
                   help="where relation prompts live (env REVERSION_RELATIONS_DIR)")
    p.add_argument("--benchmark-dir", default=env("REVERSION_BENCHMARK_DIR", str(APP_DIR / "assets" / "benchmark")),
                   help="exemplar sets in the ReVersion benchmark layout (env REVERSION_BENCHMARK_DIR)")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--device", choices=["cpu", "cuda"], default=env("REVERSION_DEVICE"),
                   help="default: cuda when present (env REVERSION_DEVICE)")
    p.add_argument("--attention", choices=list(ATTENTION_CHOICES), default=env("REVERSION_ATTENTION", "sdpa"),
                   help="attention backend; xformers must be installed (env REVERSION_ATTENTION)")
    p.add_argument("--max-file-size", default=env("REVERSION_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                   help=f"largest accepted upload, such as 64mb (env REVERSION_MAX_FILE_SIZE; default {DEFAULT_MAX_FILE_SIZE})")
    return p.parse_args(argv)


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


# ----------------------------------------------------------------------------------------------- errors
def for_page(text: str, request: gr.Request | None) -> str:
    """Toast text: the page renders it as HTML (so ``<R>`` is escaped, once); API clients get it as it is."""
    headers = getattr(request, "headers", None) or {}
    return html.escape(text) if headers.get("x-gradio-user") == "app" else text


def ui_errors(fn):
    """Show a ReVersionError as a one-sentence Gradio error; anything unexpected as one sentence too (logged).

    The wrapper asks Gradio for the request (to know whether a page or an API client called) whether or not ``fn``
    takes it."""
    signature = inspect.signature(fn)
    takes_request = "request" in signature.parameters

    def split(args, kwargs):
        request = kwargs.get("request")
        if request is None:
            request = next((a for a in args if isinstance(a, gr.Request)), None)
            if not takes_request:
                args = tuple(a for a in args if not isinstance(a, gr.Request))
        return args, kwargs, request

    def convert(exc: Exception, request) -> gr.Error:
        if isinstance(exc, ReVersionError):
            return gr.Error(for_page(str(exc), request), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(exc).__name__}); the app keeps serving, please try again.", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args, kwargs, request = split(args, kwargs)
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise convert(exc, request) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            args, kwargs, request = split(args, kwargs)
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise convert(exc, request) from None
    if not takes_request:
        extra = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)
        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        wrapper.__annotations__ = {**fn.__annotations__, "request": gr.Request}
    return wrapper


def as_markdown(status: str) -> str:
    """A status line for a Markdown output: tokens such as <R> in code spans, so the page shows them (not as tags)."""
    return re.sub(r"(?<!`)(<[^<>\s`]+>)(?!`)", r"`\1`", status)


def _owner(token: str | None, request: gr.Request | None) -> str | None:
    """Who started a training: the page's own token (kept across reloads), else the API client's session."""
    return token or getattr(request, "session_hash", None)


def _int_slider(low: int, high: int, value: int, label: str, **kwargs) -> gr.Slider:
    return gr.Slider(low, high, value=value, step=1, precision=0, label=label, **kwargs)


# ----------------------------------------------------------------------------------------------- the app
def build_demo(studio: st.Studio) -> gr.Blocks:
    benchmark_sets = st.list_benchmark_sets(studio.benchmark_dir)
    first_set = benchmark_sets[0] if benchmark_sets else None
    examples = _entity_examples(studio.benchmark_dir, benchmark_sets)
    defaults = st.InversionSettings()
    bounds = st.TRAIN_BOUNDS

    # --------------------------------------------------------------------------------------- handlers
    def relation_choices(current: str | None = None, select: str | None = None):
        """The Generate tab's relations; the page's choice is left alone while it is still valid (a refresh that
        answers late must not undo a choice made meanwhile)."""
        names = studio.relation_names()
        if select is None and current in names:
            return gr.Dropdown(choices=names)
        return gr.Dropdown(choices=names, value=select if select is not None else (names[0] if names else None))

    def continue_choices(current: str | None = None):
        names = studio.continuable()
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    def list_relations() -> list[str]:
        """The names of the relations learned on the loaded base model (the Generate tab's choices)."""
        return studio.relation_names()

    def list_benchmark_sets() -> list[str]:
        """The names of the benchmark's exemplar sets (the values of train's set_name)."""
        return st.list_benchmark_sets(studio.benchmark_dir)

    @ui_errors
    def refresh_relations(current):
        return relation_choices(current)

    @ui_errors
    def refresh_train_tab(current):
        return continue_choices(current)

    @ui_errors
    def show_relation(name):
        return studio.relation_card(name) if name else ("No relation chosen.", None)

    @ui_errors
    def exemplar_source(source):
        return gr.Group(visible=source == "Benchmark set"), gr.Group(visible=source == "Upload")

    @ui_errors
    def show_set(name):
        if not name:
            return [], DEFAULT_VALIDATION_PROMPT
        view = st.benchmark_view(studio.benchmark_dir, name)
        prompt = view.templates[0] if view.templates else DEFAULT_VALIDATION_PROMPT
        short = [(image, caption.split("\n")[0]) for image, caption in view.gallery]  # every level is in Benchmark
        return short, prompt

    @ui_errors
    def choose_set(name):
        return (*show_set(name), studio.free_name(name) if name else gr.skip())

    built_name = studio.free_name(first_set) if first_set else ""

    def propose_name(set_name, current):
        """On page load: a free name again (relations may have been added since the page was built), unless the person
        has already typed one."""
        return studio.free_name(set_name) if set_name and current == built_name else gr.skip()

    def _train_inputs(source, set_name, files, captions, name):
        source = source or "Benchmark set"
        exemplars = (st.load_benchmark_set(studio.benchmark_dir, set_name) if source == "Benchmark set"
                     else st.exemplars_from_files(files, captions))
        name = (name or "").strip() or (studio.free_name(set_name) if source == "Benchmark set" else "")
        if not name:
            raise ReVersionError("Give the relation a name, such as 'painted_on'.")
        return exemplars, st.check_name(name)

    def _settings(steps, lr, batch, seed, steering, lambda_steer, importance, alpha, positives, temperature, grad_accum,
                  preview_every, validation):
        value = lambda v, default: default if v is None else v  # noqa: E731  (API callers may leave any out)
        return st.app_settings(
            value(steps, DEFAULT_STEPS), value(lr, defaults.learning_rate), value(batch, defaults.train_batch_size),
            value(seed, defaults.seed), value(steering, True), value(lambda_steer, defaults.lambda_steer),
            value(importance, True), value(alpha, defaults.alpha), value(positives, defaults.num_positives),
            value(temperature, defaults.temperature), value(grad_accum, defaults.gradient_accumulation_steps),
            value(preview_every, DEFAULT_PREVIEW_EVERY), value(validation, DEFAULT_VALIDATION_PROMPT))

    def _stream(updates, request):
        """TrainUpdates as the Train tab's outputs; previews are sent again only when they change."""
        previews = None
        for update in updates:
            if update.warning:
                gr.Warning(for_page(update.warning, request))
            # an empty first frame would fix the plot's colour domain to no series at all: send frames once rows exist
            main, steer = st.loss_frames(update.losses) if update.losses else (gr.skip(), gr.skip())
            saved = relation_choices(select=update.saved) if update.saved else gr.skip()
            again = continue_choices(update.saved) if update.saved else gr.skip()
            new_previews = update.previews if update.previews is not previews else gr.skip()
            previews = update.previews
            yield as_markdown(update.status), main, steer, new_previews, update.nearest or None, saved, again

    @ui_errors
    def prepare_training(source=None, set_name=None, name=None, overwrite=None, steps=None, learning_rate=None,
                         batch_size=None, seed=None, steering=None, lambda_steer=None, importance_sampling=None,
                         alpha=None, positives=None, temperature=None, grad_accum=None, preview_every=None,
                         preview_prompt=None, files=None, captions=None, token=None, request: gr.Request = None):
        """Check a training's inputs without starting it: the status line it would start with, or the error."""
        _, name = _train_inputs(source, set_name, files, captions, name)
        _settings(steps, learning_rate, batch_size, seed, steering, lambda_steer, importance_sampling, alpha, positives,
                  temperature, grad_accum, preview_every, preview_prompt)
        studio.check_new_relation(name, bool(overwrite))
        studio.slot.forget(_owner(token, request))
        return studio.slot.waiting_message() if studio.slot.busy() else f"Starting **{name}**: loading the base model..."

    @ui_errors
    def train(source=None, set_name=None, name=None, overwrite=None, steps=None, learning_rate=None, batch_size=None,
              seed=None, steering=None, lambda_steer=None, importance_sampling=None, alpha=None, positives=None,
              temperature=None, grad_accum=None, preview_every=None, preview_prompt=None, files=None, captions=None,
              token=None, request: gr.Request = None):
        """Learn a relation from a benchmark set (source 'Benchmark set', set_name from /list_benchmark_sets) or from
        uploaded images with captions (source 'Upload'); streams status, loss plots, previews and nearest words.
        The training runs on the server: a closed connection stops only the stream, /stop stops the run."""
        exemplars, name = _train_inputs(source, set_name, files, captions, name)
        settings = _settings(steps, learning_rate, batch_size, seed, steering, lambda_steer, importance_sampling, alpha,
                             positives, temperature, grad_accum, preview_every, preview_prompt)
        yield from _stream(studio.train(_owner(token, request), exemplars, name, settings, bool(overwrite)), request)

    @ui_errors
    def continue_training(name=None, more_steps=None, token=None, request: gr.Request = None):
        """Train a relation learned in this app for more steps, from where it stopped; streams like /train."""
        if not name:
            raise ReVersionError("Choose a relation to continue.")
        job = studio.continue_training(_owner(token, request), name, 100 if more_steps is None else more_steps)
        yield from _stream(job.updates(), request)

    @ui_errors
    def follow_training(token, request: gr.Request):
        yield from _stream(studio.follow(_owner(token, request)), request)

    @ui_errors
    def stop(token=None, request: gr.Request = None):
        """Stop your running training (it saves the latest <R>) or cancel your queued one."""
        message = studio.slot.stop(_owner(token, request))
        gr.Info(for_page(message, request))
        return as_markdown(message)

    @ui_errors
    def generate(relation=None, mode=None, entity_a=None, entity_b=None, prompt=None, suffix=None, negative=None,
                 num_images=None, steps=None, guidance=None, seed=None):
        """Images of entity A <R> entity B (mode 'Entities') or of a free prompt with <R> (mode 'Free prompt')."""
        free = mode == "Free prompt"
        if free and not (prompt or "").strip():
            raise ReVersionError("Write a prompt containing <R>, such as 'rabbit <R> carrot'.")
        images, text = studio.generate(relation, entity_a or "", entity_b or "", prompt if free else None, suffix or "",
                                       negative or "", 4 if num_images is None else num_images,
                                       DEFAULT_GEN_STEPS if steps is None else steps, 7.5 if guidance is None else guidance,
                                       0 if seed is None else seed)
        return images, f"Prompt: `{text}`"

    @ui_errors
    def import_relation(files, name=None, overwrite=None, request: gr.Request = None):
        """Import a relation file (.safetensors, learned_embeds.bin, a relation .zip) under a name."""
        imported = studio.import_relation(files, name, bool(overwrite))
        gr.Info(for_page(f"Imported relation {imported}.", request))
        return relation_choices(select=imported), None

    @ui_errors
    def download_relation(name):
        """A relation's folder as a .zip."""
        return gr.File(value=str(studio.export_relation(name)), visible=True)

    @ui_errors
    def browse(name):
        """A benchmark set: its exemplars with captions, every caption, its description and inference templates."""
        if not name:
            return [], [], "No exemplar sets found.", []
        view = st.benchmark_view(studio.benchmark_dir, name)
        return view.gallery, view.captions, view.description, [[t] for t in view.templates]

    @ui_errors
    def train_on_set(name):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        return gr.Tabs(selected="train"), "Benchmark set", name, studio.free_name(name)

    @ui_errors
    def generate_with_set(name, current):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        relation = studio.relation_for_set(name)
        if relation is None:
            raise ReVersionError(f"No relation has been learned from {name!r} yet; press 'Train on these' first.")
        view = st.benchmark_view(studio.benchmark_dir, name)
        a, b = st.split_template(view.templates[0]) if view.templates else (gr.skip(), gr.skip())
        return gr.Tabs(selected="generate"), relation_choices(select=relation), "Entities", a, b

    def page_owner(stored):
        """The page's owner token, kept in the browser so a reload still owns its training."""
        token = stored or uuid.uuid4().hex
        return token, token

    # --------------------------------------------------------------------------------------- layout
    private = {"api_visibility": "private"}
    with gr.Blocks(title=TITLE) as demo:
        stored_owner = gr.BrowserState("", storage_key="reversion-studio-owner")
        owner = gr.State(None)
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        with gr.Tabs() as tabs:
            # ----------------------------------------------------------------------------------- Train
            with gr.Tab("Train", id="train") as train_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        source = gr.Radio(["Benchmark set", "Upload"], value="Benchmark set", label="Exemplars from")
                        with gr.Group(visible=True) as set_group:
                            train_set = gr.Dropdown(benchmark_sets, value=first_set, label="Benchmark exemplar set")
                            set_gallery = gr.Gallery(label="Exemplars", columns=3, height="auto", elem_classes="pixelated",
                                                     format="png", allow_preview=False, object_fit="contain",
                                                     elem_id="set-gallery")
                        with gr.Group(visible=False) as upload_group:
                            files = gr.File(label="Exemplar images (and optionally a text.json)", file_count="multiple",
                                            file_types=["image", ".json"], type="filepath")
                            captions = gr.Textbox(label="Captions with <R>", lines=4, placeholder=CAPTIONS_PLACEHOLDER)
                        name = gr.Textbox(label="Relation name", value=built_name,
                                          max_lines=1, elem_id="relation-name")
                        overwrite = gr.Checkbox(label="Overwrite an existing relation of the same name", value=False, elem_id="overwrite")
                        with gr.Row():
                            steps = _int_slider(1, 3000, DEFAULT_STEPS, "Steps", elem_id="train-steps")
                            seed = gr.Number(value=defaults.seed, precision=0, label="Seed", minimum=0, maximum=st.MAX_SEED)
                        with gr.Row():
                            lr = gr.Number(value=defaults.learning_rate, label="Learning rate (x batch x accumulation)",
                                           minimum=bounds["learning_rate"][1], maximum=bounds["learning_rate"][2])
                            batch = _int_slider(*bounds["batch_size"][1:], defaults.train_batch_size, "Batch size")
                        with gr.Accordion("Advanced", open=False):
                            with gr.Row():
                                steering = gr.Checkbox(value=True, label="Relation-steering contrastive loss")
                                lambda_steer = gr.Number(value=defaults.lambda_steer, label="Steering weight (lambda)",
                                                         minimum=bounds["lambda_steer"][1], maximum=bounds["lambda_steer"][2])
                            with gr.Row():
                                importance = gr.Checkbox(value=True, label="Relation-focal importance sampling")
                                alpha = gr.Slider(0.0, 1.0, value=defaults.alpha, step=0.05, label="Sampling alpha")
                            with gr.Row():
                                positives = _int_slider(*bounds["num_positives"][1:], defaults.num_positives, "Positives per step")
                                temperature = gr.Number(value=defaults.temperature, label="Temperature",
                                                        minimum=bounds["temperature"][1], maximum=bounds["temperature"][2])
                            with gr.Row():
                                grad_accum = _int_slider(*bounds["grad_accum"][1:], defaults.gradient_accumulation_steps,
                                                         "Gradient accumulation")
                                preview_every = _int_slider(0, 500, DEFAULT_PREVIEW_EVERY, "Preview every K steps (0: never)")
                            validation = gr.Textbox(value=DEFAULT_VALIDATION_PROMPT, label="Preview prompt", max_lines=1)
                        with gr.Row():
                            start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
                            stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
                        with gr.Accordion("Continue a relation trained here", open=False, elem_id="continue-box"):
                            with gr.Row():
                                continue_name = gr.Dropdown(studio.continuable(), label="Relation to continue", elem_id="continue-name",
                                                            scale=2, allow_custom_value=True)  # choices grow
                                more_steps = _int_slider(1, 3000, 100, "More steps", elem_id="more-steps", scale=2)
                            continue_btn = gr.Button("Continue training", elem_id="continue-start")
                    with gr.Column(scale=1):
                        train_status = gr.Markdown("Idle.", label="Status", elem_id="train-status")
                        loss_plot = gr.LinePlot(x="step", y="loss", color="series", elem_id="loss-plot", height=260,
                                                label="Loss",
                                                color_map=LOSS_COLOURS, colors_in_legend=[])
                        steer_plot = gr.LinePlot(x="step", y="loss", color="series", height=200, elem_id="steer-plot",
                                                 label="Steering loss",
                                                 color_map=LOSS_COLOURS, colors_in_legend=[])
                        gr.Markdown("Orange: total loss, drawn over blue: denoise loss; green: steering loss. Faint: "
                                    "each step; solid: smoothed (moving average).", elem_id="loss-key")
                        previews = gr.Gallery(label="Previews", columns=2, height="auto", elem_classes="pixelated", format="png",
                                              elem_id="train-previews", object_fit="contain")
                        nearest = gr.Label(label="Vocabulary words nearest to <R>", num_top_classes=st.NEAREST_K)

            # ----------------------------------------------------------------------------------- Generate
            with gr.Tab("Generate", id="generate") as generate_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            on_disk = studio.relation_names_on_disk()
                            relation = gr.Dropdown(on_disk, value=on_disk[0] if on_disk else None, label="Relation", scale=4,
                                                   elem_id="relation-dropdown",
                                                   allow_custom_value=True)  # choices change as relations are added
                            refresh_btn = gr.Button("Refresh", scale=1, size="sm")
                        relation_info = gr.Markdown()
                        mode = gr.Radio(["Entities", "Free prompt"], value="Entities", label="Prompt")
                        with gr.Row():
                            entity_a = gr.Textbox(label="Entity A", placeholder="red circle", max_lines=1, elem_id="entity-a")
                            entity_b = gr.Textbox(label="Entity B", placeholder="blue square", max_lines=1, elem_id="entity-b")
                        prompt = gr.Textbox(label="Free prompt with <R>", placeholder="a yellow triangle <R> a green square",
                                            max_lines=2, visible=False, elem_id="free-prompt")
                        suffix = gr.Textbox(label="Style / background (optional)", placeholder="on a striped background", max_lines=1)
                        negative = gr.Textbox(label="Negative prompt (optional)", max_lines=1)
                        with gr.Row():
                            num_images = _int_slider(1, 8, 4, "Images")
                            gen_steps = _int_slider(1, 100, DEFAULT_GEN_STEPS, "Steps")
                        with gr.Row():
                            guidance = gr.Slider(1.0, 15.0, value=7.5, step=0.5, label="Guidance")
                            gen_seed = gr.Number(value=0, precision=0, label="Seed", minimum=0, maximum=st.MAX_SEED)
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        if examples:
                            gr.Examples(examples, inputs=[entity_a, entity_b, suffix], label="Examples")
                    with gr.Column(scale=1):
                        gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_classes="pixelated", format="png",
                                             elem_id="gen-gallery", object_fit="contain")
                        used_prompt = gr.Markdown(label="Prompt")
                        relation_preview = gr.Image(label="Training preview of this relation", height=320,
                                                    elem_classes="pixelated", format="png", interactive=False,
                                                    elem_id="relation-preview")
                        with gr.Accordion("Import or download a relation", open=False):
                            import_files = gr.File(label="Relation file(s): .safetensors, learned_embeds.bin, card.json or a relation .zip",
                                                   file_count="multiple", file_types=[".safetensors", ".bin", ".pt", ".json", ".zip"],
                                                   type="filepath")
                            with gr.Row():
                                import_name = gr.Textbox(label="Name (optional)", max_lines=1)
                                import_overwrite = gr.Checkbox(label="Overwrite", value=False)
                            import_btn = gr.Button("Import")
                            download_btn = gr.Button("Download the chosen relation (.zip)")
                            download_file = gr.File(label="Download", visible=False, interactive=False)

            # ----------------------------------------------------------------------------------- Benchmark
            with gr.Tab("Benchmark", id="benchmark"):
                with gr.Row():
                    bench_set = gr.Dropdown(benchmark_sets, value=first_set, label="Relation", scale=3)
                    to_train_btn = gr.Button("Train on these", scale=1, elem_id="to-train")
                    to_generate_btn = gr.Button("Generate with this relation", scale=1, elem_id="to-generate")
                bench_description = gr.Markdown(label="Description")
                bench_gallery = gr.Gallery(label="Exemplars (captions under each image)", columns=6, height="auto",
                                           elem_classes="pixelated", format="png", elem_id="bench-gallery", object_fit="contain")
                with gr.Row():
                    bench_captions = gr.Dataframe(headers=["image", "level", "caption"], label="Captions at every level",
                                                  interactive=False, wrap=True, max_height=360)
                    bench_templates = gr.Dataframe(headers=["inference template"], label="Inference templates",
                                                   interactive=False, max_height=360)

        # ------------------------------------------------------------------------------------------- wiring
        train_inputs = [source, train_set, name, overwrite, steps, lr, batch, seed, steering, lambda_steer, importance,
                        alpha, positives, temperature, grad_accum, preview_every, validation, files, captions, owner]
        train_outputs = [train_status, loss_plot, steer_plot, previews, nearest, relation, continue_name]
        source.change(exemplar_source, source, [set_group, upload_group], queue=False, **private)  # instant toggles
        train_set.change(choose_set, train_set, [set_gallery, validation, name], **private)
        # the run lives on the server, so following it needs no worker of the queue
        start_btn.click(prepare_training, train_inputs, train_status, api_name="prepare_training").success(
            train, train_inputs, train_outputs, api_name="train", concurrency_limit=None)
        continue_btn.click(continue_training, [continue_name, more_steps, owner], train_outputs,
                           api_name="continue_training", concurrency_limit=None)
        stop_btn.click(stop, owner, train_status, api_name="stop", concurrency_limit=None)  # never waits behind the run
        train_tab.select(refresh_train_tab, continue_name, continue_name, **private)

        relation.change(show_relation, relation, [relation_info, relation_preview], **private)
        refresh_btn.click(refresh_relations, relation, relation, **private)
        generate_tab.select(refresh_relations, relation, relation, **private)
        mode.change(lambda m: (gr.Textbox(visible=m != "Free prompt"), gr.Textbox(visible=m != "Free prompt"),
                               gr.Textbox(visible=m == "Free prompt")), mode, [entity_a, entity_b, prompt],
                    queue=False, **private)
        gen_inputs = [relation, mode, entity_a, entity_b, prompt, suffix, negative, num_images, gen_steps, guidance, gen_seed]
        generate_btn.click(generate, gen_inputs, [gallery, used_prompt], api_name="generate", concurrency_id="generate")
        import_btn.click(import_relation, [import_files, import_name, import_overwrite], [relation, import_files],
                         api_name="import_relation")
        download_btn.click(download_relation, relation, download_file, api_name="download_relation")

        bench_set.change(browse, bench_set, [bench_gallery, bench_captions, bench_description, bench_templates],
                         api_name="benchmark_set")
        to_train_btn.click(train_on_set, bench_set, [tabs, source, train_set, name], **private)
        to_generate_btn.click(generate_with_set, [bench_set, relation], [tabs, relation, mode, entity_a, entity_b], **private)
        for fn in (list_relations, list_benchmark_sets):
            fn.__annotations__ = typing.get_type_hints(fn)  # real types (not strings) give the API its return type
            gr.api(fn, api_name=fn.__name__)

        demo.load(propose_name, [train_set, name], name, queue=False, **private)  # at once, before anyone types
        demo.load(show_set, train_set, [set_gallery, validation], **private)
        demo.load(browse, bench_set, [bench_gallery, bench_captions, bench_description, bench_templates], **private)
        demo.load(refresh_relations, relation, relation, **private)
        demo.load(refresh_train_tab, continue_name, continue_name, **private)
        # a reloaded page owns its training still and follows it again
        demo.load(page_owner, stored_owner, [stored_owner, owner], queue=False, **private).then(
            follow_training, owner, train_outputs, concurrency_limit=None, **private)
    return demo


def _entity_examples(benchmark_dir: Path, sets: list[str], count: int = 6) -> list[list[str]]:
    """A few (entity A, entity B, style) examples from the benchmark's inference templates."""
    out: list[list[str]] = []
    for k, name in enumerate(sets[:count]):
        path = Path(benchmark_dir) / name / "templates.json"
        try:
            template = json.loads(path.read_text(encoding="utf-8"))[0]
        except (OSError, ValueError, IndexError, KeyError):
            continue
        a, b = st.split_template(template)
        out.append([a, b, STYLE_EXAMPLES[k % len(STYLE_EXAMPLES)]])
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    temp_dir = make_temp_dir(os.environ.get("REVERSION_TEMP_DIR"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp_dir / "gradio"))  # uploads and outputs stay in the app's temp dir
    studio = st.Studio(args.base_model, args.relations_dir, args.benchmark_dir, temp_dir, args.device, args.attention)
    demo = build_demo(studio)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(studio.relations_dir), str(APP_DIR / "assets"), str(temp_dir)]
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                max_file_size=args.max_file_size, css=CSS, footer_links=["api"], show_error=False,
                prevent_thread_lock=True)
    studio.warm_up()  # load the base model in the background once the page is served
    demo.block_thread()


if __name__ == "__main__":
    main()
