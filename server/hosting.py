"""Where the app runs: on ZeroGPU, a CUDA GPU or the CPU, on Hugging Face Spaces (public) or not.

What runs there (base model, device, precision, attention) is the engine's one rule,
:func:`reversion_core.runtime.choose_runtime`, the same as the CLI's; this module adds only what is about hosting:
ZeroGPU (a GPU lent to decorated functions, so nothing here may touch CUDA), Spaces and public mode, and the line the
page shows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping

from reversion_core.base_model import base_model_label
from reversion_core.runtime import ATTENTION_LABELS, PRECISION_LABELS, Runtime, choose_runtime

ZERO_GPU_VARIABLE = "SPACES_ZERO_GPU"  # the switch the `spaces` package reads (spaces/config.py, Settings.zero_gpu)
SPACE_ID_VARIABLE = "SPACE_ID"  # set by Hugging Face Spaces on every Space
PUBLIC_VARIABLE = "REVERSION_PUBLIC"  # public mode off the Spaces, or off on a private Space


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


@dataclass(frozen=True)
class HostedRuntime(Runtime):
    """The engine's runtime choice, plus where it runs and whether the app is public."""

    hardware: str = "cpu"  # "zerogpu" | "cuda" | "cpu"
    public: bool = False
    gpu_name: str | None = None

    @property
    def description(self) -> str:
        """One line for the page, e.g. "SD 1.5 on ZeroGPU (fp16, SDPA)"."""
        where = {"zerogpu": "ZeroGPU", "cpu": "CPU"}.get(self.hardware) or self.gpu_name or "a CUDA GPU"
        label = base_model_label(self.base_model)
        label = "Embedded miniature model" if label == "embedded miniature model" else label
        return f"{label} on {where} ({PRECISION_LABELS[self.precision]}, {ATTENTION_LABELS[self.attention]})"


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
) -> HostedRuntime:
    """What the app runs here: :func:`~reversion_core.runtime.choose_runtime`'s rule (every argument given wins), and
    on ZeroGPU (``SPACES_ZERO_GPU``, unless the device asked for is the CPU) a GPU without probing CUDA: the `spaces`
    package must initialise CUDA itself, and the GPU exists only inside decorated functions, so SDPA is chosen
    (xformers can only be checked on a GPU). ``cuda_available`` and ``xformers_works`` default to probing."""
    env = os.environ if env is None else env
    zero = on_zero_gpu(env) and device != "cpu"
    if zero:
        cuda_available, xformers_works = True, False
    choice = choose_runtime(base_model, device, precision, attention, env=env, cuda_available=cuda_available,
                            xformers_works=xformers_works)
    hardware = "zerogpu" if zero else choice.device
    if hardware == "cuda" and gpu_name is None:
        gpu_name = _cuda_name()
    return HostedRuntime(**vars(choice), hardware=hardware, public=public_mode(env) if public is None else bool(public),
                         gpu_name=gpu_name)


def _cuda_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:  # a name is only decoration for the page
        return None
