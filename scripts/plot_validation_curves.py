"""Plot the validation curves that trainings recorded in their cards, side by side, and print them as a table.

    python scripts/plot_validation_curves.py RELATION_DIR [RELATION_DIR ...] --out curves.png [--md table.md]

Each RELATION_DIR is a relation folder whose ``card.json`` holds a ``validation`` record (a training run with
``--validate-every``); its label is the folder's name. The relation score (solid) and the both-entities score
(dashed) are drawn against steps; the table has one row per step and two columns per relation.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(folder: Path) -> list[dict]:
    record = json.loads((folder / "card.json").read_text()).get("validation") or {}
    if not record.get("curve"):
        raise SystemExit(f"{folder} has no validation curve in its card.json")
    return record["curve"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("relations", nargs="+", type=Path)
    p.add_argument("--out", required=True)
    p.add_argument("--md", default=None, help="also write the table here")
    p.add_argument("--title", default="Validation curves")
    args = p.parse_args(argv)
    curves = {folder.name: curve(folder) for folder in args.relations}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, (name, points) in enumerate(curves.items()):
        steps = [pt["step"] for pt in points]
        ax.plot(steps, [pt["relation"] for pt in points], "-o", color=f"C{k}", label=f"{name}: relation right")
        if all(pt.get("entities") is not None for pt in points):
            ax.plot(steps, [pt["entities"] for pt in points], "--", color=f"C{k}", alpha=0.6, label=f"{name}: both entities")
    ax.set(xlabel="training step", ylabel="share of validation images", ylim=(-0.02, 1.02), title=args.title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    steps = sorted({pt["step"] for points in curves.values() for pt in points})
    header = "| step | " + " | ".join(f"{n} relation | {n} entities" for n in curves) + " |"
    rows = [header, "|" + "---|" * (1 + 2 * len(curves))]
    for s in steps:
        cells = []
        for points in curves.values():
            pt = next((q for q in points if q["step"] == s), None)
            cells += [f"{pt['relation']:.2f}" if pt else "", f"{pt['entities']:.2f}" if pt and pt.get("entities") is not None else ""]
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
