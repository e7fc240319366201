"""The model-input contract: what a network sees for one gap, in memory, out of core and inside a package.

A *gap* lies between input slices ``i`` and ``i + 1``; a new slice sits at a relative position
``z`` in (0, 1) inside it (a fractional input index ``i + z``). For one gap a network sees:

- the K input slices around it, at the gap's spacing (:func:`context_indices`; K = 2 for ZAugNet and
  ZAugNet+, ZAugNet-C's K otherwise), the edge slice repeated outside the stack;
- those slices normalised jointly to about [0, 1] (:func:`normalize_pair`);
- for every variant but ZAugNet, one more channel: the DPM plane holding ``z`` (:func:`dpm_plane`);
- an XY size on the network's grid: tiles start on multiples of :data:`SIZE_MULTIPLE`.

A position within :data:`EXACT_ATOL` of an input slice is that slice, copied exactly (:func:`exact`).
Training (:mod:`zaugnet.training.data`), prediction (:mod:`zaugnet.predict`) and the packaged network
(:mod:`zaugnet.export.wrapper`, its torch mirror, pinned by a parity test) all follow this module.
"""

from __future__ import annotations

import numpy as np

#: Tile origins and network input sizes are multiples of this (the networks halve the size four times).
SIZE_MULTIPLE = 16
#: A position this close to an integer is that input slice.
EXACT_ATOL = 1e-9


def context_offsets(n_slices: int) -> np.ndarray:
    """Offsets, in gaps, of the ``n_slices`` input slices around a gap: ``[0, 1]`` for 2, ``[-1, 0, 1, 2]`` for 4."""
    return np.arange(-(n_slices // 2 - 1), n_slices // 2 + 1)


def context_indices(first: np.ndarray | int, gap: np.ndarray | int, n_slices: int, lo: int, hi: int) -> np.ndarray:
    """Indices of the input slices of gaps starting at ``first`` with width ``gap`` (in slices).

    Indices outside ``[lo, hi)`` take the nearest edge slice (replicate), as the cubic baseline does.
    Returns an array of shape ``(len(first), n_slices)`` (or ``(n_slices,)`` for scalars).
    """
    first, gap = np.asarray(first), np.asarray(gap)
    idx = first[..., None] + gap[..., None] * context_offsets(n_slices)
    return np.clip(idx, lo, hi - 1)


def normalize_pair(pair: np.ndarray, mode: str = "minmax", percentiles: tuple[float, float] = (0.1, 99.9),
                   ) -> tuple[float, float]:
    """Joint intensity range ``(low, scale)`` of a gap's input slices: ``(x - low) / scale`` maps them to ~[0, 1].

    ``minmax`` uses the joint minimum and maximum, ``percentile`` the given joint percentiles
    (robust to hot pixels). ``scale`` is never zero.
    """
    data = np.asarray(pair, dtype=np.float32)
    if mode == "minmax":
        lo, hi = float(data.min()), float(data.max())
    else:
        lo, hi = (float(v) for v in np.percentile(data, percentiles))
    return lo, max(hi - lo, 1e-6 * max(abs(hi), 1.0), 1e-12)


def dpm_plane(z: float, shape: tuple[int, int]) -> np.ndarray:
    """The digital propagation matrix: a constant plane holding the relative position ``z``."""
    return np.full(shape, z, dtype=np.float32)


def split_positions(positions: np.ndarray, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """``(gap, z)`` of fractional input positions: the gap each lies in (the last one for ``n - 1``) and where."""
    pos = np.asarray(positions, dtype=np.float64)
    base = np.minimum(np.floor(pos).astype(int), n_slices - 2)
    return base, pos - base


def exact(z: np.ndarray) -> np.ndarray:
    """Which relative positions fall on an input slice (0 or 1, within :data:`EXACT_ATOL` and numpy's default
    relative tolerance): copied, not predicted."""
    z = np.asarray(z, dtype=np.float64)
    return np.isclose(z, 0, atol=EXACT_ATOL) | np.isclose(z, 1, atol=EXACT_ATOL)


def grid_floor(value: int) -> int:
    """``value`` rounded down to the network's grid (:data:`SIZE_MULTIPLE`)."""
    return value // SIZE_MULTIPLE * SIZE_MULTIPLE
