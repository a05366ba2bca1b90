"""Base-model loading: the SD 1.5 code path on tiny components, and one sentence for each way it can fail."""
import copy
import importlib.util
import re

import pytest
import torch

from reversion_core.base_model import base_model_id, embedding_fingerprint, load_pipeline, same_base_model
from reversion_core.errors import ReVersionError


def test_diffusers_folder_loads_real_classes(tiny_pipeline):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(tiny_pipeline, StableDiffusionPipeline)
    assert isinstance(tiny_pipeline.unet, UNet2DConditionModel) and isinstance(tiny_pipeline.vae, AutoencoderKL)
    assert isinstance(tiny_pipeline.text_encoder, CLIPTextModel) and isinstance(tiny_pipeline.tokenizer, CLIPTokenizer)
    assert tiny_pipeline.tokenizer.tokenize("circle above square") == ["circle</w>", "above</w>", "square</w>"]


def test_hub_model_not_on_this_machine(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReVersionError, match=r"The base model 'nobody/no-such-model' is not on this machine and could not be downloaded; .* pass its local diffusers folder or .safetensors checkpoint"):
        load_pipeline("nobody/no-such-model", device="cpu")


def test_missing_local_path():
    with pytest.raises(ReVersionError, match=r"Base model ./nowhere/model does not exist; give a diffusers folder"):
        load_pipeline("./nowhere/model", device="cpu")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ReVersionError, match="is not a diffusers model folder \\(it has no model_index.json\\)"):
        load_pipeline(tmp_path, device="cpu")


def test_single_file_checkpoint_that_cannot_be_read(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ReVersionError, match="Checkpoint model.safetensors could not be loaded as a Stable Diffusion 1.x model"):
        load_pipeline(tmp_path / "model.safetensors", device="cpu")


def test_single_file_with_other_suffix_is_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ReVersionError, match="is not a .safetensors or .ckpt checkpoint"):
        load_pipeline(tmp_path / "model.onnx", device="cpu")


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_xformers_asked_for_but_absent(tiny_model_dir):
    with pytest.raises(ReVersionError, match="xformers attention was asked for but the xformers package is not installed"):
        load_pipeline(tiny_model_dir, device="cpu", attention="xformers")


def test_base_model_id_names_the_model_and_hashes_its_text_encoder(tiny_pipeline, tiny_model_dir, tiny_vpred_model_dir):
    first = base_model_id(tiny_pipeline, tiny_model_dir)
    config, weights = first.split("#")[1].split(".")
    assert first.startswith("model#") and len(config) == 10 and len(weights) == 8
    assert base_model_id(load_pipeline(tiny_model_dir, device="cpu"), tiny_model_dir) == first
    assert same_base_model(first, "some/hub-id#" + first.split("#")[1])
    assert not same_base_model(first, "model#0000000000") and not same_base_model(first, None)


def test_an_id_recorded_before_weight_fingerprints_matches_on_the_config_alone(tiny_pipeline, tiny_model_dir):
    here = base_model_id(tiny_pipeline, tiny_model_dir)
    legacy = here.split(".")[0]  # "model#<config hash>", as cards written before the fingerprint say
    assert same_base_model(legacy, here) and same_base_model(here, legacy)
    assert not same_base_model(legacy.replace("#", "#f"), here)


def test_the_fingerprint_is_the_same_in_every_precision(tiny_pipeline):
    encoder = tiny_pipeline.text_encoder
    fingerprint = embedding_fingerprint(encoder)
    for dtype in (torch.float16, torch.bfloat16):
        assert embedding_fingerprint(copy.deepcopy(encoder).to(dtype)) == fingerprint


def test_two_trainings_of_one_architecture_are_different_base_models(tiny_pipeline, tiny_model_dir):
    """Same config, other weights (as base model v1 and v2 of the embedded model): the ids differ, and a relation
    learned on one is refused by the other in one sentence."""
    from reversion_core.generation import RelationGenerator
    from reversion_core.relation_file import RelationPrompt

    other = copy.deepcopy(tiny_pipeline)
    with torch.no_grad():
        table = other.text_encoder.get_input_embeddings().weight
        table.copy_(table + 0.05 * torch.randn(table.shape, generator=torch.Generator().manual_seed(1)))
    theirs, here = base_model_id(other, tiny_model_dir), base_model_id(tiny_pipeline, tiny_model_dir)
    assert theirs.split(".")[0] == here.split(".")[0] and not same_base_model(theirs, here)
    dim = table.shape[1]
    relation = RelationPrompt("above", "<R>", torch.zeros(dim), {"base_model": theirs}, None, None)
    generator = RelationGenerator(pipeline=tiny_pipeline)
    with pytest.raises(ReVersionError, match=(
        rf"^Relation 'above' was learned on base model {re.escape(theirs)}, not on the loaded {re.escape(generator.base_model_id)}; "
        "a relation prompt only works with the base model it was learned on, so learn it again on this one.$"
    )):
        generator.install(relation)
