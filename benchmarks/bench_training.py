"""Training speed: the engine at its defaults against the official loop's per-step work, side by side.

    python benchmarks/bench_training.py                              # CPU, embedded model
    python benchmarks/bench_training.py --model sd15 --device cuda   # GPU, SD 1.5 architecture

Every variant is one fresh process (fair peak memory, no shared state), run for ``--warmup`` + ``--steps``
optimisation steps of the paper's shape (batch 2 x gradient accumulation 4 = 8 exemplar samples per step);
rounds interleave the variants so that drifting load on a shared machine hits them alike; the figure is the
median over rounds of each round's mean measured step. The paper's schedule (3000 steps) is projected from it.
Then one 500-step inversion is timed end to end in a fresh process (imports, model load, exemplar encoding,
the steps, saving the relation).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from common import (
    PeakMemory, REPO, child_main, choose_variants, duration, fmt, load_average, machine, machine_line, markdown_table,
    med, process_peak_mib, quiet_libraries, run_child, time_left,
)
from models import MODELS, SPEED_NOTE, describe

SCRIPT = Path(__file__).resolve()
PAPER_STEPS = 3000  # appendix A.1: 3000 optimisation steps of batch 2 x accumulation 4
DEFAULT_EXEMPLARS = REPO / "assets" / "benchmark" / "on_top_of"

# name -> (what it is, InversionSettings changes, benchmark-side switches)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "engine": ("engine defaults (fp32, SDPA, latents cached, <R> only; micro-batches fused on CPU)", {}, {}),
    "engine-unfused": ("engine, micro-batches one by one as the official loop", {"fuse_micro_batches": "off"}, {}),
    "engine-fused": ("engine, a step's micro-batches as one batch (the CPU default)", {"fuse_micro_batches": "on"}, {}),
    "reference": ("official loop: VAE encode every step, fp32, AdamW on the whole table + restore", {"reference": True}, {}),
    "engine-tf32": ("engine, TF32 matmuls allowed", {}, {"tf32": True}),
    "engine-bf16": ("engine, mixed precision bf16", {"mixed_precision": "bf16"}, {}),
    "engine-fp16": ("engine, mixed precision fp16", {"mixed_precision": "fp16"}, {}),
    "engine-gc": ("engine, gradient checkpointing", {"gradient_checkpointing": True}, {}),
    "engine-bf16-gc": ("engine, bf16 + gradient checkpointing", {"mixed_precision": "bf16", "gradient_checkpointing": True}, {}),
    "engine-xformers": ("engine, xformers attention", {"attention": "xformers"}, {}),
    "engine-b8x1": (
        "engine, the step's 8 samples as one micro-batch (batch 8 x accumulation 1)",
        {"train_batch_size": 8, "gradient_accumulation_steps": 1}, {},
    ),
    "engine-compile": ("engine, torch.compile on the UNet", {}, {"compile": True}),
    "engine-bf16-compile": ("engine, bf16 + torch.compile on the UNet", {"mixed_precision": "bf16"}, {"compile": True}),
}
DEFAULT_VARIANTS = {
    "cpu": ["engine", "reference", "engine-unfused", "engine-bf16", "engine-gc", "engine-compile"],
    "cuda": [
        "engine", "reference", "engine-tf32", "engine-bf16", "engine-fp16", "engine-bf16-gc", "engine-fused",
        "engine-xformers", "engine-bf16-compile",
    ],
}


def available(variant: str, device: str) -> str | None:
    """Why a variant cannot run here, or None."""
    _, settings, _ = VARIANTS[variant]
    cuda = device.startswith("cuda")
    if settings.get("mixed_precision") == "fp16" and not cuda:
        return "fp16 needs a GPU"
    if variant == "engine-tf32" and not cuda:
        return "TF32 is a GPU matmul mode"
    if settings.get("attention") == "xformers" and (not cuda or importlib.util.find_spec("xformers") is None):
        return "xformers is not installed" if cuda else "xformers needs a GPU"
    return None


# ----------------------------------------------------------------------------------------------- in the child
def measure(spec: dict) -> dict:
    """Run one variant for warmup + steps optimisation steps and report its step times and memory."""
    import torch

    from models import build_pipeline
    from reversion_core.inversion import FailedEvent, StepEvent
    from reversion_core.reference_loop import inversion_class
    from reversion_core.settings import InversionSettings

    device, warmup, steps = spec["device"], spec["warmup"], spec["steps"]
    if spec.get("tf32"):
        torch.backends.cuda.matmul.allow_tf32 = True
    memory = PeakMemory(device)
    start = time.perf_counter()
    pipe = build_pipeline(spec["model"], device)
    if spec.get("compile"):
        pipe.unet.compile()
    settings = InversionSettings(max_train_steps=warmup + steps, **spec["settings"])
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        run = inversion_class(settings)(  # "reference": the official script's loop
            spec["exemplars"], "bench", settings, base_model=pipe, relations_dir=Path(tmp) / "relations",
            checkpoint_dir=Path(tmp) / "runs", device=device,
        )
        setup_s = time.perf_counter() - start
        setup_peak = process_peak_mib(device)
        memory.reset()
        times, cpu_times, last, last_cpu = [], [], time.perf_counter(), time.process_time()
        for event in run:
            if isinstance(event, StepEvent):  # the loop calls .item() on the losses, so a GPU step is finished here
                now, now_cpu = time.perf_counter(), time.process_time()
                times.append(now - last)
                cpu_times.append(now_cpu - last_cpu)
                last, last_cpu = now, now_cpu
            elif isinstance(event, FailedEvent):
                return {"error": event.message}
        loop_peak = memory.peak_mib()
        process_peak = max(setup_peak, loop_peak, process_peak_mib(device))
        table_rows = run.text_encoder.get_input_embeddings().weight.shape[0]
    measured = times[warmup:]
    return {
        "cpu_s_per_step": sum(cpu_times[warmup:]) / len(measured),  # all threads' CPU time: shows contention on CPU
        "threads": torch.get_num_threads(),
        "setup_s": setup_s,
        "first_step_s": times[0],
        "step_times": measured,
        "s_per_step": sum(measured) / len(measured),
        "samples_per_step": settings.train_batch_size * settings.gradient_accumulation_steps,
        "loop_peak_mib": loop_peak,
        "process_peak_mib": process_peak,
        "peak_resettable": memory.resettable,
        "embedding_rows": table_rows,
        "resolution": run.resolution,
        "machine": machine(device),
    }


def measure_end_to_end(spec: dict) -> dict:
    """One complete inversion of ``steps`` steps at default settings: load, set up, train, save."""
    import torch

    from models import build_pipeline
    from reversion_core.inversion import FinishedEvent, Inversion, StepEvent
    from reversion_core.settings import InversionSettings

    device = spec["device"]
    start = time.perf_counter()
    pipe = build_pipeline(spec["model"], device)
    loaded = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        run = Inversion(
            spec["exemplars"], "bench", InversionSettings(max_train_steps=spec["steps"], resolution=spec.get("resolution")), base_model=pipe,
            relations_dir=Path(tmp) / "relations", checkpoint_dir=Path(tmp) / "runs", device=device,
        )
        ready = time.perf_counter()
        last_step = ready
        for event in run:
            if isinstance(event, StepEvent):
                last_step = time.perf_counter()
        end = time.perf_counter()
        if not isinstance(event, FinishedEvent):
            return {"error": f"the run ended with {type(event).__name__}"}
    return {
        "load_s": loaded - start, "setup_s": ready - loaded, "steps_s": last_step - ready, "save_s": end - last_step,
        "in_process_s": end - start, "steps": spec["steps"], "machine": machine(device), "threads": torch.get_num_threads(),
    }


def work_per_micro_batch(model: str, resolution: int | None, batch: int = 2) -> dict:
    """FLOPs of one micro-batch, counted on meta tensors (no memory, no time): what the engine and the reference
    both do (text encoder forward + backward to <R>, UNet forward + backward to its text input) and what only the
    reference adds (VAE-encoding the batch). Matmul, convolution and attention FLOPs; elementwise work is not counted.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import meta_components
    from reversion_core.base_model import set_attention

    text_encoder, vae, unet = meta_components(model)
    set_attention(type("Pipe", (), {"unet": unet, "vae": vae})(), "sdpa")
    for m in (text_encoder, vae, unet):
        m.requires_grad_(False)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = resolution or unet.config.sample_size * scale
    tokens = text_encoder.config.max_position_embeddings
    flops = {}
    with torch.device("meta"):
        text_encoder.get_input_embeddings().weight.requires_grad_(True)  # the gradient flows back to the <R> row
        ids = torch.zeros(batch, tokens, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            hidden = text_encoder(ids)[0]
            hidden.sum().backward(retain_graph=False)
        flops["text_encoder_fwd_bwd"] = counter.get_total_flops()
        hidden = torch.randn(batch, tokens, text_encoder.config.hidden_size, requires_grad=True)
        latents = torch.randn(batch, unet.config.in_channels, resolution // scale, resolution // scale)
        with FlopCounterMode(display=False) as counter:
            out = unet(latents, torch.tensor([500] * batch), hidden).sample
        flops["unet_fwd"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            out.sum().backward()
        flops["unet_bwd"] = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.randn(batch, 3, resolution, resolution))
        flops["vae_encode"] = counter.get_total_flops()
    both = flops["text_encoder_fwd_bwd"] + flops["unet_fwd"] + flops["unet_bwd"]
    table = text_encoder.get_input_embeddings().weight.shape
    return {
        **flops, "resolution": resolution, "batch": batch, "embedding_table": list(table),
        "reference_over_engine_flops": (both + flops["vae_encode"]) / both,
    }


def child(spec: dict) -> dict:
    return measure_end_to_end(spec) if spec.get("end_to_end") else measure(spec)


# ----------------------------------------------------------------------------------------------- in the parent
def run_benchmark(args: argparse.Namespace) -> dict:
    """Measure every variant (interleaved rounds) and the end-to-end run; return all figures."""
    device = args.device
    runnable, skipped = choose_variants(args.variants, DEFAULT_VARIANTS, VARIANTS, device, available)
    in_process = child if args.in_process else None
    load = load_average()
    rounds: dict[str, list[dict]] = {v: [] for v in runnable}
    deadline = getattr(args, "training_deadline", None)
    for r in range(args.rounds):
        for v in runnable:
            timeout = time_left(args.timeout, deadline)
            if timeout <= 0:
                rounds[v].append({"error": "not started: the --budget-s time was spent"})
                continue
            _, settings, switches = VARIANTS[v]
            spec = dict(
                model=args.model, device=device, warmup=args.warmup, steps=args.steps, exemplars=str(args.exemplars),
                settings={**settings, **({"resolution": args.resolution} if args.resolution else {})}, **switches,
            )
            result = run_child(SCRIPT, spec, timeout, in_process)
            rounds[v].append(result)
            status = result.get("error") or f"{result['s_per_step']:.4f} s/step"
            print(f"  round {r + 1}/{args.rounds} {v:<20} {status}", file=sys.stderr, flush=True)
    end_to_end = None
    if args.e2e_steps:
        spec = dict(
            model=args.model, device=device, exemplars=str(args.exemplars), steps=args.e2e_steps, end_to_end=True,
            resolution=args.resolution,
        )
        timeout = time_left(max(args.timeout, 3 * args.e2e_steps), deadline)
        end_to_end = run_child(SCRIPT, spec, timeout, in_process) if timeout > 0 else {"error": "not started: the --budget-s time was spent"}
        print(f"  end to end {args.e2e_steps} steps: {end_to_end.get('error') or duration(end_to_end.get('process_wall_s', end_to_end.get('in_process_s')))}", file=sys.stderr)
    try:
        work = work_per_micro_batch(args.model, args.resolution)
    except Exception as exc:  # an analysis, not a measurement: never lose the timings over it
        work = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return {
        "work_per_micro_batch": work,
        "model": args.model, "device": device, "exemplars": str(args.exemplars), "warmup": args.warmup,
        "steps": args.steps, "rounds_asked": args.rounds, "load_average_at_start": load, "load_average_at_end": load_average(),
        "in_process": bool(args.in_process), "skipped": skipped, "rounds": rounds, "end_to_end": end_to_end,
        "summary": summarise(rounds),
    }


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: median over rounds of the mean step time, the spread, memory (max over rounds)."""
    summary = {}
    for v, results in rounds.items():
        good = [r for r in results if "error" not in r]
        if not good:
            summary[v] = {"error": results[0]["error"] if results else "not run"}
            continue
        per_round = [r["s_per_step"] for r in good]
        s = med(per_round)
        all_steps = [t for r in good for t in r["step_times"]]
        summary[v] = {
            "s_per_step": s,
            "round_min": min(per_round), "round_max": max(per_round),
            "step_min": min(all_steps), "step_max": max(all_steps),
            "samples_per_s": good[0]["samples_per_step"] / s,
            "cpu_s_per_step": med([r["cpu_s_per_step"] for r in good]),
            "threads": good[0]["threads"],
            "paper_schedule_s": PAPER_STEPS * s,
            "loop_peak_mib": max(r["loop_peak_mib"] for r in good),
            "process_peak_mib": max(r["process_peak_mib"] for r in good),
            "first_step_s": med([r["first_step_s"] for r in good]),
            "setup_s": med([r["setup_s"] for r in good]),
            "embedding_rows": good[0]["embedding_rows"],
            "resolution": good[0]["resolution"],
            "machine": good[0]["machine"],
        }
    reference = summary.get("reference", {}).get("s_per_step")
    for v, row in summary.items():
        if "s_per_step" in row and reference:
            row["reference_over_this"] = reference / row["s_per_step"]
    return summary


def report(results: dict) -> str:
    """The Markdown section: machine line, table, ratio line, end-to-end line."""
    summary, device = results["summary"], results["device"]
    info = next((row["machine"] for row in summary.values() if "machine" in row), None) or machine(device)
    memory_kind = PeakMemory.kind(device)
    some = next((row for row in summary.values() if "resolution" in row), {})
    lines = [
        f"### Training: {describe(results['model'])}, {device}",
        "",
        machine_line(info, results["load_average_at_start"])
        + f"; load average {results['load_average_at_end'][0]:.2f} (1 min) when it ended.",
        "",
        f"Exemplars `{Path(results['exemplars']).relative_to(REPO) if Path(results['exemplars']).is_relative_to(REPO) else results['exemplars']}` "
        f"at {some.get('resolution', '?')} px; batch 2 x accumulation 4 = 8 exemplar samples per optimisation step; "
        f"{results['warmup']} warm-up + {results['steps']} measured steps per variant, {results['rounds_asked']} interleaved "
        f"round(s), {'all in one process (memory figures shared)' if results['in_process'] else 'one fresh process per variant and round'}. "
        f"Embedding table: {some.get('embedding_rows', '?')} rows.",
    ]
    if results["model"] in ("sd15", "embedded-arch", "tiny"):
        lines += ["", SPEED_NOTE]
    cpu = not device.startswith("cuda")
    header = [
        "variant", "what", "s/step (median of rounds)", "range over rounds", *(["CPU s/step (all threads)"] if cpu else []), "samples/s",
        f"train-loop {memory_kind} (MiB)", f"process {memory_kind} (MiB)", f"projected {PAPER_STEPS} steps",
        "reference / variant",
    ]
    rows = []
    for v, row in summary.items():
        if "error" in row:
            rows.append([v, VARIANTS[v][0], f"failed: {row['error']}"] + [""] * (len(header) - 3))
            continue
        rows.append([
            f"**{v}**" if v in ("engine", "reference") else v, VARIANTS[v][0], fmt(row["s_per_step"], 4),
            f"{fmt(row['round_min'])}-{fmt(row['round_max'])}", *([fmt(row["cpu_s_per_step"])] if cpu else []),
            fmt(row["samples_per_s"]),
            f"{row['loop_peak_mib']:.0f}", f"{row['process_peak_mib']:.0f}", duration(row["paper_schedule_s"]),
            f"{row['reference_over_this']:.2f}x" if "reference_over_this" in row else "-",
        ])
    for v, why in results["skipped"].items():
        rows.append([v, VARIANTS[v][0], f"not run: {why}"] + [""] * (len(header) - 3))
    lines += ["", markdown_table(header, rows)]
    if cpu:
        lines += [
            "",
            "CPU s/step is the process's CPU time over all its threads: on a quiet machine wall s/step is close to it "
            "divided by the threads in use (busy-waiting threads count too); a wall time well above that means the "
            "process waited for cores that other work held.",
        ]
    engine, reference = summary.get("engine", {}), summary.get("reference", {})
    if "s_per_step" in engine and "s_per_step" in reference:
        lines += ["", f"Ratio b/a (reference s/step / engine s/step): **{reference['s_per_step'] / engine['s_per_step']:.2f}x** at equal batch."]
    work = results.get("work_per_micro_batch", {})
    if "vae_encode" in work:
        big = work["unet_fwd"] >= 1e11
        unit = "TFLOP" if big else "GFLOP"
        tf = lambda key: f"{work[key] / (1e12 if big else 1e9):.3g}"  # noqa: E731
        lines += [
            "",
            f"Work per micro-batch of {work['batch']} at {work['resolution']} px ({unit}; matmul, convolution and attention "
            f"FLOPs counted by `torch.utils.flop_counter` on meta tensors): text encoder forward + backward "
            f"{tf('text_encoder_fwd_bwd')}, UNet forward {tf('unet_fwd')} + backward to its text input {tf('unet_bwd')} "
            f"(both loops); VAE encode {tf('vae_encode')} (reference only). At equal precision the reference does "
            f"**{work['reference_over_engine_flops']:.2f}x** the engine's arithmetic; the rest of a measured ratio is "
            f"per-call overhead (many small kernels: the VAE's, AdamW over the {work['embedding_table'][0]}-row table, the restore).",
        ]
    e2e = results.get("end_to_end")
    if e2e:
        if "error" in e2e:
            lines += ["", f"End-to-end inversion: failed ({e2e['error']})."]
        else:
            wall = e2e.get("process_wall_s")
            lines += [
                "",
                f"End-to-end {e2e['steps']}-step inversion at default settings: "
                + (f"**{duration(wall)}** for the whole process (Python start, imports, " if wall else "**in process** (")
                + f"model load {e2e['load_s']:.1f} s, setup incl. exemplar encoding {e2e['setup_s']:.1f} s, "
                f"{e2e['steps']} steps {e2e['steps_s']:.1f} s, saving the relation {e2e['save_s']:.2f} s)"
                + (f"; the process used {e2e['process_cpu_s']:.1f} s of CPU time on {e2e['threads']} torch thread(s)." if "process_cpu_s" in e2e else "."),
            ]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, default=None, help="default: sd15 on cuda, else embedded")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--exemplars", type=Path, default=DEFAULT_EXEMPLARS, help="exemplar folder (default: assets/benchmark/on_top_of)")
    p.add_argument("--variants", nargs="+", help=f"subset of: {', '.join(VARIANTS)}")
    p.add_argument("--resolution", type=int, help="training image side (default: the model's native size, 512 for sd15)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured steps per variant (default 3 CPU, 3 GPU)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per variant (default 20 CPU, 10 GPU)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3 CPU, 1 GPU)")
    p.add_argument("--e2e-steps", type=int, default=None, help="steps of the end-to-end run (default 500 on CPU, 0 = skip)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per variant process (default 900 CPU, 300 GPU)")
    p.add_argument("--in-process", action="store_true", help="measure in this process (fast; memory figures are shared)")


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if args.model is None:
        args.model = "sd15" if cuda else "embedded"
    for name, cpu_value, gpu_value in (
        ("warmup", 3, 3), ("steps", 20, 10), ("rounds", 3, 1), ("timeout", 900.0, 300.0),
        ("e2e_steps", 0 if args.model == "sd15" else 500, 0),
    ):
        if getattr(args, name, None) is None:
            setattr(args, name, gpu_value if cuda else cpu_value)
    return args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    args = resolve_defaults(p.parse_args(argv))
    quiet_libraries(hide_warnings=True, offline=True)
    results = run_benchmark(args)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(child)
    else:
        sys.exit(main())
