"""The evaluation under Accelerate: this process's place in a launch, a world of one for training a relation
alone inside a multi-process launch, and a progress bar that only the main process draws."""
from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta

_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def process_state(device: str | None = None):
    """Accelerate's view of this process (index, count, device); under ``accelerate launch`` it joins the group."""
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return PartialState(cpu=cpu, timeout=timedelta(hours=24))  # a slow training job must not time a waiting process out


@contextlib.contextmanager
def one_process_world():
    """Let the engine train one relation alone inside a multi-process launch.

    ``Inversion`` joins the launch's process group for data-parallel training of one relation; here each process
    trains different relations, so it must see a world of one. Accelerate's shared state and the launcher's
    environment are put back afterwards; the process group itself is untouched. (Accelerate keeps this state in
    private class attributes; no public call gives a process a world of its own.)
    """
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _DISTRIBUTED_ENV}
    saved = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState, GradientState)]
    for key in _DISTRIBUTED_ENV:
        os.environ.pop(key, None)
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        for cls, state in saved:
            cls._shared_state.clear()
            cls._shared_state.update(state)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, unit: str):
    """A tqdm bar on stderr, or one that draws nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)
