"""Classical axial interpolation baselines: linear, cubic (Keys cubic convolution, a = -0.5) and spline.

Positions are fractional indices into the input's z axis (0 = first slice, n - 1 = last). Every
method returns original slices exactly at integer positions. None wins everywhere: linear is often
best on noisy stacks, the spline on smooth, finely sampled ones; a model has to beat the best of them.

- ``linear``: the two slices of the gap.
- ``cubic``: the four slices around each gap (i - 1, i, i + 1, i + 2), like the "bicubic" resampling of
  Fiji, OpenCV or PIL, with the edge slice repeated at the first and last gap.
- ``spline``: a not-a-knot cubic spline along z through all slices of each (y, x) column
  (``scipy.interpolate.CubicSpline``), computed in strips of rows so memory stays bounded.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline

BaselineMethod = Literal["linear", "cubic", "spline"]
BASELINES: tuple[str, ...] = ("linear", "cubic", "spline")
#: Float64 values a spline strip may hold (its coefficients and values): about 64 MB.
SPLINE_STRIP_VALUES = 8 * 1024**2


def reach(method: str, gap: int, n_slices: int) -> tuple[int, int]:
    """The input slices ``[start, stop)`` that ``method`` reads to fill gap ``gap`` of ``n_slices`` slices."""
    if method == "linear":
        return gap, min(n_slices, gap + 2)
    if method == "cubic":
        return max(0, gap - 1), min(n_slices, gap + 3)
    return 0, n_slices


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
    elif method == "spline":
        _spline(volume, positions, out)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {BASELINES}")
    return out


def _spline(volume: np.ndarray, positions: np.ndarray, out: np.ndarray) -> None:
    """Not-a-knot cubic spline along z of every column, into ``out``; integer positions copied exactly."""
    n = volume.shape[0]
    on_slice = np.isclose(positions, np.round(positions), rtol=0, atol=1e-9)
    todo = np.flatnonzero(~on_slice)
    for k in np.flatnonzero(on_slice):
        out[k] = volume[int(round(positions[k]))]
    if not len(todo):
        return
    height, width = volume.shape[1:]
    rows = max(1, SPLINE_STRIP_VALUES // (5 * max(n, len(todo)) * width))
    z = np.arange(n, dtype=np.float64)
    for y0 in range(0, height, rows):
        strip = np.asarray(volume[:, y0:y0 + rows], dtype=np.float64)
        out[todo, y0:y0 + rows] = CubicSpline(z, strip, axis=0, bc_type="not-a-knot")(positions[todo])
