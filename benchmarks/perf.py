"""Performance of ReVersion Studio in one command: training variants vs the reference loop, a 500-step inversion
end to end, generation throughput, and each target of issue 7 marked met or missed.

    python benchmarks/perf.py                                # CPU: embedded model (assets/base-model)
    python benchmarks/perf.py --model sd15 --device cuda     # GPU: SD 1.5 architecture, random weights, 512 px
    python benchmarks/perf.py --model tiny --smoke           # seconds: structure only, numbers mean nothing

Writes ``<out>/<device>-<model>.md`` (the tables) and ``.json`` (every figure), default ``benchmarks/results``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bench_generation
import bench_training
from common import REPO, duration, quiet_libraries

GPU_SPEEDUP_TARGET = 3.0  # engine vs reference, per optimisation step at equal batch
CPU_SPEEDUP_TARGET = 1.5  # the same with the embedded model on CPU
GPU_MEMORY_TARGET_GB = 10.0  # training peak at default settings: fits a 16 GB T4
END_TO_END_TARGET_S = 120.0  # 500-step inversion with the embedded model on this machine


def targets(training: dict | None) -> list[str]:
    """One line per target: met or missed, by how much; or why it does not apply to this run."""
    if training is None:
        return []
    cuda, model, summary = training["device"].startswith("cuda"), training["model"], training["summary"]
    engine, reference = summary.get("engine", {}), summary.get("reference", {})
    lines = []
    ratio = reference["s_per_step"] / engine["s_per_step"] if "s_per_step" in engine and "s_per_step" in reference else None
    if cuda and model == "sd15":
        lines.append(_against("Per-step speed, engine vs reference on GPU", ratio, GPU_SPEEDUP_TARGET, "x", higher=True))
        peak = engine.get("process_peak_mib")
        lines.append(_against(
            "Training peak GPU memory at default settings (CUDA max allocated, whole process)",
            peak / 1024 if peak else None, GPU_MEMORY_TARGET_GB, " GiB", higher=False,
        ))
    elif not cuda and model == "embedded":
        lines.append(_against("Per-step speed, engine vs reference on CPU with the embedded model", ratio, CPU_SPEEDUP_TARGET, "x", higher=True))
    else:
        lines.append(f"- Speed and memory targets apply to sd15 on CUDA and to the embedded model on CPU; this run ({model}, {training['device']}) only checks structure.")
    e2e = training.get("end_to_end")
    if e2e and not cuda and model == "embedded" and e2e.get("steps") == 500:
        wall = e2e.get("process_wall_s") or e2e.get("in_process_s")
        lines.append(_against("500-step inversion with the embedded model, whole process", wall, END_TO_END_TARGET_S, " s", higher=False))
    return lines


def _against(what: str, value: float | None, target: float, unit: str, higher: bool) -> str:
    if value is None:
        return f"- {what}: not measured (target {'>=' if higher else '<='} {target:g}{unit})."
    met = value >= target if higher else value <= target
    sign = ">=" if higher else "<="
    if met:
        return f"- {what}: **met**, {value:.2f}{unit} (target {sign} {target:g}{unit})."
    short = (target / value if higher else value / target) - 1
    return f"- {what}: **missed**, {value:.2f}{unit} against {sign} {target:g}{unit} ({short:.0%} short)."


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_training.add_arguments(p)
    bench_generation.add_arguments(p)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--smoke", action="store_true", help="1 warm-up + 2 steps, 3-step end-to-end run, 2 DDIM steps, in process")
    p.add_argument(
        "--budget-s", type=float, help="start no measurement after this many seconds (training gets the first 60%%); "
        "what was measured is still written",
    )
    p.add_argument("--name", help="file name of the results, without suffix (default: <device>-<model>)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the .md and .json results")
    args = p.parse_args(argv)
    if args.smoke:
        for name, value in (("warmup", 1), ("steps", 2), ("rounds", 1), ("e2e_steps", 3), ("gen_steps", 2), ("repeats", 1), ("warmup_steps", 1)):
            if getattr(args, name) in (None, p.get_default(name)):
                setattr(args, name, value)
        args.in_process = True
        args.batches = args.batches if args.batches != [1, 4, 8] else [1, 2]
    args = bench_training.resolve_defaults(args)
    args = bench_generation.resolve_defaults(args, torch.cuda.is_available())
    quiet_libraries(offline=True)

    started = time.perf_counter()
    if args.budget_s:
        share = 1.0 if args.skip_generation else 0.0 if args.skip_training else 0.6
        args.training_deadline = started + share * args.budget_s
        args.generation_deadline = started + args.budget_s
    results: dict = {"command": " ".join(["python", "benchmarks/perf.py", *(argv if argv is not None else sys.argv[1:])])}
    sections = []
    if not args.skip_training:
        results["training"] = bench_training.run_benchmark(args)
        sections.append(bench_training.report(results["training"]))
    if not args.skip_generation:
        results["generation"] = bench_generation.run_benchmark(args)
        sections.append(bench_generation.report(results["generation"]))
    results["targets"] = targets(results.get("training"))
    results["wall_s"] = time.perf_counter() - started
    if results["targets"]:
        sections.append("### Targets\n\n" + "\n".join(results["targets"]))
    text = f"Command: `{results['command']}` ({duration(results['wall_s'])} in all)\n\n" + "\n\n".join(sections) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"{'cuda' if args.device.startswith('cuda') else 'cpu'}-{args.model}{'-smoke' if args.smoke else ''}"
    (args.out / f"{stem}.md").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    print(f"Wrote {args.out / stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
