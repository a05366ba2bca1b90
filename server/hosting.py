"""Where the app runs and what it runs there.

ZeroGPU, a CUDA GPU or the CPU decides the base model (SD 1.5 on a GPU, the embedded miniature model on the CPU),
the dtype and the attention backend; a host's explicit choice always wins. The same module says whether the app is
public (on Hugging Face Spaces) and which relations fit the base model it runs.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from reversion_core.base_model import DEFAULT_BASE_MODEL, SD15_HUB_ID, same_base_model
from reversion_core.errors import ReVersionError
from reversion_core.relation_file import RelationPrompt

ZERO_GPU_VARIABLE = "SPACES_ZERO_GPU"  # the switch the `spaces` package reads (spaces/config.py, Settings.zero_gpu)
SPACE_ID_VARIABLE = "SPACE_ID"  # set by Hugging Face Spaces on every Space
PUBLIC_VARIABLE = "REVERSION_PUBLIC"  # public mode off the Spaces, or off on a private Space
BASE_MODEL_VARIABLE = "REVERSION_BASE_MODEL"
_PRECISION_NAMES = {"fp16": "fp16", "bf16": "bf16", "no": "fp32"}
_ATTENTION_NAMES = {"sdpa": "SDPA", "xformers": "xformers"}


def env_flag(value: str | None) -> bool:
    """A boolean environment value, read the way the `spaces` package reads its own ("1", "t", "true")."""
    return value is not None and value.lower() in ("1", "t", "true")


def on_zero_gpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on a ZeroGPU Space (the `spaces` package then lends a GPU to decorated functions)."""
    env = os.environ if env is None else env
    return env_flag(env.get(ZERO_GPU_VARIABLE))


def import_spaces_first(env: Mapping[str, str] | None = None) -> bool:
    """On ZeroGPU, import the `spaces` package now: it patches torch at import and must come before anything
    initialises CUDA. Call it first thing in the app. Returns whether ZeroGPU is on."""
    if not on_zero_gpu(env):
        return False
    import spaces  # noqa: F401

    return True


