"""A volume's new slices, by any method, and a whole stack's.

A method turns a (Z, Y, X) volume and z positions (:mod:`.plan`) into slices:

- ``"linear"`` / ``"cubic"``: axial interpolation (:mod:`.baselines`);
- a :class:`.interpolator.ModelInterpolator`: a trained student. ZAugNet (midpoint only) reaches a
  factor 2^k by k passes of midpoint prediction; ZAugNet+ predicts every position directly from its two
  bracketing input slices, with the relative position in the DPM channel; ZAugNet-C does the same
  from the K slices around the gap (at the first and last gaps the edge slice is repeated);
- a :class:`Blend`: a model's slices and a classical method's, mixed with a fixed weight;
- anything with a ``resolve(volume)`` method (:class:`Resolvable`), which returns one of the above for
  that volume: ``--method auto`` (:class:`zaugnet.evaluate.selfcheck.AutoMethod`) runs the self-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError
from ..gaps import context_indices, exact, split_positions
from ..io.tiff import SUPPORTED_DTYPES, Stack, VoxelSize, iter_volumes
from .baselines import BASELINES, interpolate_axial
from .interpolator import ModelInterpolator
from .plan import ZPlan, check_positions, midpoint_passes


def mix_label(weight: float, model: str, classical: str) -> str:
    """How a mix is named to users: ``0.75 zaugnet+ + 0.25 linear``."""
    return f"{weight:.2f} {model} + {1 - weight:.2f} {classical}"


@dataclass(frozen=True)
class Blend:
    """``weight`` x the model's slices + (1 - ``weight``) x the classical method's (``weight`` in (0, 1)): the
    classical estimate moved part of the way towards the model's, as far as the self-check found it helps."""

    model: ModelInterpolator
    classical: str
    weight: float

    @property
    def name(self) -> str:
        """E.g. ``0.75 zaugnet+ + 0.25 linear`` (:func:`mix_label`)."""
        return mix_label(self.weight, self.model.name, self.classical)


@runtime_checkable
class Resolvable(Protocol):
    """A method that picks, per volume, the method to use (e.g. by a self-check on the volume)."""

    name: str

    def resolve(self, volume: np.ndarray) -> str | ModelInterpolator | Blend:
        """The method for ``volume``: a baseline's name, a model or a blend of the two."""


#: What :func:`interpolate_volume` accepts as a method.
Method = Union[str, ModelInterpolator, Blend, Resolvable]


def _pairs_in_batches(volume: np.ndarray, gaps: np.ndarray, z: np.ndarray, model: ModelInterpolator,
                      bar: tqdm | None) -> np.ndarray:
    out = np.empty((len(gaps), *volume.shape[1:]), dtype=np.float32)
    step = max(1, model.batch_size)
    for start in range(0, len(gaps), step):
        sl = slice(start, start + step)
        g = gaps[sl]
        idx = context_indices(g, 1, model.n_slices, 0, volume.shape[0])
        out[sl] = model.predict_windows(np.stack([volume[i] for i in idx]), z[sl])
        if bar is not None:
            bar.update(len(g))
    return out


def interpolate_volume(volume: np.ndarray, positions: np.ndarray, method: Method, *,
                       progress: bool = False) -> np.ndarray:
    """Slices of a (Z, Y, X) ``volume`` at fractional z ``positions``, float32 in the input's units.

    Integer positions copy the input slice exactly.

    Raises
    ------
    InputError
        For an unknown method, bad positions, or a midpoint-only model asked for other positions.
    """
    n = volume.shape[0]
    pos = check_positions(positions, n)
    if isinstance(method, Resolvable):
        method = method.resolve(volume)
    if isinstance(method, Blend):
        out = method.weight * interpolate_volume(volume, pos, method.model, progress=progress)
        out += (1 - method.weight) * interpolate_volume(volume, pos, method.classical)
        on_slice = exact(pos - np.round(pos))
        out[on_slice] = volume[np.round(pos[on_slice]).astype(int)]  # exact, whatever the rounding of the mix
        return out
    if isinstance(method, str):
        if method not in BASELINES:
            raise InputError("--method", f"unknown method {method!r}; choose from {', '.join(BASELINES)}")
        return interpolate_axial(volume, pos, method)  # type: ignore[arg-type]
    if method.midpoint_only:
        return _midpoint_passes(volume, pos, method, progress)
    base, frac = split_positions(pos, n)
    out = np.empty((len(pos), *volume.shape[1:]), dtype=np.float32)
    on_slice = exact(frac)
    for k in np.flatnonzero(on_slice):
        out[k] = volume[int(round(pos[k]))]
    todo = np.flatnonzero(~on_slice)
    with tqdm(total=len(todo), desc=f"{method.name}: new slices", unit="pair", disable=not progress,
              leave=False) as bar:
        out[todo] = _pairs_in_batches(volume, base[todo], frac[todo], method, bar)
    return out


def _midpoint_passes(volume: np.ndarray, pos: np.ndarray, model: ModelInterpolator, progress: bool) -> np.ndarray:
    k = midpoint_passes(pos, model)
    current = np.asarray(volume, dtype=np.float32)
    total = sum((volume.shape[0] - 1) * 2**p for p in range(k))
    with tqdm(total=total, desc=f"{model.name}: midpoints", unit="pair", disable=not progress, leave=False) as bar:
        for _ in range(k):
            gaps = np.arange(current.shape[0] - 1)
            mids = _pairs_in_batches(current, gaps, np.full(len(gaps), 0.5), model, bar)
            merged = np.empty((2 * current.shape[0] - 1, *current.shape[1:]), dtype=np.float32)
            merged[0::2] = current
            merged[1::2] = mids
            current = merged
    out = current[np.round(pos * 2**k).astype(int)]
    originals = np.isclose(pos, np.round(pos), rtol=0, atol=1e-9)
    out[originals] = volume[np.round(pos[originals]).astype(int)]  # exact, whatever the dtype
    return out


def to_dtype(slices: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float predictions to ``dtype``: integers rounded and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(slices), info.min, info.max).astype(dtype)
    return slices.astype(dtype)


def augment_stack(stack: Stack, plan: ZPlan, method: Method, *,
                  progress: bool = True) -> Stack:
    """Apply ``method`` at ``plan.positions`` to every time point and channel of ``stack``.

    The result keeps the axes, the XY size and the dtype (uint8 / uint16 / float32; int16 and
    float64 become float32), with the new z voxel size.
    """
    dtype = stack.data.dtype if stack.data.dtype.type in SUPPORTED_DTYPES else np.dtype(np.float32)
    z_axis = stack.axes.index("Z")
    shape = list(stack.data.shape)
    shape[z_axis] = len(plan.positions)
    out = np.empty(shape, dtype=dtype)
    vs = stack.voxel_size
    result = Stack(out, stack.axes, VoxelSize(plan.z_spacing, vs.y, vs.x, vs.unit), None, dict(stack.imagej))
    pairs = list(zip(iter_volumes(stack), iter_volumes(result)))  # input volume, output view
    for (_, volume), (_, target) in tqdm(pairs, desc="volumes", disable=not progress or len(pairs) == 1):
        target[...] = to_dtype(interpolate_volume(volume, plan.positions, method, progress=progress), dtype)
    return result


