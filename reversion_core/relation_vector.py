"""The <R> parameter: the one trainable vector of a run, spliced into the text encoder's token embeddings wherever the
placeholder id appears. The embedding table itself stays frozen, so only <R> can change, by construction: no other
row has a gradient, and nothing has to be restored after a step.
"""
from __future__ import annotations

import torch


class RelationVector(torch.nn.Module):
    """The one trainable vector, spliced into token embeddings wherever the placeholder id appears."""

    def __init__(self, init: torch.Tensor, placeholder_id: int) -> None:
        super().__init__()
        self.vector = torch.nn.Parameter(init.detach().float().clone())
        self.placeholder_id = placeholder_id

    def forward(self, input_ids: torch.Tensor, token_embeds: torch.Tensor) -> torch.Tensor:
        mask = (input_ids == self.placeholder_id).unsqueeze(-1)
        return torch.where(mask, self.vector.to(token_embeds.dtype), token_embeds)

    def splice_into(self, table: torch.nn.Module, prepared: torch.nn.Module | None = None):
        """Put this vector into ``table``'s output wherever the placeholder id appears (a forward hook; the handle it
        returns removes it). While gradients are on the call goes through ``prepared``, this module as accelerate
        wrapped it (so gradients sync across processes)."""
        def splice(module, args, output):
            relation = prepared if prepared is not None and torch.is_grad_enabled() else self
            # Accelerate returns a prepared module's outputs in fp32 under mixed precision; the text encoder's
            # layers are in the run's dtype (CPU layer_norm refuses a mix), so hand back the table's dtype.
            return relation(args[0], output).to(output.dtype)

        return table.register_forward_hook(splice)
