"""ReVersion Studio: learn a relation prompt <R> from a few exemplar images, then generate with it.

UI only: constants, flags, and the page put together from ``ui/`` (one builder per tab, handlers that each call one
method of ``server.studio.Studio``; the server side is ``server/``, the engine ``reversion_core/``).
``python app.py --help`` lists the flags; each has an environment variable too. On the CPU, torch's threads follow
``reversion_core.cpu_threads`` for up to two operations at once (a training beside a generation; REVERSION_THREADS
chooses otherwise), logged at start.
Where it runs decides what it runs (``server.hosting`` on the engine's rule, ``reversion_core.runtime``): SD 1.5 on
ZeroGPU or a CUDA GPU, the embedded model on the CPU; on Hugging Face Spaces it is public: each visitor trains into a
workspace of their own.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import typing
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
for _var, _value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_var, _value)  # keep load bars and library notes out of the server log

# Before gradio and the hub are imported: the hub reads HF_HOME once, and on ZeroGPU `spaces` must come before CUDA.
from reversion_core.errors import ReVersionError  # noqa: E402
from server.workspaces import data_dir, use_data_dir_for_hub_cache  # noqa: E402

try:
    DATA = data_dir()
except ReVersionError as _exc:
    raise SystemExit(str(_exc)) from None
use_data_dir_for_hub_cache(DATA)
from server.hosting import import_spaces_first  # noqa: E402

import_spaces_first()

import gradio as gr  # noqa: E402

from reversion_core import benchmarks  # noqa: E402
from reversion_core.cpu_threads import APP_OPERATIONS, chosen_threads, use_threads  # noqa: E402
from reversion_core.settings import ATTENTION_CHOICES  # noqa: E402
from server import studio as st  # noqa: E402
from server.workspaces import Limits, Workspaces  # noqa: E402
from ui.benchmark_tab import build_benchmark_tab  # noqa: E402
from ui.generate_tab import build_generate_tab  # noqa: E402
from ui.train_tab import build_train_tab  # noqa: E402
from ui.wiring import PRIVATE, Page, quiet_refusals, visitor_key  # noqa: E402

TITLE = "ReVersion Studio"
DESCRIPTION = (
    "Learn a **relation prompt** `<R>` from a few exemplar images that share one relation between two entities "
    "(ReVersion, SIGGRAPH Asia 2024), watch it being learned, then write `rabbit <R> carrot` to put new entities in "
    "the same relation."
)
DEFAULT_MAX_FILE_SIZE = "64mb"  # per uploaded file; exemplar images are shrunk to 1024 px on load anyway
# Public mode's limits, each overridable by an environment variable (name: Limits field, type)
LIMIT_VARIABLES = {"REVERSION_MAX_RELATIONS": ("relations_per_visitor", int), "REVERSION_DISK_MB": ("total_disk_mb", float),
                   "REVERSION_UPLOAD_MB": ("upload_mb", float), "REVERSION_MAX_STEPS": ("train_steps", int),
                   "REVERSION_IDLE_HOURS": ("idle_hours", float)}
# Galleries: whole images (contain, square cells) with sharp pixels, each caption under its image (not over its
# lower part), the gallery as tall as its rows.
CSS = """
.pixelated img { image-rendering: pixelated; }
.pixelated .grid-wrap.fixed-height { min-height: 0 !important; max-height: none !important; overflow-y: visible !important; }
.pixelated .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex !important; flex-direction: column; }
.pixelated .thumbnail-lg > img { width: 100% !important; height: auto !important; aspect-ratio: 1 / 1; object-fit: contain !important; }
.pixelated .caption-label { position: static !important; max-width: 100% !important; white-space: pre-line !important;
  overflow: visible !important; text-overflow: clip !important; opacity: 1 !important; border: none !important;
  border-radius: 0 !important; font-size: 0.8rem !important; line-height: 1.3; padding: 4px 6px !important; text-align: left; }
