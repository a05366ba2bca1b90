"""How many threads torch uses on the CPU: one rule for the app and the CLI, applied once at start.

torch's default is one thread per physical core for every operation. With OpenMP's spinning threads that is the
worst choice when there are more threads than free cores: each parallel region waits for its slowest thread, and a
thread that shares a core with other work runs only when the scheduler gives it a turn. On the 2-core machine this
project is measured on, a second program busy on one core made the app 15 to 50 times slower with two threads than
with one (docs/performance.md, "Threads on the CPU"), and the app itself runs two operations at once when one visitor
trains while another generates. So:

- threads per operation = (cores available - 1) // operations the process may run at once, at least 1. The cores
  available are this process's CPU affinity, cut to the cgroup's CPU quota where one is set; one core is left for
  everything else (the server, the OS, a busy neighbour, which cannot be seen in advance): with one thread too few
  a run is a little slower, with one too many it may be many times slower. The app may run 2 operations (a training
  beside a generation or a report card; generations and cards take turns), the CLI 1.
- ``REVERSION_THREADS`` (a whole number from 1 up) chooses for the app and the CLI alike, else ``OMP_NUM_THREADS``
  does (launchers such as ``accelerate launch`` set it for their processes): a choice made outside always wins.
- On a CUDA GPU the CPU only feeds the model, so torch's default is left alone unless a variable chooses.

Inter-op threads (torch's pool for work launched in parallel, which the engine does not use) are set to 1 whenever
the threads are set, where torch still allows it. Nothing here imports torch until a choice is applied.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import ReVersionError, quoted

THREADS_VARIABLE = "REVERSION_THREADS"
OPENMP_VARIABLE = "OMP_NUM_THREADS"
APP_OPERATIONS = 2  # a training beside one generation or report card (they take turns on the pipeline)
CLI_OPERATIONS = 1
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """torch's intra-op threads for this process (None: torch's default, left alone) and the one line that says why."""

    threads: int | None
    reason: str
    source: str  # "rule", THREADS_VARIABLE, OPENMP_VARIABLE or "gpu"


# ----------------------------------------------------------------------------------------------- the machine
def cpu_quota(root: Path | None = None) -> float | None:
    """The cgroup's CPU quota in cores (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), None when unlimited or
    unreadable."""
    root = CGROUP if root is None else root
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """The cores this process may run on: its CPU affinity (else the machine's count), cut to the CPU quota's whole
    cores (a quota of 1.5 cores gives 1); at least 1. ``affinity`` and ``quota`` default to this machine's."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            affinity = os.cpu_count() or 1
    if quota is None:
        quota = cpu_quota()
    cores = affinity if quota is None else min(affinity, math.floor(quota))
    return max(1, cores)


# ----------------------------------------------------------------------------------------------- the rule
def threads_per_operation(cores: int, operations: int) -> int:
    """The rule: one core left for other work, the rest shared by the operations that may run at once; at least 1."""
    spare = 1 if cores > 1 else 0
    return max(1, (cores - spare) // max(1, operations))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def chosen_threads(env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """The threads chosen outside: ``REVERSION_THREADS`` (refused in one sentence unless a whole number from 1 up),
    else ``OMP_NUM_THREADS`` (its first number; OpenMP's own variable, so a value it would ignore is ignored here)."""
    env = os.environ if env is None else env
    value = (env.get(THREADS_VARIABLE) or "").strip()
    if value:
        if not re.fullmatch(r"[0-9]+", value) or int(value) < 1:
            raise ReVersionError(f"{THREADS_VARIABLE} must be a whole number of threads from 1 up, not {quoted(value)}.")
        return int(value), THREADS_VARIABLE
    first = (env.get(OPENMP_VARIABLE) or "").split(",")[0].strip()
    if re.fullmatch(r"[0-9]+", first) and int(first) >= 1:
        return int(first), OPENMP_VARIABLE
    return None


def choose_threads(operations: int, device: str = "cpu", env: Mapping[str, str] | None = None,
                   cores: int | None = None) -> ThreadChoice:
    """The choice for a process that runs up to ``operations`` torch operations at once on ``device`` (see the
    module's docstring); ``cores`` defaults to :func:`available_cores`. A bad ``REVERSION_THREADS`` is refused."""
    chosen = chosen_threads(env)
    if chosen is not None:
        threads, variable = chosen
        return ThreadChoice(threads, f"{_plural(threads, 'torch thread')} per operation: {variable}={threads}", variable)
    if str(device).startswith("cuda"):
        return ThreadChoice(None, "torch's default CPU threads: the model runs on the GPU", "gpu")
    cores = available_cores() if cores is None else cores
    threads = threads_per_operation(cores, operations)
    if cores == 1:
        why = "1 core"
    else:
        ops = "1 operation at a time" if operations == 1 else f"up to {operations} operations at once"
        why = f"{cores} cores, {ops}, one core kept free"
    return ThreadChoice(threads, f"{_plural(threads, 'torch thread')} per operation: {why}", "rule")


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's threads to ``choice`` (nothing when it leaves torch's default); inter-op threads to 1 where torch
    still allows it (only before any inter-op work has started)."""
    if choice.threads is None:
        return choice
    import torch

    torch.set_num_threads(choice.threads)
    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work has started, or it was set before: keep what is there
        pass
    return choice


def use_threads(operations: int, device: "str | None" = "cpu", env: Mapping[str, str] | None = None) -> ThreadChoice:
    """Choose and apply torch's threads for this process (``device`` None: CUDA when present, as the runtime picks);
    returns the choice, whose ``reason`` is the line to log."""
    if device is None and chosen_threads(env) is None:
        from .runtime import pick_device

        device = pick_device().type
    return apply_threads(choose_threads(operations, device or "cpu", env))
