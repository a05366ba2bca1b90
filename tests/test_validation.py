"""Validation during training: the split, the quality curve, the best step kept, early stop, the card record and
the curve carried through a checkpoint (issue 25)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from reversion_core.benchmarks import paper_templates
from reversion_core.cli import main
from reversion_core.errors import ReVersionError
from reversion_core.exemplars import load_exemplars
from reversion_core.inversion import CheckpointEvent, FinishedEvent, Inversion, StepEvent, StoppedEvent, ValidationEvent
from reversion_core.relation_file import load_relation
from reversion_core.report_card import ScoredImage, world_pairs_shown
from reversion_core.settings import InversionSettings
from reversion_core.validation import (
    SPLIT_FILE, SPLIT_SIZE, best_step, caption_pairs, choose_split, is_flat, read_split, template_pairs,
    validations_without_gain,
)
from reversion_core.world import RELATION_NAMES

BENCHMARK = Path(__file__).resolve().parent.parent / "assets" / "benchmark"


class ScriptedReader:
    """Stands in for the report card's scorer: the n-th validation reads relation score ``values[n]``."""

    kind = "world"

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def read(self, images, pairs, seeds, token):
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        right = round(value * len(images))
        items = [ScoredImage(im, f"{a} {token} {b}", s, k < right, True, False) for k, (im, (a, b), s) in enumerate(zip(images, pairs, seeds))]
        return items, {"relation": value, "entities": 1.0, "leakage": None}


def settings(**changes):
    values = {"max_train_steps": 4, "train_batch_size": 1, "gradient_accumulation_steps": 1, "validate_every": 1,
              "validation_pairs": 2, "validation_steps": 2, **changes}
    return InversionSettings(**values)


def train(exemplar_dir, tmp_path, model, values=(0.5,), name="rel", **changes):
    run = Inversion(exemplar_dir, name, settings(**changes), base_model=model, relations_dir=tmp_path / "relations", device="cpu",
                    checkpoint_dir=tmp_path / "ckpt", validation_reader=ScriptedReader(values))
    return run, list(run)


# ----------------------------------------------------------------------------------------------- the split
@pytest.mark.parametrize("relation", RELATION_NAMES)
def test_a_shipped_sets_validation_pairs_are_neither_its_exemplars_nor_its_templates(relation):
    folder = BENCHMARK / relation
    pairs = read_split(folder)
    meta = json.loads((folder / "relation.json").read_text())
    texts = json.loads((folder / "text.json").read_text())
    exemplars = world_pairs_shown(meta, texts)
    templates = template_pairs(json.loads((folder / "templates.json").read_text()))
    assert len(pairs) == len(set(pairs)) == SPLIT_SIZE
    assert not set(pairs) & exemplars and not set(pairs) & templates
    assert all(a.split()[0] != b.split()[0] for a, b in pairs)  # distinct colours, as the world draws them


def test_a_set_without_its_file_chooses_at_the_start_the_pairs_the_file_records(tmp_path):
    folder = tmp_path / "above"
    shutil.copytree(BENCHMARK / "above", folder)
    (folder / SPLIT_FILE).unlink()
    pairs, source = choose_split(load_exemplars(folder), "above", 8)
    assert pairs == read_split(BENCHMARK / "above")[:8]
    assert source == "chosen from the world's entity pairs that neither the exemplars nor the inference templates use"
    assert choose_split(load_exemplars(BENCHMARK / "above"), "above", 8) == (pairs, "the exemplar set's validation.json")


def test_the_benchmark_builder_writes_the_committed_split(tmp_path):
    from reversion_core.world.benchmark import write_exemplar_set

    folder = write_exemplar_set("inside", tmp_path / "inside")
    assert (folder / SPLIT_FILE).read_bytes() == (BENCHMARK / "inside" / SPLIT_FILE).read_bytes()


