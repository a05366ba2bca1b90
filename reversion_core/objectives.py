"""The two objectives of ReVersion: the steering loss (section 4.2) and relation-focal timesteps (section 4.3)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import ReVersionError


def steering_loss(r: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Eq. 4: InfoNCE pulling the relation embedding ``r`` [D] towards ``positives`` [L, D] and away from ``negatives`` [M, D].

    All embeddings are normalised to unit length. With no negatives the loss is 0 (nothing to push away from).
    Computed in float32 at least (half-precision inputs are upcast); float64 inputs stay float64.
    """
    dtype = torch.promote_types(r.dtype, torch.float32)
    r = F.normalize(r.to(dtype).reshape(-1), dim=0)
    pos_logits = F.normalize(positives.to(dtype), dim=-1) @ r / temperature
    neg_logits = F.normalize(negatives.to(dtype).reshape(-1, r.numel()), dim=-1) @ r / temperature
    all_logits = torch.cat([pos_logits, neg_logits])
    return torch.logsumexp(all_logits, dim=0) - torch.logsumexp(pos_logits, dim=0)  # = -log(sum_pos / sum_all)


class RelationFocalSampler:
    """Draws diffusion timesteps t in {0, ..., T-1} with probability proportional to f(t) = (1 - alpha cos(pi t / T)) / T.

    Larger t (noisier inputs, where layout and relations form) are drawn more often; ``alpha = 0`` is uniform.
    """

    def __init__(self, num_train_timesteps: int, alpha: float = 0.5) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ReVersionError(f"Importance-sampling alpha must lie in [0, 1], not {alpha}.")
        self.num_train_timesteps = T = int(num_train_timesteps)
        self.alpha = float(alpha)
        t = torch.arange(T, dtype=torch.float64)
        f = (1.0 - self.alpha * torch.cos(math.pi * t / T)) / T
        self.probabilities = f / f.sum()  # the discrete f sums to (T - alpha) / T, so renormalise

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """Return ``batch_size`` timesteps (int64) drawn independently from f(t)."""
        t = torch.multinomial(self.probabilities, batch_size, replacement=True, generator=generator)
        return t.to(device)


def denoise_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ReVersionError(f"The base model's scheduler predicts {prediction_type!r}; only 'epsilon' and 'v_prediction' are supported.")


def denoise_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 5's squared error, averaged, computed in fp32 even when the UNet runs in half precision."""
    return F.mse_loss(prediction.float(), target.float(), reduction="mean")
