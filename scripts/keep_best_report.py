"""Does validation during training help? Reads an evaluation folder that holds ``reversion`` (the last step's <R>),
``reversion@best`` and ``reversion@early`` from one set of trainings, and writes the tables of issue 25's question:

    python scripts/keep_best_report.py docs/evaluation/v2/keep-best [--out docs/evaluation/v2/keep-best/keep_best.md]

- template relation accuracy of the last, the best and the early-stopped <R>, per relation (mean ± sd over seeds);
- the paired differences (best - last, early - last), per seed averaged over relations, then mean ± sd over seeds,
  for the held-out relations, the named ones and all of them; and over every training, how many went up or down;
- rank correlations (Spearman, ties averaged) between the validation score at the kept step and the template
  accuracy of that <R>, and between the validation's gain (best step over last step) and the templates' gain;
- early stop: where it would have stopped, the steps and seconds it saves, and what it costs in accuracy.

The templates were never used to choose anything: the best and early steps come from the validation pairs alone.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.evaluation.aggregate import cell  # noqa: E402
from reversion_core.world.language import HELD_OUT_RELATIONS  # noqa: E402

KINDS = {"last": "reversion", "best": "reversion@best", "early": "reversion@early"}


def ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and values[order[j + 1]] == values[order[k]]:
            j += 1
        for i in order[k : j + 1]:
            out[i] = (k + j) / 2 + 1
        k = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when either side is constant or too short."""
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def spread(values: list[float], sign: str = "") -> str:
    """``"0.436 ± 0.057"``: the evaluation's cell (mean and sample sd); ``sign="+"`` for a difference."""
    c = cell(values)
    return f"{c.mean:{sign}.3f} ± {c.std or 0.0:.3f}"


def load(folder: Path) -> list[dict]:
    """One row per training: relation, seed, template accuracy of each kept <R>, its step and validation score."""
    accuracy = {}
    with open(folder / "per_seed.csv", newline="") as f:
        for row in csv.DictReader(f):
            accuracy[(row["method"], row["relation"], int(row["seed"]))] = float(row["relation_accuracy"])
    rows = []
    for sidecar in sorted((folder / "training" / "reversion").glob("*.json")):
        record = json.loads(sidecar.read_text())
        summary, settings = record["summary"], record.get("made_from", {}).get("settings", {})
        relation, seed = summary["job"]["relation"], int(summary["job"]["seed"])
        curve = summary["validation"]["curve"]
        score = {int(p["step"]): p["relation"] for p in curve}
        row = {"relation": relation, "seed": seed, "seconds": summary["elapsed_s"], "last_step": max(score),
               "validating": sum(p.get("seconds") or 0.0 for p in curve), "points": len(curve), "pairs": settings.get("validation_pairs")}
        for kind, method in KINDS.items():
            card = json.loads((folder / "relations" / method / sidecar.stem / "card.json").read_text())["validation"]
            step = int(card["kept_step"])
            row[kind] = accuracy[(method, relation, seed)]
            row[f"{kind}_step"], row[f"{kind}_val"] = step, score.get(step)
            if kind == "early":
                row["stopped_at"] = int(card["stopped_at"])
        rows.append(row)
    return rows


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    held = [r for r in rows if r["relation"] in HELD_OUT_RELATIONS]
    named = [r for r in rows if r["relation"] not in HELD_OUT_RELATIONS]
    return {k: v for k, v in (("held-out relations", held), ("named relations", named), ("all relations", rows)) if v}


def per_seed_difference(rows: list[dict], a: str, b: str) -> list[float]:
    """For each seed, the mean over relations of ``a - b``."""
    seeds = sorted({r["seed"] for r in rows})
    return [statistics.fmean(r[a] - r[b] for r in rows if r["seed"] == s) for s in seeds]


