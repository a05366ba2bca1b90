"""Evaluation: the paper's comparison and ablation (sections 6.4-6.5, Table 1) as one repeatable run.

For every relation of a benchmark folder and every seed, each method learns (or writes) the relation and generates
``images_per_template`` images for each of the relation's first ``templates_per_relation`` inference templates:

- ``text_to_image``: the relation's own phrase in place of <R> (the paper's Text-to-Image baseline; on the
  embedded world an upper reference, because the base model was taught those phrases);
- ``textual_inversion``: denoising loss only, uniform timesteps, same token, steps and optimiser;
- ``reversion``: the engine's defaults (steering + relation-focal importance sampling);
- ``no_steering`` and ``no_importance_sampling``: the two ablations;
- ``random_positives``: steering toward random vocabulary words instead of the basis prepositions, which isolates
  the premise that the text encoder's preposition prior is what steering uses;
- ``METHOD@best`` and ``METHOD@last`` (``reversion@best``): the <R> of the best validation step and of the last step
  of that method's one training (validation during training on, see :mod:`reversion_core.validation`), so comparing
  the kept and the last <R> costs no training of its own.

Images are scored by the synthetic world's exact scorer (relation accuracy, entity accuracy, appearance leakage of
the exemplar set's shared nuisance) or, for Stable Diffusion, by CLIP (entity score) and a pluggable relation
classifier (relation score), see :mod:`reversion_core.clip_metrics`.

Scale: run it under ``accelerate launch -m reversion_core evaluate ...``. Training jobs (method x relation x seed)
and generation batches are split across processes; every image's seed comes from its seed, template and image
index, and batches are cut before they are split, so the gathered records equal a one-process run's.
Finished relations and scored batches are cached under the results folder, so an interrupted run resumes.

Modules, imports one way (each only from those above it): ``config`` (methods, metrics, presets, jobs, seeds),
``processes`` (Accelerate: this process's place, a world of one for training), ``scorers``, ``training`` (learned
methods on the one loaded base model), ``batches`` (generation, scoring, cache), ``aggregate`` (tables, the
result), ``report`` (the results folder), ``run`` (``evaluate``), ``cli`` (``python -m reversion_core evaluate``).
"""
from __future__ import annotations

from .aggregate import Cell, EvaluationResult, aggregate  # noqa: F401
from .config import (  # noqa: F401
    CLIP_METRICS, METHODS, METRIC_LABELS, PRESETS, WORLD_METRICS, EvaluationConfig, Job, Method, image_seed, method_info,
    method_settings, preset_config, trained_by,
)
from .run import evaluate  # noqa: F401
