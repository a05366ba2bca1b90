"""The embedded base model is a standard Stable Diffusion folder the engine uses with no special case."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from reversion_core.runtime import DEFAULT_BASE_MODEL, resolve_source

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets" / "base-model"


def test_the_embedded_model_is_the_default_base_model(monkeypatch):
    monkeypatch.delenv("REVERSION_BASE_MODEL", raising=False)
    assert Path(DEFAULT_BASE_MODEL).resolve() == MODEL.resolve()
    assert Path(resolve_source(None, "cpu")).resolve() == MODEL.resolve()


def test_the_embedded_model_is_small_enough_to_ship():
    total = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MB"


def test_stable_diffusion_pipeline_loads_it_as_it_loads_sd15():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None, requires_safety_checker=False)
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.vae).__name__ == "AutoencoderKL"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel" and "CLIPTokenizer" in type(pipe.tokenizer).__name__
    vocab = pipe.tokenizer.get_vocab()
    from reversion_core.lexicon import BASIS_PREPOSITIONS

    for word in list(BASIS_PREPOSITIONS) + ["and", "circle", "painted", "back"]:
        assert f"{word}</w>" in vocab, word
    image = pipe("a red circle is inside a blue square", num_inference_steps=4, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3)


def test_a_short_inversion_runs_on_it(tmp_path):
    from reversion_core.inversion import FinishedEvent, Inversion
    from reversion_core.settings import InversionSettings

    run = Inversion(ROOT / "assets" / "benchmark" / "inside", "inside", InversionSettings(max_train_steps=3),
                    relations_dir=tmp_path / "relations", checkpoint_dir=tmp_path / "runs", device="cpu")
    events = list(run)
    assert isinstance(events[-1], FinishedEvent)
    assert (tmp_path / "relations" / "inside" / "learned_embeds.safetensors").exists()
