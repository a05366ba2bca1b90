"""The steering loss (eq. 4) and relation-focal importance sampling (eq. 5)."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from reversion_core.objectives import RelationFocalSampler, denoise_target, steering_loss


def test_steering_loss_equals_hand_computation():
    # float64 throughout, so the comparison holds on any CPU (float32 rounding differs between machines).
    f64 = dict(dtype=torch.float64)
    r = torch.tensor([3.0, 4.0], **f64)  # normalised: (0.6, 0.8)
    positives = torch.tensor([[1.0, 0.0], [0.0, 2.0]], **f64)  # normalised: (1, 0), (0, 1)
    negatives = torch.tensor([[-1.0, 0.0]], **f64)
    gamma = 0.5
    pos = [math.exp(0.6 / gamma), math.exp(0.8 / gamma)]
    neg = [math.exp(-0.6 / gamma)]
    expected = -math.log(sum(pos) / (sum(pos) + sum(neg)))
    assert steering_loss(r, positives, negatives, gamma).item() == pytest.approx(expected, rel=1e-12)


def test_steering_loss_is_zero_without_negatives():
    f64 = dict(dtype=torch.float64)
    loss = steering_loss(torch.randn(8, **f64), torch.randn(3, 8, **f64), torch.empty(0, 8, **f64), 0.07)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_steering_loss_of_half_inputs_is_computed_in_float32():
    loss = steering_loss(torch.randn(8).half(), torch.randn(3, 8).half(), torch.randn(2, 8).half())
    assert loss.dtype == torch.float32


def test_steering_loss_ignores_vector_lengths():
    f64 = dict(dtype=torch.float64)
    r, p, n = torch.randn(16, **f64), torch.randn(4, 16, **f64), torch.randn(5, 16, **f64)
    assert steering_loss(7 * r, 3 * p, 0.2 * n).item() == pytest.approx(steering_loss(r, p, n).item(), rel=1e-10)


def test_steering_loss_gradient_pulls_towards_positives():
    r = torch.tensor([1.0, 1.0], requires_grad=True)
    steering_loss(r, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).backward()
    assert r.grad[0] < 0 < r.grad[1]  # gradient descent moves r towards the positive axis


def test_sampler_probabilities_follow_f_of_t_exactly():
    T, alpha = 1000, 0.5
    p = RelationFocalSampler(T, alpha).probabilities
    f = np.array([(1 - alpha * math.cos(math.pi * t / T)) / T for t in range(T)])
    np.testing.assert_allclose(p.numpy(), f / f.sum(), rtol=1e-12)
    assert p[-1] / p[0] == pytest.approx(1.5 / 0.5, rel=1e-3)  # large t three times as likely as small t


def test_sampler_histogram_matches_f_of_t_by_chi_square():
    T, alpha, n, bins = 1000, 0.5, 200_000, 20
    t = RelationFocalSampler(T, alpha).sample(n, torch.Generator().manual_seed(0)).numpy()
    assert t.min() >= 0 and t.max() < T
    observed = np.bincount(t // (T // bins), minlength=bins)
    p = RelationFocalSampler(T, alpha).probabilities.numpy()
    expected = p.reshape(bins, -1).sum(1) * n
    assert chisquare(observed, expected).pvalue > 0.01


def test_alpha_zero_is_uniform():
    p = RelationFocalSampler(1000, 0.0).probabilities
    assert torch.allclose(p, torch.full((1000,), 1e-3, dtype=torch.float64))


def test_denoise_target_is_noise_or_velocity():
    from diffusers import DDPMScheduler

    latents, noise, t = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.tensor([10, 900])
    assert denoise_target(DDPMScheduler(), latents, noise, t) is noise
    v_sched = DDPMScheduler(prediction_type="v_prediction")
    a = v_sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - v_sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(denoise_target(v_sched, latents, noise, t), a * noise - s * latents, rtol=1e-5, atol=1e-5)
