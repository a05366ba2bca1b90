"""The runtime choice: which base model runs when none is named, on which device, in which precision and with which
attention backend. One rule, for the CLI, the library and the app alike (the app adds only what is about hosting:
ZeroGPU, Spaces and public mode, in ``server/hosting.py``):

- device: the one asked for, else ``cuda`` when a CUDA GPU is present, else ``cpu``;
- base model: the one named (``--base-model``), else ``$REVERSION_BASE_MODEL``, else SD 1.5 on a GPU, else the
  embedded miniature model (``assets/base-model``; SD 1.5 when that folder holds no model);
- precision of the loaded models: fp16 on a GPU, fp32 (``"no"``) on the CPU, where half precision is slow or
  unsupported; fp16 asked for on the CPU is refused;
- attention: xformers on a CUDA GPU where it is installed and runs, else PyTorch's SDPA.

A training keeps its own settings (``InversionSettings.mixed_precision`` and ``attention``: the paper's full
precision and SDPA by default), since it loads its own copy of the base model; only the app, whose trainings share
the models it loaded, trains in the runtime's precision and attention. ``PRECISION_DTYPES`` is the one map from
precision names (accelerate's ``no``, ``fp16``, ``bf16``) to torch dtypes.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from .errors import ReVersionError

if TYPE_CHECKING:
    import torch

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_BASE_MODEL = Path(__file__).resolve().parent.parent / "assets" / "base-model"  # the embedded miniature model
BASE_MODEL_VARIABLE = "REVERSION_BASE_MODEL"
PRECISION_DTYPES = {"no": "float32", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # names of torch dtypes
PRECISION_LABELS = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}  # how a page or a log names them
ATTENTION_LABELS = {"sdpa": "SDPA", "xformers": "xformers"}


# ----------------------------------------------------------------------------------------------- precision
def torch_dtype(precision: str) -> "torch.dtype":
    """The torch dtype of a precision name (``no``/``fp32``, ``fp16``, ``bf16``)."""
    import torch

    if precision not in PRECISION_DTYPES:
        raise ReVersionError(f"Precision {precision!r} is unknown; use one of no, fp16, bf16.")
    return getattr(torch, PRECISION_DTYPES[precision])


def precision_of(dtype: "torch.dtype") -> str:
    """The precision name of a torch dtype (``no`` for fp32): the inverse of :func:`torch_dtype`."""
    for name in ("no", "fp16", "bf16"):
        if torch_dtype(name) == dtype:
            return name
    raise ReVersionError(f"Models in {dtype} are not supported; load them in fp32, fp16 or bf16.")


def check_precision(precision: str, on_gpu: bool) -> str:
    """``precision`` if the device can run it, else one sentence (half precision needs a GPU)."""
    if precision not in PRECISION_LABELS:
        raise ReVersionError(f"Precision {precision!r} is unknown; use one of no, fp16, bf16.")
    if precision == "fp16" and not on_gpu:
        raise ReVersionError("Half precision (fp16) needs a GPU; use 'no' or 'bf16' on CPU.")
    return precision


# ----------------------------------------------------------------------------------------------- the parts of the rule
def pick_device(device: "str | torch.device | None" = None) -> "torch.device":
    """The device to run on: the one asked for, else CUDA when present, else CPU."""
    import torch

    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ReVersionError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: "torch.device", precision: "str | torch.dtype | None" = None) -> "torch.dtype":
    """The loaded models' dtype: the precision asked for, else fp16 on CUDA and fp32 on the CPU."""
    import torch

    if isinstance(precision, torch.dtype):
        return precision
    on_gpu = device.type == "cuda"
    if precision is None:
        precision = "fp16" if on_gpu else "no"
    return torch_dtype(check_precision("no" if precision == "fp32" else precision, on_gpu))


def default_base_model(on_gpu: bool, env: Mapping[str, str] | None = None) -> str:
    """The base model when none is named: ``$REVERSION_BASE_MODEL``, else SD 1.5 on a GPU, else the embedded model
    (SD 1.5 when its folder holds no model)."""
    env = os.environ if env is None else env
    if env.get(BASE_MODEL_VARIABLE):
        return env[BASE_MODEL_VARIABLE]
    embedded = (DEFAULT_BASE_MODEL / "model_index.json").is_file()
    return SD15_HUB_ID if on_gpu or not embedded else str(DEFAULT_BASE_MODEL)


