"""The base models the benchmarks run on, as ``StableDiffusionPipeline`` objects of the real classes.

- ``embedded``: the shipped miniature model in ``assets/base-model`` (32 px images, 8x8 latents), loaded through
  ``reversion_core.base_model.load_pipeline`` like any user's model.
- ``embedded-arch``: the same architecture (``reversion_core.architecture``) with random weights, for a
  machine where the embedded model has not been trained yet.
- ``tiny``: the test suite's miniature components (16 px, 8x8 latents): structure checks only.
- ``sd15``: the full Stable Diffusion 1.5 architecture (UNet 859.5M, VAE 83.7M, CLIP ViT-L/14 text encoder
  123.1M parameters) built from the published configs in ``benchmarks/configs/sd15`` with random weights, because
  no weights can be downloaded here. Speed and memory do not depend on the weight values, only on shapes and
  dtypes, so these timings are those of SD 1.5. The tokenizer is a closed-vocabulary CLIP tokenizer padded to
  SD 1.5's 49,408 entries, so the embedding table (what the reference loop optimises in full) has its real size.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from common import REPO

MODELS = ("embedded", "embedded-arch", "tiny", "sd15")
SD15_CONFIGS = REPO / "benchmarks" / "configs" / "sd15"
SD15_VOCAB_SIZE = 49408
SPEED_NOTE = (
    "Weights are random: speed and memory depend only on the architecture, shapes and dtypes, not on the weight values."
)


def describe(kind: str) -> str:
    return {
        "embedded": "embedded base model (assets/base-model, trained weights)",
        "embedded-arch": "embedded base model's architecture, random weights",
        "tiny": "tiny test components, random weights",
        "sd15": "Stable Diffusion 1.5 architecture from the published configs, random weights",
    }[kind]


def build_pipeline(kind: str, device: str = "cpu", dtype: torch.dtype = torch.float32, attention: str = "sdpa"):
    """A pipeline of ``kind`` on ``device`` in ``dtype`` with the given attention backend."""
    from reversion_core.base_model import load_pipeline, set_attention
    from reversion_core.runtime import DEFAULT_BASE_MODEL

    if kind == "embedded":
        if not (DEFAULT_BASE_MODEL / "model_index.json").is_file():
            raise SystemExit(
                f"{DEFAULT_BASE_MODEL} does not exist yet; train it with scripts/train_base_model.py, or benchmark "
                "its architecture with random weights using --model embedded-arch."
            )
        pipe = load_pipeline(DEFAULT_BASE_MODEL, device=device, dtype=dtype, attention=attention)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    builders = {"embedded-arch": _embedded_arch_components, "tiny": _tiny_components, "sd15": sd15_components}
    if kind not in builders:
        raise SystemExit(f"Unknown model {kind!r}; choose one of {', '.join(MODELS)}.")
    torch.manual_seed(0)
    with torch.device(device):  # initialise straight on the device: an SD 1.5 UNet inits in seconds on a GPU
        tokenizer, text_encoder, vae, unet, scheduler = builders[kind]()
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe = pipe.to(device=device, dtype=dtype) if dtype != torch.float32 else pipe.to(device)
    set_attention(pipe, attention)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _vocabulary() -> list[str]:
    """Every word the benchmark captions and the engine's lexicon use, so each is one token."""
    from reversion_core.lexicon import FUNCTION_WORDS
    from reversion_core.world.captions import world_vocabulary

    return list(dict.fromkeys(world_vocabulary() + sorted(FUNCTION_WORDS)))


