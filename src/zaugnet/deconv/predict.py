"""Deconvolving stacks: a trained ZS-DeconvNet (tiles with a halo) or Richardson-Lucy, in the user's units.

A *method* is any callable ``volume (Z, Y, X) -> (denoised or None, deconvolved)``, both float32 ZYX arrays in
the volume's own units: :class:`ModelDeconvolver` (a two-stage network and the fixed :class:`Affine` stored
with it) and :class:`RLDeconvolver`. :func:`deconvolve_stack` runs one on every selected volume of a stack and
keeps its voxel size.

The network is a protocol (:data:`DeconvNetwork`): a callable on a ``(1, 1, Z, Y, X)`` float32 tensor of
normalised intensities returning ``(denoised, deconvolved)`` of the same shape. How a checkpoint becomes
one is not this module's business (``zaugnet.training.deconv.checkpoint.load_deconv_network``): the core
imports nothing from ``zaugnet.training``.

Intensities: the network sees ``(raw - offset) / scale`` with the affine computed once from the training
stack (its percentiles 0.1 and 99.9 by default) and stored with the model; both outputs are mapped back by
the inverse. There is no per-tile or per-stack stretch, so tiles agree and intensities stay quantitative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..io.tiff import Stack, iter_volumes
from .forward import richardson_lucy

__all__ = ["Affine", "DeconvNetwork", "ModelDeconvolver", "ParitySplit", "RLDeconvolver", "auto_tile", "deconvolve_stack",
           "deconvolve_volume", "rl_psf_shape", "select_volumes", "tiles"]

#: A network: ``(1, 1, Z, Y, X)`` normalised tensor -> ``(denoised, deconvolved)`` tensors of that shape.
DeconvNetwork = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: Zeros (normalised background) added around the volume before the network runs (z, y, x): the note's value
#: for the reference plug-in (at least 4 slices and 16 px).
MARGIN = (4, 16, 16)
#: Most voxels sampled for the percentiles of :meth:`Affine.from_volumes` (evenly strided beyond it).
_MAX_SAMPLES = 20_000_000


@dataclass(frozen=True)
class Affine:
    """The fixed intensity map of a model: ``normalised = (raw - offset) / scale``.

    Parameters
    ----------
    offset, scale
        Finite; ``scale > 0``.
    """

    offset: float
    scale: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.offset) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"an affine needs a finite offset and a finite scale > 0, got {self.offset}, "
                             f"{self.scale}")

    @classmethod
    def from_volumes(cls, volumes: Sequence[np.ndarray], percentiles: tuple[float, float] = (0.1, 99.9),
                     where: str = "stack") -> Affine:
        """The affine mapping the ``percentiles`` of all voxels of ``volumes`` (together) to 0 and 1.

        Raises
        ------
        InputError
            Naming ``where``: the volumes are flat between those percentiles.
        """
        total = sum(v.size for v in volumes)
        stride = max(1, math.ceil(total / _MAX_SAMPLES))
        sample = np.concatenate([np.asarray(v).ravel()[::stride] for v in volumes]).astype(np.float64)
        low, high = (float(p) for p in np.percentile(sample, percentiles))
        if not high > low:
            raise InputError(where, f"is flat between its percentiles {percentiles[0]} and {percentiles[1]} "
                                    f"({low:g}); nothing to train on")
        return cls(offset=low, scale=high - low)

    @classmethod
    def from_dict(cls, data: Any, where: str = "affine") -> Affine:
        """The affine stored as ``{"offset": ..., "scale": ...}`` (InputError naming ``where`` otherwise)."""
        try:
            return cls(offset=float(data["offset"]), scale=float(data["scale"]))
        except (TypeError, KeyError, ValueError):
            raise InputError(where, "has no valid intensity normalisation (offset and scale > 0)") from None

    def to_dict(self) -> dict[str, float]:
        """Plain data for checkpoints."""
        return {"offset": self.offset, "scale": self.scale}

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """``(raw - offset) / scale`` as float32."""
        return ((np.asarray(raw, dtype=np.float64) - self.offset) / self.scale).astype(np.float32)

    def restore(self, normalised: np.ndarray) -> np.ndarray:
        """The inverse, ``normalised * scale + offset``, as float32 (the user's units)."""
        return (np.asarray(normalised, dtype=np.float64) * self.scale + self.offset).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: its core (written to the output) and its input window (core plus halo), in padded coordinates."""

    core: tuple[slice, slice, slice]
    window: tuple[slice, slice, slice]

    @property
    def crop(self) -> tuple[slice, slice, slice]:
        """The core's place inside the window's output."""
        return tuple(slice(c.start - w.start, c.stop - w.start)  # type: ignore[return-value]
                     for c, w in zip(self.core, self.window))


def tiles(region: Sequence[tuple[int, int]], bounds: Sequence[int], tile: Sequence[int],
          halo: Sequence[int]) -> Iterator[Tile]:
    """Tiles whose cores cover ``region`` (``(start, stop)`` per axis) and whose windows add ``halo``
    each side, clipped to ``[0, bounds)``.

    Parameters
    ----------
    region
        The part of the (padded) volume to predict.
    bounds
        The padded volume's shape.
    tile, halo
        Core size (>= 1) and context (>= 0) per axis.
    """
    if any(t < 1 for t in tile) or any(h < 0 for h in halo):
        raise ValueError(f"tile sizes must be >= 1 and halos >= 0, got {tuple(tile)} and {tuple(halo)}")
    starts = [range(a, b, t) for (a, b), t in zip(region, tile)]
    for corner in np.ndindex(*(len(s) for s in starts)):
        core, window = [], []
        for axis, i in enumerate(corner):
            start = starts[axis][i]
            stop = min(start + tile[axis], region[axis][1])
            core.append(slice(start, stop))
            window.append(slice(max(0, start - halo[axis]), min(bounds[axis], stop + halo[axis])))
        yield Tile(tuple(core), tuple(window))  # type: ignore[arg-type]


def auto_tile(shape: Sequence[int], halo: Sequence[int], max_voxels: int) -> tuple[int, int, int]:
    """The whole ``shape`` if it fits ``max_voxels`` with its halo, else tiles of at most 64 slices whose y and
    x are halved until a tile and its halo fit (at least 1 voxel)."""
    tile = [int(n) for n in shape]

    def voxels(t: Sequence[int]) -> int:
        return math.prod(n + 2 * h for n, h in zip(t, halo))

    if voxels(tile) <= max_voxels:
        return tuple(tile)  # type: ignore[return-value]
    tile[0] = min(tile[0], 64)
    while voxels(tile) > max_voxels and (tile[1] > 1 or tile[2] > 1):
        tile[1], tile[2] = max(1, math.ceil(tile[1] / 2)), max(1, math.ceil(tile[2] / 2))
    while voxels(tile) > max_voxels and tile[0] > 1:
        tile[0] = max(1, tile[0] // 2)
    return tuple(tile)  # type: ignore[return-value]


@torch.no_grad()
def deconvolve_volume(volume: np.ndarray, network: DeconvNetwork, affine: Affine, *,
                      tile: Sequence[int] | None = None, halo: Sequence[int] = MARGIN,
                      margin: Sequence[int] = MARGIN, device: str | torch.device = "cpu",
                      align: Sequence[int] = (1, 1, 1), progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Denoised and deconvolved ``volume`` (ZYX), float32 in its own units.

    The normalised volume is padded with ``margin`` zeros each side; tiles of ``tile`` voxels (default:
    the whole volume in one piece), each run with ``halo`` voxels of context, are stitched by keeping their
    centres. With a halo of at least the network's receptive radius the tiles give what one piece gives,
    the channel attention's tile-wide average aside.

    Parameters
    ----------
    volume
        ZYX array, any real dtype.
    network
        See :data:`DeconvNetwork`; run in eval mode without gradients.
    affine
        The model's intensity map.
    tile, halo, margin
        Per axis (z, y, x): core size of a tile, context around it, zeros around the volume.
    device
        Where the network runs.
    align
        Per axis: a network gives what one piece gives only on windows starting on its grid (a U-Net pooling
        y and x by 8, :class:`ParitySplit` taking every second slice): tiles, halos and margins are rounded up
        to multiples of these.
    progress
        A progress bar over the tiles.

    Returns
    -------
    tuple of numpy.ndarray
        ``(denoised, deconvolved)``, each of ``volume``'s shape.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"expected a ZYX volume, got shape {volume.shape}")
    def aligned(sizes: Sequence[int]) -> tuple[int, ...]:
        return tuple(-(-int(n) // a) * a for n, a in zip(sizes, align))

    margin = aligned(margin)
    padded = np.pad(affine.normalise(volume), [(m, m) for m in margin])
    region = [(m, m + n) for m, n in zip(margin, volume.shape)]
    if tile is None:  # one piece: the whole padded volume
        tile, halo = volume.shape, [max(h, m) for h, m in zip(halo, margin)]
    else:
        tile, halo = aligned(tile), aligned(halo)
    outputs = [np.empty(volume.shape, np.float32) for _ in range(2)]
    plan = list(tiles(region, padded.shape, tile, halo))
    for piece in tqdm(plan, desc="tiles", unit="tile", disable=not progress or len(plan) < 2):
        x = torch.from_numpy(np.ascontiguousarray(padded[piece.window]))[None, None].to(device)
        results = network(x)
        target = tuple(slice(c.start - m, c.stop - m) for c, m in zip(piece.core, margin))
        for out, result in zip(outputs, results):
            out[target] = result[0, 0][piece.crop].float().cpu().numpy()
    return affine.restore(outputs[0]), affine.restore(outputs[1])


class ParitySplit(torch.nn.Module):
    """A ZS-DeconvNet run at the z spacing it was trained at on a whole stack: its odd and its even slices as two
    volumes of one batch (each at twice the stack's spacing, as the odd slices it learned from), the outputs
    interleaved back. Run on the whole stack, the network would see structures twice as long in z as in
    training and deconvolve them too little (measured: 1 dB less on the benchmark, issue 18's note). An odd
    slice count is evened by repeating the last slice, cropped afterwards."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, z, rows, cols = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        x = torch.cat([x, x[:, :, z - z % 2:]], 2)  # an odd count evened (no branch: the ONNX graph keeps both)
        half = (z + 1) // 2
        pairs = x.reshape(b, c, half, 2, rows, cols).permute(0, 3, 1, 2, 4, 5).reshape(b * 2, c, half, rows, cols)
        denoised, deconvolved = self.network(pairs)
        return _interleave(denoised, b, z), _interleave(deconvolved, b, z)


def _interleave(pairs: torch.Tensor, b: int, z: int) -> torch.Tensor:
    """``(2 b, C, H, Y, X)`` (odd and even slices of each volume) -> ``(b, C, z, Y, X)``."""
    c, half, rows, cols = pairs.shape[1], pairs.shape[2], pairs.shape[3], pairs.shape[4]
    out = pairs.reshape(b, 2, c, half, rows, cols).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * half, rows, cols)
    return out[:, :, :z]


@dataclass
class ModelDeconvolver:
    """A trained network and its affine as a method on volumes (:func:`deconvolve_volume` with these options).

    ``max_voxels`` (with ``tile`` None) picks tiles by :func:`auto_tile`; None: the whole volume in one piece.
    """

    network: DeconvNetwork
    affine: Affine
    tile: Sequence[int] | None = None
    halo: Sequence[int] = MARGIN
    margin: Sequence[int] = MARGIN
    device: str = "cpu"
    align: Sequence[int] = (1, 1, 1)
    max_voxels: int | None = None
    progress: bool = False
    name: str = "model"

    def __call__(self, volume: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        tile = self.tile
        if tile is None and self.max_voxels is not None:
            padded = [n + 2 * m for n, m in zip(volume.shape, self.margin)]
            if math.prod(padded) > self.max_voxels:
                tile = auto_tile(volume.shape, self.halo, self.max_voxels)
        return deconvolve_volume(volume, self.network, self.affine, tile=tile, halo=self.halo,
                                 margin=self.margin, device=self.device, align=self.align,
                                 progress=self.progress)


@dataclass
class RLDeconvolver:
    """Richardson-Lucy (:func:`~zaugnet.deconv.forward.richardson_lucy`) as a method on volumes.

    The volume's ``background_percentile``-th percentile is subtracted (negative values set to 0), the
    result deconvolved and the background added back, so the output keeps the input's baseline. There is no
    denoised output.
    """

    psf: np.ndarray
    iterations: int = 20
    padding: str = "zeros"
    background_percentile: float = 1.0
    name: str = field(default="rl")

    def __call__(self, volume: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        data = np.asarray(volume, dtype=np.float64)
        background = float(np.percentile(data, self.background_percentile))
        observed = np.clip(data - background, 0.0, None).astype(np.float32)
        result = richardson_lucy(observed, self.psf, self.iterations, padding=self.padding)
        return None, (result + background).astype(np.float32)


def select_volumes(stack: Stack, channel: str | None, where: str = "stack") -> list[tuple[str, np.ndarray]]:
    """The ``(label, zyx)`` volumes of ``stack`` to deconvolve: all of one channel (``"c1"``), every time point.

    Raises
    ------
    InputError
        A stack with several channels and no ``channel``, or a channel it does not have.
    """
    volumes = list(iter_volumes(stack))
    n_channels = stack.data.shape[stack.axes.index("C")] if "C" in stack.axes else 1
    if channel is None:
        if n_channels > 1:
            raise InputError(where, f"has {n_channels} channels (c0 .. c{n_channels - 1}); choose one with "
                                    "--channel")
        return volumes
    picked = [(label, v) for label, v in volumes if channel in label.split("_")]
    if not picked:
        have = ", ".join(f"c{i}" for i in range(n_channels)) if "C" in stack.axes else "one, unlabelled"
        raise InputError(where, f"has no channel {channel!r} (channels: {have})")
    return picked


def deconvolve_stack(stack: Stack, method: Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray]],
                     channel: str | None = None, progress: bool = False) -> tuple[Stack | None, Stack]:
    """``method`` on every selected volume (:func:`select_volumes`): the denoised stack (None if the method has
    no such output) and the deconvolved one, float32, the channel axis dropped when one was chosen, the voxel
    size, ImageJ Info and Properties kept."""
    picked = select_volumes(stack, channel, str(stack.path or "stack"))
    axes = "".join(a for a in stack.axes if a != "C" or channel is None)
    outer = [stack.data.shape[stack.axes.index(a)] for a in axes if a in "TC"]
    results: list[list[np.ndarray | None]] = [[], []]
    for _, volume in tqdm(picked, desc="volumes", unit="volume", disable=not progress or len(picked) < 2):
        for store, out in zip(results, method(volume)):
            store.append(out)
    carried = {k: v for k, v in stack.imagej.items() if k in ("Info", "Properties")}

    def assemble(outs: list[np.ndarray | None]) -> Stack | None:
        if any(o is None for o in outs):
            return None
        data = np.stack(outs).reshape(*outer, *outs[0].shape)  # type: ignore[union-attr]
        zyx = [a for a in axes if a not in "TC"]
        order = [a for a in axes if a in "TC"] + zyx  # iter_volumes' order: T and C first, then Z Y X
        data = data.transpose([order.index(a) for a in axes])
        return Stack(data=np.ascontiguousarray(data), axes=axes, voxel_size=stack.voxel_size, path=None,
                     imagej=dict(carried))

    deconvolved = assemble(results[1])
    if deconvolved is None:
        raise ValueError("the method returned no deconvolved volume")
    return assemble(results[0]), deconvolved


def rl_psf_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """The PSF size Richardson-Lucy simulates for a ZYX volume: ``2 Z - 1`` planes (at most 257) and 65 x 65
    pixels (at most ``2 Y - 1`` x ``2 X - 1``), the benchmark's choice."""
    z, y, x = (int(n) for n in shape)
    return min(2 * z - 1, 257), min(65, 2 * y - 1), min(65, 2 * x - 1)
