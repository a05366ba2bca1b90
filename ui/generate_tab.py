"""The Generate tab: a relation (those for another base model listed apart, with why), two entities or a free
prompt, the sampler's settings; import, download and (in public mode) delete a relation."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from reversion_core.benchmarks import list_benchmark_sets, split_template
from reversion_core.errors import ReVersionError
from reversion_core.settings import MAX_SEED
from server import studio as st
from server.benchmark_view import benchmark_view
from server.forms import MAX_TEXT, MODES, GenerationRequest

from .score_panel import build_score_panel
from .wiring import (PRIVATE, CheckedNumber, CheckedSlider, Page, clear_error_marks, for_page, handler, int_slider,
                     relation_choices, unusable_text)

STYLE_EXAMPLES = ("", "on a dotted background", "on a striped background")


def build_generate_tab(studio: st.Studio, page: Page) -> None:
    defaults = GenerationRequest()

    @handler(studio)
    def refresh_relations(current, shelf):
        return relation_choices(studio, shelf, current), unusable_text(studio, shelf)

    @handler(studio)
    def show_relation(name, shelf):
        return studio.relation_card(name, shelf) if name else ("No relation chosen.", None)

    @handler(studio, GenerationRequest)
    def generate(form, shelf, request):
        """Images of entity A <R> entity B (mode 'Entities') or of a free prompt with <R> (mode 'Free prompt')."""
        images, text, notes = studio.generate(form, shelf)
        for note in notes:  # such as a prompt cut to the text encoder's length
            gr.Warning(for_page(note, request))
        return images, "\n\n".join([f"Prompt: `{text}`", *notes])

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
        shelf.delete(name)
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
                    page.entity_a = entity_a = gr.Textbox(label="Entity A", placeholder="red circle", max_lines=1, elem_id="entity-a",
                                                          max_length=MAX_TEXT)
                    page.entity_b = entity_b = gr.Textbox(label="Entity B", placeholder="blue square", max_lines=1, elem_id="entity-b",
                                                          max_length=MAX_TEXT)
                prompt = gr.Textbox(label="Free prompt with <R>", placeholder="a yellow triangle <R> a green square",
                                    max_lines=2, visible=False, elem_id="free-prompt", max_length=MAX_TEXT)
                suffix = gr.Textbox(label="Style / background (optional)", placeholder="on a striped background", max_lines=1,
                                    max_length=MAX_TEXT)
                negative = gr.Textbox(label="Negative prompt (optional)", max_lines=1, max_length=MAX_TEXT)
                with gr.Row():
                    num_images = int_slider(1, 8, defaults.num_images, "Images")
                    gen_steps = int_slider(1, 100, defaults.steps, "Steps")
                with gr.Row():
                    guidance = CheckedSlider(1.0, 15.0, value=defaults.guidance_scale, step=0.5, label="Guidance")
                    gen_seed = CheckedNumber(value=defaults.seed, precision=0, label="Seed", minimum=0, maximum=MAX_SEED)
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
                build_score_panel(studio, relation, page.owner, api_name="score_relation", refresh_on=[tab.select],
                                  elem_prefix="gen-score")
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
              "suffix": suffix, "negative_prompt": negative, "num_images": num_images, "steps": gen_steps, "guidance_scale": guidance,
              "seed": gen_seed}
    relation.change(show_relation, [relation, page.owner], [relation_info, relation_preview], **PRIVATE)
    for trigger in (refresh_btn.click, tab.select):
        trigger(refresh_relations, [relation, page.owner], [relation, page.unusable], **PRIVATE)
    mode.change(lambda m: (gr.Textbox(visible=m != MODES[1]), gr.Textbox(visible=m != MODES[1]),
                           gr.Textbox(visible=m == MODES[1])), mode, [entity_a, entity_b, prompt], queue=False, **PRIVATE)
    clear_error_marks(generate_btn.click(generate, [fields[n] for n in generate.input_names] + [page.owner], [gallery, used_prompt],
                                         api_name="generate", concurrency_id="generate"), [gallery, used_prompt])
    clear_error_marks(import_btn.click(import_relation, [import_files, import_name, import_overwrite, page.owner],
                                       [relation, import_files], api_name="import_relation"), [relation, import_files])
    clear_error_marks(download_btn.click(download_relation, [relation, page.owner], download_file, api_name="download_relation"),
                      [download_file])
    if studio.public:
        clear_error_marks(delete_btn.click(delete_relation, [relation, page.owner], [relation, page.unusable],
                                           api_name="delete_relation"), [relation, page.unusable])
    page.on_load.append(lambda loaded: loaded.then(refresh_relations, [relation, page.owner], [relation, page.unusable], **PRIVATE))


def entity_examples(benchmark_dir: Path, count: int = 6) -> list[list[str]]:
    """A few (entity A, entity B, style) examples from the benchmark's inference templates."""
    out: list[list[str]] = []
    for k, name in enumerate(list_benchmark_sets(benchmark_dir)[:count]):
        try:
            templates = benchmark_view(benchmark_dir, name).templates
        except ReVersionError:
            continue
        if templates:
            out.append([*split_template(templates[0]), STYLE_EXAMPLES[k % len(STYLE_EXAMPLES)]])
    return out
