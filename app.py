"""ReVersion Studio: learn a relation prompt <R> from a few exemplar images, then generate with it.

UI only: layout and event wiring. Every handler is a small call into ``reversion_core`` (``reversion_core.studio``
holds the app-side helpers). ``python app.py --help`` lists the flags; each has an environment variable too.
"""
from __future__ import annotations

import argparse
import functools
import html
import inspect
import json
import logging
import os
import tempfile
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
TEMP_DIR = Path(os.environ.get("REVERSION_TEMP_DIR") or Path(tempfile.gettempdir()) / "reversion-studio")
os.environ.setdefault("GRADIO_TEMP_DIR", str(TEMP_DIR / "gradio"))  # uploads and outputs stay in the app's temp dir
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
for _var, _value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_var, _value)  # keep load bars and library notes out of the server log

import gradio as gr  # noqa: E402

from reversion_core.errors import ReVersionError  # noqa: E402
from reversion_core import studio as st  # noqa: E402

TITLE = "ReVersion Studio"
DESCRIPTION = (
    "Learn a **relation prompt** `<R>` from a few exemplar images that share one relation between two entities "
    "(ReVersion, SIGGRAPH Asia 2024), watch it being learned, then write `rabbit <R> carrot` to put new entities in "
    "the same relation. Runs on CPU with the embedded miniature base model; `--base-model` switches to SD 1.5."
)
DEFAULT_STEPS = 200  # the paper trains 3000 steps on SD 1.5; the embedded model learns a relation in a few hundred
DEFAULT_LR = 2.5e-4
DEFAULT_PREVIEW_EVERY = 50
DEFAULT_GEN_STEPS = 25
DEFAULT_VALIDATION_PROMPT = "circle <R> square"
CAPTIONS_PLACEHOLDER = "One line per image, in upload order; several captions of one image separated by |\n" \
                       "red circle <R> blue square | a red circle <R> a blue square\ngreen triangle <R> yellow square"
STYLE_EXAMPLES = ("", "on a dotted background", "on a striped background")
LOSS_COLOURS = {"total": "#ea580c", "denoise": "#2563eb", "steering": "#16a34a"}
CSS = ".pixelated img { image-rendering: pixelated; }"
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
    p.add_argument("--device", choices=["cpu", "cuda"], default=env("REVERSION_DEVICE"), help="default: cuda when present")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- errors
def ui_errors(fn):
    """Show a ReVersionError as a one-sentence Gradio error; anything unexpected as one sentence too (logged)."""

    def convert(exc: Exception) -> gr.Error:
        if isinstance(exc, ReVersionError):
            return gr.Error(html.escape(str(exc)), print_exception=False)  # the toast renders HTML; <R> must show
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(exc).__name__}); the app keeps serving, please try again.", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise convert(exc) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise convert(exc) from None
    return call


