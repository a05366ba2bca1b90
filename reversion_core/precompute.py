"""Work an inversion does once, before its first step: the placeholder token, the exemplars' VAE latent
distributions, the captions' token ids and the steering words (the paper's section 4.2 vocabulary).

Nothing here changes between steps; the loop in :mod:`reversion_core.inversion` only samples from what is built here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .errors import ReVersionError
from .exemplars import Exemplar, ExemplarSet
from .lexicon import BASIS_PREPOSITIONS, caption_words, content_words, pos_backend, random_vocabulary_words
from .settings import InversionSettings


def add_placeholder_token(tokenizer, text_encoder, settings: InversionSettings) -> tuple[int, int]:
    """Add the placeholder to the tokenizer and a row for it to the text encoder, started as the initializer word.

    Returns (placeholder id, initializer id). Refuses a placeholder the vocabulary already has and an initializer
    that is not one token.
    """
    s, tok = settings, tokenizer
    vocab = tok.get_vocab()
    if s.placeholder_token in vocab or f"{s.placeholder_token.lower()}</w>" in vocab:
        raise ReVersionError(
            f"The placeholder token {s.placeholder_token!r} is already in the base model's vocabulary; choose another token such as <R1>."
        )
    init_ids = tok.encode(s.initializer_token, add_special_tokens=False)
    if len(init_ids) != 1:
        raise ReVersionError(
            f"The initializer {s.initializer_token!r} is {len(init_ids)} tokens for this tokenizer; choose a word that is one token, such as 'and'."
        )
    tok.add_tokens(s.placeholder_token)
    placeholder_id = tok.convert_tokens_to_ids(s.placeholder_token)
    text_encoder.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():  # the new row starts as the initializer; the run's hook overrides it
        table = text_encoder.get_input_embeddings().weight
        table[placeholder_id] = table[init_ids[0]]
    return placeholder_id, init_ids[0]


def exemplar_pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """Centre-crop to a square, resize to ``resolution`` and scale to [-1, 1]: a [N, 3, H, W] tensor."""
    tensors = []
    for image in images:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.BICUBIC)
        array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
        tensors.append(array.permute(2, 0, 1).float() / 127.5 - 1.0)
    return torch.stack(tensors)


def with_token(exemplars: ExemplarSet, token: str) -> ExemplarSet:
    """The same exemplars with their placeholder replaced by ``token``."""
    if exemplars.placeholder_token == token:
        return exemplars
    old = exemplars.placeholder_token
    items = [Exemplar(e.name, e.image, [c.replace(old, token) for c in e.captions]) for e in exemplars.exemplars]
    templates = [t.replace(old, token) for t in exemplars.templates] if exemplars.templates else None
    return ExemplarSet(items, token, exemplars.folder, exemplars.relation, templates)


@dataclass
class Precomputed:
    """Everything the loop samples from."""

    resolution: int
    pixels: torch.Tensor  # [N, 3, H, W] in [-1, 1]
    latent_scale: float
    latent_mean: torch.Tensor  # [N, C, h, w]: each exemplar's VAE latent distribution
    latent_std: torch.Tensor
    captions: list[tuple[int, str]]  # (image index, caption)
    caption_ids: torch.Tensor  # [C, max_length]
    captions_of_image: list[list[int]]
    pos_backend: str
    positive_embeds: torch.Tensor  # [56, D]: the basis prepositions (or the random words that replace them)
    positive_words: list[str]
    negative_words: list[str]  # the captions' content words
    negative_embeds: torch.Tensor  # [M, D]
    caption_negatives: list[torch.Tensor]  # per caption: indices into negative_embeds


def precompute(
    exemplars: ExemplarSet, settings: InversionSettings, tokenizer, text_encoder, vae, unet, placeholder_id: int,
    device: torch.device, weight_dtype: torch.dtype,
) -> Precomputed:
    """Exemplars -> pixels -> VAE latent distributions; captions -> token ids; steering words -> embeddings from the
    frozen table (mean of its pieces when a word is several tokens). Done once per run."""
    s = settings
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = s.resolution or unet.config.sample_size * vae_scale
    pixels = exemplar_pixels([e.image for e in exemplars.exemplars], resolution)
    means, stds = [], []  # each step samples from these distributions, as the paper's loop does
    with torch.no_grad():
        for chunk in pixels.split(4):
            dist = vae.encode(chunk.to(device, weight_dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    latent_mean, latent_std = torch.cat(means), torch.cat(stds)

    # Captions -> token ids; each caption remembers its image.
    captions = [(i, c) for i, e in enumerate(exemplars.exemplars) for c in e.captions]
    caption_ids = tokenizer(
        [c for _, c in captions], padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt",
    ).input_ids
    for (_, caption), ids in zip(captions, caption_ids):
        if not (ids == placeholder_id).any():
            raise ReVersionError(f"Caption {caption!r} is too long: the placeholder falls past the text encoder's {len(ids)}-token limit.")
    captions_of_image = [[k for k, (i, _) in enumerate(captions) if i == j] for j in range(len(exemplars))]

    # Steering vocabulary: the 56 basis prepositions (positives) and the captions' content words (negatives).
    backend = pos_backend()
    with torch.no_grad():
        frozen = text_encoder.get_input_embeddings().weight.detach().float()

        def embed(word: str) -> torch.Tensor:
            ids = [i for i in tokenizer.encode(word, add_special_tokens=False) if i != placeholder_id]
            return frozen[ids].mean(0)

        caption_content = [content_words(c, [s.placeholder_token], backend) for _, c in captions]
        negative_words = list(dict.fromkeys(w for words in caption_content for w in words))
        positive_words = list(BASIS_PREPOSITIONS)
        if s.steering_positives == "random_words":
            positive_words = random_vocabulary_words(
                tokenizer.get_vocab(), len(BASIS_PREPOSITIONS), s.seed,
                exclude=[w for _, c in captions for w in caption_words(c, [s.placeholder_token])],
            )
            if len(positive_words) < s.num_positives:
                raise ReVersionError(
                    f"The tokenizer's vocabulary has only {len(positive_words)} content words outside the captions, "
                    f"fewer than the {s.num_positives} steering positives a step draws."
                )
        positive_embeds = torch.stack([embed(w) for w in positive_words])
        index = {w: k for k, w in enumerate(negative_words)}
        negative_embeds = (
            torch.stack([embed(w) for w in negative_words]) if negative_words else torch.empty(0, frozen.shape[1], device=frozen.device)
        )
        caption_negatives = [torch.tensor([index[w] for w in words], dtype=torch.long) for words in caption_content]
    return Precomputed(
        resolution, pixels, vae.config.scaling_factor, latent_mean, latent_std, captions, caption_ids, captions_of_image,
        backend, positive_embeds, positive_words, negative_words, negative_embeds, caption_negatives,
    )
