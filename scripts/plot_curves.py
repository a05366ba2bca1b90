"""Plot the base model's loss curve and its relation-accuracy-versus-steps curve.

    python scripts/plot_curves.py --log runs/base-model --out assets/base-model/curves.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--log", default="runs/base-model")
    p.add_argument("--out", default="assets/base-model/curves.png")
    args = p.parse_args()
    loss, acc = read(Path(args.log) / "train_log.csv"), read(Path(args.log) / "accuracy.csv")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot([int(r["step"]) for r in loss], [float(r["loss"]) for r in loss])
    a1.set(xlabel="UNet step", ylabel="denoising loss (EMA of batch loss)", title="Base model: loss", yscale="log")
    steps = [int(r["step"]) for r in acc]
    a2.plot(steps, [float(r["relation_accuracy"]) for r in acc], "k-", lw=2.5, label="relation (mean)")
    a2.plot(steps, [float(r["entity_accuracy"]) for r in acc], "k--", lw=2, label="both entities")
    for name in [k for k in acc[0] if k not in ("step", "relation_accuracy", "entity_accuracy")]:
        a2.plot(steps, [float(r[name]) for r in acc], lw=1, alpha=0.7, label=name)
    a2.set(xlabel="UNet step", ylabel="accuracy (world scorer, held-out prompts)", title="Base model: accuracy", ylim=(0, 1.02))
    a2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
