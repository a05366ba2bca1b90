"""Validation during training: does the current <R> draw the relation on entity pairs it never saw?

The loss does not say whether a learned token works. Every ``validate_every`` steps (and at the last step of a run
that long) the run generates ``"E_A <R> E_B"`` on a fixed set of validation pairs with its own preview pipeline and
reads the images with the report card's scorer (:mod:`reversion_core.report_card`): relation right, both entities
right and leakage on the embedded world; CLIP's entity score elsewhere, and the relation score of a relation probe
when one is given. Read top to bottom:

1. the split: validation pairs are disjoint from the exemplars' pairs and from the evaluation's inference templates
   (which are never used to choose anything). A world benchmark set records its split in ``validation.json``
   (written by :mod:`reversion_core.world.benchmark`); for any other exemplar set the split is chosen at the run's
   start from the pairs the exemplars and templates leave, the same way for the same set, and recorded in the card;
2. the readers: the world's scorer or CLIP, chosen like the report card's; without CLIP on disk validation is off
   and :attr:`Validation.note` says so in one sentence;
3. the curve's rules: the best step (highest relation score, ties to the earlier step) and flatness (early stop);
4. :class:`Validation`, the run's state: due steps, one validation, which <R> to keep, the checkpoint and the card.

Validation only observes: its images use their own random generators, so the learned <R> is the same with it on.
Slightly over 400 lines because the split, the readers, the curve's rules and the run's state are one idea (what a
validation point means) that the run, the checkpoint, the card and the evaluation must read alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .errors import ReVersionError
from .settings import DEFAULT_GUIDANCE_SCALE, DEFAULT_PLACEHOLDER, InversionSettings

SPLIT_FILE = "validation.json"  # beside text.json and templates.json in a benchmark set
SPLIT_SIZE = 32  # pairs a world set records; a run takes the first validation_pairs of them
FLAT_MARGIN = 0.01  # a validation "gains" when its relation score beats the best before it by at least this
VALIDATION_BATCH = 8  # images denoised together (each keeps its own seed, so batching never changes an image)
_ARTICLES = ("a", "an", "the")


# ----------------------------------------------------------------------------------------------- 1. the split
def _entity(text: str) -> str:
    """``" A grey  Cat"`` -> ``"grey cat"``: lower-case words without articles."""
    return " ".join(w for w in text.lower().replace(",", " ").split() if w not in _ARTICLES)


def caption_pairs(captions: Sequence[str], token: str = DEFAULT_PLACEHOLDER) -> set[tuple[str, str]]:
    """The (entity A, entity B) texts on either side of ``token`` in captions (a trailing ``", ..."`` clause dropped)."""
    pairs = set()
    for line in captions:
        left, sep, right = str(line).replace("{}", token).partition(token)
        if sep and _entity(left) and _entity(right.split(",")[0]):
            pairs.add((_entity(left), _entity(right.split(",")[0])))
    return pairs


def _shown_in(pair: tuple[str, str], shown: set[tuple[str, str]]) -> bool:
    """Does an excluded pair name these entities? ``("cat", "box")`` is in ``("grey cat", "cardboard box")``."""
    a, b = (set(_entity(x).split()) for x in pair)
    return any(a <= set(sa.split()) and b <= set(sb.split()) for sa, sb in shown)


def choose_pairs(pool: Sequence[tuple[str, str]], exclude: set[tuple[str, str]], name: str, count: int) -> list[tuple[str, str]]:
    """``count`` pairs of ``pool`` that no pair of ``exclude`` names, in an order fixed by ``name``: the same set
    gets the same pairs on every machine and every run."""
    exclude = {(_entity(a), _entity(b)) for a, b in exclude}
    candidates = [p for p in dict.fromkeys((str(a), str(b)) for a, b in pool) if not _shown_in(p, exclude)]
    seed = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16)
    order = np.random.default_rng(seed).permutation(len(candidates))[:count]
    return [candidates[i] for i in order]


def world_pool() -> list[tuple[str, str]]:
    """Every ordered pair of plain world entities with different colours (the world never draws two of one colour)."""
    from .world.dataset import entity_pairs

    return [(a.text, b.text) for a, b in entity_pairs()]


def paper_pool() -> list[tuple[str, str]]:
    """Entity pairs of the ReVersion benchmark's lists, all relations' A entities with all relations' B entities."""
    from .benchmarks import paper_relations

    relations = paper_relations().values()
    entities_a = sorted({e for r in relations for e in r["entities_a"]})
    entities_b = sorted({e for r in relations for e in r["entities_b"]})
    return [(a, b) for a in entities_a for b in entities_b if a != b]


