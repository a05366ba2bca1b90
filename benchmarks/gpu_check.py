"""The product's GPU path checked in one command, on one CUDA GPU with no network (issue 26). Run it through
``benchmarks/gpu_check.sh``, which first unpacks the Python packages carried for a bare GPU image:

    bash benchmarks/gpu_check.sh OUT              # one CUDA GPU: at most 8 minutes (--budget-s, default 450 s)
    bash benchmarks/gpu_check.sh --dry-run OUT    # the CPU: the same parts and code at a tiny size (tests run it)

Writes OUT/gpu-check.json and OUT/gpu-check.md after every part (so a run cut short keeps what it measured), beside
the parts' logs (cuda-tests.log, app.log, perf.log) and perf.py's tables: seven files, which a device call returns. It starts no part when less time is left than the part needs; a part that fails is one sentence
on stderr and a non-zero exit, and the parts after it still run. The parts, in order:

1. environment: the GPU, torch and its CUDA build, and where each library the check needs comes from.
2. cuda-tests: the tests marked ``cuda`` (they skip without CUDA), run for real: fp16 GradScaler state in
   checkpoints, and ZeroGPU through the real `spaces` package (see ZERO_GPU_STOPS for how far that goes).
3. app: an SD 1.5-shaped model folder with random weights, built here (nothing is downloaded), served by
   ``python app.py`` with the runtime it picks on this machine; through gradio_client: the page header names the
   precision and attention in use, a 50-step training finishes and saves, a generation returns 512 px images, and the
   report card's CLIP path says in one sentence that the CLIP weights are absent.
4. perf: ``benchmarks/perf.py``'s GPU figures: the engine against the reference loop at 512 px in fp32, fp16 and with
   xformers where installed, peak memory at the paper's batch 2 x accumulation 4, the 3000-step schedule estimated.

The dry run builds the same model folder at TINY_SD15's size, runs the same parts with CPU-sized numbers (a few
steps, perf.py's --smoke on its tiny model) and the same result writers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from app_startup import free_port, wait_served  # benchmarks/, this script's folder

REPO = Path(__file__).resolve().parent.parent
MODEL_FOLDER_NAME = "sd15-random"
RELATION = "gpu_check"
ZERO_GPU_STOPS = (
    "With SPACES_ZERO_GPU=true, `spaces` 0.51.3 patches torch at import and wraps the app's two GPU functions; a call "
    "then asks spaces.zero.client.schedule for a GPU, which is an HTTP request to the Spaces device API "
    "(SPACES_ZERO_DEVICE_API_URL). The check stops there: the test replaces schedule and records the duration the "
    "app asks for, so no GPU worker is forked and nothing runs on the GPU through ZeroGPU."
)


@dataclass
class Sizes:
    """The numbers a part uses: the GPU's, or the dry run's CPU-sized ones."""

    train_steps: int
    gen_steps: int
    gen_images: int
    score_pairs: int
    perf_args: list[str]


GPU = Sizes(50, 25, 2, 2, [
    "--model", "sd15", "--device", "cuda", "--variants", "engine", "reference", "engine-fp16", "engine-xformers",
    "--gen-variants", "engine", "fp32", "xformers", "--batches", "1", "4",
])
DRY = Sizes(4, 2, 2, 1, [
    "--model", "tiny", "--device", "cpu", "--smoke", "--variants", "engine", "reference", "engine-fp16",
    "engine-xformers", "--gen-variants", "engine", "fp32", "xformers",
])


@dataclass
class Context:
    out: Path
    work: Path
    dry_run: bool
    deadline: float
    sizes: Sizes
    env: dict = field(default_factory=dict)  # what the environment part found

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Part:
    name: str
    what: str
    needs: tuple[str, ...]  # modules that must import for the part to run
    min_s: float  # not started with less than this left on the GPU
    max_s: float  # its own time limit on the GPU (the dry run allows three times as much)
    run: Callable[[Context, float], dict]


class CheckFailed(Exception):
    """A check inside a part failed; the message is the part's one sentence."""


