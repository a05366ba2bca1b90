"""The embedded base model's architecture: a miniature Stable Diffusion of the real classes (CLIPTokenizer over the
world's vocabulary, CLIPTextModel, AutoencoderKL, UNet2DConditionModel, DDIM), built with random weights.

``scripts/train_base_model.py`` trains it; ``benchmarks/models.py --model embedded-arch`` times it untrained.
"""
from __future__ import annotations

from pathlib import Path

from .world.render import SIZE

MAX_TOKENS = 32
# 16 latent channels at 8x8 (3x compression): 4 channels blurred the thin noses, strings and patterns away.
LATENT_CHANNELS = 16


def build_tokenizer(folder: str | Path):
    """A ``CLIPTokenizer`` whose vocabulary is the world's words, written to ``folder`` and loaded from it."""
    from transformers import CLIPTokenizer

    from .tokenizer_files import write_clip_tokenizer
    from .world.captions import world_vocabulary

    write_clip_tokenizer(Path(folder), world_vocabulary(), model_max_length=MAX_TOKENS)
    return CLIPTokenizer.from_pretrained(folder)


def build_text_encoder(tokenizer):
    """A 3-layer, 128-wide ``CLIPTextModel`` sized to ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=128,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_vae():
    """An ``AutoencoderKL`` from 32 px images to 16-channel 8x8 latents."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
    )


def build_unet():
    """A ``UNet2DConditionModel`` over the 8x8 latents, cross-attending to the 128-wide text."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=128, attention_head_dim=4, norm_num_groups=32,
    )


def build_components(tok_dir: str | Path):
    """A fresh tokenizer, text encoder, VAE and UNet of the embedded model's architecture (random weights)."""
    tokenizer = build_tokenizer(tok_dir)
    return tokenizer, build_text_encoder(tokenizer), build_vae(), build_unet()


def scheduler_config() -> dict:
    """The DDIM/DDPM schedule the embedded model is trained and sampled with (SD 1.5's betas)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
