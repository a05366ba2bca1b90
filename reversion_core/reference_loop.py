"""The official ReVersion script's loop, for benchmarks (``benchmarks/perf.py``'s "reference") and for the test that
holds the engine's loop to it: the same objective, draws and steps as :class:`~reversion_core.inversion.Inversion`,
with the official per-step work instead of the engine's shortcuts: the exemplars encoded by the VAE at every step,
fp32, micro-batches one by one, and AdamW over the whole embedding table, every row but <R> put back after each step.

A run of it is marked ``InversionSettings(reference=True)`` (its card says so); ``Inversion`` refuses those settings
and this class asks for them, so a checkpoint continues in the loop that wrote it (:func:`inversion_class`).
"""
from __future__ import annotations

import torch

from .inversion import Inversion
from .settings import InversionSettings


class ReferenceInversion(Inversion):
    """One run of the official script's loop; built, iterated and stopped like an :class:`Inversion`."""

    reference = True

    @classmethod
    def precision(cls, settings: InversionSettings) -> str:
        return "no"  # the official script trains in fp32

    def _make_parameter(self, init_id: int) -> None:
        """The whole embedding table is the parameter; its other rows are restored after each step."""
        table = self.text_encoder.get_input_embeddings().weight
        self.original_table = table.detach().clone()
        table.requires_grad_(True)
        self.relation = self.relation_ddp = None
        self.optimizer = self.accelerator.prepare(self._adamw([table]))

    def _fuses(self) -> bool:
        return False

    def current_vector(self) -> torch.Tensor:
        return self.text_encoder.get_input_embeddings().weight[self.placeholder_id]

    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(self.data.pixels[images].to(self.device, self.weight_dtype)).latent_dist
        return dist.mean.float() + dist.std.float() * torch.randn(dist.mean.shape, generator=self.generator).to(self.device)

    def _optimizer_step(self) -> None:
        """AdamW moved every row of the table (weight decay); put all but <R> back."""
        super()._optimizer_step()
        with torch.no_grad():
            weight = self.text_encoder.get_input_embeddings().weight
            keep = torch.ones(len(weight), dtype=torch.bool, device=weight.device)
            keep[self.placeholder_id] = False
            weight[keep] = self.original_table[keep]


def inversion_class(settings: InversionSettings) -> type[Inversion]:
    """The loop a run with ``settings`` runs in: the official script's when ``settings.reference``, else the engine's."""
    return ReferenceInversion if settings.reference else Inversion
