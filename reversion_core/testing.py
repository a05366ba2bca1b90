"""The miniature Stable Diffusion the tests (and ``benchmarks/models.py --model tiny``) run on: real diffusers and
transformers classes at toy size (16 px images, 8x8 latents, 32-dim text), random weights, built offline."""
from __future__ import annotations

import shutil
from pathlib import Path

from .lexicon import BASIS_PREPOSITIONS, FUNCTION_WORDS

# words the tests' captions use, so that each is one token of the tiny tokenizer
CONTENT_WORDS = (
    "circle square triangle diamond red green blue yellow purple striped dotted big small shape picture background "
    "cat box rabbit carrot painting wall photo plain"
).split()


def tiny_models(tokenizer):
    """A ``CLIPTextModel`` sized to ``tokenizer``, an ``AutoencoderKL`` and a ``UNet2DConditionModel``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            projection_dim=32, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )
    # built in this order so that one seed gives the same weights every time
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
    )
    return text_encoder, vae, unet


def build_tiny_model(folder: str | Path, prediction_type: str = "epsilon") -> Path:
    """Save a miniature StableDiffusionPipeline (16 px images, 8x8 latents, 32-dim text) to ``folder / "model"``."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from .tokenizer_files import write_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(0)
    words = sorted(FUNCTION_WORDS | set(BASIS_PREPOSITIONS) | set(CONTENT_WORDS))
    write_clip_tokenizer(folder / "tok", words)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tok")
    text_encoder, vae, unet = tiny_models(tokenizer)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "model")
    shutil.rmtree(folder / "tok")
    return folder / "model"
