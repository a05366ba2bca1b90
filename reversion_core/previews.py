"""A run's previews: images of the preview prompt drawn while <R> is learned, through a DDIM pipeline over the run's
own components (it sees the current <R> through the run's hook), each from its own seed so that previews of one run
compare step to step; and the strip of the last ones that the relation keeps as ``preview.png``.
"""
from __future__ import annotations

import torch
from PIL import Image

from .settings import InversionSettings


def preview_pipeline(vae, text_encoder, tokenizer, unet, scheduler_config):
    """A DDIM StableDiffusionPipeline over these components (nothing is copied)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def preview_prompt(settings: InversionSettings) -> str:
    """The preview prompt with its ``<R>`` or ``{}`` written as the run's placeholder token."""
    return settings.validation_prompt.replace("<R>", settings.placeholder_token).replace("{}", settings.placeholder_token)


def preview_images(pipe, settings: InversionSettings, resolution: int) -> list[Image.Image]:
    """``settings.preview_images`` images of the preview prompt, image i from seed ``settings.seed + i``."""
    s = settings
    generators = [torch.Generator().manual_seed(s.seed + i) for i in range(s.preview_images)]
    return pipe(
        [preview_prompt(s)] * s.preview_images, num_inference_steps=s.preview_steps, generator=generators,
        height=resolution, width=resolution,
    ).images


def strip(images: list[Image.Image] | None) -> Image.Image | None:
    """Images side by side in one picture (None for none)."""
    if not images:
        return None
    out = Image.new("RGB", (sum(i.width for i in images), images[0].height))
    for k, image in enumerate(images):
        out.paste(image, (k * image.width, 0))
    return out
