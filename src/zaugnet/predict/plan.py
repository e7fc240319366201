"""The z plan: where the output slices go.

Output slices are described by their *positions*: fractional indices into the input's z axis
(``2.5`` is midway between input slices 2 and 3); integer positions copy the input slice exactly.
The user chooses one of a factor (:func:`check_factor`, :func:`plan_factor`), relative positions in
every gap (:func:`plan_relative`) or a target spacing over (possibly non-uniform) input coordinates
(:func:`plan_spacing`); :func:`make_plan` turns that choice into a :class:`ZPlan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .interpolator import ModelInterpolator

#: Dyadic depth tried when checking that midpoint passes can reach the requested positions.
MAX_PASSES = 10
#: Most output slices a plan may ask for (far beyond any real stack; a typo such as a spacing of 1e-7 is refused).
MAX_OUTPUT_SLICES = 100_000


def _check_count(n_out: int, option: str) -> None:
    if n_out > MAX_OUTPUT_SLICES:
        raise InputError(option, f"would make {n_out:,} output slices, more than the {MAX_OUTPUT_SLICES:,} "
                                 "zaugnet writes; check the value")


def check_factor(factor: object, option: str = "--factor") -> int:
    """The one rule for a factor everywhere (predict and evaluate): an integer >= 2.

    Raises
    ------
    InputError
        Naming ``option``, for anything else.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise InputError(option, f"must be an integer >= 2 (new slices per gap + 1), got {factor!r}")
    return int(factor)


# ---------------------------------------------------------------------------------- positions
def plan_factor(n_slices: int, factor: int) -> np.ndarray:
    """Positions for an integer ``factor`` >= 2: ``(n - 1) * factor + 1`` slices, originals at multiples of it."""
    factor = check_factor(factor)
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


def dyadic_depth(positions: np.ndarray) -> int | None:
    """Smallest k such that all positions are multiples of 2^-k (None beyond :data:`MAX_PASSES`)."""
    for k in range(MAX_PASSES + 1):
        scaled = positions * 2**k
        if np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-9):
            return k
    return None


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
    k = dyadic_depth(pos)
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
    factor = check_factor(2 if factor is None else factor)
    return ZPlan(plan_factor(n_slices, factor), z_spacing / factor if z_spacing else None)


