"""``python -m reversion_core evaluate``: the paper's comparison and ablation as one command.

    python -m reversion_core evaluate --preset quick
    accelerate launch --multi_gpu --num_processes 2 -m reversion_core evaluate --preset headline --out results/evaluation/headline

Without a GPU, ``--multi_gpu`` is the route that starts several CPU processes (accelerate's ``--cpu`` starts one).

A preset fills every setting; flags given beside it override single settings. Heavy imports happen in ``run``.
"""
from __future__ import annotations

import argparse
import json

from ..settings import DEFAULT_GUIDANCE_SCALE, DEVICE_CHOICES
from .config import METHODS, SCORER_CHOICES

HELP = "compare text-to-image, Textual Inversion, ReVersion and its ablations on a benchmark"


def _list(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="headline", help="quick (CI), headline (the committed run) or paper (default: headline)")
    p.add_argument("--out", dest="out_dir", help="results folder (default: results/evaluation/<preset>)")
    p.add_argument("--benchmark-dir", dest="benchmark_dir", help="relation folders: exemplars + text.json (default: assets/benchmark)")
    p.add_argument("--relations", type=_list, help="comma-separated relation folder names (default: the preset's; 'all' for every folder)")
    p.add_argument("--methods", type=_list, help="comma-separated: " + ", ".join(METHODS) + " (a learned one with @best, @last or @early: the <R> "
                   "of its best validation step, its last step, or what stopping when flat would have kept, from the same training)")
    p.add_argument("--seeds", type=int, nargs="+", help="training and sampling seeds, e.g. --seeds 0 1 2")
    p.add_argument("--templates", type=int, dest="templates_per_relation", help="inference templates per relation")
    p.add_argument("--images-per-template", type=int, dest="images_per_template")
    p.add_argument("--train-steps", type=int, dest="train_steps", help="optimizer steps of every learned method")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation steps of the learned methods")
    p.add_argument("--train-setting", action="append", default=[], metavar="KEY=VALUE", help="any other inversion setting (JSON value), repeatable")
    p.add_argument("--inference-steps", type=int, dest="inference_steps", help="DDIM steps")
    p.add_argument("--guidance", type=float, dest="guidance_scale", help=f"classifier-free guidance (default {DEFAULT_GUIDANCE_SCALE})")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="images per generation batch")
    p.add_argument("--entity-articles", action=argparse.BooleanOptionalAction, dest="entity_articles",
                   help="write 'a E_A <R> a E_B' instead of the templates' 'E_A <R> E_B' (for base models taught only the first form)")
    p.add_argument("--base-model", dest="base_model", help="hub id, diffusers folder or checkpoint (default: SD 1.5 on a GPU, else the embedded model)")
    p.add_argument("--scorer", choices=SCORER_CHOICES, help="world: the synthetic world's exact scorer; clip: CLIP + relation probe")
    p.add_argument("--clip-model", dest="clip_model", help="CLIPModel folder or hub id for the clip scorer")
    p.add_argument("--relation-probe", dest="relation_probe", help="a saved relation probe (.safetensors)")
    p.add_argument("--probe-images", dest="probe_images", help="labelled images, one subfolder per relation, to train the relation probe")
    p.add_argument("--device", choices=DEVICE_CHOICES)
    p.add_argument("--save-images", action="store_true", default=None, dest="save_images", help="also write every generated image")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")


def config_from_args(args: argparse.Namespace):
    from ..errors import ReVersionError
    from .config import EvaluationConfig, preset_config

    names = ("out_dir", "benchmark_dir", "relations", "methods", "seeds", "templates_per_relation", "images_per_template", "train_steps",
             "inference_steps", "guidance_scale", "batch_size", "base_model", "scorer", "clip_model", "relation_probe", "probe_images",
             "device", "save_images", "entity_articles")
    overrides = {n: getattr(args, n, None) for n in names}
    if overrides["relations"] == ["all"]:
        overrides["relations"] = None
        config = preset_config(args.preset, **overrides)
        config.relations = None
    else:
        config = preset_config(args.preset, **overrides)
    train = dict(config.train_settings)
    if args.grad_accum is not None:
        train["gradient_accumulation_steps"] = args.grad_accum
    for item in args.train_setting:
        key, sep, value = item.partition("=")
        if not sep:
            raise ReVersionError(f"--train-setting {item!r} must look like KEY=VALUE, e.g. lambda_steer=0.02.")
        try:
            train[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            train[key.strip()] = value
    config.train_settings = train
    config.validate()
    return EvaluationConfig.from_dict(config.to_dict())


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.dry_run:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from .report import table_markdown
    from .run import evaluate

    result = evaluate(config, progress=not args.no_progress)
    from accelerate import PartialState

    if PartialState().is_main_process:
        for metric in result.metrics:
            print(f"\n{metric}\n{table_markdown(result, metric)}")
        print(f"\nresults: {result.out_dir}")
    return 0
