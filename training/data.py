"""Self-supervised training data: triplets from high-resolution stacks, split, crops, augmentation.

A *volume* is one (Z, Y, X) array: a stack, or one time point / channel of a larger one. A
*triplet* ``(volume, n1, n2, n3)`` uses slices n1 and n3 as input and n2 as ground truth at the
relative position ``z = (n2 - n1) / (n3 - n1)``. The context variant (ZAugNet-C) also takes the
slices at the same spacing above and below, ``n1 + j (n3 - n1)`` for ``j = -(K/2 - 1) .. K/2``,
with indices outside the triplet's block replaced by the block's edge slice (replicate), exactly as
:func:`zaugnet.gaps.context_indices` does at prediction time. Samples are cut from the volumes in memory (or
memory-mapped) on the fly; nothing is cached to disk.

Randomness is drawn from ``numpy.random.default_rng((seed, step, rank))``: batch ``step`` is the
same whether a run was interrupted and resumed or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zaugnet.gaps import context_indices, dpm_plane, normalize_pair
from zaugnet.variants import variant as get_variant

from .config import DataConfig

Triplet = tuple[int, int, int, int]  # (volume index, n1, n2, n3)


def midpoint_triplets(n_slices: int) -> list[tuple[int, int, int]]:
    """ZAugNet triplets ``(i, i + 1, i + 2)`` of a stack with ``n_slices`` slices."""
    return [(i, i + 1, i + 2) for i in range(n_slices - 2)]


def window_triplets(n_slices: int, window: int = 7) -> list[tuple[int, int, int]]:
    """ZAugNet+ triplets: every ``n1 < n2 < n3`` with ``n3 - n1 <= window``."""
    return [(n1, n2, n3)
            for n1 in range(n_slices)
            for n3 in range(n1 + 2, min(n1 + window, n_slices - 1) + 1)
            for n2 in range(n1 + 1, n3)]


def triplets_for(n_slices: int, variant: str, window: int = 7) -> list[tuple[int, int, int]]:
    """The triplets a ``variant`` trains on: midpoints for a midpoint-only one (ZAugNet), window triplets otherwise."""
    return midpoint_triplets(n_slices) if get_variant(variant).midpoint_only else window_triplets(n_slices, window)


@dataclass(frozen=True)
class Split:
    """Which z-range of which volume is for training and which for validation."""

    train: list[tuple[int, int, int]]  # (volume index, z start, z stop)
    val: list[tuple[int, int, int]]


def split_volumes(n_slices: Sequence[int], val_fraction: float, seed: int = 0) -> Split:
    """Split by volume, never by triplet, so no slice is in both sets.

    With several volumes, ``round(val_fraction * n)`` of them (at least one, and at least one left
    for training) are held out, chosen at random with ``seed``. With a single volume, its last
    contiguous block of ``ceil(val_fraction * Z)`` slices (at least 3) is held out. ``val_fraction``
    0 or a single volume too short to split gives an empty validation set.
    """
    n = len(n_slices)
    if val_fraction <= 0 or n == 0:
        return Split([(i, 0, z) for i, z in enumerate(n_slices)], [])
    if n == 1:
        z = n_slices[0]
        n_val = max(3, int(np.ceil(val_fraction * z)))
        if z - n_val < 3:
            return Split([(0, 0, z)], [])
        return Split([(0, 0, z - n_val)], [(0, z - n_val, z)])
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in order[:n_val])
    return Split([(i, 0, z) for i, z in enumerate(n_slices) if i not in val],
                 [(i, 0, n_slices[i]) for i in val])


def collect_triplets(blocks: Sequence[tuple[int, int, int]], variant: str, window: int) -> list[Triplet]:
    """All triplets inside the given ``(volume, z start, z stop)`` blocks."""
    return [(v, a + n1, a + n2, a + n3) for v, a, b in blocks for n1, n2, n3 in triplets_for(b - a, variant, window)]


class TripletSampler:
    """Makes training batches and a fixed validation set from volumes and triplets.

    Parameters
    ----------
    volumes
        The (Z, Y, X) arrays (any real dtype, in memory or memory-mapped).
    variant
        ``zaugnet`` (input ``[slice_0, slice_1]``), ``zaugnet+`` (adds the DPM channel) or
        ``zaugnet-c`` (``n_slices`` slices around the gap, then the DPM).
    cfg
        Crop size, augmentation and normalisation settings. The crop is the largest multiple of 16
        not above ``cfg.crop_size`` and the smallest volume's Y and X.
    n_slices
        Input slices per sample (ZAugNet-C's ``context_slices``; 2 otherwise).
    blocks
        ``(volume, z start, z stop)`` blocks the triplets were taken from (default: whole volumes);
        context slices never leave the block of their triplet.
    """

    def __init__(self, volumes: Sequence[np.ndarray], variant: str, cfg: DataConfig, n_slices: int = 2,
                 blocks: Sequence[tuple[int, int, int]] | None = None) -> None:
        self.volumes = volumes
        self.with_dpm = get_variant(variant).with_dpm
        self.n_slices = get_variant(variant).n_slices(n_slices)
        self.blocks = list(blocks) if blocks is not None else [(v, 0, vol.shape[0]) for v, vol in enumerate(volumes)]
        self.cfg = cfg
        # square crops whose side is a multiple of 16 (the networks' training forward needs it)
        self.crop = min([cfg.crop_size] + [min(v.shape[1:]) for v in volumes]) // 16 * 16
        if self.crop < 16:
            raise ValueError("volumes must be at least 16 x 16 pixels")

    def _inputs(self, triplet: Triplet) -> list[int]:
        v, n1, _, n3 = triplet
        if self.n_slices == 2:
            return [n1, n3]
        lo, hi = next((a, b) for vb, a, b in self.blocks if vb == v and a <= n1 and n3 < b)
        return [int(i) for i in context_indices(n1, n3 - n1, self.n_slices, lo, hi)]

    def sample(self, triplet: Triplet, rng: np.random.Generator | None, crop: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """One ``(input (C, H, W), target (1, H, W))`` sample; random crop and augmentation when ``rng`` is given."""
        v, n1, n2, n3 = triplet
        vol = self.volumes[v]
        crop = crop or self.crop
        h, w = vol.shape[1:]
        ch, cw = min(crop, h), min(crop, w)
        if rng is None:
            y0, x0 = (h - ch) // 2, (w - cw) // 2
        else:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        k = self.n_slices
        slices = np.stack([vol[n, y0:y0 + ch, x0:x0 + cw] for n in (*self._inputs(triplet), n2)]).astype(np.float32)
        lo, scale = normalize_pair(slices[:k], self.cfg.normalization, self.cfg.percentiles)
        slices = (slices - lo) / scale
        z = (n2 - n1) / (n3 - n1)
        if rng is not None and self.cfg.augment:
            slices, z = self._augment(slices, z, rng)
        inputs = list(slices[:k])
        if self.with_dpm:
            inputs.append(dpm_plane(z, slices.shape[1:]))
        return np.stack(inputs), slices[k:].copy()

    def _augment(self, s: np.ndarray, z: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The same contrast/brightness jitter, 90-degree rotation and flip on all slices; random z reversal."""
        cfg = self.cfg
        if rng.random() < cfg.p_jitter:
            mean = s[:-1].mean()
            s = (s - mean) * rng.uniform(*cfg.contrast) + mean
        if rng.random() < cfg.p_jitter:
            s = s * rng.uniform(*cfg.brightness)
        s = np.rot90(s, k=int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            s = s[:, :, ::-1]
        if rng.random() < 0.5:  # reverse the input slices along z: the target now sits at 1 - z
            s = s[[*range(len(s) - 2, -1, -1), len(s) - 1]]
            z = 1.0 - z
        return np.ascontiguousarray(s, dtype=np.float32), z

    def batch(self, triplets: Sequence[Triplet], batch_size: int, seed: int, step: int, rank: int = 0,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch number ``step``: random triplets, crops and augmentation, reproducible by ``(seed, step, rank)``."""
        rng = np.random.default_rng((seed, step, rank))
        picks = rng.integers(0, len(triplets), size=batch_size)
        pairs = [self.sample(triplets[int(i)], rng) for i in picks]
        return (torch.from_numpy(np.stack([p[0] for p in pairs])),
                torch.from_numpy(np.stack([p[1] for p in pairs])))

    def fixed(self, triplets: Sequence[Triplet], max_samples: int, crop: int | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """A deterministic validation set: centre crops of up to ``max_samples`` evenly spread triplets."""
        if not triplets:
            raise ValueError("no validation triplets")
        idx = np.unique(np.linspace(0, len(triplets) - 1, min(max_samples, len(triplets))).round().astype(int))
        pairs = [self.sample(triplets[int(i)], None, crop) for i in idx]
        return (torch.from_numpy(np.stack([p[0] for p in pairs])),
                torch.from_numpy(np.stack([p[1] for p in pairs])))
