"""Writes an evaluation's results folder: tables (Markdown + CSV) per metric, a bar plot, loss curves, sample
sheets, every scored image as a CSV row, and the exact configuration.

    <out>/summary.md              all tables, settings, chance levels, the command
    <out>/<metric>.md, .csv       methods x relations + mean (mean and sample std over seeds)
    <out>/per_seed.csv            method, relation, seed, every metric, images scored
    <out>/records.csv             one row per image (prompt, seeds, scores, pixel checksum)
    <out>/metrics.png             grouped bars with seed spread
    <out>/loss_curves.png         training losses of the learned methods (smoothed, mean over relations and seeds)
    <out>/samples/<relation>.png  image 0 of the first templates, first seed, one row per method
    <out>/config.json             the config, command line, process count, versions, base model, timing
"""
from __future__ import annotations

import csv
import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from .aggregate import EvaluationResult, mean
from .config import METRIC_LABELS, SAMPLE_TEMPLATES, method_info


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_markdown(result: EvaluationResult, metric: str) -> str:
    """One metric as a Markdown table: a row per method, a column per relation and the mean (mean ± std over seeds)."""
    columns = result.relations + ["mean"]
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for method, row in result.tables[metric].items():
        cells = [_fmt(row[c].mean) + (f" ± {_fmt(row[c].std)}" if row[c].std is not None else "") for c in columns]
        lines.append(f"| {method_info(method).label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table_csv(result: EvaluationResult, metric: str, path: Path) -> None:
    columns = result.relations + ["mean"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method"] + [name for c in columns for name in (c, f"{c}_std")])
        for method, row in result.tables[metric].items():
            writer.writerow([method] + [_fmt(v, 4) if v is not None else "" for c in columns for v in (row[c].mean, row[c].std)])


def write_per_seed(result: EvaluationResult, path: Path) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in result.records:
        groups.setdefault((r["method"], r["relation"], r["seed"]), []).append(r)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "relation", "seed", *result.metrics, "images"])
        for (method, relation, seed), recs in groups.items():
            values = [mean(r[m] for r in recs) for m in result.metrics]
            writer.writerow([method, relation, seed, *[_fmt(v, 4) if v is not None else "" for v in values], len(recs)])


