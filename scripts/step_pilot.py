"""The evaluation's step count, chosen by a pilot on validation pairs (never the inference templates).

    python scripts/step_pilot.py --out docs/evaluation/v2/pilot [--relations hugs painted_on] [--steps 1000]

Learns <R> with ReVersion and with Textual Inversion (no steering, uniform timesteps) for each relation, seed 0, for
--steps steps, validating every 100 steps on the set's validation pairs (assets/benchmark/<relation>/validation.json,
disjoint from the exemplars and from templates.json) and never stopping early. Each run is one
``python -m reversion_core train`` command, printed before it runs; a run whose card already holds a full curve is
reused. Then it draws the curves (curves.png), writes them as a table (curves.md) and applies the rule fixed before
the pilot ran:

    a curve has flattened at the first validated step s after which no later validation beats the best score
    reached by s by more than FLAT_MARGIN (one standard error of a rate near 0.5 on 32 pairs is 0.088);
    the step count is the largest flattening step over every curve (relation accuracy), so that every method
    has flattened.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reversion_core.cli import main as cli  # noqa: E402

FLAT_MARGIN = 0.09
METHODS = {"reversion": [], "textual_inversion": ["--lambda-steer", "0", "--uniform-timesteps"]}


def flat_step(curve: list[dict], key: str = "relation") -> int:
    """The first validated step after which no later score beats the best so far by more than FLAT_MARGIN."""
    for i, point in enumerate(curve):
        so_far = max(p[key] for p in curve[: i + 1])
        later = [p[key] for p in curve[i + 1:]]
        if not later or max(later) - so_far <= FLAT_MARGIN:
            return int(point["step"])
    return int(curve[-1]["step"])


def train(relation: str, method: str, args: argparse.Namespace) -> Path:
    folder = Path(args.out) / "relations"
    name = f"{relation}-{method}"
    card = folder / name / "card.json"
    if card.is_file():
        curve = (json.loads(card.read_text()).get("validation") or {}).get("curve") or []
        if curve and curve[-1]["step"] >= args.steps:
            print(f"{name}: reusing its finished run", flush=True)
            return folder / name
    argv = ["train", str(ROOT / "assets" / "benchmark" / relation), "--name", name, "--relations-dir", str(folder),
            "--overwrite", "--checkpoint-dir", str(Path(args.work) / name), "--steps", str(args.steps), "--seed", "0",
            "--validate-every", "100", "--validation-pairs", "32", "--keep", "last", "--stop-when-flat", "0",
            "--preview-every", str(args.steps), *METHODS[method]]
    print("python -m reversion_core " + shlex.join(argv), flush=True)
    start = time.time()
    if cli(argv):
        raise SystemExit(f"{name} failed")
    print(f"{name}: {time.time() - start:.0f} s", flush=True)
    return folder / name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/evaluation/v2/pilot")
    p.add_argument("--work", default="runs/step-pilot", help="checkpoints (not kept)")
    p.add_argument("--relations", nargs="+", default=["hugs", "painted_on"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--only-train", action="store_true", help="train (this process's share) and stop; no plot")
    args = p.parse_args(argv)
    folders = [train(r, m, args) for r in args.relations for m in args.methods]
    if args.only_train:
        return 0
    out = Path(args.out)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_validation_curves.py"), *map(str, folders),
                    "--out", str(out / "curves.png"), "--md", str(out / "curves.md"),
                    "--title", "Validation curves, seed 0 (32 validation pairs, 10 DDIM steps)"], check=True)
    rows = ["| run | flattened at (relation) | best relation | at step | last |", "|---|---|---|---|---|"]
    chosen = 0
    for folder in folders:
        curve = json.loads((folder / "card.json").read_text())["validation"]["curve"]
        best = max(curve, key=lambda pt: pt["relation"])
        flat = flat_step(curve)
        chosen = max(chosen, flat)
        rows.append(f"| {folder.name} | {flat} | {best['relation']:.2f} | {best['step']} | {curve[-1]['relation']:.2f} |")
    rows.append(f"\nStep count by the rule (margin {FLAT_MARGIN}): **{chosen}**")
    (out / "flattening.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