# ----------------------------------------------------------------------------------------------- helpers
def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> int:
    """Run ``cmd`` in the repository with its output in ``log``; the exit status, or 124 when it ran out of time, in
    which case its whole process group is ended (perf.py's measurements run in processes of their own)."""
    with open(log, "w") as f:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, process_group=0,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            return process.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return 124


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1].strip()[:300] if lines else "no output"


# ----------------------------------------------------------------------------------------------- 1. environment
ENV_PROBE = r"""
import importlib, importlib.metadata, importlib.util, json, sys
info = {"python": sys.version.split()[0], "modules": {}}
for name in ("torch", "diffusers", "transformers", "accelerate", "gradio", "gradio_client", "spaces", "xformers", "pytest"):
    try:
        module = importlib.import_module(name)
        try:
            version = importlib.metadata.version(name.replace("_", "-"))
        except Exception:
            version = getattr(module, "__version__", "?")
        info["modules"][name] = {"version": version, "from": module.__file__}
    except Exception as exc:
        info["modules"][name] = {"missing": f"{type(exc).__name__}: {exc}"[:200]}
try:
    import torch
    info["cuda_build"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}"}
except Exception as exc:
    info["torch_error"] = str(exc)[:200]
print(json.dumps(info))
"""


def environment(ctx: Context, limit: float) -> dict:
    done = subprocess.run([sys.executable, "-c", ENV_PROBE], cwd=REPO, capture_output=True, text=True, timeout=limit)
    if done.returncode != 0:
        raise CheckFailed(f"Python could not report its libraries ({(done.stderr.strip().splitlines() or ['?'])[-1]}).")
    ctx.env = json.loads(done.stdout.strip().splitlines()[-1])
    ctx.env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"], capture_output=True,
        text=True).stdout.strip() if not ctx.dry_run and _which("nvidia-smi") else None
    if not ctx.dry_run and not ctx.env.get("cuda_available"):
        raise CheckFailed(f"torch {ctx.env['modules']['torch'].get('version', '?')} sees no CUDA GPU here "
                          f"(CUDA build: {ctx.env.get('cuda_build')}).")
    return {"environment": ctx.env}


def _which(program: str) -> bool:
    return any((Path(d) / program).is_file() for d in os.environ.get("PATH", "").split(os.pathsep))


