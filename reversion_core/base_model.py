"""Base models: loading a Stable Diffusion 1.x from where it comes from (hub id, diffusers folder, single checkpoint)
onto a device in a dtype with an attention backend, a stable identifier that relation cards record, and a short name
for a page. Which base model, device, dtype and attention a process picks when none is named is the runtime's rule
(:mod:`reversion_core.runtime`).
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .errors import ReVersionError
from .runtime import DEFAULT_BASE_MODEL, SD15_HUB_ID, pick_attention, pick_device, pick_dtype, resolve_source

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def _missing_weights(source: str) -> ReVersionError:
    return ReVersionError(
        f"The base model {source!r} is not on this machine and could not be downloaded; download it where there is "
        "network access and pass its local diffusers folder or .safetensors checkpoint with --base-model "
        "(or the REVERSION_BASE_MODEL environment variable)."
    )


def _looks_like_path(source: str) -> bool:
    """Hub ids are exactly ``org/name``; anything else that is not on disk was meant as a path."""
    return source.startswith((".", "/", "~", "\\")) or source.lower().endswith(SINGLE_FILE_SUFFIXES) or source.count("/") != 1


def load_pipeline(
    source: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = "no",
    attention: str | None = "sdpa",
    single_file_config: str | os.PathLike | None = None,
):
    """Load a ``StableDiffusionPipeline`` from a hub id, a local diffusers folder or a ``.safetensors``/``.ckpt`` file.

    ``source``, ``device``, ``dtype`` and ``attention`` left as None follow the runtime's rule (:mod:`reversion_core.runtime`).

    ``single_file_config`` is a diffusers folder (or hub id) giving the component configs a single checkpoint needs
    when the hub cannot be reached. Every failure is a ReVersionError in one sentence.
    """
    from diffusers import StableDiffusionPipeline

    device = pick_device(device)
    source = resolve_source(source, device)
    torch_dtype = pick_dtype(device, dtype)
    common = dict(dtype=torch_dtype, safety_checker=None, requires_safety_checker=False)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ReVersionError(f"Folder {path} is not a diffusers model folder (it has no model_index.json).")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, **common)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ReVersionError(f"The diffusers folder {path} could not be loaded ({_first_line(exc)}).") from None
    elif path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ReVersionError(f"Base model file {path.name} is not a .safetensors or .ckpt checkpoint.")
        pipe = _load_single_file(path, single_file_config, common)
    elif _looks_like_path(source):
        raise ReVersionError(f"Base model {source} does not exist; give a diffusers folder, a .safetensors/.ckpt file or a hub id.")
    else:
        pipe = _load_from_hub(source, common)
    set_attention(pipe, pick_attention(device, attention))
    return pipe.to(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")[:200]


def _load_from_hub(hub_id: str, common: dict):
    from diffusers import StableDiffusionPipeline

    try:  # the local cache first: no network call when the weights are already here
        return StableDiffusionPipeline.from_pretrained(hub_id, local_files_only=True, **common)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise _missing_weights(hub_id)
    try:
        return StableDiffusionPipeline.from_pretrained(hub_id, **common)
    except Exception:  # network errors come in many types; each means the same thing to the user
        raise _missing_weights(hub_id) from None


def _load_single_file(path: Path, config: str | os.PathLike | None, common: dict):
    from diffusers import StableDiffusionPipeline

    kwargs = dict(common)
    if config is not None:
        kwargs["config"] = str(config)
    try:
        return StableDiffusionPipeline.from_single_file(str(path), local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers raises many types here; name the two causes a user can fix
        message = _first_line(exc)
        if "pickle" in message.lower() or "weights_only" in message.lower() or "unpickl" in message.lower():
            raise ReVersionError(f"Checkpoint {path.name} holds pickled code, which is never executed; convert it to .safetensors.") from None
        raise ReVersionError(
            f"Checkpoint {path.name} could not be loaded as a Stable Diffusion 1.x model ({message}); a single file "
            "needs its components' configs: use a diffusers folder of the model instead, or from Python pass "
            "load_pipeline(..., single_file_config=FOLDER) with a diffusers folder of the same architecture."
        ) from None


def set_attention(pipe, backend: str = "sdpa") -> None:
    """Use PyTorch scaled-dot-product attention (default) or xformers (only when installed)."""
    if backend == "sdpa":
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())
    elif backend == "xformers":
        if importlib.util.find_spec("xformers") is None:
            raise ReVersionError("xformers attention was asked for but the xformers package is not installed; install it or use sdpa attention.")
        try:
            pipe.enable_xformers_memory_efficient_attention()
        except Exception as exc:
            raise ReVersionError(f"xformers attention could not be enabled ({_first_line(exc)}); use sdpa attention.") from None
    else:
        raise ReVersionError(f"Attention backend {backend!r} is unknown; use sdpa or xformers.")


def shared_pipeline(pipeline, tokenizer=None, source: str | None = None):
    """A pipeline for one training over ``pipeline``'s loaded UNet, VAE and scheduler, with copies of the tokenizer
    and text encoder, so the run's placeholder changes nothing that generation uses.

    ``tokenizer`` is a pristine tokenizer to copy instead of the pipeline's, whose vocabulary may have grown with the
    relations generation installed; the copied text encoder is cut back to that vocabulary.
    """
    from diffusers import StableDiffusionPipeline

    tokenizer = copy.deepcopy(tokenizer if tokenizer is not None else pipeline.tokenizer)
    text_encoder = copy.deepcopy(pipeline.text_encoder)
    if text_encoder.get_input_embeddings().weight.shape[0] > len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer))
    components = {**pipeline.components, "tokenizer": tokenizer, "text_encoder": text_encoder}
    components.pop("requires_safety_checker", None)
    clone = StableDiffusionPipeline(**components, requires_safety_checker=False)
    clone.register_to_config(_name_or_path=str(source or pipeline.name_or_path))
    return clone


def base_model_id(pipe, source: str | os.PathLike | None = None) -> str:
    """A stable identifier of the text-embedding space, e.g. ``"base-model#3f2a9c01d2.5be0c41a"``.

    The name is the hub id or folder name. After ``#`` come two hashes: the text encoder's config (which fixes the
    shape of the space a relation vector lives in) and its weights (:func:`embedding_fingerprint`: two models of one
    architecture, such as two trainings of the embedded model, are different spaces). The same model reached by hub
    id, local folder or single file, in fp32, fp16 or bf16, has the same id.
    """
    source = str(source or getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "") or "model")
    path = Path(source)
    name = path.stem if path.is_file() else (path.name if path.exists() else source)
    return f"{name}#{text_encoder_hash(pipe.text_encoder)}.{embedding_fingerprint(pipe.text_encoder)}"


def text_encoder_hash(text_encoder) -> str:
    """Ten hex digits hashing the text encoder config (without paths, versions or the vocabulary size we grow)."""
    config = text_encoder.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "vocab_size", "dtype", "torch_dtype", "_commit_hash", "architectures"):
        config.pop(key, None)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


FINGERPRINT_ROWS = 64  # the base vocabulary's first rows: never the rows that relations add at the end


def embedding_fingerprint(text_encoder) -> str:
    """Eight hex digits hashing the signs of the input embedding table's first rows.

    Signs survive casting to fp16 or bf16 (the sizes of these weights are far from underflow), so a model loaded in
    any precision gives the same digits, while any two trainings give different ones (thousands of signs).
    """
    table = text_encoder.get_input_embeddings().weight.detach()
    signs = (table[:FINGERPRINT_ROWS].float() > 0).flatten().cpu().numpy()
    return hashlib.sha256(signs.tobytes()).hexdigest()[:8]


def same_base_model(a: str | None, b: str | None) -> bool:
    """Whether two base-model ids name the same text-embedding space: the config hashes after ``#`` agree, and so do
    the weight fingerprints where both ids have one (ids written before fingerprints were recorded have none)."""
    if not a or not b:
        return False
    (config_a, _, weights_a), (config_b, _, weights_b) = (x.rsplit("#", 1)[-1].partition(".") for x in (a, b))
    return config_a == config_b and (not weights_a or not weights_b or weights_a == weights_b)


def base_model_label(source: str | os.PathLike) -> str:
    """A short name for a base-model source or id: "SD 1.5", "embedded miniature model", or the name itself."""
    name = str(source).rsplit("#", 1)[0] if "#" in str(source) else str(source)
    if name == SD15_HUB_ID or name.rstrip("/").endswith("stable-diffusion-v1-5"):
        return "SD 1.5"
    if name == DEFAULT_BASE_MODEL.name or Path(name).expanduser().resolve() == DEFAULT_BASE_MODEL.resolve():
        return "embedded miniature model"
    return Path(name).name if Path(name).expanduser().exists() else name