def _tokenizer(words: list[str], model_max_length: int, pad_to: int | None = None):
    """A CLIPTokenizer for ``words``; with ``pad_to``, unused entries fill the vocabulary up to that size.

    The fillers are never produced by BPE (no merge leads to them); they only give the embedding table its size.
    Start and end tokens keep the last two ids, as in CLIP's own vocabulary.
    """
    from transformers import CLIPTokenizer

    from reversion_core.tokenizer_files import BOS, EOS, write_clip_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    write_clip_tokenizer(folder, words, model_max_length=model_max_length)
    if pad_to is not None:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        ordered = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in (BOS, EOS)]
        if len(ordered) + 2 > pad_to:
            raise ValueError(f"{len(ordered) + 2} tokens do not fit a vocabulary of {pad_to}")
        ordered += [f"<|unused{i}|>" for i in range(pad_to - 2 - len(ordered))] + [BOS, EOS]
        (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(ordered)}, ensure_ascii=False), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder)


def _ddim():
    from diffusers import DDIMScheduler

    from reversion_core.architecture import scheduler_config

    return DDIMScheduler(**scheduler_config())


# SD 1.5's classes, block types and layout at a size a CPU builds and runs in seconds (64 px images, 8x8 latents):
# what `gpu_check.sh --dry-run` builds in place of the full-size model
TINY_SD15 = {
    "unet": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32,
             "attention_head_dim": 2, "sample_size": 8},
    "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "projection_dim": 32},
}


def sd15_components(tiny: bool = False):
    """(tokenizer, text encoder, VAE, UNet, scheduler) of SD 1.5's published configs, random weights; ``tiny``: the
    same architecture with the narrow widths of TINY_SD15 (the tokenizer keeps SD 1.5's 49,408 entries)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    shrink = TINY_SD15 if tiny else {}
    text_config = CLIPTextConfig.from_pretrained(SD15_CONFIGS / "text_encoder", **shrink.get("text_encoder", {}))
    tokenizer = _tokenizer(_vocabulary(), text_config.max_position_embeddings, pad_to=SD15_VOCAB_SIZE)
    assert len(tokenizer) == text_config.vocab_size == SD15_VOCAB_SIZE
    text_encoder = CLIPTextModel(text_config)
    unet_config = {**UNet2DConditionModel.load_config(SD15_CONFIGS / "unet"), **shrink.get("unet", {})}
    if tiny:  # else StableDiffusionPipeline takes the published config's version (0.6.0) as a cue to force 64
        unet_config.pop("_diffusers_version", None)
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL.from_config({**AutoencoderKL.load_config(SD15_CONFIGS / "vae"), **shrink.get("vae", {})})
    scheduler = PNDMScheduler.from_config(PNDMScheduler.load_config(SD15_CONFIGS / "scheduler"))
    return tokenizer, text_encoder, vae, unet, scheduler


def _embedded_arch_components():
    from reversion_core.architecture import build_components

    tokenizer, text_encoder, vae, unet = build_components(Path(tempfile.mkdtemp(prefix="bench-embedded-")))
    return tokenizer, text_encoder, vae, unet, _ddim()


def _tiny_components():
    """The tests' miniature (``reversion_core.testing``: 16 px images, 8x8 latents, 32-dim text)."""
    from reversion_core.testing import tiny_models

    tokenizer = _tokenizer(_vocabulary(), 77)
    text_encoder, vae, unet = tiny_models(tokenizer)
    return tokenizer, text_encoder, vae, unet, _ddim()


def native_resolution(pipe) -> int:
    """The image side the model was built for: UNet sample size x the VAE's downscale factor."""
    return int(pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1))


def meta_components(kind: str):
    """``(text_encoder, vae, unet)`` of ``kind`` on the meta device: shapes without memory, for counting FLOPs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from reversion_core.runtime import DEFAULT_BASE_MODEL

    folders = {"sd15": SD15_CONFIGS, "embedded": DEFAULT_BASE_MODEL}
    with torch.device("meta"):
        if kind in folders:
            folder = folders[kind]
            text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        else:
            builder = {"embedded-arch": _embedded_arch_components, "tiny": _tiny_components}[kind]
            _, text_encoder, vae, unet, _ = builder()
    return text_encoder, vae, unet
