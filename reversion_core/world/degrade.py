"""Renders made to look generated: blurred, colours blended and shifted, noise added; the truth stays known.

A generated image of the world differs from a render in softer edges, colours that bleed into each other and drift
from the palette, and pixel noise. The scorer is measured on these (and on VAE reconstructions) before it is
trusted with generated images.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def degrade(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A ``(H, W, 3)`` uint8 render degraded at random: Gaussian blur (sigma up to 1 px at strength 1), colours
    bled between neighbours and pulled towards grey, a per-channel colour cast, and pixel noise."""
    img = image.astype(np.float32)
    sigma = strength * rng.uniform(0.4, 1.0)
    img = np.stack([ndimage.gaussian_filter(img[..., c], sigma) for c in range(3)], -1)
    # Bleeding: each pixel takes a little of a slightly shifted copy of the image, as a denoiser blends regions.
    shift = rng.integers(-1, 2, size=2)
    img = (1 - 0.25 * strength) * img + 0.25 * strength * np.roll(img, tuple(shift), axis=(0, 1))
    grey = img.mean(-1, keepdims=True)
    img = img + strength * rng.uniform(0.0, 0.2) * (grey - img)  # washed-out colours
    img = img * (1 + strength * rng.uniform(-0.02, 0.02, size=3)) + strength * rng.uniform(-4, 4, size=3)  # a cast
    img = img + rng.normal(0.0, strength * rng.uniform(2.0, 6.0), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
