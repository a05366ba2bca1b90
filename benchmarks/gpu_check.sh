#!/usr/bin/env bash
# The product's GPU path checked in one command (issue 26): on one CUDA GPU with a CUDA build of PyTorch and no
# network, in at most 8 minutes; results in OUT/gpu-check.json and OUT/gpu-check.md (see benchmarks/gpu_check.py).
#
#     bash benchmarks/gpu_check.sh OUT                # the GPU check (--budget-s S: start no part after S seconds)
#     bash benchmarks/gpu_check.sh --dry-run OUT      # on the CPU: the parts listed and run at a tiny size
#
# A bare GPU image lacks diffusers, gradio, spaces and their dependencies: `python benchmarks/gpu_carry.py` packs
# them (pruned, compressed) into .gpu-carry/site.tar.xz on a machine with PyPI; carry `.gpu-carry` and this script
# unpacks it into /tmp and lets Python find it after its own packages. The exit status is 0 when every part passed.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done

# the Python to use: $PYTHON, else .venv's where it fits (any for a dry run, one that sees a GPU otherwise), else python3
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && { [ $dry = 1 ] || .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; }; then
  PY=.venv/bin/python
fi
if [ -f .gpu-carry/site.tar.xz ] && ! "$PY" -c "import diffusers, gradio, gradio_client, spaces" 2>/dev/null; then
  site=/tmp/reversion-gpu-site
  rm -rf "$site" && mkdir -p "$site" && tar -xJf .gpu-carry/site.tar.xz -C "$site" || { echo "gpu check: .gpu-carry/site.tar.xz could not be unpacked." >&2; exit 2; }
  purelib=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  # a .pth puts the carried packages after the image's own (they only fill gaps), in every child process too
  if ! echo "$site" > "$purelib/reversion-gpu-carry.pth" 2>/dev/null; then
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$site"
  fi
  echo "gpu check: carried packages unpacked into $site ($(du -sh "$site" | cut -f1))" >&2
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$PY" benchmarks/gpu_check.py "$@"
