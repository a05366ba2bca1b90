"""The Benchmark tab: each exemplar set with every caption, its description and inference templates, and buttons
that carry the set to the Train and Generate tabs."""
from __future__ import annotations

import gradio as gr

from reversion_core.benchmarks import list_benchmark_sets, split_template
from reversion_core.errors import ReVersionError
from server import studio as st
from server.benchmark_view import benchmark_view
from server.forms import MODES, SOURCES

from .wiring import PRIVATE, Page, clear_error_marks, handler, relation_choices

def build_benchmark_tab(studio: st.Studio, page: Page) -> None:
    benchmark_sets = list_benchmark_sets(studio.benchmark_dir)

    @handler(studio)
    def browse(name):
        """A benchmark set: its exemplars with captions, every caption, its description and inference templates."""
        if not name:
            return [], [], "No exemplar sets found.", []
        view = benchmark_view(studio.benchmark_dir, name)
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
        view = benchmark_view(studio.benchmark_dir, name)
        a, b = split_template(view.templates[0]) if view.templates else (gr.skip(), gr.skip())
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
    carried = [page.tabs, page.source, page.train_set, page.name]
    clear_error_marks(to_train_btn.click(train_on_set, [bench_set, page.owner], carried, **PRIVATE), carried)
    carried = [page.tabs, page.relation, page.mode, page.entity_a, page.entity_b]
    clear_error_marks(to_generate_btn.click(generate_with_set, [bench_set, page.relation, page.owner], carried, **PRIVATE), carried)
    page.on_load.append(lambda loaded: loaded.then(browse, bench_set, shown, **PRIVATE))
