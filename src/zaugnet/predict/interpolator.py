"""A trained network as an interpolator: a gap's input slices in the user's units in, new slices out.

:class:`ModelInterpolator` follows the model-input contract of :mod:`zaugnet.gaps` (the K slices of a
gap, their joint intensity range, the DPM plane) and processes large slices in tiles with a halo, tile
origins on the network's 16-pixel grid so tiles see the same sampling phase as the whole image. The
prediction is mapped back to the input's units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..gaps import SIZE_MULTIPLE, dpm_plane, grid_floor, normalize_pair
from ..variants import variant as get_variant


#: Pixels a forward pass may hold before tiles stop being batched together: four 256 x 256 tiles, one 512 x 512.
#: On this project's 2-core CPU (paper-size network, 2 threads) a batch of four 256 x 256 tiles ran 1.15x the pairs/s
#: of one at a time, a batch of four 1024 x 1024 tiles 0.55x (benchmarks/results/speed_reference.md).
MAX_BATCH_PIXELS = 512 * 512


def _passes(shapes: Sequence[tuple[int, int]], batch_size: int, max_pixels: int | None) -> list[list[int]]:
    """Group jobs (by index) into forward passes: one shape per pass, at most ``batch_size`` jobs, and more
    than one only while the pass holds at most ``max_pixels`` pixels (``None``: no pixel limit)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for index, shape in enumerate(shapes):
        by_shape.setdefault(shape, []).append(index)
    passes: list[list[int]] = []
    for (h, w), group in by_shape.items():
        n = batch_size if max_pixels is None else max(1, min(batch_size, max_pixels // (h * w)))
        passes += [group[i:i + n] for i in range(0, len(group), n)]
    return passes


def _tiles(size: int, tile: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(read_start, read_stop, keep_start, keep_stop)`` along one axis; starts on the 16-px grid."""
    if size <= tile + 2 * halo:
        yield 0, size, 0, size
        return
    for keep0 in range(0, size, tile):
        keep1 = min(keep0 + tile, size)
        read0 = grid_floor(max(0, keep0 - halo))
        read1 = min(size, keep1 + halo)
        yield read0, read1, keep0, keep1


@dataclass
class ModelInterpolator:
    """A trained student, ready to predict slices in the user's units.

    Parameters
    ----------
    network
        Maps ``(B, C, H, W)`` float32 inputs ``[slice_0, slice_1 (, dpm)]`` (ZAugNet-C: K slices,
        then the DPM) in [0, 1] to ``(B, 1, H, W)``.
    variant
        ``zaugnet`` (midpoint only), ``zaugnet+`` (any relative position, DPM channel) or
        ``zaugnet-c`` (K slices around the gap, any position).
    device
        Torch device of ``network``.
    batch_size
        At most this many tiles (of one shape) per forward pass; more than one only while the pass holds at
        most ``max_batch_pixels`` pixels.
    tile
        Side of the kept part of a tile (a multiple of 16); slices larger than ``tile + 2 * halo`` are tiled.
        The default, 1024, predicts slices up to 1280 x 1280 whole: on this project's 2-core CPU a
        1024 x 1024 slice (paper-size network) took 1.51 s instead of 2.60 s as the four 640 x 640 tiles
        (with halo, 1.56x its pixels, in one batch) of the earlier default 512, for about 300 MB more peak
        memory, within 2.5e-5 of the output range (benchmarks/results/speed_reference.md).
    halo
        Context added around each tile on every side (pixels). 128 keeps tiled and untiled
        predictions within 1e-4 of the intensity range for the paper-size network (measured).
    normalization, percentiles
        How each gap's intensity range is taken (see :func:`zaugnet.gaps.normalize_pair`); ``"none"``
        passes the intensities as they are, for networks that normalise inside (exported packages).
    n_slices
        Input slices per gap: 2, or ZAugNet-C's K (slices at the gap's spacing, edge slices repeated).
    weights_sha256
        sha256 of the weights file the network was read from (a checkpoint, or the package's weights
        entry); identifies the model, e.g. for resuming an OME-Zarr output. ``""`` when unknown.
    tta
        Test-time augmentation: the mean of the network's predictions over the 8 rotations and mirror
        images of each tile and over z reversal (16 forward passes per tile).
    max_batch_pixels
        See ``batch_size``; ``None``: batches of ``batch_size`` tiles whatever their size.
    channels_last
        Run an eager network (an ``nn.Module``, not TorchScript) on the CPU in channels-last memory format;
        the module is converted in place. Measured here (2 threads): 1.20x the pairs/s for the paper-size
        network, 0.96x for the small shipped ZAugNet+, within 2e-5 of the output range of the default
        format (benchmarks/results/speed_reference.md); hence off by default.
    """

    network: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    variant: str
    device: str = "cpu"
    batch_size: int = 4
    tile: int = 1024
    halo: int = 128
    normalization: str = "minmax"
    percentiles: tuple[float, float] = (0.1, 99.9)
    name: str = ""
    n_slices: int = 2
    weights_sha256: str = ""
    tta: bool = False
    max_batch_pixels: int | None = MAX_BATCH_PIXELS
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.tile % SIZE_MULTIPLE or self.tile <= 0:
            raise InputError("--tile", f"must be a positive multiple of {SIZE_MULTIPLE}, got {self.tile}")
        if self.halo < 0:
            raise InputError("--halo", f"must be zero or positive, got {self.halo}")
        if self.batch_size < 1:
            raise InputError("--batch-size", f"must be at least 1, got {self.batch_size}")
        if self.max_batch_pixels is not None and self.max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels must be at least 1 or None, got {self.max_batch_pixels}")
        if self._channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        get_variant(self.variant)  # an unknown variant is refused here
        self.name = self.name or self.variant

    @property
    def _channels_last(self) -> bool:
        """Whether inputs go to the network channels-last: asked for, an eager module, on the CPU."""
        return (self.channels_last and isinstance(self.network, nn.Module)
                and not isinstance(self.network, torch.jit.ScriptModule) and torch.device(self.device).type == "cpu")

    @property
    def with_dpm(self) -> bool:
        """Whether the network takes the DPM plane after the image channels (all but ZAugNet)."""
        return get_variant(self.variant).with_dpm

    @property
    def midpoint_only(self) -> bool:
        """ZAugNet predicts only z = 0.5; ZAugNet+ and ZAugNet-C any z in (0, 1)."""
        return get_variant(self.variant).midpoint_only

    @torch.no_grad()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.tta:
            return self.network(x).float().cpu().numpy()[:, 0]
        k = self.n_slices
        total = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
        for flipped in (False, True):  # z reversal: the slices in reverse order, the DPM at 1 - z
            v = x
            if flipped:
                v = torch.cat([x[:, :k].flip(1), 1.0 - x[:, k:]], 1) if self.with_dpm else x.flip(1)
            for turns in range(4):
                for mirror in (False, True):
                    u = torch.rot90(v, turns, (2, 3))
                    u = u.flip(3) if mirror else u
                    y = self.network(u).float()
                    y = y.flip(3) if mirror else y
                    total += torch.rot90(y, -turns, (2, 3))
        return (total / 16).cpu().numpy()[:, 0]

    def predict(self, first: np.ndarray, second: np.ndarray, z: Sequence[float]) -> np.ndarray:
        """Slices at relative positions ``z`` between ``first[i]`` and ``second[i]`` (each (B, Y, X)), in their units.

        For two-slice models; ZAugNet-C needs :meth:`predict_windows`.
        """
        if self.n_slices != 2:
            raise ValueError(f"{self.name} takes {self.n_slices} slices per gap: use predict_windows")
        return self.predict_windows(np.stack([np.asarray(first), np.asarray(second)], axis=1), z)

    def predict_windows(self, windows: np.ndarray, z: Sequence[float],
                        ranges: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
        """Slices at relative positions ``z`` inside the gaps of ``windows`` (B, K, Y, X), float32 in their units.

        ``windows[i]`` holds the K input slices of gap ``i`` (the gap lies between slices K/2 - 1 and K/2).
        ``ranges[i]``, if given, is gap ``i``'s ``(low, scale)`` taken over more than the window holds (out of
        core: the whole slices, of which the window is one block); by default it is taken from the window.
        """
        windows = np.asarray(windows, dtype=np.float32)
        b, k, h, w = windows.shape
        if k != self.n_slices:
            raise ValueError(f"{self.name} takes {self.n_slices} slices per gap, got {k}")
        if ranges is None:
            ranges = [(0.0, 1.0) if self.normalization == "none" else
                      normalize_pair(window, self.normalization, self.percentiles) for window in windows]
        inputs = np.empty((b, k + int(self.with_dpm), h, w), dtype=np.float32)
        for i, (lo, scale) in enumerate(ranges):
            inputs[i, :k] = (windows[i] - lo) / scale
            if self.with_dpm:
                inputs[i, k] = dpm_plane(float(z[i]), (h, w))
        out = np.empty((b, h, w), dtype=np.float32)
        jobs = [(i, ys, xs) for i in range(b) for ys in _tiles(h, self.tile, self.halo)
                for xs in _tiles(w, self.tile, self.halo)]
        shapes = [(ys[1] - ys[0], xs[1] - xs[0]) for _, ys, xs in jobs]
        for indices in _passes(shapes, self.batch_size, self.max_batch_pixels):
            group = [jobs[j] for j in indices]
            pred = self._run(np.stack([inputs[i, :, ys[0]:ys[1], xs[0]:xs[1]] for i, ys, xs in group]))
            for p, (i, ys, xs) in zip(pred, group):
                out[i, ys[2]:ys[3], xs[2]:xs[3]] = p[ys[2] - ys[0]:ys[3] - ys[0], xs[2] - xs[0]:xs[3] - xs[0]]
        for i, (lo, scale) in enumerate(ranges):
            out[i] = out[i] * scale + lo
        return out


