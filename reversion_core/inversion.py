"""Relation inversion: learn one token embedding <R> from a few exemplar images (ReVersion, sections 4.2-4.3).

Read top to bottom: events, then ``Inversion.__init__`` (everything done once), then ``Inversion.run`` (the loop).
Only the <R> row changes. The embedding table stays frozen; a separate parameter is spliced into the token
embeddings wherever <R> appears (a forward hook) and written into the table when the run ends, so every other
row and every weight of the UNet, VAE and text encoder stay bit-identical.

``reference=True`` in the settings runs the way the official script does instead (VAE encode every step, fp32,
AdamW over the whole embedding table with the other rows restored after each step), for benchmarks only.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from .base_model import base_model_id, load_pipeline, resolve_source, set_attention
from .errors import ReVersionError
from .exemplars import ExemplarSet, load_exemplars
from .lexicon import BASIS_PREPOSITIONS, content_words, pos_backend
from .objectives import RelationFocalSampler, denoise_loss, denoise_target, steering_loss
from .relation_file import (
    RelationPrompt, check_name, clean_leftovers, free_relation_name, load_relation, recover_relations, save_relation,
)
from .settings import InversionSettings

CHECKPOINT_FORMAT = "reversion-checkpoint/1"


# ----------------------------------------------------------------------------------------------- events
@dataclass
class StepEvent:
    """One optimizer step done (``gradient_accumulation_steps`` micro-batches)."""

    step: int
    total_steps: int
    loss: float
    denoise_loss: float
    steer_loss: float
    lr: float
    elapsed: float  # seconds since the run (or the resumed part of it) began
    eta: float  # seconds left, from the mean step time so far


@dataclass
class PreviewEvent:
    step: int
    prompt: str
    images: list[Image.Image]


@dataclass
class CheckpointEvent:
    step: int
    path: Path


@dataclass
class FinishedEvent:
    step: int
    relation: RelationPrompt
    path: Path | None  # None on non-main processes of a multi-GPU run
    elapsed: float
    message: str = ""  # set when the relation went somewhere else than asked (see Inversion._save)


@dataclass
class StoppedEvent:
    """``stop()`` was called (or Ctrl-C): the latest <R> was saved."""

    step: int
    relation: RelationPrompt
    path: Path | None
    elapsed: float
    message: str = ""  # set when the relation went somewhere else than asked (see Inversion._save)


@dataclass
class FailedEvent:
    """A NaN or infinite loss or <R> ended the run; the last good <R> was saved (never over an existing relation)."""

    step: int
    message: str
    relation: RelationPrompt | None = None
    path: Path | None = None


Event = StepEvent | PreviewEvent | CheckpointEvent | FinishedEvent | StoppedEvent | FailedEvent


# ----------------------------------------------------------------------------------------------- the <R> parameter
class RelationVector(torch.nn.Module):
    """The one trainable vector, spliced into token embeddings wherever the placeholder id appears."""

    def __init__(self, init: torch.Tensor, placeholder_id: int) -> None:
        super().__init__()
        self.vector = torch.nn.Parameter(init.detach().float().clone())
        self.placeholder_id = placeholder_id

    def forward(self, input_ids: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        mask = (input_ids == self.placeholder_id).unsqueeze(-1)
        return torch.where(mask, self.vector.to(token_embeds.dtype), token_embeds)


def _make_accelerator(mixed_precision: str, cpu: bool):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # In one long-lived single process (the app) each run may ask for another precision; accelerate keeps
    # global state, so start it afresh. Under `accelerate launch` (WORLD_SIZE > 1) the launcher owns it.
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def _exemplar_pixels(images: list[Image.Image], resolution: int) -> torch.Tensor:
    """Centre-crop to a square, resize to ``resolution`` and scale to [-1, 1]: a [N, 3, H, W] tensor."""
    tensors = []
    for image in images:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.BICUBIC)
        array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
        tensors.append(array.permute(2, 0, 1).float() / 127.5 - 1.0)
    return torch.stack(tensors)


# ----------------------------------------------------------------------------------------------- the run
class Inversion:
    """One relation-inversion run. Iterate it (or ``run()``) for events; call ``stop()`` from anywhere to end early.

    ``base_model`` is a source for :func:`load_pipeline` or an already loaded ``StableDiffusionPipeline`` (whose
    tokenizer and text encoder gain the placeholder token). Bad inputs raise ReVersionError here, before any step.
    """

    def __init__(
        self,
        exemplars: ExemplarSet | str | os.PathLike,
        name: str | None = None,
        settings: InversionSettings | None = None,
        base_model=None,
        relations_dir: str | os.PathLike = "relations",
        overwrite: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
        device: str | None = None,
    ) -> None:
        checkpoint = self._read_checkpoint(resume_from) if resume_from else None
        if settings is None:
            settings = InversionSettings.from_dict(checkpoint["settings"]) if checkpoint else InversionSettings()
        settings.validate()
        self.settings = s = settings
        if not isinstance(exemplars, ExemplarSet):
            exemplars = load_exemplars(exemplars, s.placeholder_token)
        elif exemplars.placeholder_token != s.placeholder_token:
            exemplars = _retoken(exemplars, s.placeholder_token)
        self.exemplars = exemplars
        self.name = check_name(name or (checkpoint["name"] if checkpoint else exemplars.name))
        self.relations_dir = Path(relations_dir)
        self.overwrite = overwrite
        self.started_at = time.time()
        recover_relations(self.relations_dir, self.name)  # a save of this name that a crash interrupted
        self._saved_path = self._already_saved(checkpoint, s) if checkpoint else None
        if (self.relations_dir / self.name).exists() and not overwrite and self._saved_path is None:
            raise ReVersionError(f"{self.relations_dir / self.name} already holds a relation; choose another name or allow overwriting.")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else self.relations_dir.parent / "runs" / self.name
        _check_writable(self.relations_dir, "Relations folder")
        if s.checkpoint_every:
            _check_writable(self.checkpoint_dir, "Checkpoint folder")
        self._stop_requested = False

        # Accelerate owns device placement, mixed precision and (under `accelerate launch`) gradient sync.
        mixed_precision = "no" if s.reference else s.mixed_precision
        if device == "cuda" and not torch.cuda.is_available():
            raise ReVersionError("Device 'cuda' was asked for but no CUDA GPU is available; use the CPU.")
        use_cpu = device == "cpu" or not torch.cuda.is_available()
        if use_cpu and mixed_precision == "fp16":
            raise ReVersionError("Mixed precision fp16 needs a GPU; use 'no' (or 'bf16') on CPU.")
        self.accelerator = acc = _make_accelerator(mixed_precision, use_cpu)
        self.device = acc.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)

        # Base model: frozen components, loaded in fp32 and cast to the run's weight dtype.
        if base_model is None or isinstance(base_model, (str, os.PathLike)):
            self.base_model_source = resolve_source(base_model)
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
        self.placeholder_id, init_id = self._add_placeholder_token()
        table = self.text_encoder.get_input_embeddings()
        for model in (self.unet, self.vae, self.text_encoder):
            model.to(self.device)
            if self.weight_dtype != torch.float32:  # casting to fp32 again would only log a warning
                model.to(dtype=self.weight_dtype)
        if s.gradient_checkpointing:  # checkpointing is only active in train mode; these models have no dropout
            self.unet.enable_gradient_checkpointing()
            self.text_encoder.gradient_checkpointing_enable()
            self.unet.train()
            self.text_encoder.train()

        # Exemplars -> pixels -> VAE latent distributions, once. Each step samples from them, as the paper's loop does.
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = s.resolution or self.unet.config.sample_size * vae_scale
        self.pixels = _exemplar_pixels([e.image for e in exemplars.exemplars], self.resolution)
        self.latent_scale = self.vae.config.scaling_factor
        if not s.reference:
            means, stds = [], []
            with torch.no_grad():
                for chunk in self.pixels.split(4):
                    dist = self.vae.encode(chunk.to(self.device, self.weight_dtype)).latent_dist
                    means.append(dist.mean.float())
                    stds.append(dist.std.float())
            self.latent_mean, self.latent_std = torch.cat(means), torch.cat(stds)

        # Captions -> token ids, once; each caption remembers its image.
        self.captions = [(i, c) for i, e in enumerate(exemplars.exemplars) for c in e.captions]
        self.caption_ids = self.tokenizer(
            [c for _, c in self.captions], padding="max_length", truncation=True,
            max_length=self.tokenizer.model_max_length, return_tensors="pt",
        ).input_ids
        for (i, caption), ids in zip(self.captions, self.caption_ids):
            if not (ids == self.placeholder_id).any():
                raise ReVersionError(f"Caption {caption!r} is too long: the placeholder falls past the text encoder's {len(ids)}-token limit.")
        self.captions_of_image = [[k for k, (i, _) in enumerate(self.captions) if i == j] for j in range(len(exemplars))]

        # Steering vocabulary, once: the 56 basis prepositions (positives) and the captions' content words
        # (negatives), each embedded from the frozen table (mean of its pieces when a word is several tokens).
        self.pos_backend = pos_backend()
        with torch.no_grad():
            frozen = table.weight.detach().float()
            self.positive_embeds = torch.stack([self._word_embedding(w, frozen) for w in BASIS_PREPOSITIONS])
            caption_words = [content_words(c, [s.placeholder_token], self.pos_backend) for _, c in self.captions]
            self.negative_words = list(dict.fromkeys(w for words in caption_words for w in words))
            index = {w: k for k, w in enumerate(self.negative_words)}
            self.negative_embeds = (
                torch.stack([self._word_embedding(w, frozen) for w in self.negative_words])
                if self.negative_words else torch.empty(0, frozen.shape[1], device=frozen.device)
            )
            self.caption_negatives = [torch.tensor([index[w] for w in words], dtype=torch.long) for words in caption_words]

        # The trainable part: <R> spliced in by a hook (default), or the whole table (reference mode).
        init = table.weight[init_id].detach().float()
        lr = s.effective_learning_rate(acc.num_processes)
        betas = (s.adam_beta1, s.adam_beta2)
        if s.reference:
            self.original_table = table.weight.detach().clone()
            table.weight.requires_grad_(True)
            params = [table.weight]
            self.relation = None
        else:
            self.relation = RelationVector(init, self.placeholder_id).to(self.device)
            params = [self.relation.vector]
        optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=s.adam_weight_decay, eps=s.adam_epsilon)
        if s.reference:
            self.optimizer = acc.prepare(optimizer)
            self.relation_ddp = None
        else:
            self.relation_ddp, self.optimizer = acc.prepare(self.relation, optimizer)
            self._hook = table.register_forward_hook(self._splice)
        # Micro-batches of one step through the models together (see InversionSettings.fuse_micro_batches). The
        # reference loop keeps the official script's one-by-one accumulation.
        self.fused = not s.reference and s.gradient_accumulation_steps > 1 and (
            s.fuse_micro_batches == "on" or (s.fuse_micro_batches == "auto" and self.device.type == "cpu")
        )
        self.sampler = RelationFocalSampler(self.noise_scheduler.config.num_train_timesteps, s.alpha if s.importance_sampling else 0.0)
        self.generator = torch.Generator().manual_seed(s.seed + acc.process_index)  # all randomness of the run
        self.start_step = 0
        self.last_losses: dict[str, float] = {}
        if checkpoint:
            self._restore(checkpoint)
        self.last_good = self.current_vector().detach().clone()
        self.last_preview: list[Image.Image] | None = None

    # ------------------------------------------------------------------------------------------- setup helpers
    def _add_placeholder_token(self) -> tuple[int, int]:
        s, tok = self.settings, self.tokenizer
        vocab = tok.get_vocab()
        if s.placeholder_token in vocab or f"{s.placeholder_token.lower()}</w>" in vocab:
            raise ReVersionError(
                f"The placeholder token {s.placeholder_token!r} is already in the base model's vocabulary; choose another token such as <R1>."
            )
        init_ids = tok.encode(s.initializer_token, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ReVersionError(
                f"The initializer {s.initializer_token!r} is {len(init_ids)} tokens for this tokenizer; choose a word that is one token, such as 'and'."
            )
        tok.add_tokens(s.placeholder_token)
        placeholder_id = tok.convert_tokens_to_ids(s.placeholder_token)
        self.text_encoder.resize_token_embeddings(len(tok), mean_resizing=False)
        with torch.no_grad():  # the new row starts as the initializer; the hook overrides it during the run
            table = self.text_encoder.get_input_embeddings().weight
            table[placeholder_id] = table[init_ids[0]]
        return placeholder_id, init_ids[0]

    def _word_embedding(self, word: str, table: torch.Tensor) -> torch.Tensor:
        ids = [i for i in self.tokenizer.encode(word, add_special_tokens=False) if i != self.placeholder_id]
        return table[ids].mean(0)

    def _splice(self, module, args, output):
        """Forward hook on the token embedding: put the current <R> wherever the placeholder id appears."""
        relation = self.relation_ddp if torch.is_grad_enabled() else self.relation
        # Accelerate returns a prepared module's outputs in fp32 under mixed precision; the text encoder's
        # layers are in the run's dtype (CPU layer_norm refuses a mix), so hand back the table's dtype.
        return relation(args[0], output).to(output.dtype)

    def current_vector(self) -> torch.Tensor:
        if self.settings.reference:
            return self.text_encoder.get_input_embeddings().weight[self.placeholder_id]
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
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if s.reference:
                    self._restore_other_rows()
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
                if s.checkpoint_every and step % s.checkpoint_every == 0:
                    path = self.save_checkpoint(step)
                    if path is not None:
                        yield CheckpointEvent(step, path)
        except KeyboardInterrupt:
            yield self._end(StoppedEvent, step - 1, start)
            return
        yield self._end(FinishedEvent, total, start)

    def _usable(self, vector: torch.Tensor) -> bool:
        """Finite in the models' dtype, and small enough that the text encoder's layer norm (a mean of squares)
        stays finite: a larger vector gives NaN images although each of its numbers is finite."""
        return bool(torch.isfinite(vector.detach().to(self.weight_dtype)).all() and torch.isfinite(vector.detach().float().square().sum()))

    def _draw(self) -> dict:
        """One micro-batch's random choices, in a fixed order from the run's generator: images, captions, latent
        samples, noise, timesteps and steering positives. Fused or not, a step draws exactly the same."""
        s, g, dev = self.settings, self.generator, self.device
        images = torch.randint(len(self.exemplars), (s.train_batch_size,), generator=g)
        captions = [self.captions_of_image[i][torch.randint(len(self.captions_of_image[i]), (1,), generator=g).item()] for i in images.tolist()]
        if s.reference:  # the official loop: encode the images every step
            dist = self.vae.encode(self.pixels[images].to(dev, self.weight_dtype)).latent_dist
            latents = dist.mean.float() + dist.std.float() * torch.randn(dist.mean.shape, generator=g).to(dev)
        else:
            mean, std = self.latent_mean[images.to(dev)], self.latent_std[images.to(dev)]
            latents = mean + std * torch.randn(mean.shape, generator=g).to(dev)
        latents = latents * self.latent_scale
        noise = torch.randn(latents.shape, generator=g).to(dev)
        timesteps = self.sampler.sample(s.train_batch_size, g).to(dev)
        chosen = torch.randperm(len(self.positive_embeds), generator=g)[: s.num_positives].to(dev)
        negatives = torch.unique(torch.cat([self.caption_negatives[c] for c in captions])).to(dev)
        return {
            "input_ids": self.caption_ids[captions].to(dev), "latents": latents, "noise": noise,
            "timesteps": timesteps, "chosen": chosen, "negatives": negatives,
        }

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
            steering_loss(vector, self.positive_embeds[d["chosen"]], self.negative_embeds[d["negatives"]], temperature)
            for d in draws
        ]).mean()
        return l_denoise, l_steer

    def _restore_other_rows(self) -> None:
        """Reference mode: AdamW moved every row of the table (weight decay); put all but <R> back."""
        with torch.no_grad():
            weight = self.text_encoder.get_input_embeddings().weight
            keep = torch.ones(len(weight), dtype=torch.bool, device=weight.device)
            keep[self.placeholder_id] = False
            weight[keep] = self.original_table[keep]

    # ------------------------------------------------------------------------------------------- previews
    def preview_pipeline(self):
        """A DDIM StableDiffusionPipeline over the run's own components (it sees the current <R> through the hook)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=DDIMScheduler.from_config(self.noise_scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _preview(self, step: int) -> PreviewEvent:
        s = self.settings
        prompt = s.validation_prompt.replace("<R>", s.placeholder_token).replace("{}", s.placeholder_token)
        generators = [torch.Generator().manual_seed(s.seed + i) for i in range(s.preview_images)]
        with self.accelerator.autocast():
            images = self.preview_pipeline()(
                [prompt] * s.preview_images, num_inference_steps=s.preview_steps, generator=generators,
                height=self.resolution, width=self.resolution,
            ).images
        self.last_preview = images
        return PreviewEvent(step, prompt, images)

    # ------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, step: int) -> Path | None:
        """Write vector, optimizer state, step and RNG to ``checkpoint_dir/step-XXXXXX.pt`` (atomically)."""
        if not self.accelerator.is_main_process:
            return None
        scaler = getattr(self.accelerator, "scaler", None)
        state = {
            "format": CHECKPOINT_FORMAT, "step": step, "name": self.name, "token": self.settings.placeholder_token,
            "base_model": self.base_model_id, "settings": self.settings.to_dict(),
            "vector": self.current_vector().detach().float().cpu(), "optimizer": self.optimizer.state_dict(),
            "rng": self.generator.get_state(), "scaler": scaler.state_dict() if scaler is not None else None,
            "losses": dict(self.last_losses),
        }
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.checkpoint_dir.glob(".ckpt.*"):  # of a write a crash interrupted
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < self.started_at:
                    leftover.unlink()
        path = self.checkpoint_dir / f"step-{step:06d}.pt"
        fd, tmp = tempfile.mkstemp(dir=self.checkpoint_dir, prefix=".ckpt.")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    @staticmethod
    def _read_checkpoint(source: str | os.PathLike) -> dict:
        path = Path(source)
        if path.is_dir():
            found = sorted(path.glob("step-*.pt"))
            if not found:
                raise ReVersionError(f"Folder {path} holds no checkpoints (step-*.pt).")
            path = found[-1]
        if not path.is_file():
            raise ReVersionError(f"Checkpoint {path} does not exist.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise ReVersionError(f"{path.name} is not a readable checkpoint of this project.") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ReVersionError(f"{path.name} is not a checkpoint of this project.")
        return state

    def _restore(self, state: dict) -> None:
        s = self.settings
        if state["token"] != s.placeholder_token:
            raise ReVersionError(f"The checkpoint learned token {state['token']!r} but this run uses {s.placeholder_token!r}.")
        dim = self.text_encoder.get_input_embeddings().weight.shape[1]
        if state["vector"].numel() != dim:
            raise ReVersionError(f"The checkpoint's vector has size {state['vector'].numel()} but the base model's text encoder uses size {dim}.")
        if state["step"] > s.max_train_steps:  # equal: every step is done and only the save is left (a crash during it)
            raise ReVersionError(f"The checkpoint is at step {state['step']}, already past the run's {s.max_train_steps} steps.")
        with torch.no_grad():
            self.current_vector().copy_(state["vector"].to(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.start_step = int(state["step"])
        self.last_losses = dict(state.get("losses") or {})

    # ------------------------------------------------------------------------------------------- the end
    def _relation(self, vector: torch.Tensor, steps: int, status: str, elapsed: float) -> RelationPrompt:
        s = self.settings
        card = {
            "base_model": self.base_model_id,
            "base_model_source": self.base_model_source,
            "steps": steps,
            "status": status,
            "settings": s.to_dict(),
            "effective_learning_rate": s.effective_learning_rate(self.accelerator.num_processes),
            "exemplar_captions": self.exemplars.captions_by_image,
            "relation": self.exemplars.relation,
            "final_losses": self.last_losses,
            "pos_backend": self.pos_backend,
            "negative_words": self.negative_words,
            "resolution": self.resolution,
            "elapsed_s": round(elapsed, 2),
        }
        preview = None
        if self.last_preview:
            preview = Image.new("RGB", (sum(i.width for i in self.last_preview), self.last_preview[0].height))
            for k, image in enumerate(self.last_preview):
                preview.paste(image, (k * image.width, 0))
        return RelationPrompt(self.name, s.placeholder_token, vector.detach().float().cpu().clone(), card, preview)

    def _finish(self, vector: torch.Tensor, steps: int, status: str, elapsed: float) -> tuple[RelationPrompt, Path | None, str]:
        """Write <R> into the table (only its row changes), drop the hook and save the relation folder."""
        with torch.no_grad():
            weight = self.text_encoder.get_input_embeddings().weight
            weight[self.placeholder_id] = vector.to(weight.device, weight.dtype)
            weight.requires_grad_(False)
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
            self._hook = None
        relation = self._relation(vector, steps, status, elapsed)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return relation, None, ""
        if self._saved_path is not None and steps == self.start_step:
            return relation, self._saved_path, ""  # resumed after a crash that came after the save had finished
        return (relation, *self._save(relation, status))

    def _save(self, relation: RelationPrompt, status: str) -> tuple[Path, str]:
        """Save the relation and say where, when that is not where it was asked to go.

        A stopped or failed run never replaces an existing relation: it takes a free name (``above_2``). When the
        save fails (folder unwritable, name taken meanwhile), a free name, then a private temporary folder is used.
        """
        clean_leftovers(self.relations_dir, self.name, self.started_at)
        target = self.relations_dir / self.name
        overwrite = self.overwrite
        message = ""
        if overwrite and status != "finished" and target.exists():
            relation.name = free_relation_name(self.relations_dir, self.name)
            overwrite = False
            message = f"The existing relation {self.name!r} was kept; this {status} run was saved as {relation.name!r}."
        try:
            return save_relation(relation, self.relations_dir, overwrite=overwrite), message
        except (ReVersionError, OSError) as exc:
            taken = isinstance(exc, ReVersionError) and target.exists()
            reason = "another relation took that name meanwhile" if taken else getattr(exc, "strerror", None) or str(exc)
        for attempt in ("free name", "temporary folder"):
            try:
                if attempt == "free name":
                    relation.name = free_relation_name(self.relations_dir, self.name)
                    path = save_relation(relation, self.relations_dir)
                else:
                    path = save_relation(relation, tempfile.mkdtemp(prefix="reversion-unsaved-"))
            except (ReVersionError, OSError):
                continue
            return path, f"The relation could not be saved as {str(target)!r} ({reason}); it was saved to {str(path)!r} instead."
        raise ReVersionError(f"The relation could not be saved as {str(target)!r} ({reason}), nor anywhere else.")

    def _already_saved(self, checkpoint: dict, settings: InversionSettings) -> Path | None:
        """The relation folder when a resumed run's last checkpoint was already saved there in full, else None."""
        target = self.relations_dir / self.name
        if checkpoint["step"] < settings.max_train_steps or not target.is_dir():
            return None
        try:
            saved = load_relation(target, None)
        except ReVersionError:
            return None
        same = saved.card.get("steps") == checkpoint["step"] and torch.equal(saved.vector, checkpoint["vector"].float().reshape(-1))
        return target if same else None

    def _end(self, kind, step: int, start: float):
        elapsed = time.perf_counter() - start
        relation, path, message = self._finish(self.current_vector(), step, "finished" if kind is FinishedEvent else "stopped", elapsed)
        return kind(step, relation, path, elapsed, message)

    def _fail(self, step: int, start: float, what: str) -> FailedEvent:
        last = step - 1
        message = (
            f"Training stopped at step {step} because {what} became NaN or infinite; the <R> from step {last} was kept. "
            "Try a lower learning rate or full precision."
        )
        relation, path, note = self._finish(self.last_good, last, "failed", time.perf_counter() - start)
        return FailedEvent(step, f"{message} {note}".strip(), relation, path)


def _check_writable(folder: Path, what: str) -> None:
    """Refuse, before any step, a folder where the run could not save (one sentence)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".write-check-", dir=folder)
        os.rmdir(probe)
    except OSError as exc:
        raise ReVersionError(f"{what} {folder} is not writable ({exc.strerror or type(exc).__name__}); choose another folder.") from None


def _retoken(exemplars: ExemplarSet, token: str) -> ExemplarSet:
    """The same exemplars with their placeholder replaced by ``token``."""
    from .exemplars import Exemplar

    old = exemplars.placeholder_token
    items = [Exemplar(e.name, e.image, [c.replace(old, token) for c in e.captions]) for e in exemplars.exemplars]
    templates = [t.replace(old, token) for t in exemplars.templates] if exemplars.templates else None
    return ExemplarSet(items, token, exemplars.folder, exemplars.relation, templates)


def train_relation(exemplars, name: str | None = None, settings: InversionSettings | None = None, **kwargs) -> Event:
    """Run an inversion to the end without watching it; returns the final event (Finished, Stopped or Failed)."""
    event = None
    for event in Inversion(exemplars, name, settings, **kwargs):
        pass
    return event
