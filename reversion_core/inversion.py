"""Relation inversion: learn one token embedding <R> from a few exemplar images (ReVersion, sections 4.2-4.3).

Read top to bottom: how a run is built (``Inversion.__init__`` names each step; the work done once is in
:mod:`reversion_core.precompute`), ``Inversion.run`` (the loop), then how a run ends and is saved. Only the <R> row
changes. The embedding table stays frozen; a separate parameter (:class:`~reversion_core.relation_vector.RelationVector`)
is spliced into the token embeddings wherever <R> appears and written into the table when the run ends, so every
other row and every weight of the UNet, VAE and text encoder stay bit-identical.

Three ways to build a run: ``Inversion(exemplars, ..., base_model=source)`` loads the base model (or takes over a
loaded pipeline: its tokenizer and text encoder gain the placeholder); ``Inversion.from_components`` shares an
already loaded UNet, VAE and scheduler and trains on copies of the tokenizer and text encoder, so one base model in
memory serves generation and every training; ``Inversion.from_checkpoint`` continues a run.

The official script's slower loop (VAE encode every step, fp32, AdamW over the whole table with the other rows
restored after each step), for benchmarks and the test that holds this loop to it, is a small subclass in
:mod:`reversion_core.reference_loop`, which overrides the methods marked "(the reference loop overrides this)".

Over 400 lines: one class whose build steps, loop and end share the run's state, read in one sitting; the parts
that need none of it live beside it (relation_vector, events, precompute, previews, run_files, validation).
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from .base_model import base_model_id, load_pipeline, set_attention, shared_pipeline
from .errors import ReVersionError
from .events import CheckpointEvent, Event, FailedEvent, FinishedEvent, PreviewEvent, StepEvent, StoppedEvent, ValidationEvent  # noqa: F401 (interface)
from .exemplars import ExemplarSet, load_exemplars
from .objectives import RelationFocalSampler, denoise_loss, denoise_target, steering_loss
from .precompute import Precomputed, add_placeholder_token, precompute, with_token
from .previews import preview_images, preview_pipeline, preview_prompt, strip
from .relation_file import RelationPrompt, check_name
from .relation_vector import RelationVector
from .run_files import check_resumable, checkpoint_state, plan_run, read_checkpoint, save_run_relation, write_checkpoint
from .runtime import check_loaded_dtype, check_precision, make_accelerator, pick_device, resolve_source, torch_dtype
from .settings import InversionSettings
from .validation import Validation, start_validation


def _run_settings(settings: InversionSettings | None, checkpoint: dict | None, reference: bool) -> InversionSettings:
    """The given settings, else a checkpoint's, else the paper's defaults (settings validate themselves when built).
    ``reference``: whether the class building the run is the official script's loop, which the settings must ask for."""
    if settings is None:
        settings = InversionSettings.from_dict(checkpoint["settings"]) if checkpoint else InversionSettings()
    if settings.reference != reference:
        raise ReVersionError(
            "Settings with reference=True run in the official script's loop, reversion_core.reference_loop.ReferenceInversion; "
            "every other run is an Inversion." if settings.reference else "A ReferenceInversion needs settings with reference=True."
        )
    return settings


