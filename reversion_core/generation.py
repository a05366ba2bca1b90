"""Generation with relation prompts: one cached StableDiffusionPipeline, any number of relations installed.

Each relation gets its own token in the tokenizer (its card's token, or ``<name>`` when that token is taken or
unsafe: a word or special token of the base model, or not one ``<word>``),
so ``"circle <above> square inside <inside> ..."`` can mix relations. Prompts come from "E_A <R> E_B" templates,
from entity pairs, or from free text containing ``<R>``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from .base_model import base_model_id, load_pipeline, same_base_model
from .errors import ReVersionError, quoted
from .relation_file import RelationPrompt, base_vocabulary, choose_token, is_safe_token, load_relation
from .runtime import pick_attention, pick_device, resolve_source
from .settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, DEFAULT_PLACEHOLDER, MAX_RESOLUTION, check_seed

_PLACEHOLDERS = (DEFAULT_PLACEHOLDER, "{}")
_MAX_BATCH = 4  # images denoised together; each image keeps its own seed, so batching never changes results


@dataclass
class GenerationResult:
    images: list[Image.Image]
    prompt: str
    seeds: list[int]
    notes: list[str] = field(default_factory=list)  # sentences for the person, such as a prompt cut to the encoder's length


def cut_note(tokenizer, text: str, what: str = "The prompt") -> str | None:
    """One sentence when ``text`` is longer than the text encoder reads (CLIP reads 77 tokens, its start and end
    marks included, and drops the rest without a word), else None."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if not text or not 2 < limit <= 100_000:  # a tokenizer without a length limit cuts nothing
        return None
    ids = tokenizer(text, truncation=False).input_ids
    if len(ids) <= limit:
        return None
    last_words = " ".join(tokenizer.decode(ids[1 : limit - 1]).split()[-4:])[-40:]
    return (f"{what} is {len(ids) - 2} tokens long and the text encoder reads only the first {limit - 2}, so everything "
            f"after '...{last_words}' is left out; shorten it.")


def build_prompt(token: str | None, prompt: str | None = None, entity_a: str | None = None, entity_b: str | None = None, suffix: str = "") -> str:
    """``"E_A <R> E_B"`` from two entities, or free text with ``<R>``/``{}`` replaced by ``token``; then ``", suffix"``."""
    if prompt is not None and prompt.strip():
        text = " ".join(prompt.split())
        if token is not None:
            if not any(p in text for p in (*_PLACEHOLDERS, token)):
                raise ReVersionError(f"The prompt {quoted(prompt)} has no {DEFAULT_PLACEHOLDER}; write where the relation goes, as in 'cat <R> box'.")
            for p in _PLACEHOLDERS:
                text = text.replace(p, token)
    elif entity_a and entity_b and entity_a.strip() and entity_b.strip():
        if token is None:
            raise ReVersionError("Choose a relation to put between the two entities.")
        text = f"{entity_a.strip()} {token} {entity_b.strip()}"
    else:
        raise ReVersionError("Give both entities (A and B) or a prompt containing <R>.")
    suffix = (suffix or "").strip().lstrip(",").strip()
    return f"{text}, {suffix}" if suffix else text


MAX_INFERENCE_STEPS = 1000  # the scheduler's training timesteps; more cannot be taken


