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
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DeconvNetConfig

__all__ = ["RCAB", "ChannelAttention", "Clamped", "RCANStage", "ResidualGroup", "UNetStage", "ZSDeconvNet3D",
           "receptive_radius"]

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


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(_conv(in_ch, out_ch), nn.LeakyReLU(SLOPE), _conv(out_ch, out_ch), nn.LeakyReLU(SLOPE))


class UNetStage(nn.Module):
    """One U-Net stage (``net.kind: unet``): ``x + U(x)``, 1 channel in and out, the input's size.

    ``levels`` 2x poolings in y and x only (z is short and sampled coarsely), two 3 x 3 x 3 convolutions per
    level (widths ``channels``, then ``2 * channels``), nearest upsampling and skip concatenations, a 1 x 1 x 1
    head, and the input added (the stage starts near the identity). Y and X are padded inside (edge values)
    to a multiple of ``2 ** levels`` and cropped back, so any size works. Its lateral reach (see
    :func:`receptive_radius`) is what a widefield PSF's out-of-focus light needs.
    """

    def __init__(self, cfg: DeconvNetConfig) -> None:
        super().__init__()
        widths = [cfg.channels * min(2 ** level, 2) for level in range(cfg.levels + 1)]
        self.multiple = 2 ** cfg.levels
        self.enc = nn.ModuleList(_double_conv(1 if level == 0 else widths[level - 1], widths[level])
                                 for level in range(cfg.levels))
        self.mid = _double_conv(widths[cfg.levels - 1], widths[cfg.levels])
        self.dec = nn.ModuleList(_double_conv(widths[level + 1] + widths[level], widths[level])
                                 for level in reversed(range(cfg.levels)))
        self.head = nn.Conv3d(widths[0], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        rows, cols = x.shape[-2], x.shape[-1]
        h = F.pad(x, (0, (-cols) % self.multiple, 0, (-rows) % self.multiple, 0, 0), mode="replicate")
        skips: list[Tensor] = []
        for encode in self.enc:
            h = encode(h)
            skips.append(h)
            h = F.max_pool3d(h, (1, 2, 2))
        h = self.mid(h)
        for i, decode in enumerate(self.dec):
            h = decode(torch.cat([F.interpolate(h, scale_factor=(1.0, 2.0, 2.0), mode="nearest"),
                                  skips[len(skips) - 1 - i]], 1))
        return x + self.head(h)[..., :rows, :cols]


class Clamped(nn.Module):
    """A stage whose output is clamped at 0 (``net.positive``): ``relu(stage(x))``, in normalised units (0 is
    the model affine's offset, the training stack's 0.1 percentile by default).

    An intensity is never negative; without the clamp the deconvolution loss is free to fit the re-blurred
    data with negative light (a haze around the specimen and ringing, measured in issue 18's note). The loss
    (:class:`~.losses.DeconvLoss`) reads ``stage`` directly to penalise the negative part, so no voxel is left
    without a gradient.
    """

    def __init__(self, stage: nn.Module) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.stage(x))


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
        stage = UNetStage if cfg.kind == "unet" else RCANStage
        self.denoiser = stage(cfg)
        self.deconvolver: nn.Module = Clamped(stage(cfg)) if cfg.positive else stage(cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, Z, Y, X) tensor, got shape {tuple(x.shape)}")
        denoised = self.denoiser(x)
        return denoised, self.deconvolver(denoised)


def receptive_radius(cfg: DeconvNetConfig) -> int:
    """Voxels along any axis beyond which the input no longer reaches an output voxel through the convolutions
    (the channel attention's global average aside), for both stages. RCAN: ``2 * (1 + 2 * groups * blocks +
    2)``. U-Net: per stage, 2 voxels per convolution pair at level ``l`` scaled by ``2 ** l`` in y and x
    (encoder and decoder), ``2 * 2 ** levels`` for the bottom, plus ``2 ** l - 1`` per pooling: the lateral
    reach, the larger one."""
    if cfg.kind == "unet":
        levels = range(cfg.levels)
        per_stage = sum(4 * 2 ** level + 2 ** level - 1 for level in levels) + 2 * 2 ** cfg.levels
        return 2 * per_stage
    return 2 * (1 + 2 * cfg.groups * cfg.blocks + 2)