.score-grid .icon-button-wrapper.top-panel { position: static !important; justify-content: flex-end; margin: 0 0 4px auto; }
"""
log = logging.getLogger("reversion_studio")


# ----------------------------------------------------------------------------------------------- config
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=TITLE)
    p.add_argument("--base-model", default=None,
                   help="SD 1.x hub id, diffusers folder or .safetensors (default: SD 1.5 on a GPU, the embedded model on "
                        "CPU; env REVERSION_BASE_MODEL)")
    p.add_argument("--relations-dir", default=env("REVERSION_RELATIONS_DIR", str(APP_DIR / "relations")),
                   help="where relation prompts live; read-only in public mode (env REVERSION_RELATIONS_DIR)")
    p.add_argument("--benchmark-dir", default=env("REVERSION_BENCHMARK_DIR", str(APP_DIR / "assets" / "benchmark")),
                   help="exemplar sets in the ReVersion benchmark layout (env REVERSION_BENCHMARK_DIR)")
    p.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    p.add_argument("--device", choices=["cpu", "cuda"], default=env("REVERSION_DEVICE"),
                   help="default: cuda when present (env REVERSION_DEVICE)")
    p.add_argument("--attention", choices=list(ATTENTION_CHOICES), default=env("REVERSION_ATTENTION"),
                   help="attention backend (default: xformers on a CUDA GPU where it works, else sdpa; env REVERSION_ATTENTION)")
    p.add_argument("--public", action=argparse.BooleanOptionalAction, default=None,
                   help="one workspace per visitor, with quotas (default: on on Hugging Face Spaces; env REVERSION_PUBLIC)")
    p.add_argument("--clip-model", default=env("REVERSION_CLIP_MODEL"),
                   help="CLIPModel folder (or cached hub id) that reads report cards and validation images off the embedded "
                        "world (env REVERSION_CLIP_MODEL; default openai/clip-vit-large-patch14 when cached)")
    p.add_argument("--relation-probe", default=env("REVERSION_RELATION_PROBE"),
                   help="a LinearProbe .safetensors that gives CLIP's relation score (env REVERSION_RELATION_PROBE)")
    p.add_argument("--max-file-size", default=env("REVERSION_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                   help=f"largest accepted upload, such as 64mb (env REVERSION_MAX_FILE_SIZE; default {DEFAULT_MAX_FILE_SIZE})")
    return p.parse_args(argv)


def limits_from_env(env: typing.Mapping[str, str] | None = None) -> Limits:
    """Public mode's limits: the defaults, each replaced by its environment variable when set."""
    env = os.environ if env is None else env
    changes = {}
    for variable, (name, kind) in LIMIT_VARIABLES.items():
        if env.get(variable):
            try:
                changes[name] = kind(env[variable])
            except ValueError:
                raise ReVersionError(f"{variable} must be a {kind.__name__} number, not {env[variable]!r}.") from None
    return dataclasses.replace(Limits(), **changes)


