"""What every benchmark shares: the machine it ran on, peak memory, one fresh process per measurement, tables.

Each measurement runs in its own Python process (``run_child``) so that peak memory is that variant's alone and
no state (accelerate, torch.compile caches, allocator pools) leaks from one variant into the next. The parent
only orchestrates, interleaves rounds so that load drift on a shared machine hits every variant alike, and
prints the table.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from a fresh clone, nothing installed
    sys.path.insert(0, str(REPO))

from reversion_core.quiet import quiet_libraries  # noqa: E402

RESULT_PREFIX = "BENCH-RESULT "  # the one stdout line of a child the parent reads


# ----------------------------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, threads torch uses, RAM, library versions and (on CUDA) the GPU: printed with every table."""
    import diffusers
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": "cpu",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)", cuda=torch.version.cuda)
    return info


def machine_line(info: dict[str, Any], load: Sequence[float] | None = None) -> str:
    line = (
        f"Machine: {info['cpu']}, {info['cores']} logical cores ({info['torch_threads']} torch threads), "
        f"{info['ram_gib']} GiB RAM; device {info['device']}; Python {info['python']}, torch {info['torch']}"
        + (f" (CUDA {info['cuda']})" if info.get("cuda") else "")
        + f", diffusers {info['diffusers']}"
    )
    if load is not None:
        line += f"; load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} (1/5/15 min) when the run began"
    return line


# ----------------------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of this process from ``reset()`` on: CUDA max allocated on a GPU, peak RSS (VmHWM) on CPU.

    On Linux the RSS high-water mark is reset by writing 5 to /proc/self/clear_refs; where that is not possible
    the figure falls back to the process-lifetime peak (ru_maxrss) and ``resettable`` says so.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.resettable = True

    def reset(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False

    def peak_mib(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        hwm = _proc_status_kib("VmHWM") if self.resettable else None
        if hwm is None:
            return process_peak_mib("cpu")
        return hwm / 1024

    @staticmethod
    def kind(device: str) -> str:
        return "CUDA max allocated" if device.startswith("cuda") else "peak RSS"


def process_peak_mib(device: str) -> float:
    """Peak memory over the whole process so far (CUDA: since the last reset, which children never do before)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------------------- child processes
def child_main(measure: Callable[[dict], dict]) -> None:
    """Entry point of a child: read the spec from argv, set torch's threads as the CLI does (so the figures are the
    ones a user gets; REVERSION_THREADS or OMP_NUM_THREADS choose others), measure, print one result line."""
    from reversion_core.cpu_threads import CLI_OPERATIONS, use_threads

    spec = json.loads(sys.argv[sys.argv.index("--child") + 1])
    quiet_libraries(hide_warnings=True, offline=True)
    use_threads(CLI_OPERATIONS, spec.get("device", "cpu"))
    print(RESULT_PREFIX + json.dumps(guarded(measure, spec)), flush=True)


def guarded(measure: Callable[[dict], dict], spec: dict) -> dict:
    """``measure(spec)``, or ``{"error": ...}``: the parent reports a failed variant and carries on with the others."""
    try:
        return measure(spec)
    except Exception as exc:
        text = str(exc).strip()
        return {"error": f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]}


def run_child(script: Path, spec: dict, timeout: float | None, in_process: Callable[[dict], dict] | None = None) -> dict:
    """Measure ``spec`` in a fresh ``python script --child spec`` (or in this process when ``in_process`` is given)."""
    if in_process is not None:
        return guarded(in_process, spec)
    import resource

    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            [sys.executable, str(script), "--child", json.dumps(spec)], capture_output=True, text=True,
            timeout=timeout, cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["process_wall_s"] = wall
            result["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"child exited with {done.returncode}: {' | '.join(tail)[:300]}"}


# ----------------------------------------------------------------------------------------------- numbers and tables
def med(values: Sequence[float]) -> float:
    return float(median(values)) if values else float("nan")


def fmt(value: float | None, digits: int = 3) -> str:
    """Three significant digits, or a dash for a missing value."""
    if value is None or value != value:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def choose_variants(
    asked: Sequence[str] | None, defaults: dict[str, list[str]], known: dict, device: str,
    available: Callable[[str, str], str | None],
) -> tuple[list[str], dict[str, str]]:
    """The variants to run (``asked``, else the device's defaults) and those skipped here, with why."""
    variants = list(asked or defaults["cuda" if device.startswith("cuda") else "cpu"])
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise SystemExit(f"Unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}.")
    skipped = {v: why for v in variants if (why := available(v, device))}
    return [v for v in variants if v not in skipped], skipped


def time_left(timeout: float, deadline: float | None) -> float:
    """Seconds a measurement may take: its own timeout, cut to what is left before the --budget-s deadline."""
    return timeout if deadline is None else min(timeout, deadline - time.perf_counter())