def test_an_uploaded_set_validates_on_pairs_none_of_its_captions_or_templates_names(exemplar_dir):
    (exemplar_dir / "templates.json").write_text(json.dumps(["man <R> bicycle", "cat <R> box"]))
    exemplars = load_exemplars(exemplar_dir)
    pairs, _ = choose_split(exemplars, None, 40)
    shown = caption_pairs([c for e in exemplars.exemplars for c in e.captions]) | {("man", "bicycle"), ("cat", "box")}
    assert len(set(pairs)) == 40 and not set(pairs) & shown
    assert choose_split(exemplars, None, 40)[0] == pairs  # the same set gets the same pairs


def test_a_paper_relation_never_validates_on_the_benchmarks_templates_of_it(exemplar_dir, tmp_path):
    folder = tmp_path / "inside"
    shutil.copytree(exemplar_dir, folder)
    pairs, _ = choose_split(load_exemplars(folder), None, 60)
    assert not set(pairs) & template_pairs(paper_templates("inside"))


def test_a_recorded_split_smaller_than_asked_is_refused_in_one_sentence():
    with pytest.raises(ReVersionError) as info:
        choose_split(load_exemplars(BENCHMARK / "above"), "above", 40)
    assert str(info.value) == "The exemplar set's validation.json holds 32 validation pairs, fewer than the 40 asked for; ask for fewer."


# ----------------------------------------------------------------------------------------------- the curve's rules
def curve(*values):
    return [{"step": 100 * (k + 1), "relation": v} for k, v in enumerate(values)]


def test_the_best_step_has_the_highest_relation_score_and_ties_go_to_the_earlier_step():
    assert best_step(curve(0.25, 0.75, 0.5)) == 200
    assert best_step(curve(0.5, 0.75, 0.75, 0.25)) == 200
    assert best_step(curve(None, 0.25, None)) == 200
    assert best_step(curve(None, None)) is None and best_step([]) is None


def test_a_validation_gains_only_when_it_beats_every_earlier_one_by_the_margin():
    assert validations_without_gain(curve(0.25, 0.5, 0.5, 0.505, 0.25)) == 3
    assert validations_without_gain(curve(0.25, 0.5, 0.75)) == 0
    assert is_flat(curve(0.25, 0.5, 0.5, 0.5), 2) and not is_flat(curve(0.25, 0.5, 0.5, 0.5), 3)
    assert not is_flat(curve(0.5, 0.5, 0.5), 0)  # 0: never
    assert not is_flat(curve(None, None, None), 1)  # nothing to compare: never


# ----------------------------------------------------------------------------------------------- in a run
def test_a_run_validates_every_k_steps_and_at_its_last_step(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.25, 0.5, 0.75), max_train_steps=5, validate_every=2)
    validations = [e for e in events if isinstance(e, ValidationEvent)]
    assert [v.step for v in validations] == [2, 4, 5]
    last = validations[-1]
    assert [p["relation"] for p in last.curve] == [0.25, 0.5, 0.75] and last.best_step == 5 and last.kind == "world"
    assert last.pairs == run.validation.pairs and len(last.pairs) == 2
    assert [i.mark for i in last.images] == ["right", "right"] and last.images[0].prompt == f"{last.pairs[0][0]} <R> {last.pairs[0][1]}"
    order = [type(e).__name__ for e in events if not isinstance(e, StepEvent)]
    assert order == ["ValidationEvent"] * 3 + ["FinishedEvent"]


def test_a_run_shorter_than_k_steps_never_validates(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, max_train_steps=3, validate_every=5)
    assert not [e for e in events if isinstance(e, ValidationEvent)] and run.validation.curve == []


def test_validation_leaves_the_learned_vector_bit_identical(exemplar_dir, tmp_path, tiny_model_dir):
    _, validated = train(exemplar_dir, tmp_path / "a", tiny_model_dir)
    plain = Inversion(exemplar_dir, "rel", settings(validate_every=0), base_model=tiny_model_dir, relations_dir=tmp_path / "b", device="cpu")
    assert torch.equal(validated[-1].relation.vector, list(plain)[-1].relation.vector)