def resolve_source(source: "str | os.PathLike | None" = None, device: "str | torch.device | None" = None) -> str:
    """The base model to load: ``source``, else :func:`default_base_model` for the device (see :func:`pick_device`)."""
    if source is not None:
        return str(source)
    return default_base_model(pick_device(device).type == "cuda")


def pick_attention(device: "torch.device", attention: str | None = None) -> str:
    """The attention backend: the one asked for, else xformers on a CUDA GPU where it runs, else SDPA."""
    if attention is None:
        return "xformers" if device.type == "cuda" and xformers_usable() else "sdpa"
    return check_attention(attention)


def check_attention(attention: str) -> str:
    if attention not in ATTENTION_LABELS:
        raise ReVersionError(f"Attention backend {attention!r} is unknown; use sdpa or xformers.")
    return attention


def make_accelerator(precision: str, cpu: bool):
    """An ``accelerate.Accelerator`` in ``precision`` on the CPU or the GPU, for one training run."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # In one long-lived single process (the app) each run may ask for another precision; accelerate keeps
    # global state, so start it afresh. Under `accelerate launch` (WORLD_SIZE > 1) the launcher owns it.
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=cpu)


def check_loaded_dtype(dtype, wanted) -> None:
    """Refuse to train on models loaded in another dtype than the run's: casting shared models would change them for
    their other users (generation)."""
    if dtype != wanted:
        raise ReVersionError(
            f"The loaded base model runs in {str(dtype).removeprefix('torch.')} but this training needs "
            f"{str(wanted).removeprefix('torch.')}; set mixed precision to match or load the base model in that precision."
        )


def main_process_decides(accelerator, decision: bool) -> bool:
    """The main process's ``decision`` on every process of a launch (they must, say, end a run at the same step)."""
    if accelerator.num_processes == 1:
        return decision
    from accelerate.utils import broadcast_object_list

    return bool(broadcast_object_list([decision])[0])


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


# ----------------------------------------------------------------------------------------------- the whole choice
@dataclass(frozen=True)
class Runtime:
    """The runtime chosen: the base model (a source for ``load_pipeline``), the device, the precision the models are
    loaded in and the attention backend."""

    base_model: str
    device: str  # "cuda" | "cpu"
    precision: str  # "no" (fp32) | "fp16" | "bf16"
    attention: str  # "sdpa" | "xformers"

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


def choose_runtime(
    base_model: "str | os.PathLike | None" = None,
    device: str | None = None,
    precision: str | None = None,
    attention: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cuda_available: bool | Callable[[], bool] | None = None,
    xformers_works: bool | Callable[[], bool] | None = None,
) -> Runtime:
    """The whole rule at once (see the module's docstring); every argument given wins over the automatic choice.

    ``cuda_available`` and ``xformers_works`` default to probing this machine; a caller that must not touch CUDA
    (ZeroGPU, where the GPU exists only inside decorated functions) passes them.
    """
    if device is not None and device not in ("cuda", "cpu"):
        raise ReVersionError(f"Device {device!r} is unknown; use cuda or cpu.")
    has_cuda = device != "cpu" and _value(cuda_available, _cuda_available)
    if device == "cuda" and not has_cuda:
        raise ReVersionError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu.")
    on_gpu = (device or ("cuda" if has_cuda else "cpu")) == "cuda"
    if base_model is None:
        base_model = default_base_model(on_gpu, env)
    precision = check_precision(precision or ("fp16" if on_gpu else "no"), on_gpu)
    if attention is None:
        attention = "xformers" if on_gpu and _value(xformers_works, xformers_usable) else "sdpa"
    return Runtime(str(base_model), "cuda" if on_gpu else "cpu", precision, check_attention(attention))


def _value(given: bool | Callable[[], bool] | None, probe: Callable[[], bool]) -> bool:
    if given is None:
        return bool(probe())
    return bool(given() if callable(given) else given)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