def file_size_bytes(size: str) -> int:
    """``"64mb"`` -> bytes (the units gradio's max_file_size takes: b, kb, mb, gb, powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*", str(size).lower())
    if not match:
        raise ReVersionError(f"The largest upload must be a size such as 64mb, not {size!r}.")
    return int(float(match[1]) * 1024 ** ("b", "kb", "mb", "gb").index(match[2] or "b"))


def make_temp_dir(named: str | None = None) -> Path:
    """The app's temp folder: the one named (REVERSION_TEMP_DIR), else a fresh private one (mode 0700, random name)
    that is removed when the app exits; a shared fixed path could be planted with files that the app then serves."""
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(tempfile.mkdtemp(prefix="reversion-studio-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def header_text(studio: st.Studio) -> str:
    rt = studio.runtime
    lines = [f"# {TITLE}", DESCRIPTION, f"Running **{rt.description}**."]
    if studio.workspaces is not None:
        lim = studio.workspaces.limits
        lines.append(
            f"**Public mode**: what you train or import is yours alone, beside the shipped relations (which nobody can "
            f"change). Up to {lim.relations_per_visitor} relations, {lim.train_steps} steps a run, one training at a "
            f"time, uploads up to {lim.upload_mb:g} MB; your relations are removed after {lim.idle_hours:g} hours unused"
            f"{'' if studio.workspaces.persistent else ' or when the app restarts'}; download them as a zip to keep them."
        )
    return "\n\n".join(lines)


def sign_in_available() -> bool:
    """Whether the Space enables "Sign in with Hugging Face" (``hf_oauth: true`` sets OAUTH_CLIENT_ID) and gradio's
    OAuth extra is installed; without sign-in each browser is one visitor."""
    if not os.environ.get("OAUTH_CLIENT_ID"):
        return False
    if importlib.util.find_spec("authlib") is None:
        log.warning("sign-in is enabled on this Space but gradio[oauth] is not installed; each browser is one visitor")
        return False
    return True


def build_demo(studio: st.Studio) -> gr.Blocks:
    """The page: a header saying what runs where, then the Train, Generate and Benchmark tabs."""
    def list_relations(request: gr.Request) -> list[str]:
        """The names of the relations learned on the loaded base model (the Generate tab's choices)."""
        return studio.relation_names(studio.shelf(visitor_key(None, request, None)))

    def list_benchmark_sets() -> list[str]:
        """The names of the benchmark's exemplar sets (the values of train's set_name)."""
        return benchmarks.list_benchmark_sets(studio.benchmark_dir)

    def page_owner(stored):
        """The page's owner key, issued by the server (a stored key it did not sign is replaced) and kept in the
        browser, so a reload still owns its training and finds its relations."""
        key = studio.page_keys.page_key(stored)
        return key, key

    with gr.Blocks(title=TITLE) as demo:
        stored_owner = gr.BrowserState("", storage_key="reversion-studio-owner", secret=studio.page_keys.storage_secret())
        page = Page(tabs=None, owner=gr.State(None))
        with gr.Row():
            gr.Markdown(header_text(studio), elem_id="header")
            if studio.public and sign_in_available():
                gr.LoginButton(scale=0)
        with gr.Tabs() as page.tabs:
            build_train_tab(studio, page)
            build_generate_tab(studio, page)
            build_benchmark_tab(studio, page)
        for wire in page.later:
            wire()
        for fn in (list_relations, list_benchmark_sets):
            fn.__annotations__ = typing.get_type_hints(fn)  # real types (not strings) give the API its return type
            gr.api(fn, api_name=fn.__name__)
        loaded = demo.load(page_owner, stored_owner, [stored_owner, page.owner], queue=False, **PRIVATE)
        for wire in page.on_load:
            wire(loaded)
    quiet_refusals(demo)
    return demo


def make_studio(args: argparse.Namespace, temp_dir: Path) -> st.Studio:
    """The studio for these flags and this machine: the runtime it picks, and in public mode the visitors' workspaces."""
    from server.hosting import pick_runtime
    from server.gpu_runner import default_cap

    runtime = pick_runtime(base_model=args.base_model, device=args.device, attention=args.attention, public=args.public)
    workspaces = Workspaces(args.relations_dir, DATA, limits_from_env()) if runtime.public else None
    if workspaces is not None:
        workspaces.start_cleanup()
    return st.Studio(relations_dir=args.relations_dir, benchmark_dir=args.benchmark_dir, temp_dir=temp_dir,
                     runtime=runtime, workspaces=workspaces, cap_s=default_cap(runtime), clip_model=args.clip_model,
                     relation_probe=args.relation_probe)


def fetch_tagger() -> threading.Thread:
    """Fetch NLTK's tagger into the data dir where the network allows (in the background), and log which one is in use."""
    from reversion_core.lexicon import ensure_tagger

    def fetch() -> None:
        log.info("caption words: %s part-of-speech tagger", ensure_tagger(DATA))

    thread = threading.Thread(target=fetch, daemon=True, name="reversion-tagger")
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    temp_dir = make_temp_dir(os.environ.get("REVERSION_TEMP_DIR"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp_dir / "gradio"))  # uploads and outputs stay in the app's temp dir
    try:
        chosen_threads()  # a bad REVERSION_THREADS is refused before anything starts
        studio = make_studio(args, temp_dir)
        threads = use_threads(APP_OPERATIONS, studio.runtime.device)  # before the model loads
    except ReVersionError as exc:
        raise SystemExit(str(exc)) from None
    log.info("running %s%s", studio.runtime.description, " in public mode" if studio.public else "")
    log.info("%s", threads.reason)
    fetch_tagger()
    demo = build_demo(studio)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(studio.relations_dir), str(APP_DIR / "assets"), str(temp_dir)]  # never the visitors' workspaces
    max_file_size = args.max_file_size
    if studio.workspaces is not None:  # a stranger's upload is refused by the server before it is stored
        max_file_size = min(file_size_bytes(args.max_file_size), int(studio.workspaces.limits.upload_mb * 2**20))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=allowed,
                max_file_size=max_file_size, css=CSS, footer_links=["api"], show_error=False,
                prevent_thread_lock=True)
    studio.warm_up()  # load the base model in the background once the page is served
    demo.block_thread()


if __name__ == "__main__":
    main()
