"""Evaluation: the quick preset's tables, two processes equal one, the CLIP metrics and the benchmark data."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from reversion_core.runtime import DEFAULT_BASE_MODEL
from reversion_core.benchmarks import load_benchmark, paper_relations, paper_templates
from reversion_core.errors import ReVersionError
from reversion_core.evaluation import METHODS, EvaluationConfig, aggregate, evaluate, image_seed, preset_config

REPO = Path(__file__).resolve().parent.parent
HAS_EMBEDDED_MODEL = (DEFAULT_BASE_MODEL / "model_index.json").is_file()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------- the quick preset
@pytest.mark.skipif(not HAS_EMBEDDED_MODEL, reason="assets/base-model (the embedded base model) is not in this checkout")
def test_quick_preset_writes_every_table_and_text_to_image_beats_chance(tmp_path):
    config = preset_config("quick", out_dir=str(tmp_path / "quick"))
    result = evaluate(config, progress=False)
    out = tmp_path / "quick"
    relations = config.relations
    for metric in ("relation_accuracy", "entity_accuracy", "appearance_leakage"):
        rows = read_csv(out / f"{metric}.csv")
        assert [r["method"] for r in rows] == list(METHODS)
        assert list(rows[0]) == ["method"] + [c for rel in relations + ["mean"] for c in (rel, f"{rel}_std")]
        markdown = (out / f"{metric}.md").read_text().splitlines()
        assert markdown[2] == "| method | " + " | ".join(relations + ["mean"]) + " |"
        assert len(markdown) == 4 + len(METHODS)
    for name in ("summary.md", "config.json", "per_seed.csv", "records.csv", "metrics.png", "loss_curves.png"):
        assert (out / name).is_file(), name
    per_image = len(relations) * len(METHODS) * len(config.seeds) * config.templates_per_relation * config.images_per_template
    assert len(read_csv(out / "records.csv")) == per_image
    assert json.loads((out / "config.json").read_text())["config"] == config.to_dict()
    reference = result.tables["relation_accuracy"]["text_to_image"]["mean"].mean
    assert reference > result.chance["relation_accuracy"] == 1 / 12  # the world draws 12 relations


# ----------------------------------------------------------------------------------------------- processes
SMALL = ["--preset", "quick", "--relations", "above", "--methods", "text_to_image,reversion", "--seeds", "0", "1", "--templates", "3",
         "--images-per-template", "2", "--train-steps", "2", "--inference-steps", "3", "--batch-size", "4", "--no-progress"]


def test_two_accelerate_processes_gather_the_same_records_as_one(tiny_model_dir, tmp_path):
    from reversion_core.cli import main

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "REVERSION_DEBUG": "1"}
    base = [*SMALL, "--base-model", str(tiny_model_dir)]
    assert main(["evaluate", *base, "--out", str(tmp_path / "one")]) == 0  # this process: one thread (conftest)
    # accelerate's --cpu flag starts one process unless MPI is set up; --multi_gpu goes through torchrun and, with no
    # GPU, accelerate joins the processes on CPU with gloo.
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reversion_core", "evaluate", *base, "--out", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["num_processes"] == 2
    assert {t["process"] for t in config["training"]} == {0, 1}  # both processes learned relations
    records = (tmp_path / "one" / "records.csv").read_text()
    assert records == (tmp_path / "two" / "records.csv").read_text()
    assert len(records.splitlines()) == 1 + 2 * 2 * 3 * 2  # header + methods x seeds x templates x images
    for metric in ("relation_accuracy", "entity_accuracy", "appearance_leakage"):
        assert (tmp_path / "one" / f"{metric}.csv").read_text() == (tmp_path / "two" / f"{metric}.csv").read_text()


def test_articles_before_entities_are_an_option():
    from reversion_core.benchmarks import with_articles

    assert not any(preset_config(p).entity_articles for p in ("quick", "headline", "paper"))
    assert with_articles("striped red circle <R> blue square") == "a striped red circle <R> a blue square"
    assert with_articles("cat <R> apple") == "a cat <R> an apple"


def test_image_seeds_depend_on_the_place_not_the_process():
    assert image_seed(1, 2, 3) == 1_002_003
    assert len({image_seed(s, t, i) for s in range(3) for t in range(100) for i in range(10)}) == 3000


# ----------------------------------------------------------------------------------------------- aggregation
def test_cells_are_the_mean_and_sample_std_of_per_seed_rates():
    records = [
        {"method": "reversion", "relation": rel, "seed": seed, "relation_accuracy": float(ok)}
        for rel, seed, oks in (("above", 0, [1, 1]), ("above", 1, [1, 0]), ("inside", 0, [0, 0]), ("inside", 1, [1, 1]))
        for ok in oks
    ]
    table = aggregate(records, ["relation_accuracy"], ["reversion"], ["above", "inside"], [0, 1])["relation_accuracy"]["reversion"]
    assert table["above"].per_seed == [1.0, 0.5] and table["above"].mean == 0.75
    assert table["above"].std == pytest.approx(0.35355, abs=1e-4)
    assert table["mean"].per_seed == [0.5, 0.75] and table["mean"].mean == 0.625


def test_leakage_ignores_images_whose_prompt_asks_for_the_appearance():
    records = [
        {"method": "reversion", "relation": "inside", "seed": 0, "appearance_leakage": 1.0},
        {"method": "reversion", "relation": "inside", "seed": 0, "appearance_leakage": None},
        {"method": "reversion", "relation": "inside", "seed": 0, "appearance_leakage": 0.0},
    ]
    cell = aggregate(records, ["appearance_leakage"], ["reversion"], ["inside"], [0])["appearance_leakage"]["reversion"]["inside"]
    assert cell.mean == 0.5


# ----------------------------------------------------------------------------------------------- configuration
def test_unknown_method_is_refused():
    with pytest.raises(ReVersionError, match="Unknown method 'dreambooth'; choose from text_to_image, textual_inversion"):
        EvaluationConfig(methods=["dreambooth"]).validate()


def test_unknown_preset_is_refused():
    with pytest.raises(ReVersionError, match="Preset 'huge' is unknown; use one of quick, headline, paper"):
        preset_config("huge")


def test_textual_inversion_is_denoising_only_with_uniform_timesteps():
    from reversion_core.evaluation import method_settings

    config = preset_config("quick")
    ti = method_settings(config, "textual_inversion", 3)
    ours = method_settings(config, "reversion", 3)
    assert (ti.lambda_steer, ti.importance_sampling, ti.seed, ti.max_train_steps) == (0.0, False, 3, config.train_steps)
    assert (ours.lambda_steer, ours.importance_sampling, ours.learning_rate) == (0.01, True, ti.learning_rate)
    assert method_settings(config, "no_steering", 0).importance_sampling and not method_settings(config, "no_importance_sampling", 0).importance_sampling


def test_dry_run_prints_the_resolved_config(capsys):
    from reversion_core.cli import main

    assert main(["evaluate", "--preset", "quick", "--seeds", "4", "5", "6", "--grad-accum", "2", "--dry-run"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["seeds"] == [4, 5, 6] and config["train_settings"] == {"gradient_accumulation_steps": 2}
    assert config["preset"] == "quick" and config["relations"] == ["above", "on_top_of"]


def test_missing_relation_folder_names_the_ones_there(tmp_path):
    with pytest.raises(ReVersionError, match=r"has no relation 'hug' \(it has: above, "):
        load_benchmark(REPO / "assets" / "benchmark", ["hug"])


# ----------------------------------------------------------------------------------------------- the paper's benchmark data
def test_the_paper_benchmark_has_ten_relations_of_100_templates():
    templates = paper_templates()
    assert len(templates) == 10 and all(len(t) == 100 for t in templates.values())
    assert templates["back2back"][:3] == ["man <R> man", "man <R> woman", "man <R> child"]
    assert templates["back2back"][-1] == "panda <R> panda"
    assert paper_relations()["painted_on"]["phrase"] == "is painted on"


def test_an_official_style_folder_gets_the_paper_templates(tmp_path):
    folder = tmp_path / "bench" / "hug"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "1.jpg")
    (folder / "text.json").write_text(json.dumps({"1.jpg": ["cat {} dog"]}))
    (relation,) = load_benchmark(tmp_path / "bench", None, templates_per_relation=5)
    assert relation.phrase == "hugs" and relation.templates == ["man <R> man", "man <R> woman", "man <R> child", "man <R> cat", "man <R> rabbit"]


# ----------------------------------------------------------------------------------------------- CLIP metrics
def colour_images(rgb, n):
    return [Image.new("RGB", (40, 40), tuple(max(0, c - 12 * k) for c in rgb)) for k in range(n)]


def test_clip_score_is_the_cosine_of_image_and_entity_text(tiny_clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    from reversion_core.clip_metrics import ClipFeatures, entity_text

    clip = ClipFeatures(tiny_clip_dir)
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    (score,) = clip.entity_scores([image], [("red circle", "blue square")])
    assert entity_text("red circle", "blue square") == "red circle, blue square"
    model, processor = CLIPModel.from_pretrained(tiny_clip_dir), CLIPProcessor.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        out = model(**processor(text=["red circle, blue square"], images=[image], return_tensors="pt", padding=True))
    expected = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
    assert score == pytest.approx(expected, abs=1e-5) and -1 <= score <= 1


def test_missing_clip_model_says_how_to_provide_it(tmp_path):
    from reversion_core.clip_metrics import ClipFeatures

    with pytest.raises(ReVersionError, match="could not be loaded .*pass its local folder with --clip-model"):
        ClipFeatures(tmp_path / "nowhere" / "clip")


def test_linear_probe_learns_labelled_images_and_survives_saving(tiny_clip_dir, tmp_path):
    from reversion_core.clip_metrics import ClipFeatures, ClipProbeClassifier, LinearProbe, labelled_images, train_relation_probe

    for name, rgb in (("hug", (220, 40, 40)), ("inside", (40, 80, 220)), ("ride_on", (40, 170, 60))):
        (tmp_path / "labelled" / name).mkdir(parents=True)
        for k, image in enumerate(colour_images(rgb, 4)):
            image.save(tmp_path / "labelled" / name / f"{k}.png")
    clip = ClipFeatures(tiny_clip_dir)
    images, labels = labelled_images(tmp_path / "labelled")
    probe = train_relation_probe(clip, images, labels)
    assert probe.labels == ["hug", "inside", "ride_on"]
    assert ClipProbeClassifier(clip, probe).predict(images) == labels
    loaded = LinearProbe.load(probe.save(tmp_path / "probe.safetensors"))
    assert loaded.labels == probe.labels and torch.equal(loaded.weight, probe.weight)
    assert ClipProbeClassifier(clip, loaded).predict(colour_images((210, 50, 50), 1)) == ["hug"]


def test_probe_needs_two_relations():
    from reversion_core.clip_metrics import LinearProbe

    with pytest.raises(ReVersionError, match="at least two relations"):
        LinearProbe.fit(torch.randn(3, 4), ["hug"] * 3)


def test_stable_diffusion_path_scores_with_clip_and_the_probe(tiny_model_dir, tiny_clip_dir, tmp_path):
    bench = tmp_path / "bench"
    for name, rgb in (("hug", (220, 40, 40)), ("inside", (40, 80, 220))):
        (bench / name).mkdir(parents=True)
        for k, image in enumerate(colour_images(rgb, 2)):
            image.save(bench / name / f"{k}.png")
        (bench / name / "text.json").write_text(json.dumps({f"{k}.png": ["cat {} box"] for k in range(2)}))
    config = EvaluationConfig(
        benchmark_dir=str(bench), methods=["text_to_image"], seeds=[0], templates_per_relation=2, images_per_template=1,
        inference_steps=2, base_model=str(tiny_model_dir), clip_model=str(tiny_clip_dir), probe_images=str(bench),
        out_dir=str(tmp_path / "out"), device="cpu",
    )
    result = evaluate(config, progress=False)
    assert result.metrics == ("relation_score", "entity_score") and result.chance == {"relation_score": 0.5}
    assert [r["prompt"] for r in result.records if r["relation"] == "hug"] == ["man hugs man", "man hugs woman"]
    assert all(r["relation_score"] in (0.0, 1.0) and -1 <= r["entity_score"] <= 1 for r in result.records)
    assert (tmp_path / "out" / "relation_probe.safetensors").is_file() and (tmp_path / "out" / "entity_score.md").is_file()


def test_a_second_run_reuses_learned_relations_and_scored_batches(tiny_model_dir, tmp_path):
    config = EvaluationConfig(
        relations=["inside"], methods=["text_to_image", "reversion"], seeds=[0], templates_per_relation=2, images_per_template=1,
        train_steps=2, train_settings={"gradient_accumulation_steps": 1}, inference_steps=2, base_model=str(tiny_model_dir),
        out_dir=str(tmp_path / "out"), device="cpu",
    )
    first = evaluate(config, progress=False)
    again = evaluate(config, progress=False)
    assert [t["status"] for t in first.training] == ["finished"] and [t["status"] for t in again.training] == ["cached"]
    assert again.records == first.records
    assert "±" not in (tmp_path / "out" / "relation_accuracy.md").read_text()  # one seed: no spread to show
    changed = evaluate(EvaluationConfig.from_dict({**config.to_dict(), "train_steps": 3}), progress=False)
    assert [t["status"] for t in changed.training] == ["finished"]