def test_keep_best_saves_the_vector_of_the_step_with_the_highest_relation_score(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.25, 0.75, 0.5, 0.5), keep="best")
    saved = load_relation(events[-1].path)
    assert torch.equal(saved.vector, run.validation.vector_at(2)) and not torch.equal(saved.vector, run.last_good.cpu())
    record = saved.card["validation"]
    assert record["kept_step"] == 2 and record["best_step"] == 2 and saved.card["steps"] == 4
    assert record["why"] == ("The <R> of step 2 was kept (keep 'best'): it drew the relation on the most validation pairs "
                             "(0.75; the last step, 4, scored 0.50).")


def test_the_saved_preview_shows_the_kept_step(exemplar_dir, tmp_path, tiny_model_dir):
    """With keep best the preview is drawn again for the kept <R>; a run that stops early without a preview at its
    end gets one; with keep last the preview of the last step stays."""
    _, events = train(exemplar_dir, tmp_path / "best", tiny_model_dir, values=(0.25, 0.75, 0.5, 0.5), keep="best", preview_every=3)
    saved = load_relation(events[-1].path)
    assert saved.card["validation"]["kept_step"] == 2 and saved.card["preview_step"] == 2 and (events[-1].path / "preview.png").is_file()
    _, events = train(exemplar_dir, tmp_path / "last", tiny_model_dir, values=(0.25, 0.75, 0.5, 0.5), preview_every=3)
    assert events[-1].relation.card["preview_step"] == 4
    _, events = train(exemplar_dir, tmp_path / "flat", tiny_model_dir, values=(0.5, 0.5, 0.5, 0.5), max_train_steps=10,
                      keep="best", stop_when_flat=2, preview_every=10)
    assert events[-1].step == 3 and events[-1].relation.card["preview_step"] == 1 and events[-1].relation.preview is not None


def test_keep_best_gives_a_tie_to_the_earlier_step(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.5, 0.75, 0.75, 0.75), keep="best")
    assert events[-1].relation.card["validation"]["kept_step"] == 2
    assert events[-1].relation.card["validation"]["why"] == (
        "The <R> of step 2 was kept (keep 'best'): it drew the relation on the most validation pairs (0.75, first reached "
        "there; the last step, 4, scored 0.75).")
    assert torch.equal(events[-1].relation.vector, run.validation.vector_at(2))


def test_keep_last_saves_the_last_vector_and_says_so(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.75, 0.25))
    assert torch.equal(events[-1].relation.vector, run.last_good.cpu())
    record = events[-1].relation.card["validation"]
    assert record["kept_step"] == 4 and record["best_step"] == 1 and record["why"] == "The last step's <R> was kept (keep 'last')."


def test_a_stopped_run_with_keep_best_saves_the_best_so_far(exemplar_dir, tmp_path, tiny_model_dir):
    run = Inversion(exemplar_dir, "rel", settings(max_train_steps=50, keep="best"), base_model=tiny_model_dir,
                    relations_dir=tmp_path / "relations", device="cpu", validation_reader=ScriptedReader((0.5, 0.75, 0.25)))
    for event in run:
        if isinstance(event, ValidationEvent) and event.step == 3:
            run.stop()
    assert isinstance(event, StoppedEvent) and event.step == 3
    assert torch.equal(load_relation(event.path).vector, run.validation.vector_at(2))


def test_a_flat_curve_ends_the_run_as_finished_and_says_at_which_step_and_why(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.25, 0.5, 0.5, 0.505, 0.25), max_train_steps=10, stop_when_flat=2)
    end = events[-1]
    assert isinstance(end, FinishedEvent) and end.step == 4 and [e.step for e in events if isinstance(e, StepEvent)][-1] == 4
    assert end.message == ("Stopped early at step 4: the relation score on the validation pairs has not risen by 0.01 or more "
                           "in the last 2 validations (best 0.51 at step 4).")  # 0.505 is the best, though no gain
    saved = load_relation(end.path)
    assert saved.card["status"] == "finished" and saved.card["steps"] == 4
    assert saved.card["validation"]["stopped_early"] == end.message


