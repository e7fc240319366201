"""Laplacian pyramid loss, distillation, WGAN-GP critic loss."""

from __future__ import annotations

import pytest
import torch
from zaugnet.training.losses import LaplacianLoss, critic_loss, gradient_penalty
from zaugnet.training.nets import Critic, distillation_loss


def test_laplacian_loss_zero_for_equal_images_and_positive_otherwise() -> None:
    lap = LaplacianLoss()
    x = torch.rand(2, 1, 64, 64)
    assert float(lap(x, x)) == 0.0
    assert float(lap(x, x + 0.1 * torch.rand_like(x))) > 0


def test_laplacian_bands_reconstruct_the_image() -> None:
    """The pyramid is a true Laplacian pyramid: its last level is the low-pass residual, and summing the
    bands back up on it gives the image."""
    lap = LaplacianLoss(levels=3)
    x = torch.rand(1, 1, 64, 64)
    *bands, residual = lap.pyramid(x)
    low = x
    for _ in range(3):
        low = lap._blur(low)[:, :, ::2, ::2]
    assert len(bands) == 3 and torch.equal(residual, low)
    recon = low
    for band in reversed(bands):
        recon = band + lap._upsample(recon, (band.shape[2], band.shape[3]))
    assert torch.allclose(recon, x, atol=1e-5)


def test_laplacian_loss_sees_a_constant_offset_through_the_low_pass_residual() -> None:
    """A constant offset has (almost) no band-pass content, but the residual carries it whole: the loss of
    an offset is the offset (band-pass images alone would let a network drift in brightness)."""
    lap = LaplacianLoss()
    x = torch.rand(1, 1, 64, 64)
    bands = sum(float((a - b).abs().mean()) for a, b in zip(lap.pyramid(x + 0.2)[:-1], lap.pyramid(x)[:-1]))
    assert bands < 0.2 * 0.1
    assert float(lap(x + 0.2, x)) == pytest.approx(0.2 + bands, rel=1e-5)


def test_distillation_only_where_the_teacher_is_clearly_better() -> None:
    gt = torch.zeros(1, 1, 8, 8)
    flow_t = torch.ones(1, 4, 8, 8)
    flows = [torch.zeros(1, 4, 8, 8)]
    teacher = gt.clone()
    # the stage is as good as the teacher: no distillation
    assert float(distillation_loss(flows, [gt.clone()], flow_t, teacher, gt)) == 0.0
    # the stage is worse everywhere: RMS of (teacher - stage) flow = 1
    assert abs(float(distillation_loss(flows, [gt + 0.5], flow_t, teacher, gt)) - 1.0) < 1e-4


def test_gradient_penalty_of_a_unit_norm_linear_critic_is_zero() -> None:
    """D(x) = <w, x> with ||w|| = 1 has gradient norm 1 everywhere: penalty 0."""
    w = torch.randn(1, 1, 8, 8)
    w = w / w.norm()
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert float(gradient_penalty(critic, real, fake)) < 1e-10
    w2 = 3 * w
    critic2 = lambda x: (x * w2).flatten(1).sum(1)  # noqa: E731
    assert abs(float(gradient_penalty(critic2, real, fake)) - 4.0) < 1e-4  # (3 - 1)^2


def test_critic_loss_backpropagates_and_is_reproducible() -> None:
    critic = Critic(4)
    real, fake = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    a, _ = critic_loss(critic, real, fake, 10.0, torch.Generator().manual_seed(1))
    b, _ = critic_loss(critic, real, fake, 10.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.backward()
    assert all(p.grad is not None for p in critic.parameters())