def template_pairs(templates: Sequence[str], token: str = DEFAULT_PLACEHOLDER) -> set[tuple[str, str]]:
    """The entity pairs of inference templates ``"E_A <R> E_B"``."""
    return caption_pairs(templates, token)


def read_split(folder: str | os.PathLike) -> list[tuple[str, str]] | None:
    """The validation pairs a benchmark set records in ``validation.json``, or None when it has none."""
    path = Path(folder) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [(str(a), str(b)) for a, b in data["pairs"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ReVersionError(f"{SPLIT_FILE} in {Path(folder)} is not a list of validation pairs; delete it to choose them afresh.") from None


def write_split(folder: str | os.PathLike, pairs: Sequence[tuple[str, str]]) -> Path:
    """Record a set's validation pairs in ``folder/validation.json`` (written whole, then renamed into place)."""
    path = Path(folder) / SPLIT_FILE
    about = ("Validation entity pairs for training (validate_every): none is an exemplar's pair or an inference "
             "template's (templates.json), which are never used to choose a step.")
    lines = ",\n".join(f"  {json.dumps(list(p))}" for p in pairs)
    text = f'{{\n "about": {json.dumps(about)},\n "pairs": [\n{lines}\n ]\n}}\n'
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def choose_split(exemplars, world_name: str | None, count: int) -> tuple[list[tuple[str, str]], str]:
    """The validation pairs of an exemplar set and where they come from: the set's ``validation.json``, else
    ``count`` pairs chosen from the world's entities (a world relation) or the ReVersion benchmark's entity lists,
    leaving out every pair the exemplars show and every inference template's pair."""
    from .benchmarks import paper_relations, paper_templates

    token = exemplars.placeholder_token
    recorded = read_split(exemplars.folder) if exemplars.folder is not None else None
    if recorded is not None:
        if len(recorded) < count:
            raise ReVersionError(
                f"The exemplar set's {SPLIT_FILE} holds {len(recorded)} validation pairs, fewer than the {count} asked for; ask for fewer."
            )
        return recorded[:count], f"the exemplar set's {SPLIT_FILE}"
    captions = [c for e in exemplars.exemplars for c in e.captions]
    templates = list(exemplars.templates or [])
    name = world_name or exemplars.name
    if not templates and name in paper_relations():
        templates = paper_templates(name)  # what the evaluation generates from for this relation
    exclude = caption_pairs(captions, token) | template_pairs(templates, token)
    if world_name:
        from .report_card import world_pairs_shown

        exclude |= world_pairs_shown(exemplars.relation, {"": [c.replace(token, DEFAULT_PLACEHOLDER) for c in captions]})
        pool, what = world_pool(), "the world's entity pairs"
    else:
        pool, what = paper_pool(), "the ReVersion benchmark's entity pairs"
    pairs = choose_pairs(pool, exclude, name, count)
    if len(pairs) < count:
        raise ReVersionError(f"Only {len(pairs)} entity pairs are left for validation once the exemplars' and templates' are left out; ask for fewer.")
    return pairs, f"chosen from {what} that neither the exemplars nor the inference templates use"


# ----------------------------------------------------------------------------------------------- 2. the readers
class Reader(Protocol):
    """Reads validation images: ``kind`` ("world" or "clip") and ``read(images, pairs, seeds, token)``, which returns
    the scored images and the figures ``{"relation", "entities", "leakage"}`` (None where not measured)."""

    kind: str

    def read(self, images, pairs, seeds, token) -> tuple[list, dict[str, float | None]]: ...


class WorldReader:
    """The embedded world's exact scorer, as the report card uses it."""

    kind = "world"

    def __init__(self, world_name: str, nuisance: dict | None = None) -> None:
        self.world_name, self.nuisance = world_name, nuisance

    def read(self, images, pairs, seeds, token):
        from .report_card import read_world, world_figures

        items = read_world(images, pairs, seeds, self.world_name, self.nuisance, token)
        f = world_figures(items, self.nuisance)
        return items, {"relation": f["relation_accuracy"], "entities": f["entity_accuracy"], "leakage": f["appearance_leakage"]}


class ClipReader:
    """CLIP's entity score, and the relation probe's relation score when a probe that knows ``label`` is given."""

    kind = "clip"

    def __init__(self, clip, classifier=None, label: str | None = None) -> None:
        self.clip, self.classifier, self.label = clip, classifier, label

    def read(self, images, pairs, seeds, token):
        from .report_card import ScoredImage, read_clip

        items = [ScoredImage(im, f"{a} {token} {b}", s) for im, (a, b), s in zip(images, pairs, seeds)]
        f = read_clip(items, pairs, self.clip, self.classifier, self.label)
        return items, {"relation": f["relation_score"], "entities": f["entity_score"], "leakage": None}


def choose_reader(pipe, world_name: str | None, nuisance: dict | None, label: str, clip_model: str | None = None,
                  relation_probe: str | os.PathLike | None = None) -> tuple[Reader | None, str]:
    """The report card's choice: the world's scorer for a world relation on a world base model, else CLIP (never
    downloaded) with the relation probe when given. Returns the reader (None: validation is off) and a sentence for
    the status when something is missing."""
    from .clip_metrics import DEFAULT_CLIP_MODEL, ClipFeatures, ClipProbeClassifier, LinearProbe, clip_on_disk
    from .report_card import is_world_model

    if world_name and is_world_model(pipe):
        return WorldReader(world_name, nuisance), ""
    model = str(clip_model or DEFAULT_CLIP_MODEL)
    if not clip_on_disk(model):
        return None, (f"Validation is off: the CLIP model {model!r} that would score its images is not on disk; download it "
                      "where there is network access and pass its folder with --clip-model (in the app, or its "
                      "variable REVERSION_CLIP_MODEL).")
    try:
        clip = ClipFeatures(model, local_files_only=True)
    except ReVersionError as exc:
        return None, f"Validation is off: {exc}"
    if relation_probe is None:
        return ClipReader(clip), ("Validation reads CLIP's entity score only: without a relation probe (--relation-probe) it has "
                                  "no relation score, so it keeps the last step and never stops early.")
    classifier = ClipProbeClassifier(clip, LinearProbe.load(relation_probe))
    if label not in classifier.labels:
        return ClipReader(clip), (f"The relation probe knows {', '.join(classifier.labels)}, not {label!r}, so validation has no "
                                  "relation score: it keeps the last step and never stops early.")
    return ClipReader(clip, classifier, label), ""


# ----------------------------------------------------------------------------------------------- 3. the curve's rules
def best_step(curve: Sequence[dict]) -> int | None:
    """The step with the highest relation score; ties go to the earlier step; None when no point has one."""
    best = None
    for point in curve:
        if point.get("relation") is not None and (best is None or point["relation"] > best["relation"]):
            best = point
    return None if best is None else int(best["step"])


def validations_without_gain(curve: Sequence[dict], margin: float = FLAT_MARGIN) -> int:
    """How many validations since the last one whose relation score beat every earlier one by at least ``margin``
    (the first scored validation is a gain); all of them when none was scored."""
    best, since = None, 0
    for point in curve:
        value = point.get("relation")
        if value is not None and (best is None or value >= best + margin):
            since = 0
        else:
            since += 1
        if value is not None:
            best = value if best is None else max(best, value)
    return since


def is_flat(curve: Sequence[dict], n: int, margin: float = FLAT_MARGIN) -> bool:
    """Early stop: the last ``n`` validations gained nothing (``n`` = 0: never; a curve with no relation score: never)."""
    scored = any(p.get("relation") is not None for p in curve)
    return bool(n) and scored and validations_without_gain(curve, margin) >= n


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def describe_point(point: dict, best: int | None = None) -> str:
    """``"validation at step 300: relation 0.88, entities 0.75, leakage 0.12 (best: step 300)"``, for logs and the CLI."""
    text = f"validation at step {point['step']}: relation {_fmt(point.get('relation'))}, entities {_fmt(point.get('entities'))}"
    if point.get("leakage") is not None:
        text += f", leakage {_fmt(point['leakage'])}"
    return text + (f" (best: step {best})" if best is not None else "")


# ----------------------------------------------------------------------------------------------- 4. the run's validation
class Validation:
    """A run's validation: its pairs, its reader, its curve and the <R> of every validated step (so that a caller,
    the evaluation for one, can take the best and the last <R> of one training: :meth:`vector_at`)."""

    def __init__(self, settings: InversionSettings, reader: Reader | None = None, pairs: Sequence[tuple[str, str]] = (),
                 source: str = "", note: str = "") -> None:
        self.settings, self.reader, self.source, self.note = settings, reader, source, note
        self.pairs = [tuple(p) for p in pairs]
        self.curve: list[dict] = []
        self.vectors: dict[int, Any] = {}  # step -> <R> (fp32, CPU) of every validated step
        self.kept_step: int | None = None
        self.kept_why = ""
        self.stop_why = ""

    @property
    def enabled(self) -> bool:
        return bool(self.settings.validate_every) and self.reader is not None and bool(self.pairs)

    @property
    def best_step(self) -> int | None:
        return best_step(self.curve)

    def scheduled(self, step: int, total: int) -> bool:
        """Every ``validate_every`` steps, and at the last step of a run at least that long (from the settings alone,
        so that every process of a multi-GPU run agrees; only the main one validates)."""
        every = self.settings.validate_every
        return bool(every) and (step % every == 0 or (step == total and total >= every))

    def due(self, step: int, total: int) -> bool:
        """A scheduled step of a validation that can run (a reader and pairs)."""
        return self.enabled and self.scheduled(step, total)

    def vector_at(self, step: int):
        """The <R> of a validated step (fp32, CPU)."""
        return self.vectors[int(step)]

    def validate(self, step: int, pipeline, vector, token: str, resolution: int | None = None,
                 autocast: Callable[[], Any] | None = None):
        """Generate one image per pair with ``pipeline`` (which sees ``vector`` as ``token``), read them and add the
        point to the curve; returns the :class:`~reversion_core.events.ValidationEvent`."""
        import contextlib

        import torch

        from .events import ValidationEvent

        start = time.perf_counter()
        s = self.settings
        prompts = [f"{a} {token} {b}" for a, b in self.pairs]
        seeds = list(range(len(self.pairs)))  # the same noise at every step: the points differ only by <R>
        images = []
        with torch.no_grad(), (autocast() if autocast else contextlib.nullcontext()):
            for k in range(0, len(prompts), VALIDATION_BATCH):
                images += pipeline(
                    prompts[k : k + VALIDATION_BATCH], num_inference_steps=s.validation_steps, guidance_scale=DEFAULT_GUIDANCE_SCALE,
                    generator=[torch.Generator().manual_seed(i) for i in seeds[k : k + VALIDATION_BATCH]],
                    height=resolution, width=resolution,
                ).images
        items, figures = self.reader.read(images, self.pairs, seeds, token)
        seconds = time.perf_counter() - start
        self.curve.append({"step": int(step), **{k: _round(v) for k, v in figures.items()}, "seconds": round(seconds, 2)})
        self.vectors[int(step)] = vector.detach().float().cpu().clone()
        return ValidationEvent(int(step), figures, list(self.pairs), items, [dict(p) for p in self.curve], self.best_step,
                               self.reader.kind, seconds)

    def after_step(self, step: int, total: int, run):
        """After an optimizer step of ``run`` (an Inversion): at a scheduled step, validate its current <R> (where this
        process can) and yield the ValidationEvent; returns whether the run stops early, the main process deciding."""
        from .runtime import main_process_decides

        if not self.scheduled(step, total):
            return False
        if self.due(step, total):
            yield self.validate(step, run.preview_pipeline(), run.current_vector(), run.settings.placeholder_token,
                                run.resolution, run.accelerator.autocast)
        return bool(self.settings.stop_when_flat) and main_process_decides(run.accelerator, self.flat())

    def flat(self) -> bool:
        """Has the curve flattened (``stop_when_flat`` validations without a gain)? Says why in :attr:`stop_why`."""
        n = self.settings.stop_when_flat
        if not self.enabled or not is_flat(self.curve, n):
            return False
        step, best = self.curve[-1]["step"], self.best_step
        value = next(p["relation"] for p in self.curve if p["step"] == best)
        self.stop_why = (
            f"Stopped early at step {step}: the relation score on the validation pairs has not risen by {FLAT_MARGIN:g} or "
            f"more in the last {n} validation{'s' if n > 1 else ''} (best {value:.2f} at step {best})."
        )
        return True

    def choose(self, keep: str, last_step: int, last_vector):
        """The <R> a run keeps with ``keep`` ("best": the best validated step's, "last": the last step's), its step and
        why, in one sentence. Any caller can take both from one training (the evaluation does)."""
        best = self.best_step if keep == "best" else None
        if best is None:
            why = ("The last step's <R> was kept: no validation step has a relation score to choose by." if keep == "best"
                   else "The last step's <R> was kept (keep 'last').")
            return last_vector, last_step, why
        value = next(p["relation"] for p in self.curve if p["step"] == best)
        last = next((p["relation"] for p in self.curve if p["step"] == last_step), None)
        score = f"{value:.2f}" + (", first reached there" if sum(p.get("relation") == value for p in self.curve) > 1 else "")
        if best == last_step:
            why = f"The <R> of the last step, {best}, was kept: it drew the relation on the most validation pairs ({score})."
        else:
            after = f"; the last step, {last_step}, scored {last:.2f}" if last is not None else f"; the last step, {last_step}, was not validated"
            why = f"The <R> of step {best} was kept (keep 'best'): it drew the relation on the most validation pairs ({score}{after})."
        return self.vectors[best].to(getattr(last_vector, "device", "cpu")), best, why

    def kept(self, last_step: int, last_vector):
        """The <R> the run saves (``keep`` of its settings) and its step; records both and why for the card."""
        vector, self.kept_step, self.kept_why = self.choose(self.settings.keep, last_step, last_vector)
        return vector, self.kept_step

    # ------------------------------------------------------------------------------------------- checkpoint and card
    def state(self) -> dict:
        """What a checkpoint carries (plain values and tensors only), so a continued run's curve goes on."""
        return {"pairs": [list(p) for p in self.pairs], "source": self.source, "curve": [dict(p) for p in self.curve],
                "vectors": {str(k): v for k, v in self.vectors.items()}}

    def restore(self, state: dict | None) -> None:
        """Take a checkpoint's curve, vectors and pairs (the pairs the curve was measured on)."""
        if not state:
            return
        if state.get("pairs"):
            self.pairs = [tuple(p) for p in state["pairs"]]
            self.source = state.get("source") or self.source
        self.curve = [dict(p) for p in state.get("curve") or []]
        self.vectors = {int(k): v.float() for k, v in (state.get("vectors") or {}).items()}

    def record(self) -> dict | None:
        """The card's ``validation`` entry: the curve, the pairs, the kept step and why (None when validation was not
        asked for)."""
        s = self.settings
        if not s.validate_every:
            return None
        return {
            "kind": self.reader.kind if self.reader is not None else None, "every": s.validate_every, "steps": s.validation_steps,
            "guidance_scale": DEFAULT_GUIDANCE_SCALE, "pairs": [list(p) for p in self.pairs], "split": self.source,
            "curve": [dict(p) for p in self.curve], "best_step": self.best_step, "keep": s.keep, "kept_step": self.kept_step,
            "why": self.kept_why, "stop_when_flat": s.stop_when_flat, "stopped_early": self.stop_why or None, "note": self.note,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def kept_in_checkpoint(state: dict, settings: InversionSettings):
    """The <R> a run that ended at a checkpoint's step saves: the checkpoint's own, or with ``keep="best"`` its best
    validated one (how a resumed run recognises a save that a crash interrupted)."""
    validation = Validation(settings)
    validation.restore(state.get("validation"))
    return validation.choose(settings.keep, int(state["step"]), state["vector"])[0]


def start_validation(settings: InversionSettings, exemplars, name: str, pipe, reader: Reader | None = None,
                     clip_model: str | None = None, relation_probe: str | os.PathLike | None = None,
                     main: bool = True) -> Validation:
    """A run's validation: its reader (``reader``, else the report card's choice for ``pipe``) and its split. Off
    (``validate_every`` = 0) costs nothing; off for want of CLIP says why in :attr:`Validation.note`. Only the main
    process of a launch (``main``) validates, as only it previews."""
    from .report_card import world_relation_named

    if not settings.validate_every or not main:
        return Validation(settings)
    info = exemplars.relation if isinstance(exemplars.relation, dict) else None
    world_name = world_relation_named(info, name)
    note = ""
    if reader is None:
        nuisance = info.get("nuisance") if info else None
        reader, note = choose_reader(pipe, world_name, nuisance, world_name or name, clip_model, relation_probe)
    if reader is None:
        return Validation(settings, note=note)
    pairs, source = choose_split(exemplars, world_name if reader.kind == "world" else None, settings.validation_pairs)
    return Validation(settings, reader, pairs, source, note)
