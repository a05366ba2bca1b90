"""The report card: a relation scored on entity pairs its exemplars do not show, saved into its card."""
import json

import pytest
import torch

from reversion_core.cli import main
from reversion_core.errors import ReVersionError
from reversion_core.generation import RelationGenerator
from reversion_core.relation_file import RelationPrompt, load_relation, save_relation
from reversion_core.report_card import (
    MARK_COLOURS, ScoredImage, exemplar_pairs, held_out_pairs, save_report_card, score_relation, summary_table,
)
from reversion_core.world import RELATION_NAMES, Scene, parse_entity, render_image

ABOVE = {
    "name": "above", "phrase": "above", "nuisance": {"target": "background", "pattern": "dotted"},
    "scenes": [{"file": "0.png", "entity_a": "green triangle", "entity_b": "yellow diamond", "background": "dotted"}],
}


def world_relation(tmp_path, dim=32, name="above", info=ABOVE) -> RelationPrompt:
    card = {"relation": info, "exemplar_captions": {"1.png": ["a red circle <R> a blue square, on a dotted background"]}}
    relation = RelationPrompt(name, "<R>", torch.randn(dim), card)
    save_relation(relation, tmp_path / "relations")
    return load_relation(name, tmp_path / "relations")


class WorldPainter:
    """Stands in for a base model of the world: draws ``<R>`` prompts as ``drawn`` and phrase prompts as ``phrase_drawn``."""

    def __init__(self, relations_dir, drawn="above", phrase_drawn="inside", background="plain"):
        self.relations_dir, self.drawn, self.phrase_drawn, self.background = relations_dir, drawn, phrase_drawn, background
        self.base_model_id = "world#0000000000"
        self.prompts: list[str] = []

    def install(self, relation):
        return "<R>"

    def generate_prompts(self, prompts, seeds, negative_prompt=None, steps=25, guidance_scale=7.5, on_image=None, **_):
        images = []
        for prompt, seed in zip(prompts, seeds):
            self.prompts.append(prompt)
            words = prompt.split()
            a, b = parse_entity(" ".join(words[:2])), parse_entity(" ".join(words[-2:]))
            relation = self.drawn if "<R>" in words else self.phrase_drawn
            images.append(render_image(Scene(relation, a, b, self.background), seed=seed))
            if on_image:
                on_image(1)
        return images


def test_held_out_pairs_avoid_the_exemplars_pairs_and_repeat_for_a_seed(tmp_path):
    relation = world_relation(tmp_path)
    assert exemplar_pairs(relation) == {("green triangle", "yellow diamond"), ("red circle", "blue square")}
    pairs = held_out_pairs(relation, 200, seed=3)
    assert len(pairs) == len(set(pairs)) == 200
    assert not {("green triangle", "yellow diamond"), ("red circle", "blue square")} & set(pairs)
    assert all(a.split()[0] != b.split()[0] for a, b in pairs)  # distinct colours, as the world draws them
    assert held_out_pairs(relation, 8, seed=3) == pairs[:8] and held_out_pairs(relation, 8, seed=4) != pairs[:8]


def test_world_card_reads_right_relations_wrong_phrase_and_chance(tmp_path):
    relation = world_relation(tmp_path)
    painter = WorldPainter(tmp_path / "relations", drawn="above", phrase_drawn="inside")
    seen = []
    card = score_relation(relation, painter, pairs=6, scorer="world", progress=lambda done, total: seen.append((done, total)))
    assert card.kind == "world" and card.world_relation == "above" and len(card.pairs) == 6
    assert card.metrics == {"relation_accuracy": 1.0, "entity_accuracy": 1.0, "appearance_leakage": 0.0}
    assert card.reference["relation_accuracy"] == 0.0 and card.reference_prompt == "E_A above E_B"
    assert card.chance == {"relation_accuracy": pytest.approx(1 / len(RELATION_NAMES))}
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert painter.prompts[:6] == [f"{a} <R> {b}" for a, b in card.pairs]
    assert painter.prompts[6:] == [f"{a} above {b}" for a, b in card.pairs]
    assert [i.mark for i in card.images] == ["right"] * 6 and [i.mark for i in card.reference_images] == ["wrong"] * 6


