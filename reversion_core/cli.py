"""``python -m reversion_core {train,generate,inspect,world,evaluate,score} ...``: the engine from a shell.

Subcommands come from the table ``COMMANDS``: each entry names a module (or ``module:object``) that provides
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; adding a subcommand is one line there. Heavy
imports happen inside ``run`` so ``--help`` is instant. Errors a person can meet print one sentence to stderr
and exit with status 2. Before a command runs, torch's CPU threads are set by the rule of ``cpu_threads`` (one
operation at a time; ``REVERSION_THREADS`` or ``OMP_NUM_THREADS`` choose otherwise).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from .cpu_threads import CLI_OPERATIONS, use_threads
from .errors import ReVersionError
from .quiet import quiet_libraries
from .settings import (
    ATTENTION_CHOICES, DEFAULT_GUIDANCE_SCALE, DEFAULT_INFERENCE_STEPS, DEVICE_CHOICES, FUSE_CHOICES, KEEP_CHOICES,
    MIXED_PRECISION_CHOICES, STEERING_POSITIVES_CHOICES, InversionSettings,
)

COMMANDS: dict[str, str] = {
    "train": "reversion_core.cli:TRAIN",
    "generate": "reversion_core.cli:GENERATE",
    "inspect": "reversion_core.cli:INSPECT",
    "world": "reversion_core.world.cli",
    "evaluate": "reversion_core.evaluation.cli",
    "score": "reversion_core.report_card_cli",
}


# ----------------------------------------------------------------------------------------------- train
def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "exemplars", nargs="?",
        help="exemplar folder: images + text.json (with --resume, default: the exemplars/ copy beside the checkpoint)",
    )
    p.add_argument("--name", help="relation name (default: the exemplar set's relation or folder name)")
    p.add_argument("--base-model", help="hub id, diffusers folder or .safetensors/.ckpt (default: SD 1.5 on a GPU, else the embedded model)")
    p.add_argument("--relations-dir", default="relations", help="where relation folders go (default: relations)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing relation of the same name")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="default: cuda when present")
    p.add_argument("--checkpoint-dir", help="default: runs/<name> beside the relations folder")
    p.add_argument("--resume", metavar="CHECKPOINT", help="checkpoint file or folder to continue from")
    g = p.add_argument_group("method (defaults are the paper's; on --resume, the checkpoint's)")
    g.add_argument("--placeholder-token", dest="placeholder_token")
    g.add_argument("--initializer-token", dest="initializer_token")
    g.add_argument("--steps", type=int, dest="max_train_steps")
    g.add_argument("--batch-size", type=int, dest="train_batch_size")
    g.add_argument("--grad-accum", type=int, dest="gradient_accumulation_steps")
    g.add_argument("--lr", type=float, dest="learning_rate", help="base learning rate (scaled by batch x accumulation)")
    g.add_argument("--no-scale-lr", action="store_false", dest="scale_lr", default=None)
    g.add_argument("--num-positives", type=int, dest="num_positives")
    g.add_argument(
        "--steering-positives", choices=STEERING_POSITIVES_CHOICES, dest="steering_positives",
        help="the basis prepositions (the paper), or random vocabulary words (a control for the preposition prior)",
    )
    g.add_argument("--temperature", type=float)
    g.add_argument("--lambda-steer", type=float, dest="lambda_steer")
    g.add_argument("--lambda-denoise", type=float, dest="lambda_denoise")
    g.add_argument("--uniform-timesteps", action="store_false", dest="importance_sampling", default=None)
    g.add_argument("--alpha", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION_CHOICES, dest="mixed_precision")
    g.add_argument("--attention", choices=ATTENTION_CHOICES)
    g.add_argument("--gradient-checkpointing", action="store_true", dest="gradient_checkpointing", default=None)
    g.add_argument(
        "--fuse-micro-batches", choices=FUSE_CHOICES, dest="fuse_micro_batches",
        help="run a step's micro-batches as one batch (auto: on CPU yes, on a GPU no)",
    )
    g.add_argument("--resolution", type=int)
    g.add_argument("--preview-every", type=int, dest="preview_every")
    g.add_argument("--validation-prompt", dest="validation_prompt")
    g.add_argument("--checkpoint-every", type=int, dest="checkpoint_every")
    g.add_argument("--reference", action="store_true", default=None, help="the official script's slower loop (benchmarks)")
    d = InversionSettings
    v = p.add_argument_group(
        f"validation: the quality curve (default: every {d.validate_every} steps, {d.validation_pairs} entity pairs, "
        f"{d.validation_steps} DDIM steps; on --resume, the checkpoint's)"
    )
    v.add_argument("--validate-every", type=int, metavar="K", dest="validate_every", help="score <R> on new entity pairs every K steps (0: off)")
    v.add_argument("--validation-pairs", type=int, metavar="N", dest="validation_pairs", help="entity pairs, one image each")
    v.add_argument("--validation-steps", type=int, metavar="S", dest="validation_steps", help="DDIM steps of a validation image")
    v.add_argument("--keep", choices=KEEP_CHOICES, help="save the last step's <R> (default) or the best validation step's")
    v.add_argument("--stop-when-flat", type=int, metavar="N", dest="stop_when_flat",
                   help="end the run after N validations without a gain in the relation score (0: never)")
    v.add_argument("--clip-model", dest="clip_model", help="CLIPModel folder or cached hub id that scores validation off the embedded world")
    v.add_argument("--relation-probe", dest="relation_probe", help="a saved relation probe (.safetensors): the relation score off the embedded world")
    card = p.add_argument_group("report card")
    card.add_argument("--score", action="store_true", help="score the new relation on held-out entity pairs once it is saved")
    card.add_argument("--score-pairs", type=int, metavar="N", help="entity pairs for --score (default 16; giving it turns --score on)")


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from tqdm import tqdm

    from .inversion import FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent, ValidationEvent
    from .reference_loop import inversion_class
    from .report_card_cli import print_validation
    from .run_files import EXEMPLARS_DIR, kept_exemplars, read_checkpoint, save_exemplars
    from .validation import describe_point

    exemplars = args.exemplars
    if not exemplars and args.resume:
        exemplars = kept_exemplars(args.resume)
    if not exemplars:
        raise ReVersionError("Give the exemplar folder to learn from.")
    score_pairs = _score_pairs(args)  # checked before the training, which may take long
    checkpoint = read_checkpoint(args.resume) if args.resume else None  # read once: its settings, then the run's state
    # the flags given, over the checkpoint's settings (on --resume) or the paper's defaults; built (and checked) once
    overrides = {f.name: getattr(args, f.name) for f in fields(InversionSettings) if getattr(args, f.name, None) is not None}
    settings = InversionSettings.from_dict({**(checkpoint["settings"] if checkpoint else {}), **overrides})
    options = dict(
        base_model=args.base_model, relations_dir=args.relations_dir, overwrite=args.overwrite,
        checkpoint_dir=args.checkpoint_dir, device=args.device, clip_model=args.clip_model, relation_probe=args.relation_probe,
    )
    loop = inversion_class(settings)  # --reference: the official script's slower loop
    if checkpoint:
        run = loop.from_checkpoint(checkpoint, exemplars, args.name, settings, **options)
    else:
        run = loop(exemplars, args.name, settings, **options)
    main = run.accelerator.is_main_process
    kept = run.checkpoint_dir / EXEMPLARS_DIR
    if settings.checkpoint_every and main and not kept.is_dir():  # so that --resume needs only the checkpoint
        save_exemplars(run.exemplars, kept)
    if main:
        lr = settings.effective_learning_rate(run.accelerator.num_processes)
        print(
            f"Learning {settings.placeholder_token} for {run.name!r} from {len(run.exemplars)} images on {run.device} "
            f"(base model {run.base_model_id}, lr {lr:g}, negatives by {run.pos_backend}: {', '.join(run.negative_words) or 'none'}"
            + (f"; positives drawn at random: {', '.join(run.positive_words)}" if settings.steering_positives != "prepositions" else "")
            + ")",
            file=sys.stderr,
        )
        if run.validation.note:
            print(run.validation.note, file=sys.stderr)
    bar = tqdm(total=settings.max_train_steps, initial=run.start_step, disable=not main, unit="step", dynamic_ncols=True)
    code = 0
    for event in run:
        if isinstance(event, StepEvent):
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.4f}", denoise=f"{event.denoise_loss:.4f}", steer=f"{event.steer_loss:.3f}")
        elif isinstance(event, PreviewEvent) and main and run.checkpoint_dir:
            run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(event.images):
                image.save(run.checkpoint_dir / f"preview-{event.step:06d}-{i}.png")
        elif isinstance(event, ValidationEvent) and main:
            bar.write(describe_point(event.curve[-1], event.best_step))
            _save_validation_grid(run.checkpoint_dir, event)
        elif isinstance(event, (FinishedEvent, StoppedEvent)):
            bar.close()
            if main:
                what = "Finished" if isinstance(event, FinishedEvent) else "Stopped"
                print(f"{what} at step {event.step} in {event.elapsed:.1f}s; relation saved to {event.path}")
                if event.message:
                    print(event.message)
                print_validation(event.relation.card.get("validation"))  # the curve, the kept step and why
                if score_pairs and isinstance(event, FinishedEvent) and event.path is not None:
                    _score_new_relation(args, event.path, score_pairs)
                elif event.path is not None:
                    print(f"Score it on new entity pairs: {score_command(event.path, args.base_model)}")
        elif isinstance(event, FailedEvent):
            bar.close()
            print(f"error: {event.message}", file=sys.stderr)
            code = 2
    return code


def _save_validation_grid(folder: Path, event) -> None:
    """The validation images framed like the report card's, beside the run's checkpoints and previews."""
    from .report_card import marked_grid

    folder.mkdir(parents=True, exist_ok=True)
    marked_grid(event.images, cell=64).save(folder / f"validation-{event.step:06d}.png")


def _score_pairs(args: argparse.Namespace) -> int | None:
    """The pairs ``--score`` asks for (None: no scoring), refused in one sentence when out of range."""
    from .report_card import DEFAULT_PAIRS, MAX_PAIRS

    if args.score_pairs is None:
        return DEFAULT_PAIRS if args.score else None
    if not 1 <= args.score_pairs <= MAX_PAIRS:
        raise ReVersionError(f"--score-pairs must be from 1 to {MAX_PAIRS}, not {args.score_pairs}.")
    return args.score_pairs


def score_command(path: str | os.PathLike, base_model: str | None = None) -> str:
    """The shell command that scores the relation saved at ``path`` (on ``base_model`` when one was named)."""
    import shlex

    command = f"python -m reversion_core score {shlex.quote(str(path))}"
    return command + (f" --base-model {shlex.quote(str(base_model))}" if base_model else "")


def _score_new_relation(args: argparse.Namespace, path: Path, pairs: int) -> None:
    """Score a just-saved relation with a fresh pipeline (the training's text encoder carries its hook) and print it."""
    from .generation import RelationGenerator
    from .relation_file import load_relation
    from .report_card_cli import score_and_print

    try:
        generator = RelationGenerator(args.base_model, args.device, relations_dir=args.relations_dir)
        score_and_print(load_relation(path, None), generator, pairs=pairs, show_validation=False)  # train printed it
    except ReVersionError as exc:
        raise ReVersionError(f"{exc} The relation is saved; score it later with: {score_command(path, args.base_model)}") from None


TRAIN = SimpleNamespace(HELP="learn a relation prompt <R> from exemplar images", add_arguments=_train_arguments, run=_train)


# ----------------------------------------------------------------------------------------------- generate
def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relation", action="append", default=[], help="relation name, folder or file (repeatable; <R> is the first)")
    p.add_argument("--entities", nargs=2, metavar=("A", "B"), help="generate 'A <R> B'")
    p.add_argument("--prompt", help="free text containing <R>")
    p.add_argument("--suffix", default="", help="style or background appended to the prompt")
    p.add_argument("--negative-prompt")
    p.add_argument("--num-images", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--steps", type=int, default=None, help=f"DDIM steps (default {DEFAULT_INFERENCE_STEPS})")
    p.add_argument("--guidance", type=float, default=None, help=f"classifier-free guidance (default {DEFAULT_GUIDANCE_SCALE})")
    p.add_argument("--out", default="outputs", help="folder for the PNG files (default: outputs)")
    p.add_argument("--base-model")
    p.add_argument("--relations-dir", default="relations")
    p.add_argument("--device", choices=DEVICE_CHOICES)
    p.add_argument("--attention", choices=ATTENTION_CHOICES, help="default: xformers on a CUDA GPU where it works, else sdpa")
    p.add_argument("--no-progress", action="store_true")


def _generate(args: argparse.Namespace) -> int:
    from .generation import RelationGenerator, check_generation
    from .settings import check_seed

    entity_a, entity_b = args.entities or (None, None)
    steps = args.steps if args.steps is not None else DEFAULT_INFERENCE_STEPS
    guidance = args.guidance if args.guidance is not None else DEFAULT_GUIDANCE_SCALE
    check_generation(steps, guidance)
    check_seed(args.seed, "--seed")
    if args.num_images < 1:
        raise ReVersionError(f"--num-images must be at least 1, not {args.num_images}.")
    out = writable_folder(args.out, "--out")  # before any image is made
    generator = RelationGenerator(args.base_model, args.device, attention=args.attention, relations_dir=args.relations_dir)
    result = generator.generate(
        args.relation or None, entity_a, entity_b, args.prompt, suffix=args.suffix, negative_prompt=args.negative_prompt,
        num_images=args.num_images, seed=args.seed, steps=steps, guidance_scale=guidance, progress=not args.no_progress,
    )
    for note in result.notes:
        print(note, file=sys.stderr)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", result.prompt).strip("_")[:60]
    for image, seed in zip(result.images, result.seeds):
        path = out / f"{slug}-seed{seed}.png"
        try:
            image.save(path)
        except OSError as exc:
            raise ReVersionError(f"Could not write {path} ({exc.strerror or type(exc).__name__}).") from None
        print(path)
    return 0


def writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if needed and check a file can be written there; else one sentence naming the option."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "it is a file" if folder.is_file() else exc.strerror or type(exc).__name__
        raise ReVersionError(f"{what} {folder} cannot be used as a folder ({reason}); choose another.") from None
    return folder


GENERATE = SimpleNamespace(HELP="generate images with one or more relation prompts", add_arguments=_generate_arguments, run=_generate)


# ----------------------------------------------------------------------------------------------- inspect
def _inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("relation", help="relation name, folder, or a .safetensors/.bin file")
    p.add_argument("--relations-dir", default="relations")
    p.add_argument("--base-model", help="for the nearest words (default: the card's base model when on disk, else the embedded model)")
    p.add_argument("--no-neighbours", action="store_true", help="skip loading the base model")
    p.add_argument("-k", type=int, default=10, help="how many nearest words")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _inspect(args: argparse.Namespace) -> int:
    from .inspection import check_k, describe_relation
    from .relation_file import load_relation

    check_k(args.k)
    relation = load_relation(args.relation, args.relations_dir)
    pipeline = None
    if not args.no_neighbours:
        from .base_model import load_pipeline

        source = args.base_model or relation.card.get("base_model_source")
        if source and not Path(source).exists() and args.base_model is None:
            source = None  # the card's model is not here; fall back to the default
        try:
            pipeline = load_pipeline(source, device="cpu")
        except ReVersionError as exc:
            print(f"note: no nearest words ({exc})", file=sys.stderr)
    summary = describe_relation(relation, pipeline=pipeline, k=args.k)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"relation    {summary['name']}  ({summary['path'] or 'imported'})")
    print(f"token       {summary['token']}")
    print(f"vector      size {summary['vector_size']}, norm {summary['vector_norm']}")
    print(f"base model  {summary['base_model'] or 'unknown'}")
    card = summary["card"]
    for key in ("steps", "status", "created_at", "final_losses", "pos_backend"):
        if key in card:
            print(f"{key:<11} {card[key]}")
    if card.get("exemplar_captions"):
        print("captions")
        for image, captions in card["exemplar_captions"].items():
            print(f"  {image}: {' | '.join(captions)}")
    if summary["nearest"]:
        print("nearest     " + ", ".join(f"{w} ({c:.2f})" for w, c in summary["nearest"]))
    return 0


INSPECT = SimpleNamespace(HELP="show a relation's token, size, base model, card and nearest words", add_arguments=_inspect_arguments, run=_inspect)


# ----------------------------------------------------------------------------------------------- dispatch
def _load_command(spec: str):
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reversion_core", description="ReVersion Studio: learn and use relation prompts.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, spec in COMMANDS.items():
        command = _load_command(spec)
        p = sub.add_parser(name, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn every ReVersionError into one line on stderr with exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        quiet_libraries(hide_warnings=True)
        use_threads(CLI_OPERATIONS, getattr(args, "device", "cpu"))  # a command without --device runs on the CPU
        return int(args._run(args) or 0)
    except ReVersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: one line unless REVERSION_DEBUG asks for the traceback
        if os.environ.get("REVERSION_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set REVERSION_DEBUG=1 for details).", file=sys.stderr)
        return 1
