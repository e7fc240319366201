"""Prediction over a stack: where the new slices go, and how they are made.

Output slices are described by their *positions*: fractional indices into the input's z axis
(``2.5`` is midway between input slices 2 and 3). Integer positions copy the input slice exactly.
A method turns a volume and positions into slices:

- ``"linear"`` / ``"cubic"``: axial interpolation (:mod:`.baselines`);
- a :class:`ModelInterpolator`: a trained student. ZAugNet (midpoint only) reaches a factor 2^k by
  k passes of midpoint prediction; ZAugNet+ predicts every position directly from its two
  bracketing input slices, with the relative position in the DPM channel; ZAugNet-C does the same
  from the K slices around the gap (at the first and last gaps the edge slice is repeated);
- an :class:`AutoMethod`: a model or cubic interpolation, whichever wins a self-check on the
  volume itself (:mod:`.selfcheck`).

Each gap's input slices are normalised jointly (min-max) before the network and the
prediction is mapped back, so intensities stay in the user's units. Large slices are processed in
tiles with a halo; tile origins sit on the network's 16-pixel grid so tiles see the same sampling
phase as the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .baselines import BASELINES, interpolate_axial
from .data import context_indices, dpm_plane, normalize_pair
from .errors import InputError
from .io import SUPPORTED_DTYPES, Stack, VoxelSize, iter_volumes
from .nets import SIZE_MULTIPLE

if TYPE_CHECKING:
    from .selfcheck import AutoMethod

#: Dyadic depth tried when checking that midpoint passes can reach the requested positions.
MAX_PASSES = 10
#: Most output slices a plan may ask for (far beyond any real stack; a typo such as a spacing of 1e-7 is refused).
MAX_OUTPUT_SLICES = 100_000


def _check_count(n_out: int, option: str) -> None:
    if n_out > MAX_OUTPUT_SLICES:
        raise InputError(option, f"would make {n_out:,} output slices, more than the {MAX_OUTPUT_SLICES:,} "
                                 "zaugnet writes; check the value")


# ---------------------------------------------------------------------------------- positions
def plan_factor(n_slices: int, factor: int) -> np.ndarray:
    """Positions for an integer ``factor``: ``(n - 1) * factor + 1`` slices, originals at multiples of it."""
    if factor < 1:
        raise InputError("--factor", f"must be a positive integer, got {factor}")
    _check_count((n_slices - 1) * factor + 1, "--factor")
    return np.arange((n_slices - 1) * factor + 1) / factor


def plan_relative(n_slices: int, relative: Sequence[float]) -> np.ndarray:
    """Positions with new slices at the given relative positions (in (0, 1), increasing) in every gap."""
    rel = np.asarray(relative, dtype=np.float64)
    if (rel.size == 0 or not np.all(np.isfinite(rel)) or np.any(rel <= 0) or np.any(rel >= 1)
            or np.any(np.diff(rel) <= 0)):
        raise InputError("--z-positions", f"need increasing values strictly between 0 and 1, got {list(relative)}")
    _check_count((n_slices - 1) * (rel.size + 1) + 1, "--z-positions")
    gaps = np.arange(n_slices - 1)[:, None] + np.concatenate([[0.0], rel])[None, :]
    return np.append(gaps.ravel(), n_slices - 1)


def plan_spacing(input_z: Sequence[float], target_spacing: float) -> np.ndarray:
    """Positions of a uniform grid with ``target_spacing`` over (possibly non-uniform) input coordinates.

    The grid starts at the first input slice; a grid point that coincides with an input slice
    (within 1e-6 of the spacing) takes that slice exactly.
    """
    z = np.asarray(input_z, dtype=np.float64)
    if z.ndim != 1 or len(z) < 2 or not np.all(np.isfinite(z)):
        raise InputError("--input-z", "need one finite z coordinate per input slice")
    gaps = np.diff(z)
    if np.any(gaps <= 0):
        bad = int(np.argmax(gaps <= 0))
        raise InputError("--input-z", f"z coordinates must increase (slice {bad + 1}: {z[bad + 1]} after {z[bad]})")
    if not np.isfinite(target_spacing) or target_spacing <= 0:
        raise InputError("--target-spacing", f"must be positive, got {target_spacing}")
    if target_spacing >= gaps.max() * (1 - 1e-9):
        raise InputError("--target-spacing", f"{target_spacing} is not smaller than the input spacing "
                                             f"({gaps.max():g}); nothing to interpolate")
    n_out = int(np.floor((z[-1] - z[0]) / target_spacing + 1e-6)) + 1
    _check_count(n_out, "--target-spacing")
    grid = z[0] + target_spacing * np.arange(n_out)
    pos = np.interp(grid, z, np.arange(len(z)))
    near = np.abs(pos - np.round(pos)) * np.interp(grid, z[:-1], gaps, right=gaps[-1]) < 1e-6 * target_spacing
    pos[near] = np.round(pos[near])
    return pos


def check_positions(positions: np.ndarray, n_slices: int) -> np.ndarray:
    """Validate positions (increasing, within the stack) and return them as float64."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 1 or pos.size == 0 or np.any(np.diff(pos) <= 0) or pos[0] < 0 or pos[-1] > n_slices - 1:
        raise InputError("positions", f"must increase within [0, {n_slices - 1}]")
    return pos