def test_leakage_counts_images_showing_the_exemplars_nuisance(tmp_path):
    relation = world_relation(tmp_path)
    card = score_relation(relation, WorldPainter(tmp_path / "relations", background="dotted"), pairs=4, scorer="world", reference=False)
    assert card.metrics["appearance_leakage"] == 1.0 and card.reference == {} and card.reference_images == []


def test_card_is_saved_into_card_json_and_keeps_the_rest(tmp_path):
    relation = world_relation(tmp_path)
    card = score_relation(relation, WorldPainter(tmp_path / "relations"), pairs=3, scorer="world")
    save_report_card(relation, card)
    saved = json.loads((tmp_path / "relations" / "above" / "card.json").read_text())
    assert saved["report_card"]["metrics"]["relation_accuracy"] == 1.0 and saved["report_card"]["pairs"] == [list(p) for p in card.pairs]
    assert saved["token"] == "<R>" and saved["relation"]["name"] == "above"
    assert summary_table(saved["report_card"])[0] == ["relation right", "1.00", "0.00", f"{1 / len(RELATION_NAMES):.2f}"]
    assert not [p for p in (tmp_path / "relations" / "above").iterdir() if p.name.startswith(".")]


def test_grid_frames_each_image_by_its_mark(tmp_path):
    image = render_image(Scene("above", parse_entity("red circle"), parse_entity("blue square")))
    items = [ScoredImage(image, "p", 0, True, True), ScoredImage(image, "p", 1, True, False), ScoredImage(image, "p", 2, False, True)]
    from reversion_core.report_card import marked_grid

    grid = marked_grid(items, columns=3, cell=64)
    assert grid.size == (3 * (64 + 6), 64 + 6)
    assert [grid.getpixel((x * 70 + 1, 1)) for x in range(3)] == [MARK_COLOURS["right"], MARK_COLOURS["entities wrong"], MARK_COLOURS["wrong"]]


def test_a_relation_without_a_world_relation_is_refused_by_the_world_scorer(tmp_path):
    relation = world_relation(tmp_path, name="mystery", info={"name": "leans on"})
    with pytest.raises(ReVersionError, match="does not say which world relation it shows"):
        score_relation(relation, WorldPainter(tmp_path / "relations"), scorer="world")


@pytest.mark.parametrize("pairs", [0, 10_000])
def test_pair_count_out_of_range_is_refused(tmp_path, pairs):
    with pytest.raises(ReVersionError, match="Score on 1 to 200 entity pairs"):
        score_relation(world_relation(tmp_path), WorldPainter(tmp_path / "relations"), pairs=pairs, scorer="world")


def test_card_runs_on_a_real_pipeline_and_picks_clip_off_the_world(tmp_path, tiny_model_dir):
    relation = world_relation(tmp_path)
    generator = RelationGenerator(tiny_model_dir, "cpu", relations_dir=tmp_path / "relations")
    card = score_relation(relation, generator, pairs=2, steps=2, scorer="world")
    assert len(card.images) == len(card.reference_images) == 2 and card.images[0].image.size == (16, 16)
    assert all(0.0 <= v <= 1.0 for v in card.metrics.values() if v is not None)
    missing = score_relation(relation, generator, pairs=2, steps=2, clip_model=tmp_path / "no-clip")  # 16 px: not the world
    assert missing.kind == "clip" and missing.metrics == {"entity_score": None, "relation_score": None}
    assert missing.note.startswith("No CLIP score: The CLIP model") and "could not be loaded" in missing.note


