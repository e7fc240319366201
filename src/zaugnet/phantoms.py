"""Analytic 3D phantoms: synthetic fluorescence volumes with ground truth at any depth.

A :class:`Phantom` is a random scene defined in continuous physical coordinates
(micrometres, axes ordered z, y, x), so the same volume can be rendered at any set
of z positions: the slice rendered at ``z = 1.25`` is the same whether it is asked
for alone or as part of a finer stack. This gives tests and demos the exact
in-between slices that ZAugNet is meant to predict.

Two kinds of scene exist:

``"membrane"``
    Cells as a 3D Voronoi tessellation of random seed points; the signal is bright
    on the cell boundaries (where the nearest and second-nearest seeds are about as
    far), modulated by a smooth random intensity field, over a faint cytoplasm.
``"nuclei"``
    Randomly oriented ellipsoids with soft edges and a fine internal texture;
    overlapping nuclei take the maximum.

Both are smooth in all three directions, yet their structures tilt and move
laterally from slice to slice, so linear interpolation along z is clearly
imperfect at z steps of 0.5-1 um. :func:`acquire` then simulates the microscope
(XY blur, shot and read noise, background, integer conversion) and
:func:`simulate_stack` does both in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from scipy.special import expit

from .errors import InputError

__all__ = ["Phantom", "PhantomKind", "acquire", "make_phantom", "simulate_stack"]

PhantomKind = Literal["membrane", "nuclei"]
_KINDS: tuple[str, ...] = get_args(PhantomKind)
_DTYPES = ("uint8", "uint16", "float32")

# Separate random streams: the scene of a seed does not depend on the noise of that seed.
_STREAM_SCENE = 0x5CE7E
_STREAM_NOISE = 0xAC9

# Points evaluated at once while rendering (bounds the temporary memory, ~100 MB).
_CHUNK_POINTS = 1 << 19

# Membrane scene.
_CELL_DIAMETER_UM = (5.5, 7.5)  # equivalent-sphere diameter, drawn per phantom
_MEMBRANE_THICKNESS_UM = (0.4, 0.6)  # membrane FWHM >= 0.33 um: resolved by 0.2 um pixels
_CYTOPLASM_LEVEL = 0.08
_MODULATION_PERIOD_UM = (8.0, 20.0)
_MODULATION_DEPTH = 0.6  # the modulation spans [1 - depth, 1]
_N_MODULATION_WAVES = 4

# Nuclei scene.
_NUCLEI_PER_UM3 = 0.004  # about 40 nuclei in the default 16 x 25.6 x 25.6 um box
_NUCLEUS_AXES_UM = (1.5, 3.5)
_NUCLEUS_EDGE_UM = 0.3
_NUCLEUS_BRIGHTNESS = (0.6, 1.0)
_TEXTURE_PERIOD_UM = (0.8, 1.4)
_TEXTURE_DEPTH = 0.5  # the texture spans [1 - depth, 1]
_N_TEXTURE_WAVES = 3
_SIGMOID_CUTOFF = 10.0  # nuclei are evaluated where the sigmoid argument is above -cutoff


@dataclass(frozen=True)
class _MembraneScene:
    seeds: np.ndarray  # (N, 3) Voronoi seed points, um
    thickness: float  # um
    wave_k: np.ndarray  # (W, 3) wave vectors of the intensity modulation, rad / um
    wave_phase: np.ndarray  # (W,)


@dataclass(frozen=True)
class _NucleiScene:
    centres: np.ndarray  # (N, 3) um
    axes: np.ndarray  # (N, 3) semi-axes, um
    rotations: np.ndarray  # (N, 3, 3); column j is the direction of semi-axis j
    brightness: np.ndarray  # (N,)
    wave_k: np.ndarray  # (N, W, 3) texture wave vectors, rad / um
    wave_phase: np.ndarray  # (N, W)


@dataclass(frozen=True)
class Phantom:
    """A random analytic 3D scene in a box of `extent_um` = (z, y, x) micrometres.

    Creating a phantom is cheap: the objects are drawn from `seed` on first use.

    Parameters
    ----------
    kind
        ``"membrane"`` (Voronoi cells, bright boundaries) or ``"nuclei"`` (ellipsoids).
    extent_um
        Size of the box along (z, y, x), in micrometres. Objects are placed in (and,
        for membranes, around) the box; the scene is meant to be rendered inside it.
    seed
        Non-negative seed of the random scene.
    n_objects
        Number of cells or nuclei in the box; ``None`` picks a typical density.
    """

    kind: PhantomKind
    extent_um: tuple[float, float, float]
    seed: int = 0
    n_objects: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError("kind", f"unknown phantom kind {self.kind!r}; use one of {_KINDS}")
        extent = tuple(float(e) for e in self.extent_um)
        if len(extent) != 3 or not all(np.isfinite(e) and e > 0 for e in extent):
            raise InputError("extent_um", f"expected three positive sizes (z, y, x), got {self.extent_um!r}")
        object.__setattr__(self, "extent_um", extent)
        if int(self.seed) != self.seed or self.seed < 0:
            raise InputError("seed", f"expected a non-negative integer, got {self.seed!r}")
        if self.n_objects is not None and (int(self.n_objects) != self.n_objects or self.n_objects < 1):
            raise InputError("n_objects", f"expected a positive integer or None, got {self.n_objects!r}")

    @cached_property
    def _scene(self) -> _MembraneScene | _NucleiScene:
        rng = np.random.default_rng([int(self.seed), _STREAM_SCENE, _KINDS.index(self.kind)])
        extent = np.asarray(self.extent_um)
        if self.kind == "membrane":
            return _draw_membrane(rng, extent, self.n_objects)
        return _draw_nuclei(rng, extent, self.n_objects)

    def render(self, z_um: ArrayLike, shape_yx: tuple[int, int]) -> np.ndarray:
        """Render the noise-free signal at physical depths `z_um`.

        Parameters
        ----------
        z_um
            Depths in micrometres, any floats in any order (1-D or a scalar).
        shape_yx
            Number of (Y, X) pixels; the pixel centres split the box's y/x extent
            evenly, at ``(i + 0.5) * extent / n``.

        Returns
        -------
        numpy.ndarray
            float32 array of shape ``(len(z_um), Y, X)`` with values in [0, 1].
            Slice ``k`` depends only on ``z_um[k]``, never on the other depths.
        """
        z = np.atleast_1d(np.asarray(z_um, dtype=np.float64))
        if z.ndim != 1 or not np.all(np.isfinite(z)):
            raise InputError("z_um", "expected a 1-D array of finite depths")
        ny, nx = (int(n) for n in shape_yx)
        if ny < 1 or nx < 1 or (ny, nx) != tuple(shape_yx):
            raise InputError("shape_yx", f"expected two positive integers, got {shape_yx!r}")
        y = (np.arange(ny) + 0.5) * (self.extent_um[1] / ny)
        x = (np.arange(nx) + 0.5) * (self.extent_um[2] / nx)

        out = np.zeros((z.size, ny, nx), dtype=np.float32)
        step = max(1, _CHUNK_POINTS // (ny * nx))
        scene = self._scene
        for start in range(0, z.size, step):
            zc = z[start : start + step]
            if isinstance(scene, _MembraneScene):
                out[start : start + zc.size] = _render_membrane(scene, zc, y, x)
            else:
                out[start : start + zc.size] = _render_nuclei(scene, zc, y, x)
        return out


def make_phantom(
    kind: PhantomKind = "membrane",
    extent_um: tuple[float, float, float] = (16.0, 25.6, 25.6),
    seed: int = 0,
    n_objects: int | None = None,
) -> Phantom:
    """Create a random phantom.

    Parameters
    ----------
    kind
        ``"membrane"`` or ``"nuclei"``.
    extent_um
        Box size (z, y, x) in micrometres.
    seed
        Non-negative seed of the scene.
    n_objects
        Number of cells or nuclei in the box; ``None`` picks a typical density
        (cells 5.5-7.5 um across; about 4 nuclei per 1000 um^3).

    Returns
    -------
    Phantom
        The scene; render it with :meth:`Phantom.render`.
    """
    return Phantom(kind=kind, extent_um=tuple(extent_um), seed=seed, n_objects=n_objects)


def acquire(
    signal: np.ndarray,
    *,
    pixel_um: float,
    seed: int = 0,
    psf_sigma_um: float = 0.15,
    photons: float = 200.0,
    read_noise: float = 2.0,
    background: float = 10.0,
    dtype: str = "uint16",
    noise: bool = True,
) -> np.ndarray:
    """Simulate the microscope on a rendered signal.

    Each slice is blurred in XY with a gaussian of sigma ``psf_sigma_um / pixel_um``
    pixels (no blur along z), scaled to ``background + photons * signal`` expected
    counts, then Poisson shot noise and gaussian read noise are added (independently
    per voxel, deterministic by `seed`).

    Parameters
    ----------
    signal
        Noise-free signal, (Z, Y, X) or (Y, X), roughly in [0, 1].
    pixel_um
        Lateral pixel size in micrometres.
    seed
        Non-negative seed of the noise.
    psf_sigma_um
        Lateral sigma of the gaussian PSF in micrometres (0: no blur).
    photons
        Expected photon count at signal 1.
    read_noise
        Standard deviation of the gaussian read noise, in counts.
    background
        Expected background count added everywhere.
    dtype
        ``"uint8"`` or ``"uint16"`` (rounded and clipped to the type's range) or
        ``"float32"`` (counts as they are, possibly negative).
    noise
        ``False`` gives the blurred, scaled and converted signal without noise.

    Returns
    -------
    numpy.ndarray
        Array of the same shape as `signal`, in `dtype`.
    """
    if dtype not in _DTYPES:
        raise InputError("dtype", f"unsupported dtype {dtype!r}; use one of {_DTYPES}")
    if not pixel_um > 0:
        raise InputError("pixel_um", f"expected a positive pixel size, got {pixel_um!r}")
    if psf_sigma_um < 0 or photons < 0 or read_noise < 0 or background < 0:
        raise InputError("acquire", "psf_sigma_um, photons, read_noise and background must be >= 0")
    if int(seed) != seed or seed < 0:
        raise InputError("seed", f"expected a non-negative integer, got {seed!r}")
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim < 2:
        raise InputError("signal", f"expected a (Z, Y, X) or (Y, X) array, got shape {signal.shape}")

    sigma_px = psf_sigma_um / pixel_um
    blurred = gaussian_filter(signal, sigma=(0.0,) * (signal.ndim - 2) + (sigma_px, sigma_px))
    counts = background + photons * np.clip(blurred, 0.0, None)
    if noise:
        rng = np.random.default_rng([int(seed), _STREAM_NOISE])
        counts = rng.poisson(counts).astype(np.float64) + rng.normal(0.0, read_noise, counts.shape)

    if dtype == "float32":
        return counts.astype(np.float32)
    top = np.iinfo(dtype).max
    return np.clip(np.rint(counts), 0, top).astype(dtype)


def simulate_stack(
    shape: tuple[int, int, int] = (32, 128, 128),
    *,
    kind: PhantomKind = "membrane",
    seed: int = 0,
    z_step_um: float = 0.5,
    xy_step_um: float = 0.2,
    dtype: str = "uint16",
    noise: bool = True,
) -> np.ndarray:
    """Render and acquire a synthetic (Z, Y, X) stack.

    The phantom box is ``shape * (z_step_um, xy_step_um, xy_step_um)`` and slice ``k``
    lies at depth ``(k + 0.5) * z_step_um``. The same `seed` drives the scene and the
    (independent) noise. For the same scene at other depths, use :func:`make_phantom`
    with ``extent_um`` as above and render it directly.

    Parameters
    ----------
    shape
        (Z, Y, X) number of voxels.
    kind
        ``"membrane"`` or ``"nuclei"``.
    seed
        Non-negative seed.
    z_step_um, xy_step_um
        Voxel size in micrometres.
    dtype
        ``"uint8"``, ``"uint16"`` or ``"float32"``, see :func:`acquire`.
    noise
        ``False``: blur, scaling and conversion only.

    Returns
    -------
    numpy.ndarray
        The stack, of shape `shape` and type `dtype`.
    """
    nz, ny, nx = (int(n) for n in shape)
    if min(nz, ny, nx) < 1:
        raise InputError("shape", f"expected three positive sizes, got {shape!r}")
    if not (z_step_um > 0 and xy_step_um > 0):
        raise InputError("z_step_um/xy_step_um", "voxel sizes must be positive")
    phantom = make_phantom(kind, (nz * z_step_um, ny * xy_step_um, nx * xy_step_um), seed=seed)
    signal = phantom.render((np.arange(nz) + 0.5) * z_step_um, (ny, nx))
    return acquire(signal, pixel_um=xy_step_um, seed=seed, dtype=dtype, noise=noise)


# --- drawing the scenes -------------------------------------------------------------------


def _spread_points(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, radii: np.ndarray, tries: int = 64
) -> np.ndarray:
    """Place ``len(radii)`` points uniformly in [lo, hi) by random sequential placement.

    Point i is kept at least ``radii[i] + radii[j]`` away from every earlier point j when
    one of `tries` candidates allows it; otherwise the last candidate is kept.
    """
    batch = 8  # candidates tested at once; the first batch nearly always has a fit
    points = np.empty((len(radii), 3))
    for i, r in enumerate(radii):
        candidates = rng.uniform(lo, hi, size=(tries, 3))
        choice = tries - 1
        for start in range(0, tries if i else 1, batch):
            block = candidates[start : start + batch]
            gaps = np.linalg.norm(block[:, None, :] - points[None, :i, :], axis=-1)
            ok = np.flatnonzero(np.all(gaps >= r + radii[None, :i], axis=1))
            if ok.size:
                choice = start + int(ok[0])
                break
        points[i] = candidates[choice]
    return points


def _random_waves(
    rng: np.random.Generator, size: tuple[int, ...], period_um: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Random plane waves: wave vectors of shape ``size + (3,)`` (isotropic directions,
    periods uniform in `period_um`) and phases of shape `size`."""
    direction = rng.normal(size=size + (3,))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    k = direction * (2 * np.pi / rng.uniform(*period_um, size=size))[..., None]
    return k, rng.uniform(0, 2 * np.pi, size=size)


def _draw_membrane(rng: np.random.Generator, extent: np.ndarray, n_objects: int | None) -> _MembraneScene:
    volume = float(np.prod(extent))
    if n_objects is None:
        diameter = rng.uniform(*_CELL_DIAMETER_UM)
        n_objects = max(1, round(volume / (np.pi / 6 * diameter**3)))
    else:
        diameter = (6 * volume / (np.pi * n_objects)) ** (1 / 3)
    # Seeds also fill a margin of one cell around the box, so boundary cells are closed.
    pad = diameter
    n_seeds = max(2, round(n_objects * np.prod(extent + 2 * pad) / volume))
    # Minimum spacing 0.6 cell diameters: cells of even-ish size, still irregular.
    seeds = _spread_points(rng, -pad, extent + pad, np.full(n_seeds, 0.3 * diameter))
    wave_k, wave_phase = _random_waves(rng, (_N_MODULATION_WAVES,), _MODULATION_PERIOD_UM)
    return _MembraneScene(
        seeds=seeds,
        thickness=float(rng.uniform(*_MEMBRANE_THICKNESS_UM)),
        wave_k=wave_k,
        wave_phase=wave_phase,
    )


def _draw_nuclei(rng: np.random.Generator, extent: np.ndarray, n_objects: int | None) -> _NucleiScene:
    n = n_objects if n_objects is not None else max(1, round(_NUCLEI_PER_UM3 * float(np.prod(extent))))
    axes = rng.uniform(*_NUCLEUS_AXES_UM, size=(n, 3))
    # Uniform random rotations: QR of gaussian matrices, signs fixed, det forced to +1.
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    # Centres in the box, spaced so that nuclei overlap only a little.
    centres = _spread_points(rng, np.zeros(3), extent, 0.7 * axes.mean(axis=1))
    wave_k, wave_phase = _random_waves(rng, (n, _N_TEXTURE_WAVES), _TEXTURE_PERIOD_UM)
    return _NucleiScene(
        centres=centres,
        axes=axes,
        rotations=q,
        brightness=rng.uniform(*_NUCLEUS_BRIGHTNESS, size=n),
        wave_k=wave_k,
        wave_phase=wave_phase,
    )


# --- rendering ----------------------------------------------------------------------------


def _plane_waves(k: np.ndarray, phase: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mean of ``cos(k . (z, y, x) + phase)`` over the waves, on the (z, y, x) grid."""
    total = np.zeros((z.size, y.size, x.size))
    for (kz, ky, kx), p in zip(k, phase):
        total += np.cos((kz * z + p)[:, None, None] + (ky * y)[None, :, None] + (kx * x)[None, None, :])
    return total / len(phase)


def _render_membrane(scene: _MembraneScene, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    tree = cKDTree(scene.seeds)
    grid = np.stack(np.meshgrid(z, y, x, indexing="ij"), axis=-1).reshape(-1, 3)
    dist, _ = tree.query(grid, k=2, workers=-1)
    membrane = np.exp(-(((dist[:, 1] - dist[:, 0]) / scene.thickness) ** 2)).reshape(z.size, y.size, x.size)
    modulation = 1.0 - _MODULATION_DEPTH * 0.5 * (1.0 - _plane_waves(scene.wave_k, scene.wave_phase, z, y, x))
    return _CYTOPLASM_LEVEL + membrane * (modulation - _CYTOPLASM_LEVEL)


def _render_nuclei(scene: _NucleiScene, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.zeros((z.size, y.size, x.size))
    for i, (centre, axes, rot) in enumerate(zip(scene.centres, scene.axes, scene.rotations)):
        mean_radius = axes.mean()
        slope = mean_radius / _NUCLEUS_EDGE_UM
        # Beyond ellipsoidal radius r_max the sigmoid is below exp(-cutoff): skip it.
        reach = axes.max() * (1.0 + _SIGMOID_CUTOFF / slope)
        zi = np.flatnonzero(np.abs(z - centre[0]) < reach)
        ys = slice(*np.searchsorted(y, [centre[1] - reach, centre[1] + reach]))
        xs = slice(*np.searchsorted(x, [centre[2] - reach, centre[2] + reach]))
        if zi.size == 0 or ys.start == ys.stop or xs.start == xs.stop:
            continue
        dz = (z[zi] - centre[0])[:, None, None]
        dy = (y[ys] - centre[1])[None, :, None]
        dx = (x[xs] - centre[2])[None, None, :]
        # Coordinates along the principal axes, scaled by the semi-axes.
        r2 = sum(((rot[0, j] * dz + rot[1, j] * dy + rot[2, j] * dx) / axes[j]) ** 2 for j in range(3))
        inside = expit((1.0 - np.sqrt(r2)) * slope)
        texture = 1.0 - _TEXTURE_DEPTH * 0.5 * (
            1.0 - _plane_waves(scene.wave_k[i], scene.wave_phase[i], z[zi], y[ys], x[xs])
        )
        block = np.ix_(zi, np.arange(ys.start, ys.stop), np.arange(xs.start, xs.stop))
        out[block] = np.maximum(out[block], scene.brightness[i] * texture * inside)
    return out
