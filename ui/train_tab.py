"""The Train tab: exemplars from a benchmark set or an upload, the method's settings, Start/Stop, continuing a
relation trained here, and the run streamed as status, loss plots, the quality curve on validation pairs (with the
latest validation images), previews and the words nearest to <R>."""
from __future__ import annotations

import collections
import threading

import gradio as gr

from reversion_core.benchmarks import list_benchmark_sets
from reversion_core.errors import ReVersionError
from reversion_core.settings import KEEP_CHOICES
from server import studio as st
from server.benchmark_view import benchmark_view
from server.forms import SOURCES, TRAIN_BOUNDS, TrainForm
from server.gpu_runner import NEAREST_K
from server.training_view import loss_frames

from .score_panel import build_score_panel
from .validation_panel import build_validation_panel, status_with_note
from .wiring import (PRIVATE, CheckedNumber, CheckedSlider, Page, as_markdown, clear_error_marks, for_page, handler, int_slider,
                     relation_choices)

CAPTIONS_PLACEHOLDER = "One line per image, in upload order; several captions of one image separated by |\n" \
                       "red circle <R> blue square | a red circle <R> a blue square\ngreen triangle <R> yellow square"
# raw per-step lines faint, smoothed lines solid (the plot draws them in training_view's MAIN_SERIES / STEER_SERIES order)
LOSS_COLOURS = {"total": "rgba(234,88,12,0.3)", "denoise": "rgba(37,99,235,0.3)", "steering": "rgba(22,163,74,0.3)",
                "total (smoothed)": "#ea580c", "denoise (smoothed)": "#2563eb", "steering (smoothed)": "#16a34a"}
MAX_CHECKED_STARTS = 64  # checked Start clicks kept for the run that follows each
KEEP_LABELS = {"last": "the last step", "best": "the best validation step"}
# what a reloaded page shows of the run it follows: the form's fields its request keeps (not where its exemplars came from)
RESTORED = ("name", "overwrite", *TRAIN_BOUNDS, "steering", "importance_sampling", "validation_prompt", "keep")
NEAREST_KEY = ("Each bar is the cosine similarity between `<R>` and the word's embedding, as a percentage "
               "(100%: the same direction; 0%: unrelated).")


def bounded_slider(name: str, value, label: str, **kwargs) -> gr.Slider:
    """A whole-number slider over the setting's bounds in TRAIN_BOUNDS."""
    return int_slider(*TRAIN_BOUNDS[name][1:], value, label, **kwargs)


def bounded_number(name: str, value, label: str, **kwargs) -> gr.Number:
    """A number box bounded by the setting's TRAIN_BOUNDS (a box, not a slider, where a typed value out of range must
    be refused: a slider's box sets it to the nearest bound without a word)."""
    return CheckedNumber(value=value, label=label, minimum=TRAIN_BOUNDS[name][1], maximum=TRAIN_BOUNDS[name][2], **kwargs)


