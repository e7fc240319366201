"""Point spread functions: a scalar pupil model written from the optics, and PSFs measured on beads.

Every PSF here is a float32 ZYX array with odd sizes, its centre voxel at ``(nz // 2, ny // 2, nx // 2)``,
non-negative and summing to 1; lengths are in micrometres. Sizes are bounded by :data:`MAX_SHAPE`, and
every bad parameter is an :class:`~zaugnet.errors.InputError` naming it, raised before any array is made.

The model (:func:`widefield_psf`, :func:`confocal_psf`) is scalar diffraction through a circular pupil of
uniform amplitude, evaluated per plane as the Bessel (Hankel) form of the pupil's Fourier transform,

    E(r, z) = integral over rho in [0, 1] of J0(k0 NA rho r) exp(i k0 W(rho, z)) rho d rho,
    h(r, z) = |E(r, z)|^2,     k0 = 2 pi / wavelength,

with the Gibson-Lanni optical path difference for an immersion medium and coverslip as designed
(``ni = ni0``, ``tg = tg0``): ``W = depth sqrt(ns^2 - s^2) - z sqrt(ni^2 - s^2)``, ``s = NA rho``, where
``depth`` is the source's depth below the coverslip and ``z`` the nominal focal position (the stage
displacement). At ``depth = 0`` (the default) this is plain defocus in the immersion medium, axially
symmetric, and ``ns`` has no effect; a ``depth > 0`` with ``ns != ni`` adds the spherical aberration and focal
shift of a refractive-index mismatch (``s > ns`` decays as the evanescent wave it is). The PSF is centred on
its brightest on-axis position; plane index increasing means the focus moving deeper into the sample. Not
modelled: vectorial (polarisation) effects and the aplanatic apodisation, which matter above NA ~1.2, and
the confocal pinhole (taken as infinitely small).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize, special

from ..errors import InputError
from ..io.tiff import available_memory, iter_volumes, read_stack
from ..io.units import size_in_um

__all__ = ["MAX_SHAPE", "bead_psf", "confocal_psf", "read_bead_psf", "widefield_psf"]

#: The largest PSF accepted, in voxels (z, y, x).
MAX_SHAPE = (257, 1025, 1025)
#: Radial table step of the Bessel integral: wavelength / (NA * _R_STEPS) (linear interpolation error
#: about (2 pi / _R_STEPS)^2 / 16 of the peak, 1.5e-4).
_R_STEPS = 128
#: Most (radial samples x pupil samples x planes) of the Bessel integral (about a minute on one core).
_MAX_WORK = 2e10
#: Most sub-pixel samples in one quadrant of a plane when a PSF is averaged over its pixels (fewer nodes
#: per pixel beyond it).
_MAX_FINE = 4_000_000
#: Bounds of the optical parameters (um and refractive indices): outside them a value is a typo.
_WAVELENGTHS = (0.1, 5.0)
_INDICES = (1.0, 3.0)
_VOXELS = (1e-4, 100.0)
_DEPTHS = (0.0, 1000.0)


def widefield_psf(shape: Sequence[int], dz: float, dxy: float, *, na: float, wavelength: float, ni: float,
                  ns: float | None = None, depth: float = 0.0, pixel_average: bool = True) -> np.ndarray:
    """Widefield PSF of the scalar pupil model (see the module docstring).

    Parameters
    ----------
    shape
        Planes, rows and columns (each odd, at most :data:`MAX_SHAPE`).
    dz, dxy
        Plane spacing and pixel size in um.
    na, wavelength, ni, ns
        Numerical aperture, emission wavelength (um), immersion and sample refractive indices
        (``ns`` defaults to ``ni``). ``na`` must be below ``ni``.
    depth
        Depth of the source below the coverslip in um (Gibson-Lanni); 0: no index-mismatch aberration.
    pixel_average
        Average the intensity over each camera pixel, as a camera records it (Gauss-Legendre nodes within
        1 / (k0 NA) of each other; error about 1e-5 of the peak); False samples the pixel centres.

    Returns
    -------
    numpy.ndarray
        The float32 PSF, summing to 1, brightest on-axis position at the centre voxel.

    Raises
    ------
    InputError
        A parameter out of range (named), or a PSF too large to compute.
    """
    ns = ni if ns is None else ns
    shape = _check_request(shape, dz, dxy, na=na, wavelength=wavelength, ni=ni, ns=ns, depth=depth)
    return _render(shape, dz, dxy, na, ni, ns, depth, (wavelength,), pixel_average)


def confocal_psf(shape: Sequence[int], dz: float, dxy: float, *, na: float, wavelength: float, excitation: float,
                 ni: float, ns: float | None = None, depth: float = 0.0, pixel_average: bool = False) -> np.ndarray:
    """Confocal PSF: the widefield excitation PSF times the widefield emission PSF (pinhole infinitely small).

    Parameters are those of :func:`widefield_psf`, with ``excitation`` the excitation wavelength in um and
    ``pixel_average`` False by default (a scanning microscope samples the PSF at each scan position). The
    product is centred on its brightest on-axis position.

    Returns
    -------
    numpy.ndarray
        The float32 PSF, summing to 1.
    """
    ns = ni if ns is None else ns
    shape = _check_request(shape, dz, dxy, na=na, wavelength=wavelength, ni=ni, ns=ns, depth=depth)
    _check_range("excitation", excitation, *_WAVELENGTHS)
    return _render(shape, dz, dxy, na, ni, ns, depth, (excitation, wavelength), pixel_average)


def bead_psf(volume: np.ndarray, voxel_size: Sequence[float], dz: float, dxy: float,
             shape: Sequence[int] | None = None, *, background: float | None = None,
             where: str | Path = "beads") -> np.ndarray:
    """A PSF from a stack of sub-resolution beads: the brightest bead, resampled and normalised.

    The background (the volume's median, mostly background in a bead stack, unless given) is subtracted and
    negative values set to 0. The bead is the brightest voxel after a Gaussian blur of 1 voxel (a hot pixel
    does not win), refined to the centroid of the blurred intensity's excess over half its maximum, within
    its half-maximum extent along each axis (within about 0.05 voxel for Gaussian beads). The output grid
    (``dz``, ``dxy``) is placed with its centre voxel exactly on that centroid and sampled by linear
    interpolation; along an axis where the output voxel is larger than the input one, the input is first
    averaged over a box of the nearest odd number of voxels (about one output voxel). Outside the input the
    PSF is 0.

    Parameters
    ----------
    volume
        ZYX bead stack.
    voxel_size
        Its voxel size (z, y, x) in um.
    dz, dxy
        The PSF's plane spacing and pixel size in um.
    shape
        Odd output size (z, y, x); default: the largest odd size that stays inside the input around the bead.
    background
        Value subtracted (default: the volume's median).
    where
        What error messages name (the file the volume came from).

    Returns
    -------
    numpy.ndarray
        The float32 PSF, summing to 1.

    Raises
    ------
    InputError
        Bad sizes, a volume that is not 3D and finite, or no signal above the background.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(where, f"a bead stack must be one ZYX volume, got {volume.ndim}D data")
    if not np.isfinite(volume).all():
        raise InputError(where, "contains NaN or infinite values")
    in_size = tuple(float(v) for v in voxel_size)
    if len(in_size) != 3:
        raise InputError(where, f"voxel size must be (z, y, x), got {voxel_size!r}")
    for value in in_size:
        _check_range("voxel size", value, *_VOXELS)
    _check_range("dz", dz, *_VOXELS)
    _check_range("dxy", dxy, *_VOXELS)
    data = volume.astype(np.float64)
    level = float(np.median(data)) if background is None else float(background)
    if not math.isfinite(level):
        raise InputError("background", f"must be a finite number, got {background!r}")
    data = np.clip(data - level, 0.0, None)
    if not data.any():
        raise InputError(where, f"no signal above the background ({level:g})")
    centre = _bead_centre(data)
    ratio = np.array([dz, dxy, dxy]) / np.array(in_size)  # output voxel in input voxels, per axis
    if shape is None:
        room = np.minimum(centre, np.array(data.shape) - 1 - centre)
        shape = tuple(int(2 * math.floor(r / q + 1e-9) + 1) for r, q in zip(room, ratio))
    shape = _check_shape(shape)
    _check_memory(shape, "shape")
    for axis, q in enumerate(ratio):
        box = 2 * max(0, int(np.rint((q - 1) / 2))) + 1
        if box > 1:
            data = ndimage.uniform_filter1d(data, box, axis=axis, mode="constant")
    offset = centre - (np.array(shape) // 2) * ratio
    out = ndimage.affine_transform(data, ratio, offset=offset, output_shape=shape, order=1, mode="constant",
                                   cval=0.0, prefilter=False)
    out = np.clip(out, 0.0, None)
    total = out.sum()
    if not total > 0:
        raise InputError(where, "no signal above the background inside the PSF window")
    return (out / total).astype(np.float32)


def read_bead_psf(path: str | Path, dz: float, dxy: float, shape: Sequence[int] | None = None, *,
                  background: float | None = None, volume: str | None = None) -> np.ndarray:
    """:func:`bead_psf` of a bead stack file (TIFF, ImageJ or OME-TIFF with its voxel size).

    Parameters
    ----------
    path
        The bead stack; its voxel size must be stored in it.
    dz, dxy, shape, background
        As for :func:`bead_psf`.
    volume
        Which time point / channel of a multi-volume file, as :func:`zaugnet.io.tiff.iter_volumes` labels
        them (e.g. ``"c1"``, ``"t0_c1"``); needed when the file holds more than one.

    Returns
    -------
    numpy.ndarray
        The float32 PSF, summing to 1.
    """
    stack = read_stack(path)
    size = stack.voxel_size
    factor = size_in_um(size.unit)
    if None in (size.z, size.y, size.x) or factor is None:
        raise InputError(path, "has no voxel size (z, y and x in a length unit); a bead PSF needs it")
    volumes = dict(iter_volumes(stack))
    if volume is None and len(volumes) > 1:
        raise InputError(path, f"holds {len(volumes)} volumes ({', '.join(volumes)}); choose one")
    if volume is not None and volume not in volumes:
        raise InputError(path, f"has no volume {volume!r} (it has {', '.join(volumes) or 'one, unlabelled'})")
    data = volumes[volume if volume is not None else next(iter(volumes))]
    in_size = (size.z * factor, size.y * factor, size.x * factor)  # type: ignore[operator]
    return bead_psf(data, in_size, dz, dxy, shape, background=background, where=path)


# --- the pupil model ---------------------------------------------------------------------------


def _check_request(shape: Sequence[int], dz: float, dxy: float, *, na: float, wavelength: float, ni: float,
                   ns: float, depth: float) -> tuple[int, int, int]:
    """Validate a model PSF request; returns the shape as a tuple."""
    checked = _check_shape(shape)
    _check_range("dz", dz, *_VOXELS)
    _check_range("dxy", dxy, *_VOXELS)
    _check_range("wavelength", wavelength, *_WAVELENGTHS)
    _check_range("ni", ni, *_INDICES)
    _check_range("ns", ns, *_INDICES)
    _check_range("depth", depth, *_DEPTHS)
    _check_range("na", na, 0.01, _INDICES[1])
    if na >= ni:
        raise InputError("na", f"must be below the immersion index ni ({ni:g}), got {na:g}")
    _check_memory(checked, "shape")
    return checked


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError("shape", f"expected three integers Z Y X, got {shape!r}") from None
    if len(values) != 3 or any(v != s for v, s in zip(values, shape)):
        raise InputError("shape", f"expected three integers Z Y X, got {shape!r}")
    if any(v < 1 or v % 2 == 0 for v in values):
        raise InputError("shape", f"every size must be odd and positive (a PSF has a centre voxel), got {values}")
    if any(v > m for v, m in zip(values, MAX_SHAPE)):
        raise InputError("shape", f"at most {' x '.join(map(str, MAX_SHAPE))} voxels, got {values}")
    return values  # type: ignore[return-value]


def _check_range(name: str, value: float, low: float, high: float) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a number, got {value!r}") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise InputError(name, f"must be between {low:g} and {high:g}, got {value!r}")


def _check_memory(shape: tuple[int, int, int], name: str) -> None:
    need = 3 * math.prod(shape) * 8  # the float64 work array, the result and a copy
    free = available_memory()
    if need > free:
        raise InputError(name, f"a PSF of {shape} needs {need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB "
                               "of memory available")


def _render(shape: tuple[int, int, int], dz: float, dxy: float, na: float, ni: float, ns: float, depth: float,
            wavelengths: tuple[float, ...], pixel_average: bool) -> np.ndarray:
    """The product of the model intensities at ``wavelengths``, on the voxel grid, normalised to sum 1."""
    nz, ny, nx = shape
    shortest = min(wavelengths)
    focus = 0.0 if depth == 0 else _focus(na, ni, ns, depth, wavelengths)
    z = focus + (np.arange(nz) - nz // 2) * dz
    quarter = (ny // 2 + 1, nx // 2 + 1)
    dr = shortest / (na * _R_STEPS)
    r_max = math.hypot(quarter[0] + 0.5, quarter[1] + 0.5) * dxy
    n_radii = math.ceil(r_max / dr) + 2
    nodes = [_pupil_nodes(w, na, ni, ns, depth, float(np.abs(z).max()), n_radii * dr) for w in wavelengths]
    if n_radii * max(nodes) * nz > _MAX_WORK:
        raise InputError("shape", f"a PSF of {shape} voxels of {dxy:g} um needs too much computation; use fewer "
                                  "pixels or planes")
    radii = np.arange(n_radii) * dr
    table = np.ones((nz, n_radii))
    for wavelength, n in zip(wavelengths, nodes):
        table *= _radial_intensity(radii, z, wavelength, na, ni, ns, depth, n)
    offsets, weights = np.zeros(1), np.ones(1)  # pixel centres
    if pixel_average:  # Gauss-Legendre over each pixel, nodes within 1 / (k0 NA) (error ~1e-5 of the peak)
        sub = math.ceil(dxy * 2 * math.pi / shortest * na) + 1
        sub = max(1, min(sub, int(math.sqrt(_MAX_FINE / (quarter[0] * quarter[1])))))
        offsets, weights = np.polynomial.legendre.leggauss(sub)
        offsets, weights = offsets / 2, weights / 2
    fy = ((np.arange(quarter[0])[:, None] + offsets).ravel() * dxy)[:, None]
    fx = ((np.arange(quarter[1])[:, None] + offsets).ravel() * dxy)[None, :]
    position = np.hypot(fy, fx) / dr
    index = np.minimum(position.astype(np.intp), radii.size - 2)
    weight = position - index
    rows = np.abs(np.arange(ny) - ny // 2)[:, None]
    cols = np.abs(np.arange(nx) - nx // 2)[None, :]
    out = np.empty(shape, dtype=np.float64)
    for k in range(nz):
        values = table[k, index] * (1 - weight) + table[k, index + 1] * weight
        quadrant = np.einsum("aibj,i,j->ab", values.reshape(quarter[0], weights.size, quarter[1], weights.size),
                             weights, weights)
        out[k] = quadrant[rows, cols]
    return (out / out.sum()).astype(np.float32)


def _pupil_nodes(wavelength: float, na: float, ni: float, ns: float, depth: float, z_span: float,
                 r_max: float) -> int:
    """How many pupil samples the integrand's oscillations need: 2 per radian of phase (at least 64).

    The phase is bounded by the Bessel argument k0 NA r plus the spread of the path difference over the
    pupil; :func:`_pupil` puts 16 Gauss-Legendre nodes on each 8 rad.
    """
    k0 = 2 * math.pi / wavelength
    spread = z_span * (ni - math.sqrt(ni**2 - na**2)) + depth * abs(ns - np.sqrt(complex(ns**2 - na**2)))
    panels = max(4, math.ceil(k0 * (na * r_max + spread) / 8))
    return 16 * panels


def _pupil(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [0, 1]: ``n // 16`` equal panels of 16 nodes."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    panels = n // 16
    starts = np.arange(panels)[:, None] / panels
    return (starts + (nodes + 1) / (2 * panels)).ravel(), np.tile(weights / (2 * panels), panels)


def _phase(rho: np.ndarray, z: np.ndarray, wavelength: float, na: float, ni: float, ns: float,
           depth: float) -> np.ndarray:
    """exp(i k0 W(rho, z)) for planes ``z`` (rows) and pupil radii ``rho`` (columns), complex."""
    k0 = 2 * math.pi / wavelength
    s2 = (na * rho) ** 2
    path = -np.outer(z, np.sqrt(ni**2 - s2)) + depth * np.sqrt((ns**2 - s2).astype(complex))
    return np.exp(1j * k0 * path)


def _radial_intensity(radii: np.ndarray, z: np.ndarray, wavelength: float, na: float, ni: float, ns: float,
                      depth: float, nodes: int) -> np.ndarray:
    """|E(r, z)|^2 (planes x radii), unnormalised, with ``nodes`` pupil samples."""
    rho, weights = _pupil(nodes)
    field = _phase(rho, z, wavelength, na, ni, ns, depth) * (rho * weights)
    k = 2 * math.pi / wavelength * na
    out = np.empty((z.size, radii.size))
    step = max(1, 2**22 // rho.size)
    for start in range(0, radii.size, step):
        bessel = special.j0(k * np.outer(radii[start:start + step], rho)).T
        out[:, start:start + step] = (field.real @ bessel) ** 2 + (field.imag @ bessel) ** 2
    return out


def _focus(na: float, ni: float, ns: float, depth: float, wavelengths: tuple[float, ...]) -> float:
    """The nominal focal position where the product of the on-axis intensities is largest."""
    paraxial = depth * ni / ns
    axial = max(wavelengths) / (ni - math.sqrt(ni**2 - na**2))  # about the axial FWHM
    span = abs(paraxial - depth) + 4 * axial
    nodes = [_pupil(_pupil_nodes(w, na, ni, ns, depth, abs(paraxial) + span, 0.0)) for w in wavelengths]

    def on_axis(z: np.ndarray) -> np.ndarray:
        value = np.ones(z.size)
        for w, (rho, weights) in zip(wavelengths, nodes):
            value *= np.abs(_phase(rho, z, w, na, ni, ns, depth) @ (rho * weights)) ** 2
        return value

    grid = np.linspace(paraxial - span, paraxial + span, 801)
    best = int(np.argmax(on_axis(grid)))
    step = grid[1] - grid[0]
    found = optimize.minimize_scalar(lambda t: -on_axis(np.array([t]))[0], method="bounded",
                                     bounds=(grid[best] - step, grid[best] + step),
                                     options={"xatol": step * 1e-6})
    return float(found.x)


def _bead_centre(data: np.ndarray) -> np.ndarray:
    """Sub-voxel centre (z, y, x) of the brightest bead: the centroid of the excess over half maximum."""
    smooth = ndimage.gaussian_filter(data, 1.0, mode="constant")
    peak = np.unravel_index(int(np.argmax(smooth)), data.shape)
    half = smooth[peak] / 2
    box = []
    for axis, p in enumerate(peak):
        line = smooth[tuple(slice(None) if a == axis else peak[a] for a in range(3))]
        low, high = p, p
        while low > 0 and line[low - 1] >= half:
            low -= 1
        while high < line.size - 1 and line[high + 1] >= half:
            high += 1
        reach = max(1, high - p, p - low)
        box.append(slice(max(0, p - reach), min(line.size, p + reach + 1)))
    window = smooth[tuple(box)]
    mass = np.clip(window - half, 0.0, None)  # tapers to 0 at half maximum: no bias from the cut
    grids = np.indices(window.shape)
    return np.array([(g * mass).sum() / mass.sum() + b.start for g, b in zip(grids, box)])