def test_the_card_records_the_curve_the_pairs_and_the_kept_step(exemplar_dir, tmp_path, tiny_model_dir):
    run, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.5, 0.75), max_train_steps=2, keep="best")
    record = json.loads((events[-1].path / "card.json").read_text())["validation"]
    assert [(p["step"], p["relation"], p["entities"], p["leakage"]) for p in record["curve"]] == [(1, 0.5, 1.0, None), (2, 0.75, 1.0, None)]
    assert record["pairs"] == [list(p) for p in run.validation.pairs] and record["kept_step"] == 2
    assert {k: record[k] for k in ("kind", "every", "steps", "keep", "stop_when_flat", "stopped_early", "note")} == {
        "kind": "world", "every": 1, "steps": 2, "keep": "best", "stop_when_flat": 0, "stopped_early": None, "note": ""}
    assert record["split"].startswith("chosen from the ReVersion benchmark's entity pairs")


def test_a_continued_run_carries_the_curve_on_from_its_checkpoint(exemplar_dir, tmp_path, tiny_model_dir):
    values = (0.25, 0.75, 0.5, 0.5)
    _, straight = train(exemplar_dir, tmp_path / "straight", tiny_model_dir, values=values, keep="best")
    first = Inversion(exemplar_dir, "rel", settings(keep="best", checkpoint_every=2), base_model=tiny_model_dir,
                      relations_dir=tmp_path / "relations", checkpoint_dir=tmp_path / "ckpt", device="cpu",
                      validation_reader=ScriptedReader(values))
    for event in first:
        if isinstance(event, CheckpointEvent):
            first.stop()
    assert isinstance(event, StoppedEvent) and event.step == 2
    resumed = Inversion(exemplar_dir, "rel", None, base_model=tiny_model_dir, relations_dir=tmp_path / "relations",
                        resume_from=tmp_path / "ckpt", overwrite=True, device="cpu", validation_reader=ScriptedReader(values[2:]))
    assert [p["step"] for p in resumed.validation.curve] == [1, 2] and resumed.validation.pairs == first.validation.pairs
    events = list(resumed)
    assert [e.curve[-1]["step"] for e in events if isinstance(e, ValidationEvent)] == [3, 4]
    assert [p["relation"] for p in events[-1].relation.card["validation"]["curve"]] == list(values)
    assert events[-1].relation.card["validation"]["kept_step"] == 2  # a step of the first part, from the checkpoint
    assert torch.equal(events[-1].relation.vector, straight[-1].relation.vector)


def test_a_resumed_keep_best_run_finds_its_interrupted_save_done(exemplar_dir, tmp_path, tiny_model_dir):
    _, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.75, 0.25), max_train_steps=2, keep="best", checkpoint_every=2)
    resumed = list(Inversion(exemplar_dir, "rel", None, base_model=tiny_model_dir, relations_dir=tmp_path / "relations",
                             resume_from=tmp_path / "ckpt", device="cpu", validation_reader=ScriptedReader(())))
    assert [type(e) for e in resumed] == [FinishedEvent] and resumed[0].path == events[-1].path


def test_without_clip_on_disk_validation_is_off_and_says_so_in_one_sentence(exemplar_dir, tmp_path, tiny_model_dir):
    run = Inversion(exemplar_dir, "rel", settings(), base_model=tiny_model_dir,
                    relations_dir=tmp_path / "relations", device="cpu", clip_model=str(tmp_path / "no-clip"))
    assert not run.validation.enabled
    assert run.validation.note == (f"Validation is off: the CLIP model {str(tmp_path / 'no-clip')!r} that would score its images is not on "
                                   "disk; download it where there is network access and pass its folder with --clip-model (in the "
                                   "app, or its variable REVERSION_CLIP_MODEL).")
    events = list(run)
    assert not [e for e in events if isinstance(e, ValidationEvent)]
    assert events[-1].relation.card["validation"]["note"] == run.validation.note


