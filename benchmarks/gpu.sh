#!/usr/bin/env bash
# The GPU benchmark in one command, on any machine with a CUDA build of PyTorch:
#
#     bash benchmarks/gpu.sh                 # results in benchmarks/results/cuda-sd15.{md,json}
#     OUT=/somewhere bash benchmarks/gpu.sh  # results there instead
#
# SD 1.5-architecture UNet/VAE/text encoder with random weights (nothing is downloaded), 512x512, training
# variants vs the reference loop, then generation at batch 1/4/8. BUDGET (seconds, default 420) stops starting
# new measurements so the run ends inside a 10-minute slot; whatever was measured is written.
# Where diffusers is not installed (a bare CUDA image), a pure-Python copy in .gpu-site/ is used: make it with
#     mkdir -p .gpu-site && cp -r .venv/lib/python3.*/site-packages/diffusers .gpu-site/
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import diffusers" 2>/dev/null && [ -d .gpu-site ]; then
  export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
PY=python3
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/perf.py --model sd15 --device cuda --budget-s "${BUDGET:-420}" --out "${OUT:-benchmarks/results}" "$@"