# ----------------------------------------------------------------------------------------------- building a run
class Inversion:
    """One relation-inversion run. Iterate it (or ``run()``) for events; call ``stop()`` from anywhere to end early.

    ``base_model`` is a source for :func:`load_pipeline` or an already loaded ``StableDiffusionPipeline`` that the
    run takes over (its tokenizer and text encoder gain the placeholder token; to keep using a pipeline elsewhere,
    use :meth:`from_components`). ``resume_from`` is a checkpoint file or folder, or a state read by
    :func:`read_checkpoint`. Bad inputs raise ReVersionError here, before any step. ``validation_reader``, ``clip_model``
    and ``relation_probe`` choose how ``run.validation`` (:mod:`reversion_core.validation`) reads its images.
    """

    reference = False  # the official script's loop (reversion_core.reference_loop) says True

    def __init__(
        self,
        exemplars: ExemplarSet | str | os.PathLike,
        name: str | None = None,
        settings: InversionSettings | None = None,
        base_model=None,
        relations_dir: str | os.PathLike = "relations",
        overwrite: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | dict | None = None,
        device: str | None = None,
        validation_reader=None,
        clip_model: str | None = None,
        relation_probe: str | os.PathLike | None = None,
    ) -> None:
        checkpoint = read_checkpoint(resume_from) if isinstance(resume_from, (str, os.PathLike)) else resume_from
        self.settings = _run_settings(settings, checkpoint, self.reference)
        self.shares_models = False  # set by from_components: the UNet and VAE belong to someone else too
        self._plan(exemplars, name, checkpoint, relations_dir, overwrite, checkpoint_dir)
        self._start_accelerator(device)
        init_id = self._take_base_model(base_model)
        self.data: Precomputed = precompute(
            self.exemplars, self.settings, self.tokenizer, self.text_encoder, self.vae, self.unet, self.placeholder_id,
            self.device, self.weight_dtype,
        )
        self._make_trainable(init_id)
        self.validation: Validation = start_validation(self.settings, self.exemplars, self.name, self.pipe, validation_reader,
                                                       clip_model, relation_probe, main=self.accelerator.is_main_process)
        if checkpoint:
            self._restore(checkpoint)
        self.last_good = self.current_vector().detach().clone()
        self.last_preview: list[Image.Image] | None = None
        self.preview_step: int | None = None  # the step whose <R> the last preview shows

    @classmethod
    def from_components(
        cls, exemplars: ExemplarSet | str | os.PathLike, pipeline, name: str | None = None, settings: InversionSettings | None = None,
        tokenizer=None, source: str | None = None, **options,
    ) -> "Inversion":
        """A run on an already loaded base model: it shares ``pipeline``'s UNet, VAE and scheduler (frozen, left
        bit-identical) and trains on its own copies of the tokenizer and text encoder (see :func:`shared_pipeline`).

        The shared models must already be in the run's precision (fp32 unless ``mixed_precision`` says otherwise):
        casting them would change them for their other users. ``options`` are ``__init__``'s.
        """
        resume_from = options.pop("resume_from", None)
        checkpoint = read_checkpoint(resume_from) if isinstance(resume_from, (str, os.PathLike)) else resume_from
        settings = _run_settings(settings, checkpoint, cls.reference)
        check_loaded_dtype(pipeline.unet.dtype, torch_dtype(cls.precision(settings)))
        run = cls(exemplars, name, settings, base_model=shared_pipeline(pipeline, tokenizer, source), resume_from=checkpoint, **options)
        run.shares_models = True
        return run

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | dict, exemplars: ExemplarSet | str | os.PathLike, name: str | None = None,
        settings: InversionSettings | None = None, **options,
    ) -> "Inversion":
        """Continue a run from a checkpoint file, a folder (its latest checkpoint) or a state :func:`read_checkpoint`
        returned; the checkpoint's settings and name unless others are given. ``options`` are ``__init__``'s."""
        return cls(exemplars, name, settings, resume_from=checkpoint, **options)

    @classmethod
    def precision(cls, settings: InversionSettings) -> str:
        """The precision the frozen models run in (<R> itself always stays fp32): the settings' mixed precision
        (the reference loop overrides this)."""
        return settings.mixed_precision

    # ------------------------------------------------------------------------------------------- the build steps
    def _plan(self, exemplars, name, checkpoint, relations_dir, overwrite, checkpoint_dir) -> None:
        """Exemplars, name and folders, checked before any model is loaded."""
        s = self.settings
        if not isinstance(exemplars, ExemplarSet):
            exemplars = load_exemplars(exemplars, s.placeholder_token)
        self.exemplars = with_token(exemplars, s.placeholder_token)
        self.name = check_name(name or (checkpoint["name"] if checkpoint else self.exemplars.name))
        self.relations_dir, self.overwrite, self.started_at = Path(relations_dir), overwrite, time.time()
        self.checkpoint_dir, self._saved_path = plan_run(self.relations_dir, self.name, checkpoint, s, overwrite, checkpoint_dir)
        self._stop_requested = False

    def _start_accelerator(self, device: str | None) -> None:
        """Accelerate owns device placement, mixed precision and (under `accelerate launch`) gradient sync; the device
        and what it can run follow the runtime's rule (:mod:`reversion_core.runtime`)."""
        mixed_precision = self.precision(self.settings)
        on_gpu = pick_device(device).type == "cuda"
        self.accelerator = make_accelerator(check_precision(mixed_precision, on_gpu), cpu=not on_gpu)
        self.device = self.accelerator.device
        self.weight_dtype = torch_dtype(mixed_precision)

    def _take_base_model(self, base_model) -> int:
        """Load (or take) the frozen components, add the placeholder token, put them on the device in the run's dtype.
        Returns the initializer's token id."""
        s = self.settings
        if base_model is None or isinstance(base_model, (str, os.PathLike)):
            self.base_model_source = resolve_source(base_model, self.device)
            pipe = load_pipeline(self.base_model_source, device=self.device, dtype="no", attention=s.attention)
        else:
            pipe, self.base_model_source = base_model, str(getattr(base_model, "name_or_path", "") or "pipeline")
            set_attention(pipe, s.attention)
        self.pipe = pipe
        self.base_model_id = base_model_id(pipe, self.base_model_source)
        self.tokenizer, self.text_encoder, self.unet, self.vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        for model in (self.unet, self.vae, self.text_encoder):
            model.requires_grad_(False)
            model.eval()
        self.placeholder_id, init_id = add_placeholder_token(self.tokenizer, self.text_encoder, s)
        for model in (self.unet, self.vae, self.text_encoder):
            model.to(self.device)
            if self.weight_dtype != torch.float32:  # casting to fp32 again would only log a warning
                model.to(dtype=self.weight_dtype)
        if s.gradient_checkpointing:  # checkpointing is only active in train mode; these models have no dropout
            self.unet.enable_gradient_checkpointing()
            self.text_encoder.gradient_checkpointing_enable()
            self.unet.train()
            self.text_encoder.train()
        return init_id

    def _make_trainable(self, init_id: int) -> None:
        """<R> and its AdamW, the timestep sampler and the run's one random generator."""
        s, acc = self.settings, self.accelerator
        self._make_parameter(init_id)
        self.fused = self._fuses()
        self.sampler = RelationFocalSampler(self.noise_scheduler.config.num_train_timesteps, s.alpha if s.importance_sampling else 0.0)
        self.generator = torch.Generator().manual_seed(s.seed + acc.process_index)  # all randomness of the run
        self.start_step = 0
        self.last_losses: dict[str, float] = {}

    def _make_parameter(self, init_id: int) -> None:
        """<R> as one parameter started at the initializer's row, spliced in by a hook on the embedding table, and
        its AdamW (the reference loop overrides this)."""
        table = self.text_encoder.get_input_embeddings()
        self.relation = RelationVector(table.weight[init_id].detach().float(), self.placeholder_id).to(self.device)
        self.relation_ddp, self.optimizer = self.accelerator.prepare(self.relation, self._adamw([self.relation.vector]))
        self._hook = self.relation.splice_into(table, self.relation_ddp)

    def _adamw(self, params: list[torch.Tensor]) -> torch.optim.AdamW:
        s = self.settings
        return torch.optim.AdamW(params, lr=s.effective_learning_rate(self.accelerator.num_processes),
                                 betas=(s.adam_beta1, s.adam_beta2), weight_decay=s.adam_weight_decay, eps=s.adam_epsilon)

    def _fuses(self) -> bool:
        """Whether a step's micro-batches go through the models together (see InversionSettings.fuse_micro_batches;
        the reference loop overrides this: it keeps the official script's one-by-one accumulation)."""
        s = self.settings
        return s.gradient_accumulation_steps > 1 and (
            s.fuse_micro_batches == "on" or (s.fuse_micro_batches == "auto" and self.device.type == "cpu")
        )

    # ------------------------------------------------------------------------------------------- what a run shows
    @property
    def resolution(self) -> int:
        return self.data.resolution

    @property
    def pos_backend(self) -> str:
        """Which part-of-speech tagger picked the negative words."""
        return self.data.pos_backend

    @property
    def negative_words(self) -> list[str]:
        return self.data.negative_words

    @property
    def positive_words(self) -> list[str]:
        """The steering positives: the basis prepositions, or the random words of ``steering_positives="random_words"``."""
        return self.data.positive_words

    @property
    def positive_embeds(self) -> torch.Tensor:
        return self.data.positive_embeds

    def current_vector(self) -> torch.Tensor:
        """The <R> being learned (the reference loop overrides this)."""
        return self.relation.vector

    # ------------------------------------------------------------------------------------------- control
    def stop(self) -> None:
        """Ask the run to stop after the current step; it then saves the latest <R> and yields StoppedEvent."""
        self._stop_requested = True

    def __iter__(self) -> Iterator[Event]:
        return self.run()

    # ------------------------------------------------------------------------------------------- the loop
    def run(self) -> Iterator[Event]:
        """Optimise <R>, yielding events; always ends with FinishedEvent, StoppedEvent or FailedEvent."""
        s, acc = self.settings, self.accelerator
        total, accum = s.max_train_steps, s.gradient_accumulation_steps
        start, step = time.perf_counter(), self.start_step
        try:
            for step in range(self.start_step + 1, total + 1):
                if self._stop_requested:
                    yield self._end(StoppedEvent, step - 1, start)
                    return
                sums = {"loss": 0.0, "denoise": 0.0, "steer": 0.0}
                # The step's micro-batches: drawn first (same draws either way), then through the models as one
                # group when fused, else one by one; each group's gradient is weighted by its share of the step.
                draws = [self._draw() for _ in range(accum)]
                groups = [draws] if self.fused else [[d] for d in draws]
                for k, group in enumerate(groups):
                    share = len(group) / accum
                    # Sync gradients across GPUs only on the last group (no-op on one process).
                    sync = contextlib.nullcontext() if k == len(groups) - 1 or self.relation_ddp is None else acc.no_sync(self.relation_ddp)
                    with sync:
                        l_denoise, l_steer = self._losses(group)
                        loss = s.lambda_denoise * l_denoise + s.lambda_steer * l_steer
                        if not torch.isfinite(loss):
                            yield self._fail(step, start, "the loss")
                            return
                        acc.backward(loss * share)
                    sums["loss"] += loss.item() * share
                    sums["denoise"] += l_denoise.item() * share
                    sums["steer"] += l_steer.item() * share
                self._optimizer_step()
                if not self._usable(self.current_vector()):
                    yield self._fail(step, start, "the <R> vector")
                    return
                self.last_good = self.current_vector().detach().clone()
                self.last_losses = sums
                elapsed = time.perf_counter() - start
                done = step - self.start_step
                yield StepEvent(
                    step, total, sums["loss"], sums["denoise"], sums["steer"], self.optimizer.param_groups[0]["lr"],
                    elapsed, elapsed / done * (total - step),
                )
                if s.preview_every and (step % s.preview_every == 0 or step == total) and acc.is_main_process:
                    yield self._preview(step)
                flat = yield from self.validation.after_step(step, total, self)  # the quality curve, and early stop
                if s.checkpoint_every and step % s.checkpoint_every == 0:
                    path = self.save_checkpoint(step)
                    if path is not None:
                        yield CheckpointEvent(step, path)
                if flat:
                    yield self._end(FinishedEvent, step, start, self.validation.stop_why)
                    return
        except KeyboardInterrupt:
            yield self._end(StoppedEvent, step - 1, start)
            return
        yield self._end(FinishedEvent, total, start)

    def _optimizer_step(self) -> None:
        """One AdamW step on <R> (the reference loop overrides this)."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _usable(self, vector: torch.Tensor) -> bool:
        """Finite in the models' dtype, and small enough that the text encoder's layer norm (a mean of squares)
        stays finite: a larger vector gives NaN images although each of its numbers is finite."""
        return bool(torch.isfinite(vector.detach().to(self.weight_dtype)).all() and torch.isfinite(vector.detach().float().square().sum()))

    def _draw(self) -> dict:
        """One micro-batch's random choices, in a fixed order from the run's generator: images, captions, latent
        samples, noise, timesteps and steering positives. Fused or not, a step draws exactly the same."""
        s, g, dev, by_image = self.settings, self.generator, self.device, self.data.captions_of_image
        images = torch.randint(len(self.exemplars), (s.train_batch_size,), generator=g)
        captions = [by_image[i][torch.randint(len(by_image[i]), (1,), generator=g).item()] for i in images.tolist()]
        latents = self._latents(images) * self.data.latent_scale
        noise = torch.randn(latents.shape, generator=g).to(dev)
        timesteps = self.sampler.sample(s.train_batch_size, g).to(dev)
        chosen = torch.randperm(len(self.data.positive_embeds), generator=g)[: s.num_positives].to(dev)
        negatives = torch.unique(torch.cat([self.data.caption_negatives[c] for c in captions])).to(dev)
        return {
            "input_ids": self.data.caption_ids[captions].to(dev), "latents": latents, "noise": noise,
            "timesteps": timesteps, "chosen": chosen, "negatives": negatives,
        }

    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        """A sample of the images' latent distributions, computed once before the first step (the reference loop
        overrides this: it encodes the images every step)."""
        dev = self.device
        mean, std = self.data.latent_mean[images.to(dev)], self.data.latent_std[images.to(dev)]
        return mean + std * torch.randn(mean.shape, generator=self.generator).to(dev)

    def _losses(self, draws: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """L_denoise at relation-focal timesteps over the draws' samples (one model call for all of them; equal-sized
        micro-batches, so the mean over all samples is the mean of the micro-batch means) and L_steer against each
        draw's words, averaged over the draws."""
        cat = lambda key: torch.cat([d[key] for d in draws]) if len(draws) > 1 else draws[0][key]  # noqa: E731
        latents, noise, timesteps = cat("latents"), cat("noise"), cat("timesteps")
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with self.accelerator.autocast():
            hidden = self.text_encoder(cat("input_ids"))[0]
            prediction = self.unet(noisy.to(self.weight_dtype), timesteps, hidden.to(self.weight_dtype)).sample
        l_denoise = denoise_loss(prediction, denoise_target(self.noise_scheduler, latents, noise, timesteps))
        vector, temperature = self.current_vector(), self.settings.temperature
        l_steer = torch.stack([
            steering_loss(vector, self.data.positive_embeds[d["chosen"]], self.data.negative_embeds[d["negatives"]], temperature)
            for d in draws
        ]).mean()
        return l_denoise, l_steer

    # ------------------------------------------------------------------------------------------- previews
    def preview_pipeline(self):
        """A DDIM StableDiffusionPipeline over the run's own components (it sees the current <R> through the hook)."""
        return preview_pipeline(self.vae, self.text_encoder, self.tokenizer, self.unet, self.noise_scheduler.config)

    def _preview(self, step: int) -> PreviewEvent:
        with self.accelerator.autocast():
            self.last_preview, self.preview_step = preview_images(self.preview_pipeline(), self.settings, self.resolution), step
        return PreviewEvent(step, preview_prompt(self.settings), self.last_preview)

    # ------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int) -> Path | None:
        """Write vector, optimizer state, step and RNG to ``checkpoint_dir/step-XXXXXX.pt`` (atomically)."""
        if not self.accelerator.is_main_process:
            return None
        state = checkpoint_state(step, self.name, self.settings, self.base_model_id, self.current_vector(), self.optimizer,
                                 self.generator, getattr(self.accelerator, "scaler", None), self.last_losses,
                                 self.validation.state())
        return write_checkpoint(self.checkpoint_dir, step, state, self.started_at)

    def _restore(self, state: dict) -> None:
        check_resumable(state, self.settings, self.text_encoder.get_input_embeddings().weight.shape[1])
        with torch.no_grad():
            self.current_vector().copy_(state["vector"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.start_step = int(state["step"])
        self.last_losses = dict(state.get("losses") or {})
        self.validation.restore(state.get("validation"))

    # ------------------------------------------------------------------------------------------- the end
    def _relation(self, vector: torch.Tensor, steps: int, status: str, elapsed: float) -> RelationPrompt:
        s = self.settings
        card = {  # what card.json records of the run (relation_file adds name, token, size and date)
            "base_model": self.base_model_id, "base_model_source": self.base_model_source, "steps": steps, "status": status,
            "settings": s.to_dict(), "effective_learning_rate": s.effective_learning_rate(self.accelerator.num_processes),
            "exemplar_captions": self.exemplars.captions_by_image, "relation": self.exemplars.relation,
            "final_losses": self.last_losses, "pos_backend": self.pos_backend, "negative_words": self.negative_words,
            **({"positive_words": self.positive_words} if s.steering_positives != "prepositions" else {}),
            "resolution": self.resolution, "elapsed_s": round(elapsed, 2), "preview_step": self.preview_step,
            **({"validation": record} if (record := self.validation.record()) else {}),
        }
        return RelationPrompt(self.name, s.placeholder_token, vector.detach().float().cpu().clone(), card, strip(self.last_preview))

    def _finish(self, vector: torch.Tensor, steps: int, status: str, elapsed: float) -> tuple[RelationPrompt, Path | None, str]:
        """Write the kept <R> (the last one, or with ``keep="best"`` the best validated one) into the table (only its
        row changes), drop the hook and save the relation folder."""
        vector, kept_step = self.validation.kept(steps, vector)
        with torch.no_grad():
            weight = self.text_encoder.get_input_embeddings().weight
            weight[self.placeholder_id] = vector.to(weight.device, weight.dtype)
            weight.requires_grad_(False)
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
            self._hook = None
        if self.shares_models and self.settings.gradient_checkpointing:  # hand the shared UNet back as it came
            self.unet.disable_gradient_checkpointing()
            self.unet.eval()
        if self.settings.preview_every and status == "finished" and kept_step != self.preview_step and self.accelerator.is_main_process:
            self._preview(kept_step)  # the saved preview shows the saved <R> (the table's row, now that the hook is gone)
        relation = self._relation(vector, steps, status, elapsed)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return relation, None, ""
        if self._saved_path is not None and steps == self.start_step:
            return relation, self._saved_path, ""  # resumed after a crash that came after the save had finished
        return (relation, *save_run_relation(relation, self.relations_dir, self.name, self.overwrite, status, self.started_at))

    def _end(self, kind, step: int, start: float, why: str = ""):
        elapsed = time.perf_counter() - start
        relation, path, message = self._finish(self.current_vector(), step, "finished" if kind is FinishedEvent else "stopped", elapsed)
        return kind(step, relation, path, elapsed, " ".join(m for m in (why, message) if m))

    def _fail(self, step: int, start: float, what: str) -> FailedEvent:
        last = step - 1
        message = (
            f"Training stopped at step {step} because {what} became NaN or infinite; the <R> from step {last} was kept. "
            "Try a lower learning rate or full precision."
        )
        relation, path, note = self._finish(self.last_good, last, "failed", time.perf_counter() - start)
        return FailedEvent(step, f"{message} {note}".strip(), relation, path)
