"""Pack the Python packages that a bare GPU image lacks, so that ``benchmarks/gpu_check.sh`` runs there offline.

    python benchmarks/gpu_carry.py             # writes .gpu-carry/site.tar.xz (PyPI is needed for 3 compiled wheels)
    python benchmarks/gpu_carry.py --check     # only: do the working tree and the bundle fit what a device call sends?
    python benchmarks/gpu_carry.py --tier engine   # diffusers alone (about 1 MiB), where the whole bundle does not fit
    python benchmarks/gpu_carry.py --local DIR # the same bundle from this venv alone (its own compiled files), unpacked
                                               # into DIR: for checking the pruned packages on this machine

The lent GPU machines run an image with torch, transformers, accelerate, huggingface_hub, pytest and the like, but
without diffusers, gradio, gradio_client, spaces and gradio's server stack (GPU_IMAGE below, as the device tool's
KINDS.md listed it on 2026-11-17). Which packages to carry is computed, not listed: the requirements of
requirements.txt and gradio_client, followed through this venv's installed metadata, stopping at every package the
image has. Pure-Python packages are copied from this venv (sources only, no __pycache__); compiled ones are
downloaded as CPython 3.12 manylinux wheels of the same version (the image's Python is 3.12). To fit the 64 MiB a
device call carries, gradio's browser bundle and diffusers' pipelines other than Stable Diffusion's are left out
(the check drives the app through its API; every model here is a StableDiffusionPipeline), and nltk (optional: without
it the app uses its closed-class word list, and its tagger data is not on that machine anyway).
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / ".gpu-carry" / "site.tar.xz"
TRAVEL_LIMIT = 64 * 2**20  # what one device call sends: the working tree plus the carried paths
GPU_PYTHON = "3.12"
ROOTS = ("gradio_client",)  # beside requirements.txt: the check drives the app through it
OPTIONAL = {"nltk"}
GPU_IMAGE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
PRUNED = (  # paths inside the site folder that the check never uses
    "gradio/templates/frontend/assets", "gradio/templates/frontend/static", "gradio/templates/node", "gradio/media_assets",
    "gradio/CHANGELOG.md", "diffusers/modular_pipelines",
)
KEPT_PIPELINES = {"stable_diffusion"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_distributions(tier: str = "all", image: set[str] = GPU_IMAGE) -> dict[str, str]:
    """{distribution: version installed here} for every package that ``image`` lacks, following requirements (for
    Python 3.12) from requirements.txt and ROOTS (tier "all": the app, the tests, gradio_client) or from diffusers
    alone (tier "engine": the engine's tests and perf.py, not the app or ZeroGPU)."""
    env = {**default_environment(), "python_version": GPU_PYTHON, "python_full_version": f"{GPU_PYTHON}.3", "extra": ""}
    roots = [Requirement(line.split("#")[0]).name for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.split("#")[0].strip()] + list(ROOTS) if tier == "all" else ["diffusers"]
    todo, found = roots, {}
    image = {norm(n) for n in image}
    while todo:
        name = norm(todo.pop())
        if name in found or name in image or name in OPTIONAL:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return dict(sorted(found.items()))


def compiled(name: str) -> bool:
    return any(str(f).endswith(".so") for f in metadata.distribution(name).files or [])


def copy_installed(name: str, site: Path) -> None:
    """The installed files of distribution ``name`` (sources and metadata; no scripts, no bytecode) into ``site``."""
    for f in metadata.distribution(name).files or []:
        if f.parts[0] == ".." or "__pycache__" in f.parts or f.suffix == ".pyc":
            continue
        source = Path(f.locate())
        if source.is_file():
            (site / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, site / f)


def download_wheel(name: str, version: str, site: Path) -> None:
    """The CPython 3.12 manylinux x86-64 wheel of ``name==version``, unpacked into ``site``."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
            GPU_PYTHON, "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", tmp, f"{name}=={version}",
        ], check=True)
        for wheel in Path(tmp).glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(site)


def prune(site: Path) -> None:
    for rel in PRUNED:
        target = site / rel
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    for stub in site.glob("gradio/**/*.pyi"):
        stub.unlink()
    for folder in (site / "diffusers" / "pipelines").glob("*/"):
        if folder.is_dir() and folder.name not in KEPT_PIPELINES and folder.name != "__pycache__":
            shutil.rmtree(folder)


def tree_bytes() -> int:
    """Bytes of what a device call sends besides the carried paths: the files git tracks and the untracked ones it
    does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((REPO / p).stat().st_size for p in listed if p and (REPO / p).is_file())


def travel_report(bundle: Path) -> tuple[bool, str]:
    tree, carried = tree_bytes(), bundle.stat().st_size if bundle.exists() else 0
    total = tree + carried
    fits = total <= TRAVEL_LIMIT
    return fits, (f"A device call would send {total / 2**20:.1f} MiB: the working tree {tree / 2**20:.1f} MiB and "
                  f"{bundle.relative_to(REPO) if bundle.is_relative_to(REPO) else bundle} {carried / 2**20:.1f} MiB, "
                  + ("within" if fits else f"{(total - TRAVEL_LIMIT) / 2**20:.1f} MiB over") + " the 64 MiB limit.")


def build(site: Path, local: bool, tier: str) -> dict[str, str]:
    wanted = missing_distributions(tier)
    for name, version in wanted.items():
        if compiled(name) and not local:
            download_wheel(name, version, site)
        else:
            copy_installed(name, site)
    prune(site)
    return wanted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report whether the tree and the bundle fit one device call")
    p.add_argument("--local", type=Path, metavar="DIR", help="build from this venv alone into DIR (not packed)")
    p.add_argument("--tier", choices=("all", "engine"), default="all",
                   help="all (default): every part can run; engine: diffusers alone (about 1 MiB), for a tree too "
                        "large for all: the fp16 test and perf.py run, the app and ZeroGPU parts fail for want of gradio")
    args = p.parse_args(argv)
    if args.check:
        fits, line = travel_report(BUNDLE)
        print(line)
        return 0 if fits else 1
    if args.local:
        args.local.mkdir(parents=True, exist_ok=True)
        wanted = build(args.local, local=True, tier=args.tier)
        print(f"{len(wanted)} distributions in {args.local}: {', '.join(f'{n} {v}' for n, v in wanted.items())}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wanted = build(Path(tmp), local=False, tier=args.tier)
        BUNDLE.parent.mkdir(exist_ok=True)
        partial = BUNDLE.with_suffix(".partial")
        with tarfile.open(partial, "w:xz", preset=9) as tar:
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(tmp)))
        partial.replace(BUNDLE)
    print(f"Packed {len(wanted)} distributions into {BUNDLE.relative_to(REPO)} ({BUNDLE.stat().st_size / 2**20:.1f} MiB): "
          + ", ".join(f"{n} {v}" for n, v in wanted.items()))
    fits, line = travel_report(BUNDLE)
    print(line)
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
