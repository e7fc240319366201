"""Training data of the 3D ZS-DeconvNet: volumes, the held-out z-block, foreground patches and the loss's PSF.

A *window* is ``2 * pz`` consecutive slices of a volume (``pz`` the patch depth); its 1st, 3rd, ... slices
are the input and its 2nd, 4th, ... the target (:func:`zaugnet.deconv.forward.split_odd_even`), so input and
target see independent noise of the same structure, ``dz`` apart (with ``train.alternate`` the roles swap every
second step, :func:`~.losses.swap_pairs`). Windows start at any slice (either parity).

Volumes are normalised once by the fixed :class:`~zaugnet.deconv.predict.Affine` of all training voxels (stored
with the model). Each volume's last ``val_fraction`` of slices (an even number, at least 6) is held out for
validation, never sampled for training.

Patches are drawn around voxels of a foreground mask (the volume smoothed by a Gaussian of 2 voxels in xy
and 1 in z, above its Otsu threshold) and rejected (up to ``max_tries`` draws, then the last one is kept)
when their dynamic range ``p99.9 / (p0.1 + 0.01)`` is below ``min_dynamic_range`` or their mean below
``min_mean``, the reference's rule; then rotated by a random multiple of 90 degrees (square patches) and
flipped in y and x at random. Randomness comes from ``numpy.random.default_rng((seed, step))``: batch
``step`` is the same whether a run was resumed or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, optimize
from skimage.filters import threshold_otsu

from zaugnet.deconv.predict import Affine, select_volumes
from zaugnet.deconv.psf import confocal_psf, read_bead_psf, widefield_psf
from zaugnet.errors import InputError
from zaugnet.io.tiff import find_stacks, read_stack
from zaugnet.io.units import size_in_um

from .config import DeconvConfig, DeconvDataConfig, PSFConfig

__all__ = ["VAL_MAX_XY", "PatchSampler", "TrainingVolumes", "describe_psf", "held_out_slices",
           "lateral_half_width", "load_training_volumes", "patch_accepted", "training_psf", "validation_windows"]

#: Validation windows are the held-out block's centre, at most this many pixels in y and x.
VAL_MAX_XY = 128
#: Fewest held-out slices (3 input and 3 target slices: the Hessian needs 3 along z).
MIN_VAL_SLICES = 6
#: Share of the energy of the axially cropped PSF kept by its lateral crop, at least (see :func:`training_psf`).
LATERAL_ENERGY = 0.99


@dataclass
class TrainingVolumes:
    """Normalised float32 ZYX volumes, their names, the affine that normalised them and the raw voxel size."""

    names: list[str]
    volumes: list[np.ndarray]
    affine: Affine
    voxel_size: tuple[float, float]  # (z, xy) in um


def load_training_volumes(paths: Sequence[str | Path], cfg: DeconvDataConfig) -> TrainingVolumes:
    """Read every stack, select ``cfg.channel``, check sizes and voxel sizes, normalise by one affine.

    Everything is validated before training starts.

    Raises
    ------
    InputError
        A stack too thin for the patch and the held-out block, too small in xy, with several channels and no
        ``channel``, without a voxel size (and none in ``cfg``), or with another voxel size than the first.
    """
    names, raw = [], []
    voxel: tuple[float, float] | None = cfg.voxel_size
    pz, py, px = cfg.patch
    for path in find_stacks(paths):
        stack = read_stack(path, axes=cfg.axes, mmap=True, min_slices=2)
        if cfg.voxel_size is None:
            size, factor = stack.voxel_size, size_in_um(stack.voxel_size.unit)
            if size.z is None or size.x is None or factor is None:
                raise InputError(path, "has no voxel size (z and xy in a length unit); give it with --voxel-size")
            found = (size.z * factor, size.x * factor)
            if voxel is not None and not np.allclose(found, voxel, rtol=1e-3):
                raise InputError(path, f"voxel size {found} um differs from the first stack's {voxel} um; one "
                                       "PSF serves one voxel size")
            voxel = found
        for label, volume in select_volumes(stack, cfg.channel, str(path)):
            z, y, x = volume.shape
            need = 2 * pz + held_out_slices(z, cfg.val_fraction)
            if z < need:
                raise InputError(path, f"has {z} slices; a patch of {pz} input slices needs a window of {2 * pz} "
                                       f"plus {need - 2 * pz} held out for validation (use a smaller data.patch or "
                                       "data.val_fraction)")
            if y < py or x < px:
                raise InputError(path, f"slices of {y} x {x} pixels are smaller than the patch ({py} x {px})")
            names.append(f"{path.name}{':' + label if label else ''}")
            raw.append(volume)
    if voxel is None:  # pragma: no cover - find_stacks never returns nothing
        raise InputError("data", "no stacks")
    affine = Affine.from_volumes(raw, cfg.percentiles, where=names[0] if len(names) == 1 else "the stacks")
    return TrainingVolumes(names, [affine.normalise(v) for v in raw], affine, voxel)


def held_out_slices(n_slices: int, val_fraction: float) -> int:
    """Slices held out at the end of a volume: ``ceil(val_fraction * n)`` made even, at least 6 (0 if
    ``val_fraction`` is 0)."""
    if val_fraction <= 0:
        return 0
    n = max(MIN_VAL_SLICES, math.ceil(val_fraction * n_slices))
    return n + n % 2


def validation_windows(volumes: Sequence[np.ndarray], val_fraction: float) -> list[torch.Tensor]:
    """The held-out block of each volume (its centre, at most :data:`VAL_MAX_XY` in y and x), as
    ``(1, 1, Z, Y, X)`` tensors; empty without validation."""
    out = []
    for volume in volumes:
        n = held_out_slices(volume.shape[0], val_fraction)
        if n == 0:
            continue
        y, x = volume.shape[1:]
        cy, cx = min(y, VAL_MAX_XY), min(x, VAL_MAX_XY)
        y0, x0 = (y - cy) // 2, (x - cx) // 2
        block = volume[volume.shape[0] - n:, y0:y0 + cy, x0:x0 + cx]
        out.append(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None, None])
    return out


def patch_accepted(window: np.ndarray, cfg: DeconvDataConfig) -> bool:
    """The reference's rule: ``p99.9 / (p0.1 + 0.01) >= min_dynamic_range`` (any ratio passes where the
    denominator is not positive) and ``mean >= min_mean``, on normalised intensities."""
    low, high = (float(p) for p in np.percentile(window, (0.1, 99.9)))
    ratio = high / (low + 0.01) if low + 0.01 > 0 else math.inf
    return ratio >= cfg.min_dynamic_range and float(window.mean()) >= cfg.min_mean


class PatchSampler:
    """Training windows ``(B, 1, 2 pz, py, px)`` from the training part of each volume (module docstring).

    Parameters
    ----------
    volumes
        Normalised ZYX volumes.
    cfg
        Patch size, held-out share, rejection thresholds, augmentation.
    """

    def __init__(self, volumes: Sequence[np.ndarray], cfg: DeconvDataConfig) -> None:
        self.volumes = list(volumes)
        self.cfg = cfg
        pz, py, px = cfg.patch
        self.window = (2 * pz, py, px)
        self.limits: list[tuple[int, int, int]] = []  # per volume: the last valid window origin + 1, per axis
        self.origins: list[np.ndarray] = []  # per volume: (N, 3) window origins centred on foreground voxels
        for volume in self.volumes:
            train_z = volume.shape[0] - held_out_slices(volume.shape[0], cfg.val_fraction)
            limit = (train_z - self.window[0] + 1, volume.shape[1] - py + 1, volume.shape[2] - px + 1)
            self.limits.append(limit)
            mask = self._foreground(volume[:train_z])
            centres = np.argwhere(mask)
            origins = np.clip(centres - np.array(self.window) // 2, 0, np.array(limit) - 1)
            self.origins.append(np.unique(origins, axis=0) if len(origins) else origins)

    @staticmethod
    def _foreground(volume: np.ndarray) -> np.ndarray:
        smooth = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), (1.0, 2.0, 2.0))
        if float(smooth.max()) <= float(smooth.min()):
            return np.zeros(volume.shape, bool)
        return smooth > threshold_otsu(smooth)

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """One window (rejection sampling on the foreground; uniform where a volume has no foreground)."""
        for _ in range(self.cfg.max_tries):
            v = int(rng.integers(len(self.volumes)))
            origins, limit = self.origins[v], self.limits[v]
            if len(origins):
                z0, y0, x0 = (int(c) for c in origins[int(rng.integers(len(origins)))])
            else:
                z0, y0, x0 = (int(rng.integers(n)) for n in limit)
            dz, dy, dx = self.window
            window = self.volumes[v][z0:z0 + dz, y0:y0 + dy, x0:x0 + dx]
            if patch_accepted(window, self.cfg):
                break
        return np.asarray(window, dtype=np.float32)

    def _augment(self, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.cfg.augment:
            return window
        k = int(rng.integers(4)) if window.shape[1] == window.shape[2] else 2 * int(rng.integers(2))
        window = np.rot90(window, k=k, axes=(1, 2))
        if rng.random() < 0.5:
            window = window[:, ::-1]
        if rng.random() < 0.5:
            window = window[:, :, ::-1]
        return window

    def batch(self, batch_size: int, seed: int, step: int) -> torch.Tensor:
        """Training batch number ``step`` (reproducible from ``(seed, step)``)."""
        rng = np.random.default_rng((seed, step))
        windows = [np.ascontiguousarray(self._augment(self._draw(rng), rng)) for _ in range(batch_size)]
        return torch.from_numpy(np.stack(windows))[:, None]


# --- the loss's PSF ---------------------------------------------------------------------------


def lateral_half_width(psf: np.ndarray, sigmas: float, energy: float = LATERAL_ENERGY) -> int:
    """Half width (pixels) of the lateral crop of a ZYX PSF centred on its middle voxel.

    The larger of ``sigmas`` x the sigma of an isotropic Gaussian fitted (least squares) to the PSF's
    projection along z (the reference's rule, fine for compact PSFs) and the half width of the smallest
    centred square holding ``energy`` of it (a widefield PSF's out-of-focus cone, which the Gaussian rule
    would cut: at NA 1.2 and 13 planes of 1 um it keeps 40 %).
    """
    projection = np.asarray(psf, dtype=np.float64).sum(axis=0)
    cy, cx = (n // 2 for n in projection.shape)
    yy, xx = np.indices(projection.shape)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2).ravel()

    def gaussian(r2: np.ndarray, amplitude: float, sigma: float) -> np.ndarray:
        return amplitude * np.exp(-r2 / (2 * sigma * sigma))

    try:
        (_, sigma), _ = optimize.curve_fit(gaussian, r2, projection.ravel(), p0=(projection.max(), 1.0),
                                           maxfev=2000)
        by_gaussian = math.ceil(sigmas * abs(float(sigma)))
    except (RuntimeError, ValueError):  # no fit: keep everything
        by_gaussian = max(cy, cx)
    chebyshev = np.maximum(np.abs(yy - cy), np.abs(xx - cx)).ravel()
    inside = np.bincount(chebyshev, weights=projection.ravel()).cumsum() / projection.sum()
    by_energy = int(np.searchsorted(inside, energy - 1e-12))
    return max(by_gaussian, by_energy)


def training_psf(psf: PSFConfig, patch: tuple[int, int, int], voxel_size: tuple[float, float]) -> np.ndarray:
    """The PSF of the loss, at the training voxel size (z: twice the stack's spacing).

    Simulated (:func:`~zaugnet.deconv.psf.widefield_psf`, or :func:`~zaugnet.deconv.psf.confocal_psf` with an
    excitation) or read from a file and resampled (:func:`~zaugnet.deconv.psf.read_bead_psf`). With
    ``psf.size`` it has that size (a file's PSF cropped to it). Otherwise it reaches as far as light travels
    within a patch, ``2 n - 1`` voxels per axis for a patch of ``n`` (a widefield PSF's out-of-focus light
    spans the whole patch: cut to the patch, the loss barely tells a deconvolved volume from the input),
    then cropped laterally by :func:`lateral_half_width`. Normalised to sum 1.

    Raises
    ------
    InputError
        Naming the option (``psf.na``, ...) or the file.
    """
    dz, dxy = 2 * voxel_size[0], voxel_size[1]
    shape = psf.size or tuple(2 * n - 1 for n in patch)
    if psf.simulated:
        optics = {"na": psf.na, "wavelength": psf.wavelength, "ni": psf.ni, "ns": psf.ns, "depth": psf.depth}
        try:
            if psf.excitation is not None:
                kernel = confocal_psf(shape, dz, dxy, excitation=psf.excitation, **optics)  # type: ignore[arg-type]
            else:
                kernel = widefield_psf(shape, dz, dxy, **optics)  # type: ignore[arg-type]
        except InputError as err:
            raise InputError(f"psf.{err.where}", err.problem) from None
    else:
        kernel = read_bead_psf(psf.path, dz, dxy, background=psf.background,  # type: ignore[arg-type]
                               volume=psf.volume)
    if psf.size is not None:  # kept whole (a bead PSF: cropped to at most that size)
        kernel = kernel[tuple(slice(max(0, (n - m) // 2), max(0, (n - m) // 2) + m)
                              for n, m in zip(kernel.shape, psf.size))]
        return (kernel / kernel.sum()).astype(np.float32)
    nz = min(kernel.shape[0], shape[0])
    z0 = kernel.shape[0] // 2 - nz // 2
    kernel = kernel[z0:z0 + nz]
    half = min(lateral_half_width(kernel, psf.lateral_sigmas), kernel.shape[1] // 2, kernel.shape[2] // 2)
    cy, cx = kernel.shape[1] // 2, kernel.shape[2] // 2
    kernel = np.asarray(kernel[:, cy - half:cy + half + 1, cx - half:cx + half + 1], dtype=np.float64)
    total = kernel.sum()
    if not total > 0:
        raise InputError(psf.path or "psf", "the PSF has no signal inside the patch")
    return (kernel / total).astype(np.float32)


def describe_psf(config: DeconvConfig, kernel: np.ndarray, voxel_size: tuple[float, float]) -> str:
    """One line on the loss's PSF: source, size and voxel size."""
    source = config.psf.path or ("confocal" if config.psf.excitation else "widefield") + " model"
    return (f"PSF {source}, {' x '.join(map(str, kernel.shape))} at z {2 * voxel_size[0]:g} um (twice the "
            f"stack's), xy {voxel_size[1]:g} um")
