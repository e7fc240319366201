"""The packaged network: a trained student with the intensity normalisation inside.

:class:`NormalizedStudent` takes ONE tensor ``(batch, channel, y, x)`` in the user's intensity units,
channels ``[slice_0, slice_1]`` (ZAugNet), ``[slice_0, slice_1, dpm]`` (ZAugNet+) or the K slices
around the gap and the DPM, ``[slice_-1, slice_0, slice_1, slice_2, dpm]`` for K = 4 (ZAugNet-C), and
returns ``(batch, 1, y, x)`` in the same units. Per sample it takes the joint range of the K image
channels (min/max, or the training run's percentiles), maps them to [0, 1], runs the student and maps
the prediction back. The DPM channel (relative z in [0, 1], always the last) is passed through
unchanged. A constant input (zero range) is guarded exactly as
:func:`zaugnet.training.data.normalize_pair` does, so the prediction equals
:class:`zaugnet.training.predict.ModelInterpolator` (``predict_windows``) on the same slices.

Consumers (bioimageio.core, deepImageJ) therefore need no pre- or postprocessing. The module is
written in the subset of Python that ``torch.jit.script`` and the ONNX exporter understand, and it
has no imports beyond torch so its source can be shipped inside a BioImage.IO package.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _sorted_quantile(values: Tensor, q: float) -> Tensor:
    """Quantile ``q`` (in [0, 1]) of each row of an ascending-sorted ``(B, N)`` tensor, shape ``(B, 1)``.

    Linear interpolation between the two nearest ranks (numpy's default ``percentile`` method).
    ``N`` is taken from the data (``ones_like(...).sum()``) so an exported graph keeps it dynamic.
    """
    n = torch.ones_like(values[0:1]).sum(dim=1, keepdim=True)  # (1, 1), float
    pos = (n - 1.0) * q
    i0 = torch.floor(pos)
    frac = pos - i0
    i1 = torch.minimum(i0 + 1.0, n - 1.0)
    b = values.shape[0]
    lo = torch.gather(values, 1, i0.long().expand(b, 1))
    hi = torch.gather(values, 1, i1.long().expand(b, 1))
    return lo + (hi - lo) * frac


class NormalizedStudent(nn.Module):
    """A student wrapped for export: intensities in, intensities out.

    Parameters
    ----------
    student
        A :class:`zaugnet.training.nets.Student` or ``ContextStudent`` in eval mode (inputs in [0, 1]).
    with_dpm
        Whether a DPM channel follows the image channels (ZAugNet+, ZAugNet-C).
    normalization
        ``"minmax"`` (joint min and max of the image channels) or ``"percentile"``.
    percentiles
        Low and high percentile (0-100) for ``"percentile"``.
    n_slices
        Image channels: 2 (ZAugNet, ZAugNet+) or ZAugNet-C's K.
    """

    def __init__(self, student: nn.Module, with_dpm: bool, normalization: str = "minmax",
                 percentiles: tuple[float, float] = (0.1, 99.9), n_slices: int = 2) -> None:
        super().__init__()
        if normalization not in ("minmax", "percentile"):
            raise ValueError(f"normalization must be 'minmax' or 'percentile', got {normalization!r}")
        if n_slices < 2:
            raise ValueError(f"n_slices must be at least 2, got {n_slices}")
        self.student = student
        self.with_dpm = bool(with_dpm)
        self.n_slices = int(n_slices)
        self.percentile = normalization == "percentile"
        self.q_low = float(percentiles[0]) / 100.0
        self.q_high = float(percentiles[1]) / 100.0

    def intensity_range(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample ``(low, scale)`` of the image channels (jointly), each ``(B, 1, 1, 1)``; ``scale > 0``."""
        flat = images.reshape(images.shape[0], -1)
        if self.percentile:
            ordered = torch.sort(flat, dim=1).values
            lo = _sorted_quantile(ordered, self.q_low)
            hi = _sorted_quantile(ordered, self.q_high)
        else:
            lo = flat.min(dim=1, keepdim=True).values
            hi = flat.max(dim=1, keepdim=True).values
        # as normalize_pair: scale = max(hi - lo, 1e-6 * max(|hi|, 1), 1e-12)
        scale = torch.maximum(hi - lo, torch.clamp(hi.abs(), min=1.0) * 1e-6)
        scale = torch.clamp(scale, min=1e-12)
        return lo.reshape(-1, 1, 1, 1), scale.reshape(-1, 1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, n_slices (+ 1 for the DPM), Y, X)`` in intensity units -> ``(B, 1, Y, X)`` in the same units."""
        k = self.n_slices
        images = x[:, 0:k]
        lo, scale = self.intensity_range(images)
        net_in = (images - lo) / scale
        if self.with_dpm:
            net_in = torch.cat((net_in, x[:, k:k + 1]), 1)
        return self.student(net_in) * scale + lo
