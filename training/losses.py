"""Losses: Laplacian-pyramid reconstruction loss and the WGAN-GP critic loss with gradient penalty.

The distillation loss lives beside the teacher in :mod:`.nets` because it needs the stage flows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _binomial_kernel() -> Tensor:
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    return (row[:, None] * row[None, :] / 256.0).view(1, 1, 5, 5)


class LaplacianLoss(nn.Module):
    """Sum over the levels of a Laplacian pyramid of the L1 distance: the band-pass images and the
    low-pass residual.

    Fixed 5x5 binomial kernel (/256), reflect padding 2, downsampling by taking every second pixel,
    upsampling by zero insertion followed by 4 x the kernel. The residual matters: band-pass images
    alone are blind to the mean intensity and the coarsest variations, so a network trained on them
    alone is free to drift in brightness.

    Parameters
    ----------
    levels
        Number of band-pass levels (5 in the paper).
    """

    def __init__(self, levels: int = 5) -> None:
        super().__init__()
        self.levels = levels
        self.register_buffer("kernel", _binomial_kernel(), persistent=False)

    def _blur(self, x: Tensor, gain: float = 1.0) -> Tensor:
        c = x.shape[1]
        k = (self.kernel * gain).to(x.dtype).expand(c, 1, 5, 5)
        return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), k, groups=c)

    def _upsample(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        up = x.new_zeros((x.shape[0], x.shape[1], size[0], size[1]))
        up[:, :, ::2, ::2] = x
        return self._blur(up, gain=4.0)

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """The ``levels`` band-pass images of ``x`` (finest first), then the low-pass residual."""
        bands = []
        current = x
        for _ in range(self.levels):
            if min(current.shape[-2:]) < 3:  # too small to reflect-pad: stop early
                break
            down = self._blur(current)[:, :, ::2, ::2]
            bands.append(current - self._upsample(down, (current.shape[2], current.shape[3])))
            current = down
        return [*bands, current]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Scalar loss."""
        return sum((F.l1_loss(a, b) for a, b in zip(self.pyramid(pred), self.pyramid(target))),
                   pred.new_zeros(()))


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP penalty: mean over samples of (||grad D(x_hat)||_2 - 1)^2 on random interpolates.

    ``alpha`` is drawn per sample (from ``generator`` when given, so runs are reproducible).
    """
    alpha = torch.rand((real.shape[0], 1, 1, 1), generator=generator, dtype=torch.float32)
    alpha = alpha.to(device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor, lambda_gp: float,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Critic loss ``-mean D(real) + mean D(fake) + lambda_gp * GP``; returns ``(loss, wasserstein estimate)``.

    Real and fake go through the critic in one call (one forward per step, as DistributedDataParallel wants).
    """
    scores = critic(torch.cat((real, fake), 0))
    d_real, d_fake = scores[: real.shape[0]], scores[real.shape[0]:]
    wasserstein = d_real.mean() - d_fake.mean()
    loss = -wasserstein
    if lambda_gp > 0:
        loss = loss + lambda_gp * gradient_penalty(critic, real, fake, generator)
    return loss, wasserstein.detach()