def _owner(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


# ----------------------------------------------------------------------------------------------- the app
def build_demo(studio: st.Studio) -> gr.Blocks:
    benchmark_sets = st.list_benchmark_sets(studio.benchmark_dir)
    first_set = benchmark_sets[0] if benchmark_sets else None
    examples = _entity_examples(studio.benchmark_dir, benchmark_sets)

    # --------------------------------------------------------------------------------------- handlers
    def relation_choices(current: str | None = None):
        names = studio.relation_names()
        value = current if current in names else (names[0] if names else None)
        return gr.Dropdown(choices=names, value=value)

    @ui_errors
    def refresh_relations(current):
        return relation_choices(current)

    @ui_errors
    def show_relation(name):
        return studio.relation_card(name) if name else ("No relation chosen.", None)

    @ui_errors
    def exemplar_source(source):
        return gr.Group(visible=source == "Benchmark set"), gr.Group(visible=source == "Upload")

    @ui_errors
    def preview_set(name):
        if not name:
            return [], DEFAULT_VALIDATION_PROMPT
        view = st.benchmark_view(studio.benchmark_dir, name)
        prompt = view.templates[0] if view.templates else DEFAULT_VALIDATION_PROMPT
        return view.gallery, prompt

    def _train_inputs(source, set_name, files, captions, name):
        exemplars = (st.load_benchmark_set(studio.benchmark_dir, set_name) if source == "Benchmark set"
                     else st.exemplars_from_files(files, captions))
        name = (name or "").strip() or (set_name if source == "Benchmark set" else "")
        if not name:
            raise ReVersionError("Give the relation a name, such as 'painted_on'.")
        return exemplars, st.check_name(name)

    @ui_errors
    def prepare_training(source, set_name, files, captions, name, overwrite, steps, lr, batch, seed, steering, lambda_steer,
                         importance, alpha, positives, temperature, grad_accum, preview_every, validation,
                         request: gr.Request):
        _, name = _train_inputs(source, set_name, files, captions, name)
        st.app_settings(steps, lr, batch, seed, steering, lambda_steer, importance, alpha, positives, temperature,
                        grad_accum, preview_every, validation)
        studio.check_new_relation(name, bool(overwrite))
        studio.slot.forget(_owner(request))
        return studio.slot.waiting_message() if studio.slot.busy() else f"Starting **{name}**: loading the base model..."

    @ui_errors
    def train(source, set_name, files, captions, name, overwrite, steps, lr, batch, seed, steering, lambda_steer,
              importance, alpha, positives, temperature, grad_accum, preview_every, validation, request: gr.Request):
        exemplars, name = _train_inputs(source, set_name, files, captions, name)
        settings = st.app_settings(steps, lr, batch, seed, steering, lambda_steer, importance, alpha, positives,
                                   temperature, grad_accum, preview_every, validation)
        for update in studio.train(_owner(request), exemplars, name, settings, bool(overwrite)):
            if update.warning:
                gr.Warning(update.warning)
            # an empty first frame would fix the plot's colour domain to no series at all: send frames once rows exist
            main, steer = st.loss_frames(update.losses) if update.losses else (gr.skip(), gr.skip())
            dropdown = relation_choices(update.saved) if update.saved else gr.skip()
            yield update.status, main, steer, update.previews, update.nearest or None, dropdown

    @ui_errors
    def stop(request: gr.Request):
        message = studio.slot.stop(_owner(request))
        gr.Info(message)
        return message

    @ui_errors
    def generate(relation, mode, entity_a, entity_b, prompt, suffix, negative, num_images, steps, guidance, seed):
        free = mode == "Free prompt"
        if free and not (prompt or "").strip():
            raise ReVersionError("Write a prompt containing <R>, such as 'rabbit <R> carrot'.")
        images, text = studio.generate(relation, entity_a, entity_b, prompt if free else None, suffix, negative,
                                       num_images, steps, guidance, seed)
        return images, f"Prompt: `{text}`"

    @ui_errors
    def import_relation(files, name, overwrite):
        imported = studio.import_relation(files, name, bool(overwrite))
        gr.Info(f"Imported relation {imported}.")
        return relation_choices(imported), None

    @ui_errors
    def download_relation(name):
        return gr.File(value=str(studio.export_relation(name)), visible=True)

    @ui_errors
    def browse(name):
        if not name:
            return [], [], "No exemplar sets found.", []
        view = st.benchmark_view(studio.benchmark_dir, name)
        return view.gallery, view.captions, view.description, [[t] for t in view.templates]

    @ui_errors
    def train_on_set(name):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        return gr.Tabs(selected="train"), "Benchmark set", name, name

    @ui_errors
    def generate_with_set(name, current):
        if not name:
            raise ReVersionError("Choose an exemplar set first.")
        relation = studio.relation_for_set(name)
        if relation is None:
            raise ReVersionError(f"No relation has been learned from {name!r} yet; press 'Train on these' first.")
        view = st.benchmark_view(studio.benchmark_dir, name)
        a, b = st.split_template(view.templates[0]) if view.templates else (gr.skip(), gr.skip())
        return gr.Tabs(selected="generate"), relation_choices(relation), "Entities", a, b

    # --------------------------------------------------------------------------------------- layout
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}")
        with gr.Tabs() as tabs:
            # ----------------------------------------------------------------------------------- Train
            with gr.Tab("Train", id="train"):
                with gr.Row():
                    with gr.Column(scale=1):
                        source = gr.Radio(["Benchmark set", "Upload"], value="Benchmark set", label="Exemplars from")
                        with gr.Group(visible=True) as set_group:
                            train_set = gr.Dropdown(benchmark_sets, value=first_set, label="Benchmark exemplar set")
                            set_gallery = gr.Gallery(label="Exemplars", columns=6, height=140, elem_classes="pixelated", format="png",
                                                     allow_preview=False)
                        with gr.Group(visible=False) as upload_group:
                            files = gr.File(label="Exemplar images (and optionally a text.json)", file_count="multiple",
                                            file_types=["image", ".json"], type="filepath")
                            captions = gr.Textbox(label="Captions with <R>", lines=4, placeholder=CAPTIONS_PLACEHOLDER)
                        name = gr.Textbox(label="Relation name", value=first_set or "", max_lines=1, elem_id="relation-name")
                        overwrite = gr.Checkbox(label="Overwrite an existing relation of the same name", value=False, elem_id="overwrite")
                        with gr.Row():
                            steps = gr.Slider(1, 3000, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="train-steps")
                            seed = gr.Number(value=0, precision=0, label="Seed")
                        with gr.Row():
                            lr = gr.Number(value=DEFAULT_LR, label="Learning rate (x batch x accumulation)")
                            batch = gr.Slider(1, 8, value=2, step=1, label="Batch size")
                        with gr.Accordion("Advanced", open=False):
                            with gr.Row():
                                steering = gr.Checkbox(value=True, label="Relation-steering contrastive loss")
                                lambda_steer = gr.Number(value=0.01, label="Steering weight (lambda)")
                            with gr.Row():
                                importance = gr.Checkbox(value=True, label="Relation-focal importance sampling")
                                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Sampling alpha")
                            with gr.Row():
                                positives = gr.Slider(1, 56, value=8, step=1, label="Positives per step")
                                temperature = gr.Number(value=0.07, label="Temperature")
                            with gr.Row():
                                grad_accum = gr.Slider(1, 8, value=4, step=1, label="Gradient accumulation")
                                preview_every = gr.Slider(0, 500, value=DEFAULT_PREVIEW_EVERY, step=1, label="Preview every K steps (0: never)")
                            validation = gr.Textbox(value=DEFAULT_VALIDATION_PROMPT, label="Preview prompt", max_lines=1)
                        with gr.Row():
                            start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
                            stop_btn = gr.Button("Stop", variant="stop")
                    with gr.Column(scale=1):
                        train_status = gr.Markdown("Idle.", elem_id="train-status")
                        loss_plot = gr.LinePlot(x="step", y="loss", color="series", label="Loss: total (orange) and denoise (blue)",
                                                height=240, elem_id="loss-plot", color_map=LOSS_COLOURS, colors_in_legend=[])
                        steer_plot = gr.LinePlot(x="step", y="loss", color="series", label="Steering loss (green)", height=190,
                                                 color_map=LOSS_COLOURS, colors_in_legend=[])
                        previews = gr.Gallery(label="Previews", columns=2, height=280, elem_classes="pixelated", format="png",
                                              elem_id="train-previews")
                        nearest = gr.Label(label="Vocabulary words nearest to <R>", num_top_classes=st.NEAREST_K)

            # ----------------------------------------------------------------------------------- Generate
            with gr.Tab("Generate", id="generate") as generate_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        with gr.Row():
                            relation = gr.Dropdown([], label="Relation", scale=4, elem_id="relation-dropdown",
                                                   allow_custom_value=True)  # choices change as relations are added
                            refresh_btn = gr.Button("Refresh", scale=1, size="sm")
                        relation_info = gr.Markdown()
                        mode = gr.Radio(["Entities", "Free prompt"], value="Entities", label="Prompt")
                        with gr.Row():
                            entity_a = gr.Textbox(label="Entity A", placeholder="red circle", max_lines=1, elem_id="entity-a")
                            entity_b = gr.Textbox(label="Entity B", placeholder="blue square", max_lines=1, elem_id="entity-b")
                        prompt = gr.Textbox(label="Free prompt with <R>", placeholder="a yellow triangle <R> a green square",
                                            max_lines=2, visible=False)
                        suffix = gr.Textbox(label="Style / background (optional)", placeholder="on a striped background", max_lines=1)
                        negative = gr.Textbox(label="Negative prompt (optional)", max_lines=1)
                        with gr.Row():
                            num_images = gr.Slider(1, 8, value=4, step=1, label="Images")
                            gen_steps = gr.Slider(1, 100, value=DEFAULT_GEN_STEPS, step=1, label="Steps")
                        with gr.Row():
                            guidance = gr.Slider(1.0, 15.0, value=7.5, step=0.5, label="Guidance")
                            gen_seed = gr.Number(value=0, precision=0, label="Seed")
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
                        if examples:
                            gr.Examples(examples, inputs=[entity_a, entity_b, suffix], label="Examples")
                    with gr.Column(scale=1):
                        gallery = gr.Gallery(label="Images", columns=4, height=360, elem_classes="pixelated", format="png", elem_id="gen-gallery")
                        used_prompt = gr.Markdown()
                        relation_preview = gr.Image(label="Training preview of this relation", height=140,
                                                    elem_classes="pixelated", format="png", interactive=False)
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
                bench_description = gr.Markdown()
                bench_gallery = gr.Gallery(label="Exemplars (captions under each image)", columns=6, height=260,
                                           elem_classes="pixelated", format="png", elem_id="bench-gallery")
                with gr.Row():
                    bench_captions = gr.Dataframe(headers=["image", "level", "caption"], label="Captions at every level",
                                                  interactive=False, wrap=True, max_height=360)
                    bench_templates = gr.Dataframe(headers=["inference template"], label="Inference templates",
                                                   interactive=False, max_height=360)

        # ------------------------------------------------------------------------------------------- wiring
        numbers = [steps, lr, batch, seed, steering, lambda_steer, importance, alpha, positives, temperature, grad_accum,
                   preview_every, validation]
        train_inputs = [source, train_set, files, captions, name, overwrite, *numbers]
        source.change(exemplar_source, source, [set_group, upload_group], api_name=False, queue=False)  # instant toggles
        train_set.change(preview_set, train_set, [set_gallery, validation], api_name=False).then(
            lambda s: s or gr.skip(), train_set, name, api_name=False)
        start_btn.click(prepare_training, train_inputs, train_status, api_name="prepare_training").success(
            train, train_inputs, [train_status, loss_plot, steer_plot, previews, nearest, relation],
            api_name="train", concurrency_limit=1, concurrency_id="train",
        )
        stop_btn.click(stop, None, train_status, api_name="stop", concurrency_limit=None)  # never waits behind the run

        relation.change(show_relation, relation, [relation_info, relation_preview], api_name=False)
        refresh_btn.click(refresh_relations, relation, relation, api_name="list_relations")
        generate_tab.select(refresh_relations, relation, relation, api_name=False)
        mode.change(lambda m: (gr.Textbox(visible=m != "Free prompt"), gr.Textbox(visible=m != "Free prompt"),
                               gr.Textbox(visible=m == "Free prompt")), mode, [entity_a, entity_b, prompt], api_name=False,
                    queue=False)
        gen_inputs = [relation, mode, entity_a, entity_b, prompt, suffix, negative, num_images, gen_steps, guidance, gen_seed]
        generate_btn.click(generate, gen_inputs, [gallery, used_prompt], api_name="generate", concurrency_id="generate")
        import_btn.click(import_relation, [import_files, import_name, import_overwrite], [relation, import_files],
                         api_name="import_relation")
        download_btn.click(download_relation, relation, download_file, api_name="download_relation")

        bench_set.change(browse, bench_set, [bench_gallery, bench_captions, bench_description, bench_templates],
                         api_name="benchmark_set")
        to_train_btn.click(train_on_set, bench_set, [tabs, source, train_set, name], api_name=False)
        to_generate_btn.click(generate_with_set, [bench_set, relation], [tabs, relation, mode, entity_a, entity_b], api_name=False)

        demo.load(preview_set, train_set, [set_gallery, validation], api_name=False)
        demo.load(browse, bench_set, [bench_gallery, bench_captions, bench_description, bench_templates], api_name=False)
        demo.load(refresh_relations, relation, relation, api_name=False)
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
    studio = st.Studio(args.base_model, args.relations_dir, args.benchmark_dir, TEMP_DIR, args.device)
    demo = build_demo(studio)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(studio.relations_dir), str(APP_DIR / "assets"), str(TEMP_DIR)]
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                css=CSS, footer_links=["api"], show_error=False, prevent_thread_lock=True)
    studio.warm_up()  # load the base model in the background once the page is served
    demo.block_thread()


if __name__ == "__main__":
    main()
