"""The embedded architecture module builds exactly the shapes of the shipped base model."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from reversion_core import architecture

MODEL = Path(__file__).resolve().parent.parent / "assets" / "base-model"


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(path, "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize("component, builder", [("unet", architecture.build_unet), ("vae", architecture.build_vae)])
def test_builder_gives_the_shipped_components_parameter_shapes(component, builder):
    with torch.device("meta"):
        model = builder()
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert built == stored_shapes(MODEL / component / "diffusion_pytorch_model.safetensors")


def test_text_encoder_has_the_shipped_width_and_positions_and_fits_its_tokenizer(tmp_path):
    tokenizer = architecture.build_tokenizer(tmp_path / "tok")
    with torch.device("meta"):
        text_encoder = architecture.build_text_encoder(tokenizer)
    shipped = json.loads((MODEL / "text_encoder" / "config.json").read_text())
    assert len(tokenizer) == text_encoder.config.vocab_size
    assert (text_encoder.config.hidden_size, text_encoder.config.max_position_embeddings) == (shipped["hidden_size"], shipped["max_position_embeddings"])


@pytest.mark.slow
def test_unet_to_fp16_halves_the_stored_unet_and_the_pipeline_loads_it_in_fp32(tiny_model_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    from reversion_core.base_model import load_pipeline

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = load_pipeline(model, device="cpu").unet.state_dict()
    done = subprocess.run([sys.executable, str(MODEL.parents[1] / "scripts" / "unet_to_fp16.py"), str(model)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with safe_open(model / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    after = load_pipeline(model, device="cpu").unet.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], before[k].half().float()) for k in before)
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())  # no leftovers
