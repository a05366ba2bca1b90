"""Tiny random components of the real Stable Diffusion classes, saved and loaded like SD 1.5 (offline, CPU)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from reversion_core.testing import build_tiny_model

torch.set_num_threads(1)  # the machine is shared; tiny models gain nothing from more threads
os.environ.setdefault("REVERSION_THREADS", "1")  # the same for the CLI run in-process (it sets torch's threads)


# Whole modules in the slow and browser tiers (see pyproject.toml's markers; `-m "not slow and not browser"` is
# the fast tier). Single slow tests carry @pytest.mark.slow where they are defined.
SLOW_MODULES = {"test_app.py", "test_app_public.py", "test_benchmarks.py"}  # a served app / the benchmark script in subprocesses
BROWSER_MODULES = {"test_browser.py"}
SLOW_TESTS = {  # real evaluation runs (on the embedded model; in two accelerate processes)
    "test_evaluation.py::test_quick_preset_writes_every_table_and_text_to_image_beats_chance",
    "test_evaluation.py::test_two_accelerate_processes_gather_the_same_records_as_one",
    # the report-card panel served by app.py (a subprocess each)
    "test_score_panel.py::test_the_app_scores_a_relation_and_saves_its_card",
    "test_score_panel.py::test_the_public_app_scores_a_shipped_relation_without_saving",
}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.path.name
        if module in SLOW_MODULES or module in BROWSER_MODULES or f"{module}::{item.name}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if module in BROWSER_MODULES or item.name.startswith("test_browser_"):  # headless Chromium
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_vpred_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_v") / "model"
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture
def tiny_pipeline(tiny_model_dir):
    """A fresh pipeline per test, loaded through the same path as SD 1.5 (training changes its tokenizer)."""
    from reversion_core.base_model import load_pipeline

    return load_pipeline(tiny_model_dir, device="cpu")


def write_exemplar_folder(folder: Path, captions: dict[str, list[str]] | None = None, size: int = 24) -> Path:
    """A small exemplar set in the benchmark layout: coloured shapes and captions with ``{}`` or ``<R>``."""
    folder.mkdir(parents=True, exist_ok=True)
    captions = captions or {
        "1.png": ["red circle {} blue square", "a big red circle {} a small blue square"],
        "2.png": ["green triangle <R> yellow square"],
        "3.jpg": ["purple diamond {} red circle", "a striped purple diamond {} a plain red circle on a dotted background"],
    }
    colours = [(220, 40, 40), (40, 170, 60), (150, 60, 190)]
    for i, name in enumerate(captions):
        image = Image.new("RGB", (size, size), (245, 245, 245))
        for x in range(4, 12):
            for y in range(2, 8):
                image.putpixel((x + i, y), colours[i % 3])
        image.save(folder / name)
    (folder / "text.json").write_text(json.dumps(captions))
    return folder


@pytest.fixture
def exemplar_dir(tmp_path) -> Path:
    return write_exemplar_folder(tmp_path / "exemplars")


def build_tiny_clip(folder: Path) -> Path:
    """A random CLIPModel (32 px images, 16-dim projection) with its processor, saved like a hub checkpoint."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as ImageProcessor

    from reversion_core.tokenizer_files import write_clip_tokenizer

    write_clip_tokenizer(folder / "tok", ["red", "green", "blue", "circle", "square", "cat", "box", "dog", ","])
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tok")
    torch.manual_seed(0)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(image_processor=ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), tokenizer=tokenizer)
    model.save_pretrained(folder / "clip")
    processor.save_pretrained(folder / "clip")
    return folder / "clip"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))