def test_clip_card_gives_entity_scores_and_says_the_probe_is_missing(tmp_path, tiny_model_dir, tiny_clip_dir):
    relation = world_relation(tmp_path)
    generator = RelationGenerator(tiny_model_dir, "cpu", relations_dir=tmp_path / "relations")
    card = score_relation(relation, generator, pairs=2, steps=2, scorer="clip", clip_model=tiny_clip_dir)
    assert -1.0 <= card.metrics["entity_score"] <= 1.0 and card.metrics["relation_score"] is None
    assert all(i.entity_score is not None for i in card.images + card.reference_images)
    assert card.note == ("No relation score: pass a relation probe (a LinearProbe .safetensors) with --relation-probe (in the "
                         "app, or its variable REVERSION_RELATION_PROBE) to measure it.")


def test_cli_score_prints_the_table_and_saves_the_card(tmp_path, tiny_model_dir, capsys):
    generator = RelationGenerator(tiny_model_dir, "cpu")
    relation = RelationPrompt("above", "<R>", torch.randn(32), {"relation": ABOVE, "base_model": generator.base_model_id})
    save_relation(relation, tmp_path / "relations")
    grid = tmp_path / "grid.png"
    assert main(["score", "above", "--relations-dir", str(tmp_path / "relations"), "--base-model", str(tiny_model_dir),
                 "--scorer", "world", "--pairs", "2", "--steps", "2", "--grid", str(grid), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "report card of 'above' on 2 held-out entity pairs (world scorer" in out and "relation right" in out
    assert grid.is_file() and "report_card" in json.loads((tmp_path / "relations" / "above" / "card.json").read_text())


def test_cli_score_refuses_a_relation_of_another_base_model(tmp_path, tiny_model_dir, capsys):
    save_relation(RelationPrompt("above", "<R>", torch.randn(32), {"relation": ABOVE, "base_model": "other#0123456789"}), tmp_path / "r")
    assert main(["score", "above", "--relations-dir", str(tmp_path / "r"), "--base-model", str(tiny_model_dir), "--device", "cpu"]) == 2
    assert "Relation 'above' was learned on other#0123456789, not on the loaded base model" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- train, then score
def train_argv(exemplar_dir, tiny_model_dir, relations, *extra):
    return ["train", str(exemplar_dir), "--name", "rel", "--base-model", str(tiny_model_dir), "--relations-dir", str(relations),
            "--steps", "2", "--grad-accum", "1", "--device", "cpu", *extra]


def test_cli_train_ends_with_the_command_that_scores_the_new_relation(exemplar_dir, tiny_model_dir, tmp_path, capsys):
    relations = tmp_path / "relations"
    assert main(train_argv(exemplar_dir, tiny_model_dir, relations)) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"Score it on new entity pairs: python -m reversion_core score {relations / 'rel'} --base-model {tiny_model_dir}"
    assert "report_card" not in json.loads((relations / "rel" / "card.json").read_text())


def test_cli_train_with_score_prints_the_card_and_saves_it(exemplar_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the 16 px model is scored with CLIP, whose weights are not here
    relations = tmp_path / "relations"
    assert main(train_argv(exemplar_dir, tiny_model_dir, relations, "--score-pairs", "2")) == 0
    out = capsys.readouterr().out
    assert "report card of 'rel' on 2 held-out entity pairs (clip scorer" in out and "CLIP entity score" in out
    assert "No CLIP score: The CLIP model 'openai/clip-vit-large-patch14' could not be loaded" in out
    saved = json.loads((relations / "rel" / "card.json").read_text())["report_card"]
    assert saved["kind"] == "clip" and len(saved["pairs"]) == 2 and saved["metrics"]["entity_score"] is None


def test_cli_train_refuses_score_pairs_out_of_range_before_training(exemplar_dir, tiny_model_dir, tmp_path, capsys):
    relations = tmp_path / "relations"
    assert main(train_argv(exemplar_dir, tiny_model_dir, relations, "--score-pairs", "0")) == 2
    assert capsys.readouterr().err.strip() == "error: --score-pairs must be from 1 to 200, not 0."
    assert not relations.exists()
