"""The evaluation's learned methods: one relation prompt per (method, relation, seed) job, trained on the base
model this process already holds (loaded once, never once per job), or reused from an earlier run of the same
settings, exemplars and base weights. A training that validates also keeps the <R> of its best validation step and
of its last step (``METHOD@best``, ``METHOD@last``) and what an early-stopped run would have kept (``METHOD@early``),
so comparing them costs one set of trainings."""
from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..benchmarks import BenchmarkRelation
from ..validation import FLAT_MARGIN, best_step, is_flat
from .config import EARLY_STOP, KEPT, EvaluationConfig, Job, method_info, method_settings, trained_by
from .processes import one_process_world


def weights_fingerprint(pipe) -> str:
    """A cheap fingerprint of a pipeline's weights (names, shapes and the ends of every tensor): cached results
    from another base model, or from an earlier checkpoint of the same one, are never reused."""
    digest = hashlib.sha1()
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        for name, tensor in part.state_dict().items():
            flat = tensor.detach().reshape(-1).float().cpu()
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(flat[:32].numpy().tobytes() + flat[-32:].numpy().tobytes())
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """Hash of an exemplar folder's files (names and bytes)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def training_base(config: EvaluationConfig, generator, device: str):
    """The loaded base model every learn job of this process shares: the ``generator``'s (a RelationGenerator) when it
    already runs in the jobs' precision and attention (fp32 on the CPU), else the base model loaded once more in them (generation
    runs in fp16 on a GPU; training the shared UNet in another precision would change it for generation)."""
    from ..base_model import load_pipeline
    from ..runtime import torch_dtype

    learned = [trained_by(m) for m in config.methods if method_info(m).overrides is not None]
    if not learned:
        return None
    settings = method_settings(config, learned[0], int(config.seeds[0]))  # methods differ only in their loss switches
    dtype = torch_dtype(settings.mixed_precision)
    if generator.pipeline.unet.dtype == dtype and settings.attention == generator.attention:
        return generator.pipeline
    loaded = load_pipeline(generator.source, device=device, dtype="no", attention=settings.attention)
    if dtype != loaded.unet.dtype:  # what a run that loads the model itself does: fp32 weights cast to its dtype
        for model in (loaded.unet, loaded.vae, loaded.text_encoder):
            model.to(dtype=dtype)
    return loaded


def learn(
    job: Job, relation: BenchmarkRelation, config: EvaluationConfig, base, source: str, base_fingerprint: str,
    log: Callable[[str], None] = print, process: int = 0,
) -> dict[str, Any]:
    """Train one relation prompt on the shared base model ``base`` (see :func:`training_base`), or reuse the one a
    previous run trained with the same settings, exemplars and base weights; write its loss curve (CSV) and what it
    was trained from (JSON) under ``training/``."""
    from ..inversion import FailedEvent, FinishedEvent, Inversion, StepEvent, StoppedEvent

    out = Path(config.out_dir)
    settings = method_settings(config, job.method, job.seed)
    relations_dir = out / "relations" / job.method
    curve = out / "training" / job.method / f"{job.name}.csv"
    made_from = {"settings": settings.to_dict(), "base_weights": base_fingerprint, "exemplars": folder_fingerprint(relation.folder)}
    sidecar = curve.with_suffix(".json")
    kept_dirs = {k: out / "relations" / f"{job.method}@{k}" for k in KEPT} if settings.validate_every else {}
    asked = [m for m in config.methods if "@" in m and trained_by(m) == job.method]  # a cached training needs only these
    outputs = [relations_dir, *(out / "relations" / m for m in asked)]
    if all((d / job.name / "card.json").is_file() for d in outputs) and curve.is_file() and sidecar.is_file():
        previous = json.loads(sidecar.read_text())
        if previous.get("made_from") == json.loads(json.dumps(made_from)) and previous.get("status") == "finished":
            return {**previous["summary"], "status": "cached", "process": process}
    start = time.perf_counter()
    with one_process_world():
        run = Inversion.from_components(
            relation.folder, base, job.name, settings, source=source, relations_dir=relations_dir, overwrite=True,
            checkpoint_dir=out / "checkpoints" / job.method / job.name, device=config.device,
        )
        rows, status, message, end = [], "finished", "", None
        for event in run:
            if isinstance(event, StepEvent):
                rows.append((event.step, event.loss, event.denoise_loss, event.steer_loss))
            elif isinstance(event, FailedEvent):
                status, message = "failed", event.message
            elif isinstance(event, StoppedEvent):
                status, end = "stopped", event
            elif isinstance(event, FinishedEvent):
                status, end = "finished", event
        if kept_dirs and end is not None:
            save_kept(run, end, kept_dirs)
    curve.parent.mkdir(parents=True, exist_ok=True)
    with open(curve, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "denoise_loss", "steer_loss"])
        writer.writerows(rows)
    elapsed = time.perf_counter() - start
    log(f"learned {job.method} {job.name} in {elapsed:.0f}s ({status}{': ' + message if message else ''})")
    summary = {"job": asdict(job), "status": status, "message": message, "elapsed_s": round(elapsed, 1), "process": process}
    if run.validation.curve or run.validation.note:
        summary["validation"] = {"curve": run.validation.curve, "best_step": run.validation.best_step, "note": run.validation.note}
    if rows:
        summary["final_denoise_loss"] = round(sum(r[2] for r in rows[-20:]) / len(rows[-20:]), 5)
    sidecar.write_text(json.dumps({"made_from": made_from, "status": status, "summary": summary}, indent=1, default=str))
    return summary


def stop_step(curve: list[dict], n: int = EARLY_STOP) -> int | None:
    """The validated step at which a run with ``stop_when_flat = n`` would have stopped (the engine's rule, read on
    the curve so far at each point); None when it would have run to the end."""
    for k in range(1, len(curve) + 1):
        if is_flat(curve[:k], n):
            return int(curve[k - 1]["step"])
    return None


def choose_early(validation, last_step: int, last_vector):
    """The <R> a run with keep "best" and ``stop_when_flat = EARLY_STOP`` would have saved, its step, why, and the step
    it would have stopped at (``last_step`` when it would have run to the end)."""
    stop = stop_step(validation.curve)
    if stop is None:
        vector, step, why = validation.choose("best", last_step, last_vector)
        return vector, step, f"It would not have stopped early (no {EARLY_STOP} validations without a gain). " + why, last_step
    best = best_step([p for p in validation.curve if p["step"] <= stop])  # a flat curve has a scored point
    value = next(p["relation"] for p in validation.curve if p["step"] == best)
    why = (f"A run stopping after {EARLY_STOP} validations without a gain of {FLAT_MARGIN:g} would have stopped at step {stop} "
           f"and kept step {best}, the best validation up to there ({value:.2f}).")
    return validation.vector_at(best).to(getattr(last_vector, "device", "cpu")), best, why, stop


def save_kept(run, end, folders: dict[str, Path]) -> None:
    """Save the <R> of the run's best validation step, of its last step and what an early-stopped run would have kept,
    each as a relation in ``folders[keep]`` (card included, its ``validation`` entry saying which step and why)."""
    from ..relation_file import RelationPrompt, save_relation

    for keep, folder in folders.items():
        extra = {}
        if keep == "early":
            vector, step, why, stop = choose_early(run.validation, end.step, run.last_good)
            extra = {"early_stop": EARLY_STOP, "stopped_at": stop}
        else:
            vector, step, why = run.validation.choose(keep, end.step, run.last_good)
        card = json.loads(json.dumps(end.relation.card, default=str))
        card["validation"] = {**card.get("validation", {}), "keep": keep, "kept_step": step, "why": why, **extra}
        save_relation(RelationPrompt(end.relation.name, end.relation.token, vector.detach().float().cpu(), card), folder, overwrite=True)
