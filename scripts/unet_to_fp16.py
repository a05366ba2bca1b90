"""Store the UNet of a diffusers model folder in fp16, in place: half the bytes, and ``load_pipeline`` loads it back
in fp32 as before (the last step of building the embedded base model, see assets/base-model/TRAINING.md).

    python scripts/unet_to_fp16.py assets/base-model
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/...` from a clone, nothing installed


def unet_to_fp16(model_dir: str | Path) -> Path:
    """Rewrite ``model_dir/unet`` with fp16 weights (written beside it, then renamed into place)."""
    from diffusers import UNet2DConditionModel

    folder = Path(model_dir) / "unet"
    unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=".unet-fp16.", dir=folder.parent))
    try:
        unet.half().save_pretrained(tmp, safe_serialization=True)
        old = folder.with_name(".unet-old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a diffusers model folder (model_index.json, unet/, ...)")
    args = p.parse_args(argv)
    print(unet_to_fp16(args.model_dir))


if __name__ == "__main__":
    main()