# ---------------------------------------------------------------------------------- the model
def _tiles(size: int, tile: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(read_start, read_stop, keep_start, keep_stop)`` along one axis; starts on the 16-px grid."""
    if size <= tile + 2 * halo:
        yield 0, size, 0, size
        return
    for keep0 in range(0, size, tile):
        keep1 = min(keep0 + tile, size)
        read0 = max(0, keep0 - halo) // SIZE_MULTIPLE * SIZE_MULTIPLE
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
        Pairs (tiles) per forward pass.
    tile
        Side of the kept part of a tile (a multiple of 16); larger slices are tiled.
    halo
        Context added around each tile on every side (pixels). 128 keeps tiled and untiled
        predictions within 1e-4 of the intensity range for the paper-size network (measured).
    normalization, percentiles
        How each pair's intensity range is taken (see :func:`.data.normalize_pair`); ``"none"``
        passes the intensities as they are, for networks that normalise inside (exported packages).
    n_slices
        Input slices per gap: 2, or ZAugNet-C's K (slices at the gap's spacing, edge slices repeated).
    weights_sha256
        sha256 of the weights file the network was read from (a checkpoint, or the package's weights
        entry); identifies the model, e.g. for resuming an OME-Zarr output. ``""`` when unknown.
    """

    network: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    variant: str
    device: str = "cpu"
    batch_size: int = 4
    tile: int = 512
    halo: int = 128
    normalization: str = "minmax"
    percentiles: tuple[float, float] = (0.1, 99.9)
    name: str = ""
    n_slices: int = 2
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        if self.tile % SIZE_MULTIPLE or self.tile <= 0:
            raise InputError("--tile", f"must be a positive multiple of {SIZE_MULTIPLE}, got {self.tile}")
        if self.halo < 0:
            raise InputError("--halo", f"must be zero or positive, got {self.halo}")
        if self.batch_size < 1:
            raise InputError("--batch-size", f"must be at least 1, got {self.batch_size}")
        self.name = self.name or self.variant

    @property
    def midpoint_only(self) -> bool:
        """ZAugNet predicts only z = 0.5; ZAugNet+ any z in (0, 1)."""
        return self.variant == "zaugnet"

    @torch.no_grad()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return self.network(x).float().cpu().numpy()[:, 0]

    def predict(self, first: np.ndarray, second: np.ndarray, z: Sequence[float]) -> np.ndarray:
        """Slices at relative positions ``z`` between ``first[i]`` and ``second[i]`` (each (B, Y, X)), in their units.

        For two-slice models; ZAugNet-C needs :meth:`predict_windows`.
        """
        if self.n_slices != 2:
            raise ValueError(f"{self.name} takes {self.n_slices} slices per gap: use predict_windows")
        return self.predict_windows(np.stack([np.asarray(first), np.asarray(second)], axis=1), z)

    def predict_windows(self, windows: np.ndarray, z: Sequence[float]) -> np.ndarray:
        """Slices at relative positions ``z`` inside the gaps of ``windows`` (B, K, Y, X), float32 in their units.

        ``windows[i]`` holds the K input slices of gap ``i`` (the gap lies between slices K/2 - 1 and K/2).
        """
        windows = np.asarray(windows, dtype=np.float32)
        b, k, h, w = windows.shape
        if k != self.n_slices:
            raise ValueError(f"{self.name} takes {self.n_slices} slices per gap, got {k}")
        inputs = np.empty((b, k + (0 if self.midpoint_only else 1), h, w), dtype=np.float32)
        ranges = []
        for i in range(b):
            lo, scale = ((0.0, 1.0) if self.normalization == "none" else
                         normalize_pair(windows[i], self.normalization, self.percentiles))
            ranges.append((lo, scale))
            inputs[i, :k] = (windows[i] - lo) / scale
            if not self.midpoint_only:
                inputs[i, k] = dpm_plane(float(z[i]), (h, w))
        out = np.empty((b, h, w), dtype=np.float32)
        jobs = [(i, ys, xs) for i in range(b) for ys in _tiles(h, self.tile, self.halo)
                for xs in _tiles(w, self.tile, self.halo)]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start:start + self.batch_size]
            shapes = {(ys[1] - ys[0], xs[1] - xs[0]) for _, ys, xs in chunk}
            groups = [[job for job in chunk if (job[1][1] - job[1][0], job[2][1] - job[2][0]) == s] for s in shapes]
            for group in groups:
                pred = self._run(np.stack([inputs[i, :, ys[0]:ys[1], xs[0]:xs[1]] for i, ys, xs in group]))
                for p, (i, ys, xs) in zip(pred, group):
                    out[i, ys[2]:ys[3], xs[2]:xs[3]] = p[ys[2] - ys[0]:ys[3] - ys[0], xs[2] - xs[0]:xs[3] - xs[0]]
        for i, (lo, scale) in enumerate(ranges):
            out[i] = out[i] * scale + lo
        return out


