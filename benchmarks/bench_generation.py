"""Generation speed: images per second with a relation installed, 50 DDIM steps, CFG 7.5, batch 1/4/8.

    python benchmarks/bench_generation.py                              # CPU, embedded model at its 32 px
    python benchmarks/bench_generation.py --model sd15 --device cuda   # GPU, SD 1.5 architecture at 512x512

Each variant is one fresh process. It loads the model, builds ``RelationGenerator`` on it (the DDIM pipeline the
app and CLI use), installs a relation vector and, for each batch size, runs one short warm-up call and then
``--repeats`` timed calls of the full schedule. A call includes text encoding, denoising with classifier-free
guidance (the UNet sees 2 x batch), VAE decoding and conversion to PIL images.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from common import (
    PeakMemory, child_main, choose_variants, fmt, load_average, machine, machine_line, markdown_table, med,
    quiet_libraries, run_child, time_left,
)
from models import MODELS, SPEED_NOTE, describe

SCRIPT = Path(__file__).resolve()

# name -> (what it is, weight dtype or None for the engine's default, benchmark-side switches)
VARIANTS: dict[str, tuple[str, str | None, dict]] = {
    "engine": ("engine defaults (fp16 on CUDA, fp32 on CPU; SDPA)", None, {}),
    "fp32": ("fp32 weights (the reference precision)", "no", {}),
    "bf16": ("bf16 weights", "bf16", {}),
    "xformers": ("engine dtype, xformers attention", None, {"attention": "xformers"}),
    "compile": ("engine dtype, torch.compile on the UNet", None, {"compile": True}),
}
DEFAULT_VARIANTS = {"cpu": ["engine", "bf16", "compile"], "cuda": ["engine", "fp32", "bf16", "xformers", "compile"]}


def available(variant: str, device: str) -> str | None:
    cuda = device.startswith("cuda")
    if variant == "fp32" and not cuda:
        return "the engine already runs fp32 on CPU"
    if variant == "xformers" and (not cuda or importlib.util.find_spec("xformers") is None):
        return "xformers is not installed" if cuda else "xformers needs a GPU"
    return None


# ----------------------------------------------------------------------------------------------- in the child
def measure(spec: dict) -> dict:
    """Time ``repeats`` full generation calls per batch size after one short warm-up call."""
    import torch

    from models import build_pipeline, native_resolution
    from reversion_core.runtime import pick_device, pick_dtype
    from reversion_core.generation import RelationGenerator, build_prompt
    from reversion_core.relation_file import RelationPrompt

    device = spec["device"]
    dtype = pick_dtype(pick_device(device), spec["dtype"])  # None: what RelationGenerator picks by default
    start = time.perf_counter()
    pipe = build_pipeline(spec["model"], device, dtype=dtype, attention=spec.get("attention", "sdpa"))
    if spec.get("compile"):
        pipe.unet.compile()
    generator = RelationGenerator(pipeline=pipe)
    generator.pipeline.set_progress_bar_config(disable=True)
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    token = generator.install(RelationPrompt("bench", "<R>", torch.randn(dim, generator=torch.Generator().manual_seed(0))))
    prompt = build_prompt(token, entity_a="circle", entity_b="square")
    size = spec.get("size") or native_resolution(pipe)
    load_s = time.perf_counter() - start
    memory = PeakMemory(device)
    batches = {}
    for batch in spec["batches"]:
        def call(steps: int) -> None:
            generators = [torch.Generator().manual_seed(i) for i in range(batch)]  # as RelationGenerator.generate
            generator.pipeline(
                [prompt] * batch, num_inference_steps=steps, guidance_scale=spec["guidance"], generator=generators,
                height=size, width=size,
            )

        warm = time.perf_counter()
        call(spec["warmup_steps"])
        warm = time.perf_counter() - warm
        memory.reset()
        times = []
        for _ in range(spec["repeats"]):
            t = time.perf_counter()
            call(spec["steps"])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        batches[str(batch)] = {"call_s": times, "warmup_call_s": warm, "peak_mib": memory.peak_mib()}
    return {"load_s": load_s, "size": size, "dtype": str(dtype).replace("torch.", ""), "batches": batches, "machine": machine(device)}


# ----------------------------------------------------------------------------------------------- in the parent
def run_benchmark(args: argparse.Namespace) -> dict:
    device = args.device
    variants, skipped = choose_variants(args.gen_variants, DEFAULT_VARIANTS, VARIANTS, device, available)
    load = load_average()
    results = {}
    deadline = getattr(args, "generation_deadline", None)
    for v in variants:
        timeout = time_left(args.timeout, deadline)
        if timeout <= 0:
            results[v] = {"error": "not started: the --budget-s time was spent"}
            continue
        _, dtype, switches = VARIANTS[v]
        spec = dict(
            model=args.model, device=device, dtype=dtype, batches=args.batches, steps=args.gen_steps,
            guidance=args.guidance, repeats=args.repeats, warmup_steps=args.warmup_steps, size=args.size, **switches,
        )
        results[v] = run_child(SCRIPT, spec, timeout, measure if args.in_process else None)
        r = results[v]
        status = r.get("error") or ", ".join(
            f"b{b}: {int(b) / med(x['call_s']):.3g} img/s" for b, x in r["batches"].items()
        )
        print(f"  generation {v:<10} {status}", file=sys.stderr, flush=True)
    return {
        "model": args.model, "device": device, "steps": args.gen_steps, "guidance": args.guidance, "repeats": args.repeats,
        "batches": args.batches, "load_average_at_start": load, "load_average_at_end": load_average(),
        "in_process": bool(args.in_process), "skipped": skipped, "variants": results,
    }


def report(results: dict) -> str:
    device, variants = results["device"], results["variants"]
    info = next((r["machine"] for r in variants.values() if "machine" in r), None) or machine(device)
    size = next((r["size"] for r in variants.values() if "size" in r), "?")
    memory_kind = PeakMemory.kind(device)
    lines = [
        f"### Generation: {describe(results['model'])}, {device}, {size}x{size} px",
        "",
        machine_line(info, results["load_average_at_start"])
        + f"; load average {results['load_average_at_end'][0]:.2f} (1 min) when it ended.",
        "",
        f"{results['steps']} DDIM steps, CFG {results['guidance']} (the UNet sees 2 x batch), one relation installed, "
        f"PIL images out; median of {results['repeats']} timed call(s) per batch after a short warm-up call, "
        f"{'all in one process (memory figures shared)' if results['in_process'] else 'one fresh process per variant'}. The app and CLI (`RelationGenerator.generate`) denoise at most 4 images together, so "
        "their batch 8 runs as two calls of 4.",
    ]
    if results["model"] in ("sd15", "embedded-arch", "tiny"):
        lines += ["", SPEED_NOTE]
    header = ["variant", "what", "dtype"]
    for b in results["batches"]:
        header += [f"batch {b}: s/call", f"batch {b}: images/s"]
    header += [f"{memory_kind} (MiB, largest batch)"]
    rows = []
    for v, r in variants.items():
        if "error" in r:
            rows.append([v, VARIANTS[v][0], f"failed: {r['error']}"] + [""] * (len(header) - 3))
            continue
        row = [f"**{v}**" if v == "engine" else v, VARIANTS[v][0], r["dtype"]]
        for b in results["batches"]:
            s = med(r["batches"][str(b)]["call_s"])
            row += [fmt(s), fmt(b / s)]
        row.append(f"{r['batches'][str(results['batches'][-1])]['peak_mib']:.0f}")
        rows.append(row)
    for v, why in results["skipped"].items():
        rows.append([v, VARIANTS[v][0], f"not run: {why}"] + [""] * (len(header) - 3))
    lines += ["", markdown_table(header, rows)]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gen-variants", dest="gen_variants", nargs="+", help=f"subset of: {', '.join(VARIANTS)}")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--gen-steps", type=int, default=50, help="DDIM steps (default 50)")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--repeats", type=int, default=None, help="timed calls per batch (default 3 CPU, 1 GPU)")
    p.add_argument("--warmup-steps", type=int, default=3, help="DDIM steps of the warm-up call")
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's native size, 512 for sd15)")


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default=None, help="default: sd15 on cuda, else embedded")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--variants", nargs="+", dest="gen_variants", help=f"subset of: {', '.join(VARIANTS)}")
    add_arguments(p)
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per variant process")
    p.add_argument("--in-process", action="store_true", help="measure in this process (fast; memory figures are shared)")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    args = resolve_defaults(p.parse_args(argv), torch.cuda.is_available())
    quiet_libraries(hide_warnings=True, offline=True)
    results = run_benchmark(args)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def resolve_defaults(args: argparse.Namespace, cuda_available: bool) -> argparse.Namespace:
    if getattr(args, "device", None) is None:
        args.device = "cuda" if cuda_available else "cpu"
    cuda = args.device.startswith("cuda")
    if getattr(args, "model", None) is None:
        args.model = "sd15" if cuda else "embedded"
    if args.repeats is None:
        args.repeats = 1 if cuda else 3
    if getattr(args, "timeout", None) is None:
        args.timeout = 300.0 if cuda else 900.0
    return args


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(measure)
    else:
        sys.exit(main())
