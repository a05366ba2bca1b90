"""A single-file checkpoint (the original Stable Diffusion layout: one .safetensors with every component) loads
through load_pipeline with the same weights as the diffusers folder it was written from."""
import pytest
import torch
from safetensors.torch import save_file

from reversion_core.base_model import load_pipeline
from reversion_core.errors import ReVersionError

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _swap(rest: str, names: dict) -> str:
    head, _, tail = rest.partition(".")
    for new, old in names.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest if head not in names else names[head] + "." + tail


def ldm_unet_key(key: str, layers: int, blocks_with_attention: set[str]) -> str:
    """The original layout's name of a diffusers UNet weight (the inverse of diffusers' convert_ldm_unet_checkpoint)."""
    direct = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for new, old in direct.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    parts = key.split(".")
    if parts[0] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{parts[1]}.{parts[2]}"]
        rest = ".".join(parts[3:])
        return f"middle_block.{index}." + (_swap(rest, RESNET) if parts[1] == "resnets" else rest)
    block, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{1 + block * (layers + 1) + layers}.0.op.{rest.removeprefix('conv.')}"
        return f"input_blocks.{1 + block * (layers + 1) + j}.{0 if kind == 'resnets' else 1}." + (_swap(rest, RESNET) if kind == "resnets" else rest)
    base = block * (layers + 1)
    if kind == "upsamplers":
        slot = 2 if f"up_blocks.{block}" in blocks_with_attention else 1
        return f"output_blocks.{base + layers}.{slot}.{rest}"
    return f"output_blocks.{base + j}.{0 if kind == 'resnets' else 1}." + (_swap(rest, RESNET) if kind == "resnets" else rest)


def ldm_vae_key(key: str, up_blocks: int) -> str:
    """The original layout's name of a diffusers VAE weight (the inverse of diffusers' convert_ldm_vae_checkpoint)."""
    key = key.replace("conv_norm_out", "norm_out")
    parts = key.split(".")
    if len(parts) < 3 or parts[1] not in ("down_blocks", "up_blocks", "mid_block"):
        return key
    coder = parts[0]
    if parts[1] == "mid_block":
        rest = ".".join(parts[4:])
        if parts[2] == "resnets":
            return f"{coder}.mid.block_{int(parts[3]) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{coder}.mid.attn_1.{_swap(rest, VAE_ATTENTION)}"
    i = int(parts[2]) if parts[1] == "down_blocks" else up_blocks - 1 - int(parts[2])
    where = "down" if parts[1] == "down_blocks" else "up"
    if parts[3] in ("downsamplers", "upsamplers"):
        return f"{coder}.{where}.{i}.{where}sample.{'.'.join(parts[5:])}"
    return f"{coder}.{where}.{i}.block.{parts[4]}.{'.'.join(parts[5:]).replace('conv_shortcut', 'nin_shortcut')}"


def write_single_file(pipe, path) -> None:
    """Every component of ``pipe`` in one .safetensors under the original Stable Diffusion names."""
    unet_config = pipe.unet.config
    with_attention = {f"up_blocks.{i}" for i, t in enumerate(unet_config.up_block_types) if "CrossAttn" in t}
    state = {}
    for k, v in pipe.unet.state_dict().items():
        state["model.diffusion_model." + ldm_unet_key(k, unet_config.layers_per_block, with_attention)] = v
    for k, v in pipe.vae.state_dict().items():
        state["first_stage_model." + ldm_vae_key(k, len(pipe.vae.config.up_block_types))] = v
    for k, v in pipe.text_encoder.state_dict().items():  # SD 1.x files name them as transformers 4 did
        state["cond_stage_model.transformer.text_model." + k.removeprefix("text_model.")] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def test_the_original_layout_written_here_converts_back_to_every_diffusers_weight(tiny_pipeline, tmp_path):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    write_single_file(tiny_pipeline, tmp_path / "tiny.safetensors")
    state = load_file(tmp_path / "tiny.safetensors")
    unet = convert_ldm_unet_checkpoint(state, dict(tiny_pipeline.unet.config))
    vae = convert_ldm_vae_checkpoint(state, dict(tiny_pipeline.vae.config))
    for converted, model in ((unet, tiny_pipeline.unet), (vae, tiny_pipeline.vae)):
        expected = model.state_dict()
        assert converted.keys() == expected.keys()
        assert all(torch.equal(converted[k].reshape(expected[k].shape), expected[k]) for k in expected)


def test_a_single_file_checkpoint_loads_with_the_weights_it_was_written_from(tiny_pipeline, tiny_model_dir, tmp_path):
    write_single_file(tiny_pipeline, tmp_path / "tiny.safetensors")
    loaded = load_pipeline(tmp_path / "tiny.safetensors", device="cpu", single_file_config=tiny_model_dir)
    for name in ("unet", "vae", "text_encoder"):
        expected, got = getattr(tiny_pipeline, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), name
    assert loaded.tokenizer.tokenize("circle above square") == ["circle</w>", "above</w>", "square</w>"]


def test_a_single_file_checkpoint_without_configs_says_to_use_a_diffusers_folder(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_single_file(tiny_pipeline, tmp_path / "tiny.safetensors")
    with pytest.raises(ReVersionError, match=r"^Checkpoint tiny.safetensors could not be loaded as a Stable Diffusion 1.x model \(.*\); "
                       r"a single file needs its components' configs: use a diffusers folder of the model instead"):
        load_pipeline(tmp_path / "tiny.safetensors", device="cpu")