def report(folder: Path) -> str:
    rows = load(folder)
    relations = list(dict.fromkeys(r["relation"] for r in sorted(rows, key=lambda r: (r["relation"] in HELD_OUT_RELATIONS, r["relation"]))))
    seeds = sorted({r["seed"] for r in rows})
    total = rows[0]["last_step"]
    out = [f"# Keeping the best validation step, and stopping early: {len(rows)} trainings "
           f"({len(relations)} relations x {len(seeds)} seeds, {total} steps)", ""]
    out += ["Template relation accuracy (the evaluation's inference templates, never used to choose) of the <R> each rule "
            "keeps; mean ± sd over seeds; steps kept per seed.", ""]
    out += ["| relation | last step | best validation step | early stop (3 flat validations) | best step kept | early: stopped at / kept |",
            "|---|---|---|---|---|---|"]
    for name in relations:
        mine = sorted((r for r in rows if r["relation"] == name), key=lambda r: r["seed"])
        label = name + (" (held out)" if name in HELD_OUT_RELATIONS else "")
        out.append(f"| {label} | {spread([r['last'] for r in mine])} | {spread([r['best'] for r in mine])} | "
                   f"{spread([r['early'] for r in mine])} | {' / '.join(str(r['best_step']) for r in mine)} | "
                   f"{' / '.join('%d/%d' % (r['stopped_at'], r['early_step']) for r in mine)} |")
    out += ["", "## Paired differences", "",
            "Per seed, the mean over relations of the difference; then mean ± sd over the seeds. `up / same / down`: "
            "trainings whose template accuracy rose, stayed or fell.", "",
            "| relations | best - last | up / same / down | early - last | up / same / down | early - best |",
            "|---|---|---|---|---|---|"]
    for label, part in groups(rows).items():
        counts = {}
        for a in ("best", "early"):
            d = [r[a] - r["last"] for r in part]
            counts[a] = f"{sum(x > 0 for x in d)} / {sum(x == 0 for x in d)} / {sum(x < 0 for x in d)}"
        out.append(f"| {label} | {spread(per_seed_difference(part, 'best', 'last'), '+')} | {counts['best']} | "
                   f"{spread(per_seed_difference(part, 'early', 'last'), '+')} | {counts['early']} | "
                   f"{spread(per_seed_difference(part, 'early', 'best'), '+')} |")
    out += ["", "## Does the validation score predict the template accuracy?", "",
            "Spearman's rank correlation over trainings (n); ties averaged.", "",
            "| relations | n | validation at the kept step vs template accuracy (best) | the same, last step | "
            "validation gain (best - last step) vs template gain |", "|---|---|---|---|---|"]
    for label, part in groups(rows).items():
        kept = spearman([r["best_val"] for r in part], [r["best"] for r in part])
        last = spearman([r["last_val"] for r in part], [r["last"] for r in part])
        gain = spearman([r["best_val"] - r["last_val"] for r in part], [r["best"] - r["last"] for r in part])
        out.append(f"| {label} | {len(part)} | " + " | ".join("-" if v is None else f"{v:+.2f}" for v in (kept, last, gain)) + " |")
    out += ["", "## Early stop", ""]
    out += ["| relations | stopped at (mean step) | steps saved | training time saved | accuracy, early - last | early - best |",
            "|---|---|---|---|---|---|"]
    for label, part in groups(rows).items():
        saved = [r["last_step"] - r["stopped_at"] for r in part]
        seconds = [r["seconds"] * s / r["last_step"] for r, s in zip(part, saved)]
        share = sum(saved) / sum(r["last_step"] for r in part)
        out.append(f"| {label} | {statistics.fmean(r['stopped_at'] for r in part):.0f} | {statistics.fmean(saved):.0f} of {total} "
                   f"({share:.0%}) | {sum(seconds) / 60:.1f} of {sum(r['seconds'] for r in part) / 60:.1f} min | "
                   f"{spread(per_seed_difference(part, 'early', 'last'), '+')} | {spread(per_seed_difference(part, 'early', 'best'), '+')} |")
    validating, seconds = sum(r["validating"] for r in rows), sum(r["seconds"] for r in rows)
    points = "/".join(str(n) for n in sorted({r["points"] for r in rows}))
    pairs = "/".join(str(n) for n in sorted({r["pairs"] for r in rows if r["pairs"]})) or "?"
    out += ["", f"Validation ({points} points of {pairs} pairs per training) took {validating / 60:.1f} of the {seconds / 60:.1f} "
                f"training minutes, {validating / (seconds - validating):.1%} of the rest of the loop (its points' own timers).",
            "", f"Training time saved: each training's measured seconds times the share of its steps it would not have run "
                f"(validation included, spread evenly). Never stopped early: "
                f"{sum(r['stopped_at'] == r['last_step'] for r in rows)} of {len(rows)} trainings."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="an evaluation folder with reversion, reversion@best and reversion@early")
    p.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = p.parse_args(argv)
    try:
        text = report(args.folder)
    except (OSError, KeyError, ValueError) as exc:
        print(f"{args.folder} is not a finished evaluation with reversion, reversion@best and reversion@early ({exc}).", file=sys.stderr)
        return 1
    print(text, end="")
    if args.out:
        fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