# ----------------------------------------------------------------------------------------------- 2. cuda tests
def cuda_test_files() -> list[str]:
    """The test modules that hold tests marked ``cuda`` (found by the marker, not listed by hand)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "pytest.mark.cuda" in p.read_text())


def cuda_tests(ctx: Context, limit: float) -> dict:
    files = cuda_test_files()
    if not files:
        raise CheckFailed("No test is marked cuda, so there is nothing to run on the GPU.")
    xml, log = ctx.work / "cuda-tests.xml", ctx.out / "cuda-tests.log"
    code = run_logged([sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rA",
                       "--continue-on-collection-errors",
                       f"--junitxml={xml}", *files], log, limit, env={"OMP_NUM_THREADS": "1"})
    if code == 124:
        raise CheckFailed(f"The cuda tests did not finish within {limit:.0f} s.")
    tests = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):  # the message, or the error line of a collection failure
                    lines = [ln[1:].strip() for ln in (child.text or "").splitlines() if ln.startswith("E ")]
                    outcome, message = child.tag, (lines[-1] if lines else (child.get("message") or "").strip())[:300]
            name = f"{case.get('classname')}::{case.get('name')}" if case.get("classname") else case.get("name")
            tests.append({"test": name, "outcome": outcome, "seconds": float(case.get("time") or 0), "message": message})
    result = {"tests": tests, "zero_gpu_stops": ZERO_GPU_STOPS}
    if not tests:
        raise CheckFailed(f"pytest ran no cuda test (exit {code}: {last_line(log)}).")
    bad = [t for t in tests if t["outcome"] in ("failure", "error") or (t["outcome"] == "skipped" and not ctx.dry_run)]
    if bad:
        t = bad[0]
        raise CheckFailed(f"{t['test']} {'was skipped' if t['outcome'] == 'skipped' else 'failed'}: {t['message'] or 'see cuda-tests.log'}",
                          result)
    return result


# ----------------------------------------------------------------------------------------------- 3. the app
def build_model_folder(folder: Path, tiny: bool, device: str) -> dict:
    """Save an SD 1.5-shaped StableDiffusionPipeline with random weights to ``folder`` (fp16 on a GPU). The check
    calls it in a child process (``--build-model``), so that its own process never holds GPU memory."""
    import torch
    from diffusers import StableDiffusionPipeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    from models import sd15_components

    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        tokenizer, text_encoder, vae, unet, scheduler = sd15_components(tiny=tiny)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if device == "cuda":
        pipe.to(dtype=torch.float16)
    pipe.save_pretrained(folder)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "folder": str(folder), "tiny": tiny, "seconds": round(time.perf_counter() - start, 1),
        "parameters": {"unet": count(unet), "vae": count(vae), "text_encoder": count(text_encoder)},
        "vocabulary": len(tokenizer), "native_px": unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1),
        "bytes_on_disk": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    }


def app(ctx: Context, limit: float) -> dict:
    end = time.monotonic() + limit
    folder = ctx.work / MODEL_FOLDER_NAME
    log = ctx.work / "model-build.log"
    code = run_logged([sys.executable, __file__, "--build-model", str(folder), *(["--tiny"] if ctx.dry_run else [])],
                      log, end - time.monotonic())
    if code != 0 or not folder.with_suffix(".json").is_file():
        raise CheckFailed(f"The SD 1.5-shaped model folder could not be built ({last_line(log)}).")
    model = json.loads(folder.with_suffix(".json").read_text())
    result: dict = {"model": model, "checks": []}
    port, relations = free_port(), ctx.work / "relations"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERSION_", "SPACE", "GRADIO_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", REVERSION_TEMP_DIR=str(ctx.work / "app-tmp"))
    if ctx.dry_run:
        env["OMP_NUM_THREADS"] = "1"  # the CPU is shared
    started = time.monotonic()
    with open(ctx.out / "app.log", "w") as app_log:  # no --device, --attention: the app picks them as on a GPU Space
        process = subprocess.Popen([sys.executable, "app.py", "--base-model", str(folder), "--relations-dir", str(relations),
                                    "--port", str(port)], cwd=REPO, env=env, stdout=app_log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_served(url, process, timeout=end - time.monotonic())
        except SystemExit as exc:  # app_startup's helper ends its own script this way
            raise CheckFailed(f"{exc} (see app.log).") from None
        result["page_served_s"] = round(time.monotonic() - started, 1)
        _drive_app(ctx, url, model, relations, result, end)
    finally:
        process.kill()  # nothing of the app's is kept: its folders are the check's scratch space
        process.wait()
    failed = [c for c in result["checks"] if not c["ok"]]
    if failed:
        raise CheckFailed(failed[0]["detail"], result)
    return result


def _drive_app(ctx: Context, url: str, model: dict, relations: Path, result: dict, end: float) -> None:
    """The four checks through gradio_client, each recorded as ok or not with one sentence; an error the app answers
    with fails its check, and the checks after it that need its result are not run."""
    from gradio_client import Client
    from PIL import Image

    sizes, gpu = ctx.sizes, not ctx.dry_run

    def check(name: str, call: Callable[[], tuple[bool, str]]) -> bool:
        start = time.monotonic()
        try:
            ok, detail = call()
        except Exception as exc:  # the app's error (gradio_client's AppError), or the time ran out
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            ok, detail = False, f"The {name} call failed: {type(exc).__name__}: {text}"[:400]
        result["checks"].append({"check": name, "ok": bool(ok), "detail": detail, "seconds": round(time.monotonic() - start, 1)})
        return bool(ok)

    client = Client(url, verbose=False)

    def header() -> tuple[bool, str]:
        text = next((c["props"].get("value", "") for c in client.config["components"] if c["props"].get("elem_id") == "header"), "")
        running = re.search(r"Running \*\*(.+?)\*\*", text)
        attention = "xformers" if gpu and "version" in ctx.env.get("modules", {}).get("xformers", {}) else "SDPA"
        wanted = f"({'fp16' if gpu else 'fp32'}, {attention})"
        result["header"] = running[1] if running else text[:300]
        return bool(running and running[1].endswith(wanted)), \
            f"The page header reads {result['header']!r}; it should end with {wanted}."

    def train() -> tuple[bool, str]:
        job = client.submit(set_name="above", name=RELATION, steps=sizes.train_steps, api_name="/train")
        status = result["train_status"] = str(job.result(timeout=max(end - time.monotonic() - 30, 10))[0])[:500]
        saved = all((relations / RELATION / f).is_file() for f in ("learned_embeds.safetensors", "card.json"))
        return status.startswith(f"Finished at step {sizes.train_steps}") and saved, \
            f"A {sizes.train_steps}-step training ended with {status[:200]!r}" \
            + ("" if saved else f" and saved no relation in {relations / RELATION}") + "."

    def generate() -> tuple[bool, str]:
        images, _prompt = client.predict(relation=RELATION, mode="Entities", entity_a="red circle", entity_b="blue square",
                                         num_images=sizes.gen_images, steps=sizes.gen_steps, api_name="/generate")
        sides = []
        for item in images:
            with Image.open(item["image"]) as image:
                sides.append(image.size)
        native = model["native_px"]  # the dry run's 64 px images are shown enlarged by a whole factor
        good = [s for s in sides if (s == (512, 512) if gpu else s[0] == s[1] and s[0] % native == 0)]
        result["image_sizes"] = sides
        return len(sides) == sizes.gen_images and len(good) == len(sides), (
            f"A generation of {sizes.gen_images} images returned sizes {sides}; they should be "
            f"{'512x512' if gpu else f'multiples of {native} px'}.")

    def report_card() -> tuple[bool, str]:
        text, _table, _grid = client.predict(relation=RELATION, pairs=sizes.score_pairs, api_name="/score_relation")
        note = result["report_card_note"] = first_sentence(text[text.find("No CLIP score:"):]) if "No CLIP score:" in text else ""
        return "CLIP" in note and "could not be loaded" in note and "Traceback" not in text, (
            f"The report card should say in one sentence that the CLIP weights are absent; it says {text[:300]!r}.")

    check("header", header)
    if check("train", train):
        check("generate", generate)
        check("report-card", report_card)


def first_sentence(text: str) -> str:
    """``text`` up to its first full stop outside parentheses that ends a line or comes before a space."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "\n":
            return text[:i].strip()
        if ch == "." and depth <= 0 and (i + 1 == len(text) or text[i + 1].isspace()):
            return text[: i + 1].strip()
    return text.strip()


