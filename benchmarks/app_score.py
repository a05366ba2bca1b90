"""How long the app's "Score this relation" takes: ``python app.py`` on the embedded model, then the report card of
a shipped relation through the app's own endpoint (``/score_relation``, default pairs), as a person's click runs it.

The relation is copied into a temporary relations folder first, so the card is saved there, never into the
repository. Each round is one click on the running app (the first after the base model has loaded, then again);
the load average is printed before and after, since the machine may be shared.

    python benchmarks/app_score.py [--relation above] [--rounds 2] [--pairs 16] [--json results/app_score.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from app_startup import REPO, launch, stop, wait_served

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client

    from reversion_core.report_card import DEFAULT_PAIRS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--relation", default="above", help="a relation under --relations-dir (default: above)")
    p.add_argument("--relations-dir", default=str(REPO / "relations"))
    p.add_argument("--base-model", help="default: the app's default (the embedded model)")
    p.add_argument("--pairs", type=int, default=DEFAULT_PAIRS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    threads = os.environ.get("REVERSION_THREADS") or os.environ.get("OMP_NUM_THREADS") or "the app's rule (cpu_threads)"
    result: dict = {"threads": threads, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        relations = Path(tmp) / "relations"
        shutil.copytree(Path(args.relations_dir) / args.relation, relations / args.relation)
        process, url, _ = launch(args, relations, Path(tmp) / "app")
        try:
            wait_served(url, process)
            client = Client(url, verbose=False)
            client.predict(api_name="/list_relations")  # answers once the base model has loaded
            result["load_before"] = os.getloadavg()
            for k in range(args.rounds):
                t = time.perf_counter()
                text, table, _ = client.predict(args.relation, args.pairs, api_name="/score_relation")
                seconds = time.perf_counter() - t
                result["rounds"].append({"click_to_card_s": round(seconds, 1), "card": text, "table": table["data"],
                                         "load": os.getloadavg()})
                print(f"round {k + 1}: {seconds:.1f} s from click to card ({args.pairs} pairs; the card's own timer: "
                      f"{text.split(' denoising steps, ')[1].split(',')[0]}), load average "
                      f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
                for row in table["data"]:
                    print("   " + " | ".join(str(v) for v in row))
        finally:
            stop(process)
    print(f"threads: {result['threads']}; load average before: {' '.join(f'{v:.2f}' for v in result['load_before'])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