def on_spaces(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on Hugging Face Spaces."""
    env = os.environ if env is None else env
    return bool(env.get(SPACE_ID_VARIABLE))


def public_mode(env: Mapping[str, str] | None = None) -> bool:
    """Public mode: ``$REVERSION_PUBLIC`` when set, else on exactly when the app runs on Spaces."""
    env = os.environ if env is None else env
    if env.get(PUBLIC_VARIABLE) not in (None, ""):
        return env_flag(env[PUBLIC_VARIABLE])
    return on_spaces(env)


def xformers_usable() -> bool:
    """Whether xformers is installed and its attention kernel runs on this CUDA GPU (a broken build often imports fine)."""
    if importlib.util.find_spec("xformers") is None:
        return False
    try:
        import torch
        import xformers.ops

        q = torch.randn(1, 8, 1, 40, device="cuda", dtype=torch.float16)
        xformers.ops.memory_efficient_attention(q, q, q)
        return True
    except Exception:  # any failure (no kernel for this GPU, ABI mismatch) means: use SDPA
        return False


def base_model_label(source: str | os.PathLike) -> str:
    """A short name for a base-model source or id: "SD 1.5", "embedded miniature model", or the name itself."""
    name = str(source).rsplit("#", 1)[0] if "#" in str(source) else str(source)
    if name == SD15_HUB_ID or name.rstrip("/").endswith("stable-diffusion-v1-5"):
        return "SD 1.5"
    if name == DEFAULT_BASE_MODEL.name or Path(name).expanduser().resolve() == DEFAULT_BASE_MODEL.resolve():
        return "embedded miniature model"
    return Path(name).name if Path(name).expanduser().exists() else name


@dataclass(frozen=True)
class Runtime:
    """What the app runs: on which hardware, which base model, device, dtype and attention, and whether it is public."""

    hardware: str  # "zerogpu" | "cuda" | "cpu"
    base_model: str  # a source for load_pipeline: hub id, diffusers folder or checkpoint
    device: str  # "cuda" | "cpu"
    dtype: str  # a precision name load_pipeline takes: "fp16" | "bf16" | "no" (fp32)
    attention: str  # "sdpa" | "xformers"
    public: bool
    gpu_name: str | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def description(self) -> str:
        """One line for the page, e.g. "SD 1.5 on ZeroGPU (fp16, SDPA)"."""
        where = {"zerogpu": "ZeroGPU", "cpu": "CPU"}.get(self.hardware) or self.gpu_name or "a CUDA GPU"
        label = base_model_label(self.base_model)
        label = "Embedded miniature model" if label == "embedded miniature model" else label
        return f"{label} on {where} ({_PRECISION_NAMES[self.dtype]}, {_ATTENTION_NAMES[self.attention]})"


def pick_runtime(
    env: Mapping[str, str] | None = None,
    *,
    cuda_available: bool | Callable[[], bool] | None = None,
    xformers_works: bool | Callable[[], bool] | None = None,
    gpu_name: str | None = None,
    base_model: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str | None = None,
    attention: str | None = None,
    public: bool | None = None,
) -> Runtime:
    """Choose what the app runs from the environment; every argument that is given wins over the automatic choice.

    ZeroGPU (``SPACES_ZERO_GPU``) or a CUDA GPU -> SD 1.5 (``$REVERSION_BASE_MODEL`` overrides), fp16, xformers when it
    works on the CUDA GPU else SDPA; CPU -> the embedded model in fp32 with SDPA. On ZeroGPU no CUDA call is made here:
    the `spaces` package must initialise CUDA itself, and the GPU exists only inside decorated functions, so SDPA is
    chosen (xformers can only be checked on a GPU). ``cuda_available`` and ``xformers_works`` default to probing.
    """
    env = os.environ if env is None else env
    if device is not None and device not in ("cuda", "cpu"):
        raise ReVersionError(f"Device {device!r} is unknown; use cuda or cpu.")
    zero = on_zero_gpu(env) and device != "cpu"
    if zero:
        hardware = "zerogpu"
    else:
        has_cuda = _value(cuda_available, _cuda_available)
        if device == "cuda" and not has_cuda:
            raise ReVersionError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
        hardware = "cuda" if (device or ("cuda" if has_cuda else "cpu")) == "cuda" else "cpu"
    on_gpu = hardware != "cpu"

    if base_model is None:
        base_model = env.get(BASE_MODEL_VARIABLE) or None
    if base_model is None:
        embedded = (DEFAULT_BASE_MODEL / "model_index.json").is_file()
        base_model = SD15_HUB_ID if on_gpu or not embedded else str(DEFAULT_BASE_MODEL)

    if precision is None:
        precision = "fp16" if on_gpu else "no"
    if precision not in _PRECISION_NAMES:
        raise ReVersionError(f"Precision {precision!r} is unknown; use one of no, fp16, bf16.")
    if precision == "fp16" and not on_gpu:
        raise ReVersionError("Half precision (fp16) needs a GPU; use 'no' or 'bf16' on CPU.")

    if attention is None:
        attention = "xformers" if hardware == "cuda" and _value(xformers_works, xformers_usable) else "sdpa"
    if attention not in _ATTENTION_NAMES:
        raise ReVersionError(f"Attention backend {attention!r} is unknown; use sdpa or xformers.")

    if hardware == "cuda" and gpu_name is None:
        gpu_name = _cuda_name()
    return Runtime(
        hardware=hardware, base_model=str(base_model), device="cuda" if on_gpu else "cpu", dtype=precision,
        attention=attention, public=public_mode(env) if public is None else bool(public), gpu_name=gpu_name,
    )


def _value(given: bool | Callable[[], bool] | None, probe: Callable[[], bool]) -> bool:
    if given is None:
        return bool(probe())
    return bool(given() if callable(given) else given)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # a name is only decoration for the page
        return None


# ----------------------------------------------------------------------------------------------- relations
@dataclass(frozen=True)
class UnusableRelation:
    """A relation made for another base model, with the sentence that says why it cannot be used here."""

    relation: RelationPrompt
    reason: str


def split_relations(
    relations: Iterable[RelationPrompt], base_model_id: str
) -> tuple[list[RelationPrompt], list[UnusableRelation]]:
    """Relations usable with the base model ``base_model_id`` and, apart, those that are not, each with its reason.

    ``relations`` is what ``relation_file.list_relations(folder)`` returns without a base-model filter.
    """
    usable, unusable = [], []
    here = base_model_label(base_model_id)
    for relation in relations:
        theirs = relation.base_model_id
        if same_base_model(theirs, base_model_id):
            usable.append(relation)
        elif not theirs:
            unusable.append(UnusableRelation(relation, (
                f"Relation {relation.name!r} does not record which base model it was learned on, so it cannot be "
                f"used with the {here} this app runs; import its file through the app to attach a base model."
            )))
        else:
            unusable.append(UnusableRelation(relation, (
                f"Relation {relation.name!r} was learned on the {base_model_label(theirs)} ({theirs}) and this app runs "
                f"the {here} ({base_model_id}); a relation prompt only works with the base model it was learned on."
            )))
    return usable, unusable