def build_train_tab(studio: st.Studio, page: Page) -> None:
    # 1. What the tab starts with: the benchmark's sets, the form's defaults, public mode's step limit, a free name.
    benchmark_sets = list_benchmark_sets(studio.benchmark_dir)
    first_set = benchmark_sets[0] if benchmark_sets else None
    defaults = TrainForm()
    lim = studio.workspaces.limits if studio.workspaces is not None else None
    steps_info = f"at most {lim.train_steps} a run here" if lim is not None else None
    default_steps = min(defaults.max_train_steps, lim.train_steps) if lim is not None else defaults.max_train_steps
    built_name = studio.shared.free_name(first_set) if first_set and not studio.public else (first_set or "")

    # 2. The handlers, each one call into the studio.
    @handler(studio)
    def show_set(name):
        if not name:
            return [], defaults.validation_prompt
        view = benchmark_view(studio.benchmark_dir, name)
        prompt = view.templates[0] if view.templates else defaults.validation_prompt
        return [(image, caption.split("\n")[0]) for image, caption in view.gallery], prompt  # every level is in Benchmark

    @handler(studio)
    def choose_set(name, shelf):
        return (*show_set(name), shelf.free_name(name) if name else gr.skip())

    @handler(studio)
    def propose_name(set_name, current, shelf):
        """On page load: a free name again (relations may have been added since the page was built), unless the person
        has already typed one."""
        return shelf.free_name(set_name) if set_name and current == built_name else gr.skip()

    checked: collections.OrderedDict = collections.OrderedDict()  # owner -> (form, request) of the last checked Start
    checked_lock = threading.Lock()

    @handler(studio, TrainForm)
    def prepare_training(form, shelf, owner):
        """Check a training's inputs without starting it: the status line it would start with, or the error."""
        request = studio.training_request(form, shelf)
        with checked_lock:  # the run that follows this click takes it (one per page, a few pages at most)
            checked[owner] = (form, request)
            checked.move_to_end(owner)
            while len(checked) > MAX_CHECKED_STARTS:
                checked.popitem(last=False)
        return studio.slot.waiting_message() if studio.slot.busy() else f"Starting **{request.name}**: loading the base model..."

    @handler(studio, TrainForm)
    def train(form, shelf, owner, request):
        """Learn a relation from a benchmark set (source 'Benchmark set', set_name from /list_benchmark_sets) or from
        uploaded images with captions (source 'Upload'); streams status, loss plots, previews and nearest words.
        The training runs on the server: a closed connection stops only the stream, /stop stops the run."""
        with checked_lock:
            earlier, training = checked.pop(owner, (None, None))
        if earlier != form:  # an API call without /prepare_training, or values changed since
            training = studio.training_request(form, shelf)
        yield from stream(studio.train(owner, training, shelf), shelf, request)

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
    def propose_next_name(current, overwrite_ticked, shelf):
        """After a run: a free name again when the one in the box is taken now (unless 'Overwrite' is ticked)."""
        try:
            free = shelf.free_name(current) if current and not overwrite_ticked else current
        except ReVersionError:
            return gr.skip()
        return free if free != current else gr.skip()

    @handler(studio)
    def restore_settings(owner):
        """On page load: the settings of the run this page follows (a reload must not show the defaults instead)."""
        form = studio.followed_form(owner)
        skipped = (gr.skip(),) * len(RESTORED)
        return tuple(getattr(form, n) for n in RESTORED) if form is not None else skipped

    @handler(studio)
    def continue_choices(current, shelf):
        names = studio.continuable(shelf)
        return gr.Dropdown(choices=names, value=current if current in names else (names[0] if names else None))

    def stream(updates, shelf, request):
        """TrainUpdates as the Train tab's outputs; previews are sent again only when they change."""
        previews = None
        curve, first = None, True  # the curve is sent on a stream's first update (a new run clears the last one's)
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
            unchanged = not first and update.validation is curve
            new_curve = [gr.skip()] * len(quality.outputs) if unchanged else quality.values(update.validation)
            curve, first = update.validation, False
            yield (as_markdown(status_with_note(update.status, update.validation)), main, steer, new_previews,
                   update.nearest or None, saved, again, update.saved or gr.skip(), *new_curve)

    # 3. The layout: the exemplars and the settings on the left (each number bounded by TRAIN_BOUNDS), the run on the right.
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
                    steps = bounded_number("max_train_steps", default_steps, "Steps", precision=0, elem_id="train-steps", info=steps_info)
                    seed = bounded_number("seed", defaults.seed, "Seed", precision=0)
                with gr.Row():
                    lr = bounded_number("learning_rate", defaults.learning_rate, "Learning rate (x batch x accumulation)")
                    batch = bounded_slider("train_batch_size", defaults.train_batch_size, "Batch size")
                keep = gr.Radio([(KEEP_LABELS[k], k) for k in KEEP_CHOICES], value=defaults.keep, label="Keep the <R> of",
                                elem_id="train-keep", info="the best: the validation step that drew the relation on the most "
                                                           "validation pairs (ties: the earlier)")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        steering = gr.Checkbox(value=defaults.steering, label="Relation-steering contrastive loss")
                        lambda_steer = bounded_number("lambda_steer", defaults.lambda_steer, "Steering weight (lambda)")
                    with gr.Row():
                        importance = gr.Checkbox(value=defaults.importance_sampling, label="Relation-focal importance sampling")
                        alpha = CheckedSlider(*TRAIN_BOUNDS["alpha"][1:], value=defaults.alpha, step=0.05, label="Sampling alpha")
                    with gr.Row():
                        positives = bounded_slider("num_positives", defaults.num_positives, "Positives per step")
                        temperature = bounded_number("temperature", defaults.temperature, "Temperature")
                    with gr.Row():
                        grad_accum = bounded_slider("gradient_accumulation_steps", defaults.gradient_accumulation_steps,
                                                    "Gradient accumulation")
                        preview_every = bounded_slider("preview_every", defaults.preview_every, "Preview every K steps (0: never)")
                    validation = gr.Textbox(value=defaults.validation_prompt, label="Preview prompt", max_lines=1)
                    with gr.Row():
                        validate_every = bounded_slider("validate_every", defaults.validate_every, "Validate every K steps (0: never)",
                                                        elem_id="validate-every")
                        validation_pairs = bounded_slider("validation_pairs", defaults.validation_pairs, "Validation pairs",
                                                          elem_id="validation-pairs")
                    stop_when_flat = bounded_slider("stop_when_flat", defaults.stop_when_flat,
                                                    "Stop after N validations without a gain (0: never)", elem_id="stop-when-flat")
                with gr.Row():
                    start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
                    # Stop's own answer (also its toast and the /stop API's value) stays out of the status box: the run
                    # reports its end there, and an answer delivered after that report would cover it.
                    stop_answer = gr.Markdown(visible=False, elem_id="train-stop-answer")
                with gr.Accordion("Continue a relation trained here", open=False, elem_id="continue-box"):
                    with gr.Row():
                        page.continue_name = continue_name = gr.Dropdown(
                            studio.continuable() if not studio.public else [], label="Relation to continue",
                            elem_id="continue-name", scale=2, allow_custom_value=True)  # choices grow
                        more_steps = bounded_number("max_train_steps", min(100, default_steps), "More steps", precision=0,
                                                    elem_id="more-steps", scale=2)
                    continue_btn = gr.Button("Continue training", elem_id="continue-start")
            with gr.Column(scale=1):
                train_status = gr.Markdown("Idle.", label="Status", elem_id="train-status")
                loss_plot = gr.LinePlot(x="step", y="loss", color="series", elem_id="loss-plot", height=260, label="Loss",
                                        color_map=LOSS_COLOURS, colors_in_legend=[])
                steer_plot = gr.LinePlot(x="step", y="loss", color="series", height=200, elem_id="steer-plot",
                                         label="Steering loss", color_map=LOSS_COLOURS, colors_in_legend=[])
                gr.Markdown("Orange: total loss, drawn over blue: denoise loss; green: steering loss. Faint: each step; "
                            "solid: smoothed (moving average).", elem_id="loss-key")
                quality = build_validation_panel()  # does <R> draw the relation on entity pairs it never saw?
                previews = gr.Gallery(label="Previews", columns=2, height="auto", elem_classes="pixelated", format="png",
                                      elem_id="train-previews", object_fit="contain")
                nearest = gr.Label(label="Vocabulary words nearest to <R>", num_top_classes=NEAREST_K)
                gr.Markdown(NEAREST_KEY, elem_id="nearest-key")
                trained = gr.State(None)  # the relation this page's last run saved: the report card scores it
                build_score_panel(studio, trained, page.owner, hidden_until_chosen=True, elem_prefix="train-score",
                                  show_curve=False)  # the run's own curve is above

    # 4. The wiring, once every tab is built; the form's fields by the settings' names (the API keeps its own).
    fields = {"source": source, "set_name": train_set, "name": name, "overwrite": overwrite, "max_train_steps": steps,
              "learning_rate": lr, "train_batch_size": batch, "seed": seed, "steering": steering, "lambda_steer": lambda_steer,
              "importance_sampling": importance, "alpha": alpha, "num_positives": positives, "temperature": temperature,
              "gradient_accumulation_steps": grad_accum, "preview_every": preview_every, "validation_prompt": validation,
              "files": files, "captions": captions}
    fields.update(keep=keep, validate_every=validate_every, validation_pairs=validation_pairs, stop_when_flat=stop_when_flat)

    def wire() -> None:  # once every tab is built: the outputs include the Generate tab's relation list
        train_inputs = [fields[n] for n in train.input_names] + [page.owner]
        outputs = [train_status, loss_plot, steer_plot, previews, nearest, page.relation, continue_name, trained]
        outputs += quality.outputs  # last, so that API clients reading the first outputs by position keep working
        source.change(lambda s: (gr.Group(visible=s == SOURCES[0]), gr.Group(visible=s == SOURCES[1])), source,
                      [set_group, upload_group], queue=False, **PRIVATE)  # instant toggles
        train_set.change(choose_set, [train_set, page.owner], [set_gallery, validation, name], **PRIVATE)
        # the run lives on the server, so following it needs no worker of the queue
        clicked = start_btn.click(prepare_training, train_inputs, train_status, api_name="prepare_training")
        started = clicked.success(train, train_inputs, outputs, api_name="train", concurrency_limit=None)
        started.then(propose_next_name, [name, overwrite, page.owner], name, queue=False, **PRIVATE)
        continued = continue_btn.click(continue_training, [continue_name, more_steps, page.owner], outputs,
                                       api_name="continue_training", concurrency_limit=None)
        stopped = stop_btn.click(stop, page.owner, stop_answer, api_name="stop", concurrency_limit=None)  # never waits behind the run
        for event, shown in ((clicked, [train_status]), (started, outputs), (continued, outputs), (stopped, [stop_answer])):
            clear_error_marks(event, shown)
        tab.select(continue_choices, [continue_name, page.owner], continue_name, **PRIVATE)

        page.on_load += [  # after the page's token is known; a followed run's own settings last, over the proposals
            lambda loaded: loaded.then(propose_name, [train_set, name, page.owner], name, queue=False, **PRIVATE).then(
                show_set, train_set, [set_gallery, validation], **PRIVATE).then(
                restore_settings, page.owner, [fields[n] for n in RESTORED], queue=False, **PRIVATE),
            lambda loaded: loaded.then(continue_choices, [continue_name, page.owner], continue_name, **PRIVATE),
            # a reloaded page owns its training still and follows it again
            lambda loaded: loaded.then(follow_training, page.owner, outputs, concurrency_limit=None, **PRIVATE).then(
                propose_next_name, [name, overwrite, page.owner], name, queue=False, **PRIVATE),
        ]

    page.later.append(wire)
