"""ReVersion Studio's engine: learn a relation prompt <R> from exemplar images and generate with it.

Importing the package is cheap; each name below is imported from its module on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ReVersionError": "errors",
    "InversionSettings": "settings",
    "DEFAULT_GUIDANCE_SCALE": "settings",
    "DEFAULT_INFERENCE_STEPS": "settings",
    "BASIS_PREPOSITIONS": "lexicon",
    "FUNCTION_WORDS": "lexicon",
    "content_words": "lexicon",
    "pos_backend": "lexicon",
    "Exemplar": "exemplars",
    "ExemplarSet": "exemplars",
    "load_exemplars": "exemplars",
    "exemplars_from_uploads": "exemplars",
    "steering_loss": "objectives",
    "RelationFocalSampler": "objectives",
    "denoise_target": "objectives",
    "SD15_HUB_ID": "runtime",
    "DEFAULT_BASE_MODEL": "runtime",
    "Runtime": "runtime",
    "choose_runtime": "runtime",
    "load_pipeline": "base_model",
    "base_model_id": "base_model",
    "same_base_model": "base_model",
    "RelationPrompt": "relation_file",
    "save_relation": "relation_file",
    "load_relation": "relation_file",
    "list_relations": "relation_file",
    "Inversion": "inversion",
    "Validation": "validation",
    "StepEvent": "events",
    "PreviewEvent": "events",
    "ValidationEvent": "events",
    "CheckpointEvent": "events",
    "FinishedEvent": "events",
    "StoppedEvent": "events",
    "FailedEvent": "events",
    "RelationGenerator": "generation",
    "GenerationResult": "generation",
    "build_prompt": "generation",
    "ReportCard": "report_card",
    "score_relation": "report_card",
    "save_report_card": "report_card",
    "describe_relation": "inspection",
    "nearest_words": "inspection",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