# ----------------------------------------------------------------------------------------------- 4. perf
def perf(ctx: Context, limit: float) -> dict:
    name = "perf-dry-run" if ctx.dry_run else "perf-cuda-sd15"
    measure_timeout = 90 if not ctx.dry_run else 300
    budget = max(limit - measure_timeout - 20, 30)  # perf.py stops starting measurements then; the last may take the timeout
    log = ctx.out / "perf.log"
    code = run_logged([sys.executable, "benchmarks/perf.py", *ctx.sizes.perf_args, "--timeout", str(measure_timeout),
                       "--budget-s", f"{budget:.0f}", "--out", str(ctx.out), "--name", name], log, limit)
    figures_file = ctx.out / f"{name}.json"
    if code != 0 or not figures_file.exists():
        raise CheckFailed(f"benchmarks/perf.py {'ran out of time' if code == 124 else f'exited with status {code}'} "
                          f"({last_line(log)}).")
    figures = json.loads(figures_file.read_text())
    summary = figures.get("training", {}).get("summary", {})
    rows = {v: {k: row.get(k) for k in ("s_per_step", "reference_over_this", "process_peak_mib", "paper_schedule_s", "error")
                if row.get(k) is not None} for v, row in summary.items()}
    generation = {v: ({b: round(int(b) / min(x["call_s"]), 3) for b, x in r["batches"].items()} if "batches" in r else {"error": r["error"]})
                  for v, r in figures.get("generation", {}).get("variants", {}).items()}
    result = {"training": rows, "skipped": figures.get("training", {}).get("skipped", {}),
              "generation_images_per_s": generation, "generation_skipped": figures.get("generation", {}).get("skipped", {}),
              "targets": figures.get("targets", []), "perf_wall_s": figures.get("wall_s"), "files": [f"{name}.md", f"{name}.json"]}
    missing = [v for v in ("engine", "reference") if "s_per_step" not in rows.get(v, {})]
    if missing:
        raise CheckFailed(f"perf.py measured no {' and no '.join(missing)} step time "
                          f"({rows.get(missing[0], {}).get('error', 'not run')}).", result)
    return result