def write_records(result: EvaluationResult, path: Path) -> None:
    if not result.records:
        path.write_text("")
        return
    keys = list(result.records[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in result.records:
            writer.writerow({k: ("" if r[k] is None else r[k]) for k in keys})


def plot_metrics(result: EvaluationResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = result.relations + ["mean"]
    methods = list(result.tables[result.metrics[0]])
    fig, axes = plt.subplots(len(result.metrics), 1, figsize=(max(8, 1.3 * len(columns) + 2), 3.2 * len(result.metrics)), squeeze=False)
    width = 0.8 / len(methods)
    x = np.arange(len(columns))
    for ax, metric in zip(axes[:, 0], result.metrics):
        for k, method in enumerate(methods):
            row = result.tables[metric][method]
            means = [row[c].mean if row[c].mean is not None else 0.0 for c in columns]
            stds = [row[c].std or 0.0 for c in columns]
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=method_info(method).label)
        if metric in result.chance:
            ax.axhline(result.chance[metric], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x)
        ax.set_xticklabels(columns, rotation=20, ha="right")
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=10)
        ax.set_ylim(0, 1.0 if metric != "entity_score" else None)
    axes[0, 0].legend(fontsize=7, ncol=3, loc="upper left", bbox_to_anchor=(0, 1.35))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_losses(result: EvaluationResult, path: Path) -> bool:
    """Denoising and steering losses per learned method: moving average, mean over its relations and seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves: dict[str, list[np.ndarray]] = {}
    for method in result.config.methods:
        for csv_path in sorted((result.out_dir / "training" / method).glob("*.csv")):
            if not any(csv_path.stem == f"{rel}-s{s}" for rel in result.relations for s in result.config.seeds):
                continue
            rows = list(csv.DictReader(open(csv_path)))
            if rows:
                curves.setdefault(method, []).append(np.array([[float(r["denoise_loss"]), float(r["steer_loss"])] for r in rows]))
    if not curves:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for method, runs in curves.items():
        n = min(len(c) for c in runs)
        mean = np.mean([c[:n] for c in runs], axis=0)
        window = max(1, n // 20)
        kernel = np.ones(window) / window
        steps = np.arange(1, n + 1)[window - 1 :]
        for ax, col in zip(axes, (0, 1)):
            ax.plot(steps, np.convolve(mean[:, col], kernel, mode="valid"), label=f"{method_info(method).label} ({len(runs)} runs)")
    axes[0].set_title(f"denoising loss (moving average of {window} steps)", fontsize=10)
    axes[1].set_title("steering loss (computed for every method; weighted 0 where off)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def sample_sheets(result: EvaluationResult, samples: list[tuple], folder: Path, scale: int = 2) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    by_relation: dict[str, dict[tuple[str, int], Image.Image]] = {}
    for method, relation, t, image in samples:
        by_relation.setdefault(relation, {})[method, t] = image
    label_w = 190
    for relation, images in by_relation.items():
        size = next(iter(images.values())).width * scale
        size = min(size, 128)
        sheet = Image.new("RGB", (label_w + SAMPLE_TEMPLATES * (size + 2), len(result.config.methods) * (size + 2)), "white")
        draw = ImageDraw.Draw(sheet)
        for row, method in enumerate(result.config.methods):
            draw.text((4, row * (size + 2) + size // 2 - 6), method_info(method).label, fill="black")
            for t in range(SAMPLE_TEMPLATES):
                if (method, t) in images:
                    sheet.paste(images[method, t].resize((size, size), Image.NEAREST), (label_w + t * (size + 2), row * (size + 2)))
        sheet.save(folder / f"{relation}.png")


def command_line(num_processes: int = 1) -> str:
    """The command that made this run, as a person would type it."""
    if sys.argv and sys.argv[0].endswith("__main__.py"):
        import torch

        # without a GPU, accelerate's --multi_gpu route (torchrun) is the one that starts several CPU processes
        route = "" if torch.cuda.is_available() else "--multi_gpu "
        launcher = f"accelerate launch {route}--num_processes {num_processes} -m" if num_processes > 1 else "python -m"
        return f"{launcher} reversion_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return " ".join(shlex.quote(a) for a in sys.argv)


def _versions() -> dict[str, str]:
    import accelerate
    import diffusers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def write_report(result: EvaluationResult, samples: list[tuple], started: datetime, num_processes: int, base_model_id: str) -> None:
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    command = command_line(num_processes)
    config = {
        "config": result.config.to_dict(),
        "command": command,
        "argv": sys.argv,
        "num_processes": num_processes,
        "base_model": base_model_id,
        "metrics": list(result.metrics),
        "relations": result.relations,
        "templates": {rel: len({r["template_index"] for r in result.records if r["relation"] == rel}) for rel in result.relations},
        "images_scored": len(result.records),
        "chance": result.chance,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(result.elapsed_s, 1),
        "training": result.training,
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    for metric in result.metrics:
        (out / f"{metric}.md").write_text(f"### {METRIC_LABELS.get(metric, metric)}\n\n{table_markdown(result, metric)}\n")
        write_table_csv(result, metric, out / f"{metric}.csv")
    write_per_seed(result, out / "per_seed.csv")
    write_records(result, out / "records.csv")
    plot_metrics(result, out / "metrics.png")
    has_losses = plot_losses(result, out / "loss_curves.png")
    if samples:
        sample_sheets(result, samples, out / "samples")

    c = result.config
    failed = [t for t in result.training if t.get("status") not in ("finished", "cached")]
    lines = [
        f"# Evaluation ({c.preset})",
        "",
        f"Command: `{command}` on {num_processes} process(es); {len(result.records)} images scored in {result.elapsed_s / 60:.1f} min.",
        "",
        f"- base model: `{base_model_id}`; benchmark: `{c.benchmark_dir}`",
        f"- relations: {', '.join(result.relations)}; seeds: {', '.join(map(str, c.seeds))}",
        f"- {c.templates_per_relation} inference templates per relation x {c.images_per_template} image(s) each, per method and seed",
        f"- learned methods: {c.train_steps} optimizer steps, settings {json.dumps(c.train_settings)} over the paper's defaults",
        f"- sampling: DDIM {c.inference_steps} steps, classifier-free guidance {c.guidance_scale}",
        "- prompts: " + ("'a E_A <R> a E_B' (an article before each entity of the template)"
                         if c.entity_articles else "the templates as written, 'E_A <R> E_B'"),
        "- cells: mean ± sample standard deviation over seeds of the per-seed rate; the mean column averages relations within each seed first",
    ]
    if result.chance:
        lines.append("- chance: " + ", ".join(f"{m} {v:.3f}" for m, v in result.chance.items()))
    if "text_to_image" in c.methods and "appearance_leakage" in result.metrics:
        lines.append(
            "- Text-to-Image writes the relation's own phrase, which the embedded base model was trained on: an upper "
            "reference for relation and entity accuracy, and its leakage is the base rate of the nuisance appearance "
            "when no prompt asks for it (leakage above it came from the exemplars)"
        )
    if failed:
        lines.append(f"- **{len(failed)} training run(s) did not finish**: " + "; ".join(f"{t['job']} {t.get('message', '')}" for t in failed))
    lines.append("")
    for metric in result.metrics:
        lines += [f"## {METRIC_LABELS.get(metric, metric)}", "", table_markdown(result, metric), ""]
    lines += ["![metrics](metrics.png)", ""]
    if has_losses:
        lines += ["![loss curves](loss_curves.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))
