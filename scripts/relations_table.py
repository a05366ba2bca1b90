"""The table of shipped relations, read from their cards: kept step, validation and report card beside the phrase.

    python scripts/relations_table.py [--relations-dir relations]

One row per relation folder with a ``card.json`` that holds a report card; prints markdown (the README's table).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.world.language import HELD_OUT_RELATIONS  # noqa: E402


def row(card: dict) -> str:
    validation, report = card.get("validation") or {}, card["report_card"]
    curve = validation.get("curve") or []
    kept = validation.get("kept_step") or card.get("steps")
    at_kept = next((f"{pt['relation']:.2f}" for pt in curve if pt["step"] == kept), "")
    ran = curve[-1]["step"] if curve else card.get("steps")
    mine, phrase = report["metrics"], report["reference"]
    name = card["name"] + (" (held out)" if card["name"] in HELD_OUT_RELATIONS else "")
    return (f"| {name} | {card['settings'].get('seed', 0)} | {kept} of {ran} | {at_kept} | "
            f"{mine['relation_accuracy']:.2f} / {mine['entity_accuracy']:.2f} | "
            f"{phrase['relation_accuracy']:.2f} / {phrase['entity_accuracy']:.2f} | {mine['appearance_leakage']:.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relations-dir", default="relations", type=Path)
    args = p.parse_args(argv)
    cards = [json.loads(f.read_text()) for f in sorted(args.relations_dir.glob("*/card.json"))]
    cards = [c for c in cards if c.get("report_card")]
    cards.sort(key=lambda c: (c["name"] in HELD_OUT_RELATIONS, c["name"]))
    print("| relation | seed | step kept (of steps run) | validation at that step (relation) | `<R>`: relation / both entities | "
          "own phrase: relation / both entities | `<R>`: leakage |")
    print("|---|---|---|---|---|---|---|")
    for card in cards:
        print(row(card))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