# ---------------------------------------------------------------------------------- volumes
def _dyadic_depth(positions: np.ndarray) -> int | None:
    """Smallest k such that all positions are multiples of 2^-k (None beyond :data:`MAX_PASSES`)."""
    for k in range(MAX_PASSES + 1):
        scaled = positions * 2**k
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-9):
            return k
    return None


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


def interpolate_volume(volume: np.ndarray, positions: np.ndarray, method: str | ModelInterpolator | AutoMethod, *,
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
    from .selfcheck import AutoMethod

    if isinstance(method, AutoMethod):
        method = method.choose(volume)
    if isinstance(method, str):
        if method not in BASELINES:
            raise InputError("--method", f"unknown method {method!r}; choose from {', '.join(BASELINES)}")
        return interpolate_axial(volume, pos, method)  # type: ignore[arg-type]
    if method.midpoint_only:
        return _midpoint_passes(volume, pos, method, progress)
    base = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = pos - base
    out = np.empty((len(pos), *volume.shape[1:]), dtype=np.float32)
    exact = np.isclose(frac, 0, atol=1e-9) | np.isclose(frac, 1, atol=1e-9)
    for k in np.flatnonzero(exact):
        out[k] = volume[int(round(pos[k]))]
    todo = np.flatnonzero(~exact)
    with tqdm(total=len(todo), desc=f"{method.name}: new slices", unit="pair", disable=not progress, leave=False) as bar:
        out[todo] = _pairs_in_batches(volume, base[todo], frac[todo], method, bar)
    return out


def midpoint_passes(positions: np.ndarray, model: ModelInterpolator, option: str = "positions") -> int:
    """Midpoint passes a midpoint-only ``model`` needs for ``positions`` (0 for any other model).

    Raises
    ------
    InputError
        Naming ``option``, if the positions are not all reachable within :data:`MAX_PASSES` passes.
    """
    if not model.midpoint_only:
        return 0
    pos = np.asarray(positions, dtype=np.float64)
    k = _dyadic_depth(pos)
    if k is not None:
        return k
    # every float is a dyadic fraction; a short denominator means a power-of-two factor that is just too deep
    depth = max(int(float(f).as_integer_ratio()[1]).bit_length() - 1 for f in pos - np.floor(pos))
    if depth <= 2 * MAX_PASSES:
        raise InputError(option, f"{model.name} would need {depth} midpoint passes; at most {MAX_PASSES} are "
                                 f"supported (factor {2**MAX_PASSES}); use a ZAugNet+ model or --method cubic")
    raise InputError(option, f"{model.name} predicts only midpoints (z = 0.5), so it serves factors 2, 4, 8, ... "
                             f"up to {2**MAX_PASSES}; use a ZAugNet+ or ZAugNet-C model (or --method cubic) "
                             "for other factors or positions")


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


# ---------------------------------------------------------------------------------- stacks
@dataclass(frozen=True)
class ZPlan:
    """Where the output slices go: ``positions`` (fractional input indices), the output z spacing, and the
    option that chose them (named in errors)."""

    positions: np.ndarray
    z_spacing: float | None
    note: str = ""
    option: str = "--factor"


def make_plan(n_slices: int, z_spacing: float | None, *, factor: int | None = None,
              z_positions: Sequence[float] | None = None, target_spacing: float | None = None,
              input_z: Sequence[float] | None = None) -> ZPlan:
    """Turn the user's choice (one of factor, relative positions, target spacing) into a :class:`ZPlan`."""
    chosen = [name for name, value in (("--factor", factor), ("--z-positions", z_positions),
                                       ("--target-spacing", target_spacing)) if value is not None]
    if len(chosen) > 1:
        raise InputError(" / ".join(chosen), "give only one of --factor, --z-positions and --target-spacing")
    if input_z is not None and target_spacing is None:
        raise InputError("--input-z", "is used with --target-spacing (the output grid); give both")
    if target_spacing is not None:
        if input_z is None:
            if not z_spacing:
                raise InputError("--target-spacing", "the input has no z voxel size; give --input-z")
            input_z = np.arange(n_slices) * z_spacing
        elif len(input_z) != n_slices:
            raise InputError("--input-z", f"has {len(input_z)} z coordinates but the stack has {n_slices} slices")
        return ZPlan(plan_spacing(input_z, target_spacing), target_spacing, option="--target-spacing")
    if z_positions is not None:
        pos = plan_relative(n_slices, z_positions)
        rel = np.concatenate([[0.0], np.asarray(z_positions, float), [1.0]])
        uniform = np.allclose(np.diff(rel), 1 / (len(rel) - 1))
        spacing = z_spacing / (len(rel) - 1) if z_spacing else None
        note = "" if uniform else "non-uniform output spacing: the voxel depth written is the mean spacing"
        return ZPlan(pos, spacing, note, "--z-positions")
    factor = 2 if factor is None else factor
    if factor < 2:
        raise InputError("--factor", f"must be at least 2, got {factor}")
    return ZPlan(plan_factor(n_slices, factor), z_spacing / factor if z_spacing else None)


def augment_stack(stack: Stack, plan: ZPlan, method: str | ModelInterpolator | AutoMethod, *,
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


def from_checkpoint(path: str, *, device: str = "cpu", **options: object) -> ModelInterpolator:
    """A :class:`ModelInterpolator` from a training checkpoint (``RUN_DIR/final.pt``)."""
    from .checkpoint import load_generator

    config, generator = load_generator(path)
    student = generator.student.to(device).eval()
    return ModelInterpolator(student, config.net.variant, device=device, normalization=config.data.normalization,
                             percentiles=config.data.percentiles, n_slices=config.net.n_slices,
                             **options)  # type: ignore[arg-type]