def test_off_the_world_clip_scores_the_entities_and_without_a_probe_says_there_is_no_relation_score(
    exemplar_dir, tmp_path, tiny_model_dir, tiny_clip_dir,
):
    run = Inversion(exemplar_dir, "rel", settings(max_train_steps=1), base_model=tiny_model_dir, relations_dir=tmp_path / "relations",
                    device="cpu", clip_model=str(tiny_clip_dir))
    assert run.validation.note == ("Validation reads CLIP's entity score only: without a relation probe (--relation-probe) it has "
                                   "no relation score, so it keeps the last step and never stops early.")
    (validation,) = [e for e in run if isinstance(e, ValidationEvent)]
    assert validation.kind == "clip" and validation.figures["relation"] is None and validation.figures["leakage"] is None
    assert isinstance(validation.figures["entities"], float) and [i.mark for i in validation.images] == ["not read"] * 2


@pytest.mark.parametrize("changes, sentence", [
    ({"keep": "best", "validate_every": 0}, "Setting keep 'best' needs validation during training; set validate_every above 0."),
    ({"stop_when_flat": 3, "validate_every": 0}, "Setting stop_when_flat needs validation during training; set validate_every above 0."),
    ({"keep": "first"}, "Setting keep 'first' is unknown; use one of last, best."),
    ({"validation_pairs": 0}, "Setting validation_pairs must be at least 1, not 0."),
    ({"validation_pairs": 65}, "Setting validation_pairs must be at most 64, not 65."),
])
def test_validation_settings_that_cannot_work_are_refused_in_one_sentence(changes, sentence):
    with pytest.raises(ReVersionError) as info:
        InversionSettings(**changes)
    assert str(info.value) == sentence


