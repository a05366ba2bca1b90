"""The app's GPU work as `spaces.GPU` functions, the way ZeroGPU Spaces run it.

Models load once at start, outside the decorated functions (on ZeroGPU the `spaces` package then packs their weights
and moves them onto the GPU it lends a function). Each call asks for a duration computed from the request: images x
denoising steps x measured seconds per image-step for generation; setup + steps x samples per step x measured seconds
per sample for training, plus its previews' and validations' images x steps, with a safety margin. A request longer than the cap is refused with a sentence that says how
much fits. Training is a generator: the engine's events stream out of the GPU function as they happen.

Off ZeroGPU `spaces.GPU` returns the function unchanged, so the same code runs on a CUDA GPU or the CPU.
On ZeroGPU the decorated functions run in a forked worker: their arguments and everything they yield or return
are pickled, and nothing they change in memory comes back. So a stop request travels as a file, and the timings are
measured inside and read outside. The requests themselves are in :mod:`server.forms`.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from reversion_core.errors import ReVersionError
from reversion_core.run_files import keep_only
from reversion_core.settings import InversionSettings
from reversion_core.validation import Validation

from .forms import GenerationRequest, ScoreRequest, TrainingRequest
from .hosting import HostedRuntime

CAP_VARIABLE = "REVERSION_GPU_CAP_S"
ZERO_GPU_CAP_S = 120.0  # seconds one request may hold the GPU on ZeroGPU (a host setting, not the platform's maximum)
MARGIN = 1.25  # ask for this much more than the estimate: ZeroGPU may abort a task that runs past its duration
NEAREST_K = 8  # vocabulary words nearest to <R> that a training shows
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- timings
@dataclass
class StepTimes:
    """Seconds per unit of GPU work that durations are computed from.

    The starting values are deliberately generous guesses for SD 1.5 at 512 px in fp16 on a shared GPU; each finished
    run replaces them with what it measured (then averages), so estimates follow the hardware the app really has.
    """

    generation: float = 0.10  # one denoising step of one image, classifier-free guidance included
    training: float = 0.15  # one exemplar sample through forward and backward, within an optimizer step
    setup: float = 15.0  # a training's preparation: copying the text encoder, encoding exemplars
    measured: set[str] = field(default_factory=set)

    def _update(self, name: str, value: float) -> None:
        if value <= 0 or not math.isfinite(value):
            return
        old = getattr(self, name)
        setattr(self, name, value if name not in self.measured else 0.5 * (old + value))
        self.measured.add(name)

    def observe_generation(self, seconds: float, images: int, steps: int) -> None:
        self._update("generation", seconds / max(1, images * steps))

    def observe_training(self, seconds_per_sample: float | None = None, setup: float | None = None) -> None:
        if seconds_per_sample is not None:
            self._update("training", seconds_per_sample)
        if setup is not None:
            self._update("setup", setup)


def default_cap(runtime: HostedRuntime, env: dict | None = None) -> float | None:
    """The GPU-seconds cap: ``$REVERSION_GPU_CAP_S`` when set, else 120 s on ZeroGPU, else none."""
    env = os.environ if env is None else env
    if env.get(CAP_VARIABLE):
        try:
            return float(env[CAP_VARIABLE])
        except ValueError:
            raise ReVersionError(f"{CAP_VARIABLE} must be a number of seconds, not {env[CAP_VARIABLE]!r}.") from None
    return ZERO_GPU_CAP_S if runtime.hardware == "zerogpu" else None


# ----------------------------------------------------------------------------------------------- what a GPU function yields
@dataclass
class ScoreProgress:
    """Images of a report card generated so far."""

    done: int
    total: int


@dataclass
class TrainingReady:
    """The run is prepared on the device and its first step starts; ``seconds`` the preparation took."""

    seconds: float
    total_steps: int
    start_step: int = 0  # the checkpoint's step when the run goes on from one
    validation_note: str = ""  # why validation is off or reads less (Validation.note), for the status


@dataclass
class NearestWords:
    """The vocabulary words nearest to <R> at ``step`` (computed on the device, where the text encoder is)."""

    step: int
    words: list[tuple[str, float]]


def request_stop(stop_file: str | os.PathLike) -> None:
    """Ask the training that watches ``stop_file`` to stop after its current step (works across processes)."""
    Path(stop_file).parent.mkdir(parents=True, exist_ok=True)
    Path(stop_file).touch()


# ----------------------------------------------------------------------------------------------- the runner
class GpuRunner:
    """Generation and training on the app's one base model, each through a `spaces.GPU` function.

    ``generator`` is a RelationGenerator; its pipeline loads here, at start. ``cap_s`` None means no cap (a
    dedicated GPU or the CPU, where nothing lends the device by the second).
    """

    def __init__(self, generator, runtime: HostedRuntime, cap_s: float | None = None, times: StepTimes | None = None,
                 nearest_every_s: float = 1.0) -> None:
        import spaces  # on ZeroGPU the app imported it first (hosting.import_spaces_first), before CUDA was touched

        self.generator, self.runtime, self.cap_s = generator, runtime, cap_s
        self.times = times or StepTimes()
        self.nearest_every_s = nearest_every_s
        # One pipeline, one caller at a time in this process (its scheduler keeps state). Taken only inside the GPU
        # functions: on ZeroGPU each runs in a worker process of its own, with its own copy of the models.
        self._lock = threading.Lock()
        pipe = generator.pipeline  # models load now, outside the GPU functions
        self._tokenizer = copy.deepcopy(pipe.tokenizer)  # pristine: before any relation is installed
        self._generate_gpu = spaces.GPU(duration=self.generation_seconds)(self._generate_on_gpu)
        self._train_gpu = spaces.GPU(duration=self.training_seconds)(self._train_on_gpu)
        self._score_gpu = spaces.GPU(duration=self.score_seconds)(self._score_on_gpu)

    # ------------------------------------------------------------------------------------------- durations
    def generation_estimate(self, request: GenerationRequest) -> float:
        """Seconds of GPU work ``request`` needs, before the margin."""
        return int(request.num_images) * int(request.steps) * self.times.generation

    def generation_seconds(self, request: GenerationRequest, relation: str | None = None) -> int:
        """The duration the GPU is asked for (estimate x margin, whole seconds)."""
        return max(1, math.ceil(self.generation_estimate(request) * MARGIN))

    def training_estimate(self, settings: InversionSettings, steps: int) -> float:
        """Seconds of GPU work ``steps`` steps of a training with ``settings`` need, before the margin (previews and
        validations included)."""
        s = settings
        work = steps * s.train_batch_size * s.gradient_accumulation_steps * self.times.training
        # the engine previews every preview_every steps and at the last step
        previews = (math.ceil(steps / s.preview_every) if s.preview_every else 0) * s.preview_images * s.preview_steps
        # and validates on its schedule over the last ``steps`` steps (an upper bound: validation may turn out off)
        total, scheduled = s.max_train_steps, Validation(s).scheduled
        validated = sum(scheduled(k, total) for k in range(total - steps + 1, total + 1)) if s.validate_every else 0
        validations = validated * s.validation_pairs * s.validation_steps
        return self.times.setup + work + (previews + validations) * self.times.generation

    def training_seconds(self, request: TrainingRequest) -> int:
        return max(1, math.ceil(self.training_estimate(request.settings, request.steps) * MARGIN))

    def check_generation(self, request: GenerationRequest) -> None:
        """Refuse a generation longer than the cap, saying how many steps fit."""
        if self.cap_s is None or self.generation_seconds(request) <= self.cap_s:
            return
        per_step = int(request.num_images) * self.times.generation * MARGIN
        fit = int(self.cap_s // per_step)
        if fit < 1:
            raise ReVersionError(
                f"Even one step for {int(request.num_images)} images needs more than this app's GPU limit of "
                f"{self.cap_s:g} seconds; ask for fewer images."
            )
        raise ReVersionError(
            f"{int(request.num_images)} images of {int(request.steps)} steps need about {self.generation_seconds(request)} "
            f"GPU seconds, more than this app's limit of {self.cap_s:g}; at most {fit} steps fit for "
            f"{int(request.num_images)} images, so lower the steps or the number of images."
        )

    def steps_that_fit(self, settings: InversionSettings, steps: int) -> int:
        """The most training steps, up to ``steps``, with these settings whose duration stays within the cap."""
        if self.cap_s is None:
            return steps
        low, high = 0, steps
        while low < high:  # the estimate grows with steps (previews in jumps), so bisect
            mid = (low + high + 1) // 2
            if math.ceil(self.training_estimate(settings, mid) * MARGIN) <= self.cap_s:
                low = mid
            else:
                high = mid - 1
        return low

    def check_training(self, request: TrainingRequest) -> None:
        """Refuse a training longer than the cap, saying how many steps fit."""
        if self.cap_s is None:
            return
        settings, steps = request.settings, request.steps
        needed = math.ceil(self.training_estimate(settings, steps) * MARGIN)
        if needed <= self.cap_s:
            return
        fit = self.steps_that_fit(settings, steps)
        if fit < 1:
            raise ReVersionError(
                f"Even one training step with these settings needs more than this app's GPU limit of {self.cap_s:g} "
                "seconds; lower the batch size or the gradient accumulation."
            )
        raise ReVersionError(
            f"{steps} training steps need about {needed} GPU seconds, more than this app's limit of "
            f"{self.cap_s:g}; at most {fit} steps fit, so ask for {fit} steps or fewer."
        )

    # ------------------------------------------------------------------------------------------- generation
    def generate(self, request: GenerationRequest, relation: str | None = None):
        """Generate on the GPU with the relation in folder ``relation`` (None: a free prompt without one); returns a
        GenerationResult, and the time it took updates the estimate for the next request."""
        self.check_generation(request)
        result, seconds = self._generate_gpu(request, relation)
        self.times.observe_generation(seconds, int(request.num_images), int(request.steps))
        return result

    def _generate_on_gpu(self, request: GenerationRequest, relation: str | None = None) -> tuple[Any, float]:
        with self._lock:
            start = time.perf_counter()
            result = self.generator.generate(
                relation, entity_a=request.entity_a, entity_b=request.entity_b,
                prompt=request.prompt if request.free else None, suffix=request.suffix,
                negative_prompt=request.negative_prompt or None, num_images=int(request.num_images),
                seed=int(request.seed), steps=int(request.steps), guidance_scale=float(request.guidance_scale),
            )
            return result, time.perf_counter() - start

    # ------------------------------------------------------------------------------------------- report cards
    def score_estimate(self, request: ScoreRequest) -> float:
        """Seconds of GPU work a report card needs, before the margin: its images x steps x seconds per image-step
        (the relation's phrase doubles the images; an upper bound, since a card without a world relation has none)."""
        return int(request.pairs) * (2 if request.reference else 1) * int(request.steps) * self.times.generation

    def score_seconds(self, request: ScoreRequest) -> int:
        return max(1, math.ceil(self.score_estimate(request) * MARGIN))

    def check_score(self, request: ScoreRequest) -> None:
        """Refuse a report card longer than the cap, saying how many entity pairs fit."""
        if self.cap_s is None or self.score_seconds(request) <= self.cap_s:
            return
        per_pair = self.score_estimate(replace(request, pairs=1)) * MARGIN
        fit = int(self.cap_s // per_pair)
        raise ReVersionError(
            f"A report card on {int(request.pairs)} entity pairs needs about {self.score_seconds(request)} GPU seconds, "
            f"more than this app's limit of {self.cap_s:g}; at most {fit} pairs fit, so score on {fit} pairs or fewer."
            if fit >= 1 else
            f"Even one entity pair needs more than this app's GPU limit of {self.cap_s:g} seconds; no report card fits."
        )

    def score(self, request: ScoreRequest) -> Iterator[Any]:
        """Score a relation on the GPU: ScoreProgress as images are made, then the ReportCard (nothing is saved here:
        on ZeroGPU this runs in a worker process). The time it took updates the generation estimate."""
        self.check_score(request)
        for item in self._score_gpu(request):
            if not isinstance(item, ScoreProgress):
                images = len(item.images) + len(item.reference_images)
                self.times.observe_generation(item.seconds, images, int(request.steps))
            yield item

    def _score_on_gpu(self, request: ScoreRequest) -> Iterator[Any]:
        import queue

        from reversion_core.relation_file import load_relation
        from reversion_core.report_card import score_relation

        ticks: queue.Queue = queue.Queue()
        outcome: dict[str, Any] = {}

        def work() -> None:  # a thread, so progress streams out while the pipeline works (held under the lock)
            try:
                with self._lock:
                    outcome["card"] = score_relation(
                        load_relation(request.relation, None), self.generator, pairs=int(request.pairs),
                        steps=int(request.steps), reference=request.reference, clip_model=request.clip_model,
                        relation_probe=request.relation_probe,
                        progress=lambda done, total: ticks.put(ScoreProgress(done, total)),
                    )
            except BaseException as exc:  # raised again in the caller's thread
                outcome["error"] = exc
            finally:
                ticks.put(None)

        thread = threading.Thread(target=work, daemon=True, name="reversion-report-card")
        thread.start()
        while (tick := ticks.get()) is not None:
            yield tick
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["card"]

    # ------------------------------------------------------------------------------------------- training
    def train(self, request: TrainingRequest) -> Iterator[Any]:
        """Train on the GPU, yielding TrainingReady, the engine's events and NearestWords as they happen.

        A request longer than the cap is refused before the GPU is asked for. The measured preparation time and
        seconds per sample update the estimates for the next request.
        """
        self.check_training(request)
        samples = request.settings.train_batch_size * request.settings.gradient_accumulation_steps
        measure = _StepClock()
        for item in self._train_gpu(request):
            measure.see(item)
            yield item
        self.times.observe_training(
            measure.seconds_per_step() / samples if measure.seconds_per_step() is not None else None, measure.setup,
        )

    def _train_on_gpu(self, request: TrainingRequest) -> Iterator[Any]:
        from reversion_core.inspection import nearest_words
        from reversion_core.inversion import CheckpointEvent, FailedEvent, FinishedEvent, Inversion, StepEvent, StoppedEvent

        start = time.perf_counter()
        settings = request.settings  # built in the runtime's precision and attention (server.forms.TrainForm.settings)
        stop_file = Path(request.stop_file) if request.stop_file else None
        unet = self.generator.pipeline.unet
        try:
            with self._lock:  # generation may be installing a relation into the text encoder being copied
                inversion = Inversion.from_components(
                    request.exemplars, self.generator.pipeline, request.name, settings, tokenizer=self._tokenizer,
                    source=self.generator.source, relations_dir=request.relations_dir, overwrite=request.overwrite,
                    resume_from=request.resume_from, device=self.runtime.device, clip_model=request.clip_model,
                    relation_probe=request.relation_probe,
                )
            pipe = inversion.pipe
            yield TrainingReady(time.perf_counter() - start, settings.max_train_steps, inversion.start_step,
                                inversion.validation.note)
            last_nearest = -math.inf
            for event in inversion:
                if request.runs_dir and isinstance(event, (FinishedEvent, StoppedEvent)) and event.path is not None:
                    kept = _keep_checkpoint(inversion, Path(request.runs_dir) / event.path.name, event.step)
                    if kept is not None:
                        yield CheckpointEvent(event.step, kept)
                yield event
                now = time.perf_counter()
                if isinstance(event, StepEvent) and (now - last_nearest >= self.nearest_every_s or event.step == event.total_steps):
                    last_nearest = now
                    yield NearestWords(event.step, nearest_words(inversion.current_vector().detach(), pipe, NEAREST_K))
                elif isinstance(event, (FinishedEvent, StoppedEvent, FailedEvent)) and event.relation is not None:
                    yield NearestWords(event.step, nearest_words(event.relation.vector, pipe, NEAREST_K))
                if stop_file is not None and stop_file.exists():
                    inversion.stop()
        finally:
            if settings.gradient_checkpointing:  # the UNet is shared with generation: leave it as it was
                unet.disable_gradient_checkpointing()
                unet.eval()
            if stop_file is not None:
                stop_file.unlink(missing_ok=True)


def _keep_checkpoint(inversion, folder: Path, step: int) -> Path | None:
    """Save the run's checkpoint at ``step`` in ``folder``, the only one there (older ones are removed); None when it
    cannot be written (the relation itself is saved; only continuing it later is lost)."""
    try:
        inversion.checkpoint_dir = folder
        latest = inversion.save_checkpoint(step)
        keep_only(folder, latest)
        return latest
    except OSError as exc:
        log.warning("could not keep the checkpoint of %s for continuing (%s)", folder.name, exc)
        return None


class _StepClock:
    """Reads a training's events for its preparation time and its mean seconds per optimizer step (from the
    device-side elapsed times, leaving out steps that included a preview or a validation)."""

    def __init__(self) -> None:
        self.setup: float | None = None
        self._last: float | None = 0.0
        self._total, self._count = 0.0, 0

    def see(self, item: Any) -> None:
        from reversion_core.inversion import PreviewEvent, StepEvent, ValidationEvent

        if isinstance(item, TrainingReady):
            self.setup = item.seconds
        elif isinstance(item, (PreviewEvent, ValidationEvent)):
            self._last = None  # the next step's interval includes the preview or the validation
        elif isinstance(item, StepEvent):
            if self._last is not None:
                self._total += item.elapsed - self._last
                self._count += 1
            self._last = item.elapsed

    def seconds_per_step(self) -> float | None:
        return self._total / self._count if self._count else None
