"""What validation during training costs: the same inversion with validation off and at its defaults, side by side.

    python benchmarks/bench_validation.py                      # CPU, embedded model, 500 steps, 1 round
    python benchmarks/bench_validation.py --rounds 2 --validate-every 50 --validation-pairs 8 --validation-steps 15

Each variant is one fresh process (model load, exemplar encoding, the steps, the validations, saving the relation),
rounds interleave the variants so that drifting load on a shared machine hits them alike. Two figures:
- the overhead between processes: the median training loop with validation against the median without;
- the share within one run: the seconds spent validating (each ValidationEvent's own timer) against the rest of the
  same loop, which drifting load on a shared machine hits alike.
Writes ``<out>/validation-<device>-<model>.md`` and ``.json`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, child_main, fmt, load_average, machine, machine_line, markdown_table, med, quiet_libraries, run_child
from models import MODELS, describe

SCRIPT = Path(__file__).resolve()
DEFAULT_EXEMPLARS = REPO / "assets" / "benchmark" / "on_top_of"
BUDGET = 0.15  # issue 25: validation at its defaults costs at most 15% of the training time on the embedded model


# ----------------------------------------------------------------------------------------------- in the child
def measure(spec: dict) -> dict:
    """One inversion of ``steps`` steps with ``spec["settings"]``: the loop's seconds and the validations' share."""
    import torch

    from models import build_pipeline
    from reversion_core.inversion import FailedEvent, Inversion, ValidationEvent
    from reversion_core.settings import InversionSettings

    device = spec["device"]
    start = time.perf_counter()
    pipe = build_pipeline(spec["model"], device)
    settings = InversionSettings(max_train_steps=spec["steps"], **spec["settings"])
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        run = Inversion(spec["exemplars"], "bench", settings, base_model=pipe, relations_dir=Path(tmp) / "relations",
                        checkpoint_dir=Path(tmp) / "runs", device=device)
        ready = time.perf_counter()
        validation_s, curve = 0.0, []
        for event in run:
            if isinstance(event, ValidationEvent):
                validation_s += event.seconds
                curve = event.curve
            elif isinstance(event, FailedEvent):
                return {"error": event.message}
        loop_s = time.perf_counter() - ready
    return {
        "setup_s": ready - start, "loop_s": loop_s, "validation_s": validation_s, "training_s": loop_s - validation_s,
        "validations": len(curve), "curve": curve, "note": run.validation.note, "settings": settings.to_dict(),
        "machine": machine(device), "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------- in the parent
def run_benchmark(args: argparse.Namespace) -> dict:
    from reversion_core.settings import InversionSettings

    defaults = InversionSettings()
    on = {"validate_every": args.validate_every or defaults.validate_every,
          "validation_pairs": args.validation_pairs or defaults.validation_pairs,
          "validation_steps": args.validation_steps or defaults.validation_steps}
    variants = {"off": {"validate_every": 0}, "on": on}
    in_process = measure if args.in_process else None
    load = load_average()
    rounds: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for name, changes in variants.items():
            spec = dict(model=args.model, device=args.device, steps=args.steps, exemplars=str(args.exemplars), settings=changes)
            result = run_child(SCRIPT, spec, args.timeout, in_process)
            rounds[name].append(result)
            status = result.get("error") or f"loop {result['loop_s']:.1f} s, validating {result['validation_s']:.1f} s ({result['validations']}x)"
            print(f"  round {r + 1}/{args.rounds} {name:<4} {status}", file=sys.stderr, flush=True)
    return {"model": args.model, "device": args.device, "steps": args.steps, "exemplars": str(args.exemplars), "on": on,
            "in_process": bool(args.in_process),
            "rounds": rounds, "load_average_at_start": load, "load_average_at_end": load_average(), "summary": summarise(rounds)}


def summarise(rounds: dict[str, list[dict]]) -> dict:
    good = {v: [r for r in results if "error" not in r] for v, results in rounds.items()}
    summary = {v: {"loop_s": med([r["loop_s"] for r in rs]), "validation_s": med([r["validation_s"] for r in rs]),
                   "training_s": med([r["training_s"] for r in rs]), "validations": rs[0]["validations"], "note": rs[0]["note"]}
               for v, rs in good.items() if rs}
    if "on" in summary and "off" in summary:
        summary["overhead_between_runs"] = summary["on"]["loop_s"] / summary["off"]["loop_s"] - 1
        summary["share_within_run"] = med([r["validation_s"] / r["training_s"] for r in good["on"]])
    return summary


def report(results: dict) -> str:
    summary, on = results["summary"], results["on"]
    info = next((r["machine"] for rs in results["rounds"].values() for r in rs if "machine" in r), None) or machine(results["device"])
    lines = [
        f"### Validation cost: {describe(results['model'])}, {results['device']}",
        "",
        machine_line(info, results["load_average_at_start"]) + f"; load average {results['load_average_at_end'][0]:.2f} (1 min) when it ended.",
        "",
        f"Exemplars `{Path(results['exemplars']).name}`, {results['steps']} optimisation steps at default settings (batch 2 x "
        f"accumulation 4), {'all in one process' if results['in_process'] else 'one fresh process per variant and round'}, "
        f"{len(next(iter(results['rounds'].values())))} interleaved round(s); "
        f"with validation: every {on['validate_every']} steps and at the last, {on['validation_pairs']} entity pairs, "
        f"{on['validation_steps']} DDIM steps, guidance 7.5. Loop: from the first step to the saved relation (model load and "
        "exemplar encoding excluded).",
        "",
    ]
    rows = []
    for name in ("off", "on"):
        if name not in summary:
            error = next((r["error"] for r in results["rounds"].get(name, []) if "error" in r), "not run")
            rows.append([name, f"failed: {error}", "", "", ""])
            continue
        row = summary[name]
        rows.append([name, row["validations"], fmt(row["loop_s"]), fmt(row["validation_s"]), fmt(row["training_s"])])
    lines.append(markdown_table(["validation", "validations", "loop (s, median)", "of which validating (s)", "the rest (s)"], rows))
    per_round = []
    for k, (off, on_) in enumerate(zip(results["rounds"].get("off", []), results["rounds"].get("on", []))):
        if "error" not in off and "error" not in on_:
            per_round.append([k + 1, fmt(off["loop_s"]), fmt(on_["loop_s"]), fmt(on_["validation_s"]),
                              f"{100 * (on_['loop_s'] / off['loop_s'] - 1):.1f}%", f"{100 * on_['validation_s'] / on_['training_s']:.1f}%",
                              " / ".join(f"{p['seconds']:.1f}" for p in on_["curve"])])
    if per_round:
        lines += ["", markdown_table(["round", "loop off (s)", "loop on (s)", "validating (s)", "on / off - 1", "validating / the rest",
                                      "each validation (s)"], per_round)]
    if "overhead_between_runs" in summary:
        between, within = summary["overhead_between_runs"], summary["share_within_run"]
        verdict = "within" if max(between, within) <= BUDGET else "over"
        lines += [
            "",
            f"Overhead of validation: **{100 * between:.1f}%** of the loop without it (between runs), **{100 * within:.1f}%** of the "
            f"training time of the same run (validation seconds / the rest); {verdict} the {100 * BUDGET:.0f}% budget.",
        ]
    if summary.get("on", {}).get("note"):
        lines += ["", f"Note: {summary['on']['note']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if "--child" in sys.argv:
        child_main(measure)
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="embedded")
    p.add_argument("--device", default="cpu")
    p.add_argument("--exemplars", type=Path, default=DEFAULT_EXEMPLARS)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--validate-every", type=int, help="default: InversionSettings' default")
    p.add_argument("--validation-pairs", type=int, help="default: InversionSettings' default")
    p.add_argument("--validation-steps", type=int, help="default: InversionSettings' default")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per process")
    p.add_argument("--in-process", action="store_true", help="measure in this process (fast, for checks)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", help="file name without extension (default: validation-<device>-<model>)")
    p.add_argument("--from-json", type=Path, help="only write the report again from an earlier run's .json")
    args = p.parse_args(argv)
    quiet_libraries(hide_warnings=True, offline=True)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        started = time.perf_counter()
        results = run_benchmark(args)
        results["wall_s"] = time.perf_counter() - started
        results["command"] = " ".join(["python benchmarks/bench_validation.py", *(argv if argv is not None else sys.argv[1:])])
    text = report(results) + f"\n\nCommand: `{results.get('command', 'python benchmarks/bench_validation.py')}`\n"
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"validation-{args.device}-{args.model}"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
