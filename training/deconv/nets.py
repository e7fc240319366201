"""The two-stage 3D RCAN of ZS-DeconvNet: a denoiser f' and a deconvolver f fed with f'(x).

Shapes are ``(batch, 1, Z, Y, X)``; every convolution is 3 x 3 x 3 with zero padding 1 and there is no
pooling (but the channel attention's global average), so any ``Z, Y, X >= 1`` works and the output has the
input's size. One stage (:class:`RCANStage`)::

    x -> conv(1 -> C) = s -> [residual group: B x RCAB, + its input] x G -> + s (long skip)
      -> conv(C -> H) -> LeakyReLU 0.2 -> conv(H -> 1) -> LeakyReLU 0.2

with an RCAB (residual channel-attention block) ``y + CA(lrelu(conv(lrelu(conv(y)))))`` and the channel
attention ``CA(u) = u * sigmoid(conv1x1(relu(conv1x1(mean_zyx(u)))))`` (``C -> C // reduction -> C``). The
heads end in LeakyReLU, not ReLU: a ReLU head can collapse to 0 and never recover (the note's probe).

The channel attention averages over the whole input, so a tile's output depends a little on the tile
(:func:`zaugnet.deconv.predict.deconvolve_volume` predicts the whole volume in one piece when it fits); every
other dependence is local, within :func:`receptive_radius` voxels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import DeconvNetConfig

__all__ = ["RCAB", "ChannelAttention", "RCANStage", "ResidualGroup", "ZSDeconvNet3D", "receptive_radius"]

#: Negative slope of every LeakyReLU (the reference's).
SLOPE = 0.2


def _conv(in_ch: int, out_ch: int) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over a whole ``(B, C, Z, Y, X)`` volume: a per-channel gain in (0, 1)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv3d(channels, hidden, 1)
        self.excite = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.excite(torch.relu(self.squeeze(w))))


class RCAB(nn.Module):
    """Residual channel-attention block: conv - LeakyReLU - conv - LeakyReLU - attention, plus the input."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.LeakyReLU(SLOPE),
                                  _conv(channels, channels), nn.LeakyReLU(SLOPE),
                                  ChannelAttention(channels, reduction))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """``blocks`` RCABs, plus the group's input."""

    def __init__(self, channels: int, blocks: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(RCAB(channels, reduction) for _ in range(blocks)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCANStage(nn.Module):
    """One stage: 1 channel in, 1 channel out, the input's size (see the module docstring)."""

    def __init__(self, cfg: DeconvNetConfig) -> None:
        super().__init__()
        self.stem = _conv(1, cfg.channels)
        self.groups = nn.Sequential(*(ResidualGroup(cfg.channels, cfg.blocks, cfg.reduction)
                                      for _ in range(cfg.groups)))
        self.head = nn.Sequential(_conv(cfg.channels, cfg.head_channels), nn.LeakyReLU(SLOPE),
                                  _conv(cfg.head_channels, 1), nn.LeakyReLU(SLOPE))

    def forward(self, x: Tensor) -> Tensor:
        s = self.stem(x)
        return self.head(self.groups(s) + s)


class ZSDeconvNet3D(nn.Module):
    """The two stages; ``forward(x)`` returns ``(denoised, deconvolved)``, both of ``x``'s shape.

    Parameters
    ----------
    cfg
        Widths, shared by both stages.
    """

    def __init__(self, cfg: DeconvNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.denoiser = RCANStage(cfg)
        self.deconvolver = RCANStage(cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, Z, Y, X) tensor, got shape {tuple(x.shape)}")
        denoised = self.denoiser(x)
        return denoised, self.deconvolver(denoised)


def receptive_radius(cfg: DeconvNetConfig) -> int:
    """Voxels along each axis beyond which the input no longer reaches an output voxel through the convolutions
    (the channel attention's global average aside): ``2 * (1 + 2 * groups * blocks + 2)``."""
    return 2 * (1 + 2 * cfg.groups * cfg.blocks + 2)