PARTS = [
    Part("environment", "the GPU, torch's CUDA build, and where each library comes from", ("torch",), 10, 30, environment),
    Part("cuda-tests", "the tests marked cuda, for real: fp16 GradScaler checkpoints, ZeroGPU through `spaces`",
         ("torch", "pytest", "diffusers"), 60, 150, cuda_tests),
    Part("app", "python app.py on an SD 1.5-shaped random model: header, 50-step training, 512 px generation, report card",
         ("torch", "diffusers", "gradio", "gradio_client"), 150, 210, app),
    Part("perf", "perf.py at 512 px: engine vs reference, fp32/fp16/xformers, peak memory, 3000-step estimate",
         ("torch", "diffusers"), 120, 600, perf),
]


# ----------------------------------------------------------------------------------------------- running and writing
def run_parts(parts: list[Part], ctx: Context, write: Callable[[list[dict]], None]) -> list[dict]:
    """Run ``parts`` in order inside the budget, writing the results after each one; a failure never stops the rest."""
    import importlib.util

    results: list[dict] = []
    scale = 3 if ctx.dry_run else 1
    for part in parts:
        row = {"part": part.name, "what": part.what}
        missing = [m for m in part.needs if importlib.util.find_spec(m) is None]
        left = ctx.left()
        if left < part.min_s:
            row.update(status="not started", sentence=f"Not started: {left:.0f} s of the budget were left and it needs about {part.min_s:.0f} s.")
        elif missing:
            row.update(status="failed", sentence=f"It needs {', '.join(missing)}, which this Python does not have (carry it: "
                                                  "see docs/performance.md).")
        else:
            start = time.monotonic()
            try:
                row.update(status="passed", **part.run(ctx, min(part.max_s * scale, left - 5)))
            except CheckFailed as exc:
                row.update(status="failed", sentence=str(exc.args[0]), **(exc.args[1] if len(exc.args) > 1 else {}))
            except Exception as exc:  # a bug or an environment fault in one part must not lose the others
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                row.update(status="failed", sentence=f"{type(exc).__name__}: {text}"[:300])
            row["seconds"] = round(time.monotonic() - start, 1)
        results.append(row)
        print(f"[gpu-check] {part.name}: {row['status']}" + (f" - {row['sentence']}" if row.get("sentence") else ""),
              file=sys.stderr, flush=True)
        write(results)
    return results


