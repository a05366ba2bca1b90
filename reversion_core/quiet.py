"""Library chatter (load bars, verbosity notes, deprecation warnings) kept out of what a person reads: the CLI's
output, the app's server log, a benchmark's table. Cheap to import: diffusers and transformers load on the call."""
from __future__ import annotations

import os


def quiet_libraries(hide_warnings: bool = True, offline: bool = False) -> None:
    """Silence diffusers' and transformers' logs and progress bars; ``hide_warnings`` also ignores Python warnings
    (the app keeps them in its log); ``offline`` keeps the hub client from reaching the network (benchmarks)."""
    if offline:  # read when huggingface_hub is first imported, so before diffusers
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if hide_warnings:
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
