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