# ----------------------------------------------------------------------------------------------- the command line
def test_cli_train_prints_the_curve_and_keeps_the_best_step(exemplar_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    import reversion_core.validation as validation

    monkeypatch.setattr(validation, "choose_reader", lambda *a, **k: (ScriptedReader((0.25, 0.75, 0.5)), ""))
    assert main(["train", str(exemplar_dir), "--name", "rel", "--base-model", str(tiny_model_dir), "--relations-dir",
                 str(tmp_path / "relations"), "--checkpoint-dir", str(tmp_path / "runs"), "--steps", "3", "--grad-accum", "1",
                 "--device", "cpu", "--validate-every", "1", "--validation-pairs", "2", "--validation-steps", "2", "--keep", "best"]) == 0
    out = capsys.readouterr()
    assert "validation at step 2: relation 0.75, entities 1.00 (best: step 2)" in out.out
    assert ("validation curve of the training (world scorer, 2 entity pairs, 2 DDIM steps)\n"
            "  step  relation  entities  leakage\n"
            "     1      0.25      1.00        -\n"
            "     2      0.75      1.00        -  <- kept\n"
            "     3      0.50      1.00        -\n"
            "The <R> of step 2 was kept (keep 'best'): it drew the relation on the most validation pairs (0.75; the last step, 3, scored 0.50).\n"
            ) in out.out
    assert load_relation(tmp_path / "relations" / "rel").card["validation"]["kept_step"] == 2
    assert sorted(p.name for p in (tmp_path / "runs").glob("validation-*.png")) == [f"validation-00000{k}.png" for k in (1, 2, 3)]


def test_cli_train_says_when_validation_is_off(exemplar_dir, tiny_model_dir, tmp_path, capsys):
    assert main(["train", str(exemplar_dir), "--name", "rel", "--base-model", str(tiny_model_dir), "--relations-dir",
                 str(tmp_path / "relations"), "--steps", "1", "--grad-accum", "1", "--device", "cpu", "--validate-every", "1",
                 "--clip-model", str(tmp_path / "no-clip")]) == 0
    out = capsys.readouterr()
    assert "Validation is off: the CLIP model" in out.err and "Validation is off: the CLIP model" in out.out


@pytest.mark.slow
def test_on_the_embedded_model_validation_reads_the_world(tmp_path):
    run = Inversion(BENCHMARK / "above", "above", settings(max_train_steps=2, validate_every=2, validation_pairs=4, validation_steps=4),
                    relations_dir=tmp_path / "relations", device="cpu")
    assert run.validation.note == "" and run.validation.source == "the exemplar set's validation.json"
    (validation,) = [e for e in run if isinstance(e, ValidationEvent)]
    assert validation.kind == "world" and validation.pairs == read_split(BENCHMARK / "above")[:4]
    assert all(validation.figures[k] is not None for k in ("relation", "entities", "leakage"))
    assert {i.mark for i in validation.images} <= {"right", "entities wrong", "wrong"}


# ----------------------------------------------------------------------------------------------- the evaluation
def test_the_evaluation_takes_the_best_and_the_last_vector_from_one_training(tiny_model_dir, tmp_path, monkeypatch):
    import reversion_core.validation as validation
    from reversion_core.evaluation import EvaluationConfig, evaluate

    monkeypatch.setattr(validation, "choose_reader", lambda *a, **k: (ScriptedReader((0.75, 0.25)), ""))
    config = EvaluationConfig(
        relations=["inside"], methods=["reversion", "reversion@best", "reversion@last"], seeds=[0], templates_per_relation=1,
        images_per_template=1, train_steps=2, inference_steps=2, base_model=str(tiny_model_dir), out_dir=str(tmp_path / "out"),
        device="cpu", train_settings={"gradient_accumulation_steps": 1, "validate_every": 1, "validation_pairs": 2, "validation_steps": 2},
    )
    result = evaluate(config, progress=False)
    assert len(result.training) == 1 and [p["step"] for p in result.training[0]["validation"]["curve"]] == [1, 2]
    relations = tmp_path / "out" / "relations"
    plain, best, last = (load_relation(relations / m / "inside-s0", None) for m in ("reversion", "reversion@best", "reversion@last"))
    assert torch.equal(last.vector, plain.vector) and not torch.equal(best.vector, plain.vector)
    assert best.card["validation"]["kept_step"] == 1 and last.card["validation"]["kept_step"] == 2
    assert [r["method"] for r in result.records] == ["reversion", "reversion@best", "reversion@last"]


@pytest.mark.parametrize("methods, train_settings, sentence", [
    (["reversion@best"], {"validate_every": 0}, "Method 'reversion@best' needs validation during training; do not set validate_every to 0."),
    (["text_to_image@best"], {}, "Unknown method 'text_to_image@best'; choose from text_to_image, textual_inversion, reversion, "
                                 "no_steering, no_importance_sampling, random_positives (a learned one may end in @best, @last or @early)."),
])
def test_an_evaluation_method_that_cannot_keep_a_best_step_is_refused(methods, train_settings, sentence):
    from reversion_core.evaluation import EvaluationConfig

    with pytest.raises(ReVersionError) as info:
        EvaluationConfig(methods=methods, train_settings=train_settings).validate()
    assert str(info.value) == sentence


# ----------------------------------------------------------------------------------------------- the report card
def test_the_report_card_shows_the_curve_of_a_relation_that_has_one(exemplar_dir, tmp_path, tiny_model_dir, capsys):
    from reversion_core.report_card import validation_record, validation_rows
    from reversion_core.report_card_cli import print_validation

    _, events = train(exemplar_dir, tmp_path, tiny_model_dir, values=(0.25, 0.75), max_train_steps=2, keep="best")
    record = validation_record(load_relation(events[-1].path))
    assert validation_rows(record) == [["1", "0.25", "1.00", "-", ""], ["2", "0.75", "1.00", "-", "kept"]]
    print_validation(record)
    assert "     2      0.75      1.00        -  <- kept\nThe <R> of the last step, 2, was kept" in capsys.readouterr().out
    _, plain = train(exemplar_dir, tmp_path / "plain", tiny_model_dir, validate_every=0)
    assert validation_record(plain[-1].relation) is None
