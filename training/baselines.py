"""Classical axial interpolation baselines: linear and cubic (Keys cubic convolution, a = -0.5).

Positions are fractional indices into the input's z axis (0 = first slice, n - 1 = last). Both
methods return original slices exactly at integer positions. ``cubic`` uses the four slices
around each gap (i - 1, i, i + 1, i + 2), like the "bicubic" resampling of Fiji, OpenCV or PIL, with
the edge slice repeated at the first and last gap.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BaselineMethod = Literal["linear", "cubic"]
BASELINES: tuple[str, ...] = ("linear", "cubic")


def keys_weights(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Weights of slices (i - 1, i, i + 1, i + 2) for fractional offsets ``t`` in [0, 1), shape (len(t), 4)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    d = np.abs(np.concatenate([t + 1, t, 1 - t, 2 - t], axis=1))
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def interpolate_axial(volume: np.ndarray, positions: np.ndarray, method: BaselineMethod = "cubic") -> np.ndarray:
    """Slices of ``volume`` (Z, Y, X) at fractional z ``positions``, as float32 in the input's units.

    Raises
    ------
    ValueError
        For an unknown method or positions outside [0, Z - 1].
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = volume.shape[0]
    if positions.size and (positions.min() < 0 or positions.max() > n - 1):
        raise ValueError(f"positions must lie in [0, {n - 1}]")
    base = np.minimum(np.floor(positions).astype(int), n - 2)
    t = positions - base
    out = np.empty((len(positions), *volume.shape[1:]), dtype=np.float32)
    if method == "linear":
        for k, (i, f) in enumerate(zip(base, t)):
            out[k] = volume[i] if f == 0 else (1 - f) * volume[i].astype(np.float32) + f * volume[i + 1]
    elif method == "cubic":
        weights = keys_weights(t)
        for k, (i, f) in enumerate(zip(base, t)):
            if f == 0:
                out[k] = volume[i]
                continue
            if f == 1:
                out[k] = volume[i + 1]
                continue
            idx = np.clip([i - 1, i, i + 1, i + 2], 0, n - 1)
            out[k] = np.tensordot(weights[k].astype(np.float32), volume[idx].astype(np.float32), axes=1)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {BASELINES}")
    return out