def check_generation(steps, guidance_scale, height: int | None = None, width: int | None = None) -> None:
    """Refuse denoising steps, guidance or image size that cannot work, in one sentence (the CLI and app share it)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_INFERENCE_STEPS:
        raise ReVersionError(f"The number of denoising steps must be a whole number from 1 to {MAX_INFERENCE_STEPS}, not {steps!r}.")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ReVersionError(f"The guidance scale must be a finite number of at least 0, not {guidance_scale!r}.")
    for what, value in (("height", height), ("width", width)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8 or value > MAX_RESOLUTION):
            raise ReVersionError(f"The image {what} must be a multiple of 8 from 8 to {MAX_RESOLUTION}, not {value!r}.")


class RelationGenerator:
    """Loads the base model once and generates with any installed relation (the app calls it many times).

    ``base_model``, ``device``, ``dtype`` and ``attention`` left as None follow the runtime's rule
    (:mod:`reversion_core.runtime`): SD 1.5 in fp16 on a GPU, the embedded model in fp32 on the CPU.
    """

    def __init__(
        self,
        base_model: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        attention: str | None = None,
        relations_dir: str | os.PathLike = "relations",
        pipeline=None,
    ) -> None:
        self.source = resolve_source(base_model, device) if pipeline is None else str(getattr(pipeline, "name_or_path", "pipeline"))
        self.device, self.dtype, self.attention = device, dtype, pick_attention(pick_device(device), attention)
        self.relations_dir = Path(relations_dir)
        self._pipe = pipeline
        self._base_vocab: set[str] | None = None
        self.installed: dict[str, str] = {}  # relation key (path or name) -> token

    @property
    def pipeline(self):
        """The cached DDIM StableDiffusionPipeline, loaded on first use."""
        if self._pipe is None:
            self._pipe = load_pipeline(self.source, self.device, self.dtype, self.attention)
        if not getattr(self._pipe, "_reversion_ready", False):
            from diffusers import DDIMScheduler

            self._pipe.scheduler = DDIMScheduler.from_config(self._pipe.scheduler.config)
            self._base_vocab = base_vocabulary(self._pipe.tokenizer)
            self._pipe._reversion_ready = True
        return self._pipe

    @property
    def base_model_id(self) -> str:
        return base_model_id(self.pipeline, self.source)

    @property
    def embedding_dim(self) -> int:
        return int(self.pipeline.text_encoder.get_input_embeddings().weight.shape[1])

    def install(self, relation: RelationPrompt | str | os.PathLike, token: str | None = None) -> str:
        """Put a relation's vector into the text encoder under its own token and return that token.

        Installing again (for example after retraining) overwrites the row, so the latest vector is always used.
        """
        pipe = self.pipeline
        if not isinstance(relation, RelationPrompt):
            relation = load_relation(relation, self.relations_dir)
        relation.check_dim(self.embedding_dim)
        if relation.base_model_id and not same_base_model(relation.base_model_id, self.base_model_id):
            raise ReVersionError(
                f"Relation {relation.name!r} was learned on base model {relation.base_model_id}, not on the loaded "
                f"{self.base_model_id}; a relation prompt only works with the base model it was learned on, so learn it again on this one."
            )
        key = str(relation.path or relation.name)
        tokenizer, own = pipe.tokenizer, self.installed.get(key)
        # Every added token but this relation's own belongs to someone else (another relation, a special token).
        taken = set(tokenizer.get_added_vocab()) - {own}
        if token is not None and token != own:
            if token in self._base_vocab or f"{token.lower()}</w>" in self._base_vocab:
                raise ReVersionError(f"The token {token!r} is already a word of the base model's vocabulary; install the relation under another token.")
            if not is_safe_token(token, self._base_vocab, taken):
                raise ReVersionError(f"The token {token!r} is taken or not one <word> without spaces; install the relation under another token.")
        token = token or own or choose_token(relation.token, relation.name, self._base_vocab, taken)
        encoder = pipe.text_encoder
        if token in tokenizer.get_added_vocab():
            with torch.no_grad():
                table = encoder.get_input_embeddings().weight
                table[tokenizer.convert_tokens_to_ids(token)] = relation.vector.to(table.device, table.dtype)
        else:
            pipe.load_textual_inversion({token: relation.vector}, token=token)
        self.installed[key] = token
        return token

    def generate(
        self,
        relation: RelationPrompt | str | os.PathLike | Sequence[RelationPrompt | str | os.PathLike] | None = None,
        entity_a: str | None = None,
        entity_b: str | None = None,
        prompt: str | None = None,
        suffix: str = "",
        negative_prompt: str | None = None,
        num_images: int = 1,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        steps: int = DEFAULT_INFERENCE_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
    ) -> GenerationResult:
        """Generate ``num_images`` images; image i uses seed ``seeds[i]`` (default ``seed + i``) and is reproducible alone.

        ``relation`` may be a list: all are installed and ``<R>`` means the first; other tokens are written as is.
        """
        check_generation(steps, guidance_scale, height, width)
        if seeds is None:
            check_seed(seed)
            seeds = [int(seed) + i for i in range(int(num_images))]
        seeds = [check_seed(s, "Seed") for s in seeds]
        if not seeds:
            raise ReVersionError("Ask for at least one image.")
        relations = [] if relation is None else list(relation) if isinstance(relation, (list, tuple)) else [relation]
        tokens = [self.install(r) for r in relations]
        text = build_prompt(tokens[0] if tokens else None, prompt, entity_a, entity_b, suffix)
        cut = [cut_note(self.pipeline.tokenizer, t, what) for t, what in ((text, "The prompt"), (negative_prompt, "The negative prompt"))]
        images = self.generate_prompts([text] * len(seeds), seeds, negative_prompt, steps, guidance_scale, height, width, progress)
        return GenerationResult(images, text, seeds, [note for note in cut if note])

    def generate_prompts(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        negative_prompt: str | None = None,
        steps: int = DEFAULT_INFERENCE_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
        on_image: Callable[[int], None] | None = None,
    ) -> list[Image.Image]:
        """One image per finished prompt (tokens already installed), image i from seed ``seeds[i]``, denoised in
        small batches; ``on_image(n)`` is called after each batch with the number of images it made."""
        check_generation(steps, guidance_scale, height, width)
        seeds = [check_seed(s, "Seed") for s in seeds]
        if len(prompts) != len(seeds):
            raise ReVersionError(f"Give one seed per prompt; got {len(prompts)} prompts and {len(seeds)} seeds.")
        if not seeds:
            raise ReVersionError("Ask for at least one image.")
        pipe = self.pipeline
        pipe.set_progress_bar_config(disable=not progress)
        images: list[Image.Image] = []
        for start in range(0, len(seeds), _MAX_BATCH):
            chunk = list(seeds[start : start + _MAX_BATCH])
            generators = [torch.Generator().manual_seed(int(s)) for s in chunk]  # CPU generators: same images on any device
            images += pipe(
                list(prompts[start : start + _MAX_BATCH]),
                negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
                num_inference_steps=int(steps), guidance_scale=float(guidance_scale),
                generator=generators, height=height, width=width,
            ).images
            if on_image is not None:
                on_image(len(chunk))
        return images
