"""The app's edges (issue 24): long inputs shortened in messages, prompts cut to the text encoder's length said so,
numbers checked in one sentence, readable dates, server-issued page keys, defaults that fit public mode's caps,
labels that explain themselves, and the app's own setting for the CLIP model. No server; the page is built in-process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import RelationPrompt, check_name, save_relation

ROOT = Path(__file__).resolve().parent.parent
LONG_NAME = "x" * 10_000


# ----------------------------------------------------------------------------------------------- long inputs
def test_a_long_value_is_quoted_by_its_start_and_its_length():
    from reversion_core.errors import quoted

    assert quoted("above") == "'above'"
    assert quoted(LONG_NAME) == f"'{'x' * 39}...' (10,000 characters)"


def test_a_10000_character_name_is_refused_in_one_short_sentence():
    with pytest.raises(ReVersionError) as info:
        check_name(LONG_NAME)
    assert str(info.value) == f"A relation name has at most 100 characters; '{'x' * 39}...' (10,000 characters) is too long."


def test_an_entity_far_longer_than_the_text_encoder_reads_is_refused():
    from server.forms import GenerationRequest

    with pytest.raises(ReVersionError) as info:
        GenerationRequest(entity_a="circle " * 700, entity_b="square").check_texts()
    assert str(info.value) == "Entity A has 4,900 characters; the text encoder reads only about 75 words, so write at most 300."


def test_a_prompt_longer_than_the_text_encoder_reads_says_where_it_is_cut(tiny_model_dir):
    from reversion_core.generation import RelationGenerator

    generator = RelationGenerator(tiny_model_dir, device="cpu")
    words = " ".join(["red circle"] * 40)  # 80 tokens of the tiny vocabulary, the encoder reads 75
    result = generator.generate(None, prompt=f"{words} blue square", steps=1)
    assert result.notes == ["The prompt is 82 tokens long and the text encoder reads only the first 75, so everything "
                            "after '...circle red circle red' is left out; shorten it."]
    assert generator.generate(None, prompt="red circle blue square", steps=1).notes == []


# ----------------------------------------------------------------------------------------------- numbers and dates
def test_a_whole_number_widget_refuses_a_fraction_instead_of_rounding_it():
    import gradio as gr

    from ui.wiring import CheckedNumber, int_slider

    steps = CheckedNumber(value=200, label="Steps", minimum=1, maximum=3000, precision=0)
    with pytest.raises(gr.Error) as info:
        steps.preprocess(2.5)
    assert info.value.message == "Steps must be a whole number from 1 to 3000, not 2.5."
    assert info.value.print_exception is False  # one line in the log, no traceback
    assert steps.preprocess(3.0) == 3 and isinstance(steps.preprocess(3.0), int)
    rebuilt = steps.__class__(**steps.constructor_args)  # as gradio rebuilds a widget an event updated
    with pytest.raises(gr.Error, match="whole number"):
        rebuilt.preprocess(2.5)
    with pytest.raises(gr.Error) as info:
        int_slider(1, 8, 2, "Batch size").preprocess(-5)
    assert info.value.message == "Batch size must be a whole number from 1 to 8, not -5."


def test_dates_are_shown_as_people_read_them(tmp_path):
    from server.card_view import describe, readable_time
    from server.studio import Studio

    assert readable_time("2025-06-01T14:03:27+00:00") == "1 Jun 2025, 14:03 UTC"
    assert readable_time("2025-06-01T16:03:27+02:00") == "1 Jun 2025, 14:03 UTC"
    assert readable_time("last week") == "last week"
    summary = {"kind": "world", "pairs": [["a", "b"]], "created_at": "2025-06-01T14:03:27+00:00"}
    assert "scored 1 Jun 2025, 14:03 UTC" in describe(summary, "above")
    card = {"created_at": "2025-06-01T14:03:27+00:00", "base_model": "m"}
    save_relation(RelationPrompt("dated", "<R>", torch.zeros(32), card), tmp_path / "relations")
    studio = Studio(relations_dir=tmp_path / "relations", temp_dir=tmp_path / "tmp")
    studio.base_model_id = lambda: "m"  # no model loaded
    text, _ = studio.relation_card("dated")
    assert "created 1 Jun 2025, 14:03 UTC" in text


# ----------------------------------------------------------------------------------------------- the page key
def test_a_page_keeps_a_key_the_server_issued_and_gets_a_new_one_for_any_other():
    from server.page_keys import PageKeys

    keys = PageKeys("secret")
    issued = keys.page_key("")
    assert keys.page_key(issued) == issued  # a reloaded page keeps its key
    for chosen in ("chosen", "victim", issued[:-1] + "0", PageKeys("another secret").issue(), 42, None):
        assert keys.page_key(chosen) != chosen and keys.is_issued(keys.page_key(chosen))
    assert PageKeys("secret").is_issued(issued)  # the same secret (public mode keeps it in the data dir): kept after a restart
    assert "secret" not in keys.storage_secret() and keys.storage_secret() == PageKeys("secret").storage_secret()


def test_the_app_takes_a_page_key_only_from_the_server(tmp_path):
    import app as studio_app

    studio = studio_app.make_studio(studio_app.parse_args(["--relations-dir", str(tmp_path / "relations")]), tmp_path)
    demo = studio_app.build_demo(studio)
    load = next(fn for fn in demo.fns.values() if fn.name == "page_owner")
    key, state = load.fn("chosen-by-a-client")
    assert key == state != "chosen-by-a-client" and studio.page_keys.is_issued(key)
    assert load.fn(key) == (key, key)


# ----------------------------------------------------------------------------------------------- the page itself
def components(studio) -> dict:
    import app as studio_app

    config = studio_app.build_demo(studio).get_config_file()
    return {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["props"].get("elem_id")}


def public_studio(tmp_path, **limits):
    from server.hosting import pick_runtime
    from server.studio import Studio
    from server.workspaces import Limits, Workspaces

    workspaces = Workspaces(tmp_path / "relations", tmp_path / "data", Limits(**limits))
    return Studio(relations_dir=tmp_path / "relations", temp_dir=tmp_path / "tmp",
                  runtime=pick_runtime({}, cuda_available=False, public=True), workspaces=workspaces)


def test_the_step_defaults_fit_public_modes_step_limit(tmp_path):
    shown = components(public_studio(tmp_path, train_steps=50))
    assert (shown["train-steps"]["value"], shown["more-steps"]["value"]) == (50, 50)
    assert shown["train-steps"]["info"] == "at most 50 a run here"
    assert components(public_studio(tmp_path / "roomy", train_steps=1000))["train-steps"]["value"] == 200


def test_the_nearest_words_figure_is_explained_as_a_cosine_similarity(tmp_path):
    assert components(public_studio(tmp_path))["nearest-key"]["value"] == (
        "Each bar is the cosine similarity between `<R>` and the word's embedding, as a percentage "
        "(100%: the same direction; 0%: unrelated).")


# ----------------------------------------------------------------------------------------------- the CLIP model
def test_the_clip_sentence_names_the_setting_the_app_has(tmp_path, monkeypatch):
    import app as studio_app
    from reversion_core.clip_metrics import ClipFeatures

    with pytest.raises(ReVersionError) as info:
        ClipFeatures(tmp_path / "no-clip")
    assert str(info.value).endswith("pass its local folder with --clip-model (in the app, or its variable REVERSION_CLIP_MODEL).")
    monkeypatch.setenv("REVERSION_CLIP_MODEL", str(tmp_path / "clip"))
    monkeypatch.setenv("REVERSION_RELATION_PROBE", str(tmp_path / "probe.safetensors"))
    args = studio_app.parse_args([])
    assert (args.clip_model, args.relation_probe) == (str(tmp_path / "clip"), str(tmp_path / "probe.safetensors"))
    assert studio_app.parse_args(["--clip-model", "mine"]).clip_model == "mine"


def test_the_apps_clip_model_reaches_the_report_card_and_validation(tmp_path):
    from reversion_core.exemplars import ExemplarSet
    from reversion_core.settings import InversionSettings
    from server.studio import Studio

    studio = Studio(relations_dir=tmp_path / "relations", temp_dir=tmp_path / "tmp", clip_model="clip-folder",
                    relation_probe="probe.safetensors")
    asked = []

    class Runner:
        def score(self, request):
            asked.append(request)
            raise ReVersionError("The stand-in runner scores nothing.")

    save_relation(RelationPrompt("r", "<R>", torch.zeros(32), {"base_model": "m"}), tmp_path / "relations")
    studio.base_model_id = lambda: "m"
    studio.runner = lambda: Runner()
    with pytest.raises(ReVersionError, match="stand-in"):
        studio.score_relation("r", 2)
    assert (asked[0].clip_model, asked[0].relation_probe) == ("clip-folder", "probe.safetensors")
    request = studio.new_training(ExemplarSet.__new__(ExemplarSet), "r2", InversionSettings())
    assert (request.clip_model, request.relation_probe) == ("clip-folder", "probe.safetensors")


def test_the_shipped_list_names_exactly_the_shipped_relations():
    from server.shelves import SharedShelf

    listed = SharedShelf(ROOT / "relations", ROOT / "runs").shipped_names()
    on_disk = {p.name for p in (ROOT / "relations").iterdir() if (p / "learned_embeds.safetensors").is_file()}
    assert listed == on_disk and "above" in listed
    assert json.loads((ROOT / "relations" / "above" / "card.json").read_text())["name"] == "above"