def markdown(report: dict) -> str:
    """The human-readable page: the machine, a table of parts, then each part's figures."""
    env = next((r.get("environment") for r in report["parts"] if r.get("environment")), {}) or {}
    mods = env.get("modules", {})
    lines = [f"# GPU check ({report['mode']})", "",
             f"Command: `{report['command']}`; budget {report['budget_s']:.0f} s, {report['wall_s']:.0f} s used.", ""]
    if env:
        gpu = env.get("gpu") or {}
        lines.append(f"Machine: {gpu.get('name', 'no GPU')} ({gpu.get('memory_gib', '-')} GiB); Python {env.get('python')}; "
                     f"torch {mods.get('torch', {}).get('version', '-')} (CUDA build {env.get('cuda_build')}); "
                     + "; ".join(f"{m} {v['version'] if 'version' in v else 'missing'}" for m, v in mods.items() if m != "torch") + ".")
        lines.append("")
    lines += ["| part | status | seconds | sentence |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['status']} | {r.get('seconds', '-')} | {r.get('sentence', '')} |" for r in report["parts"]]
    for r in report["parts"]:
        if r.get("tests"):
            lines += ["", "## cuda-tests", ""] + [f"- `{t['test']}`: {t['outcome']} ({t['seconds']:.1f} s){' - ' + t['message'] if t['message'] else ''}"
                                                  for t in r["tests"]]
            lines += ["", f"Where ZeroGPU stops: {r['zero_gpu_stops']}"]
        if r.get("checks") or r.get("model"):
            m = r.get("model", {})
            params = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in m.get("parameters", {}).items())
            lines += ["", "## app", "", f"Model folder: {params} parameters, {m.get('native_px')} px, "
                      f"{m.get('bytes_on_disk', 0) / 2**20:.0f} MiB on disk, built in {m.get('seconds')} s; page served after "
                      f"{r.get('page_served_s', '-')} s. The app got the folder through --base-model (SD 1.5 cannot be "
                      "downloaded there) and picked the device, precision and attention itself.", ""]
            lines += [f"- {c['check']}: {'ok' if c['ok'] else 'FAILED'} ({c['seconds']} s){'' if c['ok'] else ' - ' + c['detail']}"
                      for c in r.get("checks", [])]
            for key, label in (("header", "header's runtime"), ("train_status", "training status"),
                               ("image_sizes", "image sizes"), ("report_card_note", "report card note")):
                if r.get(key):
                    lines.append(f"- {label}: {r[key]}")
        if r.get("training"):
            lines += ["", "## perf", "", "| variant | s/step | reference / variant | peak MiB (batch 2 x accumulation 4) | 3000 steps (s) |",
                      "|---|---|---|---|---|"]
            for v, row in r["training"].items():
                lines.append(f"| {v} | {_num(row.get('s_per_step'))} | {_num(row.get('reference_over_this'))} | "
                             f"{_num(row.get('process_peak_mib'))} | {_num(row.get('paper_schedule_s'))} |" if "error" not in row
                             else f"| {v} | failed: {row['error']} | | | |")
            lines += [f"| {v} | not run: {why} | | | |" for v, why in r.get("skipped", {}).items()]
            lines += ["", "Generation, images/s by batch: " + "; ".join(f"{v} {g}" for v, g in r.get("generation_images_per_s", {}).items())]
            lines += [""] + r.get("targets", []) + ["", f"Full tables: {', '.join(r.get('files', []))}."]
    return "\n".join(lines) + "\n"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, nargs="?", help="folder for gpu-check.json, gpu-check.md and the parts' logs")
    p.add_argument("--dry-run", action="store_true", help="on the CPU: the same parts at a tiny size")
    p.add_argument("--budget-s", type=float, help="start no part after this (default 450 on the GPU, 1800 in a dry run)")
    p.add_argument("--work", type=Path, help="scratch folder for the model and the app (default: a temporary one)")
    p.add_argument("--parts", nargs="+", choices=[x.name for x in PARTS], help="run only these parts")
    p.add_argument("--build-model", type=Path, help=argparse.SUPPRESS)  # the child that saves the model folder
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build_model:
        import torch

        device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
        info = build_model_folder(args.build_model, args.tiny, device)
        write_atomic(args.build_model.with_suffix(".json"), json.dumps(info))
        return 0
    if args.out is None:
        p.error("give the folder for the results")
    parts = [x for x in PARTS if not args.parts or x.name in args.parts]
    budget = args.budget_s or (1800.0 if args.dry_run else 450.0)
    mode = "dry run on the CPU" if args.dry_run else "GPU"
    print(f"GPU check ({mode}), budget {budget:.0f} s; parts:", file=sys.stderr)
    for i, x in enumerate(parts, 1):
        print(f"  {i}. {x.name}: {x.what}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ctx = Context(args.out, work, args.dry_run, started + budget, DRY if args.dry_run else GPU)
    command = "bash benchmarks/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:])

    def write(results: list[dict]) -> None:
        report = {"mode": mode, "command": command, "budget_s": budget, "wall_s": time.monotonic() - started,
                  "parts": results, "failed": [r["part"] for r in results if r["status"] != "passed"]}
        write_atomic(args.out / "gpu-check.json", json.dumps(report, indent=1))
        write_atomic(args.out / "gpu-check.md", markdown(report))

    results = run_parts(parts, ctx, write)
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if r["status"] != "passed"]
    for r in failed:
        print(f"gpu check: part {r['part']} {r['status']}: {r['sentence']}", file=sys.stderr)
    print(f"Wrote {args.out / 'gpu-check.md'} and gpu-check.json", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
