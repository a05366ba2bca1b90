"""Plot the base model's curves against UNet steps: its loss, its held-out accuracy and (where its training log
records it) the preposition prior of its text encoder.

    python scripts/plot_curves.py --log assets/base-model --out assets/base-model/curves.png

``--log`` is a folder with ``train_log.csv`` and ``accuracy.csv`` (``scripts/train_base_model.py`` writes both) and,
optionally, ``train.log``, whose ``prior:`` lines (at each run's start and after each save) give the third panel.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEPARATION_BAR, NEIGHBOUR_BAR = 0.3, 0.8  # scripts/measure_prior.py's bars


def read(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def prior_points(log: Path) -> list[tuple[int, float, float]]:
    """(step, separation, 5-NN share) from a training log: a ``prior:`` line follows a run's arguments (its step
    offset) or a save (its step)."""
    points, step = [], None
    for line in log.read_text().splitlines():
        if (m := re.search(r"'step_offset': (\d+)", line)) or (m := re.search(r"saved \S+ at step (\d+)", line)):
            step = int(m[1])
        elif (m := re.search(r"prior: separation ([\d.]+) .* 5-NN prepositions ([\d.]+)", line)) and step is not None:
            points.append((step, float(m[1]), float(m[2])))
    return sorted(set(points))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", default="assets/base-model")
    p.add_argument("--out", default="assets/base-model/curves.png")
    args = p.parse_args()
    folder = Path(args.log)
    loss, acc = read(folder / "train_log.csv"), read(folder / "accuracy.csv")
    prior = prior_points(folder / "train.log") if (folder / "train.log").exists() else []
    fig, axes = plt.subplots(1, 3 if prior else 2, figsize=(16 if prior else 11, 4))
    a1, a2 = axes[0], axes[1]
    a1.plot([int(r["step"]) for r in loss], [float(r["loss"]) for r in loss])
    a1.set(xlabel="UNet step", ylabel="denoising loss (EMA of batch loss)", title="Base model: loss", yscale="log")
    steps = [int(r["step"]) for r in acc]
    rel_key = "relation_accuracy_named" if "relation_accuracy_named" in acc[0] else "relation_accuracy"
    ent_key = "entity_accuracy_named" if "entity_accuracy_named" in acc[0] else "entity_accuracy"
    a2.plot(steps, [float(r[rel_key]) for r in acc], "k-", lw=2.5, label="named relations (mean)")
    a2.plot(steps, [float(r[ent_key]) for r in acc], "k--", lw=2, label="both entities")
    for name in [k for k in acc[0] if k not in ("step", rel_key, ent_key)]:
        a2.plot(steps, [float(r[name]) for r in acc], lw=1, alpha=0.6, label=name)
    a2.set(xlabel="UNet step", ylabel="accuracy (world scorer, held-out prompts)", title="Base model: accuracy", ylim=(0, 1.02))
    a2.legend(fontsize=6, ncol=2)
    if prior:
        a3 = axes[2]
        a3.plot([s for s, _, _ in prior], [v for _, v, _ in prior], "o-", label="separation")
        a3.plot([s for s, _, _ in prior], [v for _, _, v in prior], "s-", label="5-NN share of prepositions")
        a3.axhline(SEPARATION_BAR, color="C0", ls=":", lw=1, label=f"separation bar {SEPARATION_BAR}")
        a3.axhline(NEIGHBOUR_BAR, color="C1", ls=":", lw=1, label=f"5-NN bar {NEIGHBOUR_BAR}")
        a3.set(xlabel="UNet step", ylabel="input embedding table", title="Text encoder: preposition prior", ylim=(0, 1.02))
        a3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
