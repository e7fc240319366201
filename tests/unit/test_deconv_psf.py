"""The PSFs of ``zaugnet.deconv.psf``: the scalar pupil model against textbook optics, and bead PSFs.

Expectations come from outside the code: the Airy pattern, the closed-form on-axis intensity of a uniform
pupil, and the textbook FWHM formulas (Cole et al., Nat. Protoc. 2011): widefield lateral 0.51 lambda / NA,
axial 0.88 lambda / (n - sqrt(n^2 - NA^2)); confocal 0.37 lambda / NA and 0.64 lambda / (n - sqrt(n^2 - NA^2)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import j1

from zaugnet.deconv.psf import (
    MAX_SHAPE,
    bead_psf,
    confocal_psf,
    read_bead_psf,
    widefield_psf,
)
from zaugnet.errors import InputError
from zaugnet.io.tiff import VoxelSize, write_stack

WATER = {"na": 1.2, "wavelength": 0.461, "ni": 1.333}
#: Sampled finely enough (dz 0.05, dxy 0.02 um) to measure widths of 0.2 and 0.55 um.
FINE = {"shape": (41, 41, 41), "dz": 0.05, "dxy": 0.02}


def fwhm(line: np.ndarray, step: float) -> float:
    """Full width at half maximum of a peaked 1D profile, by linear interpolation of its flanks."""
    line = np.asarray(line, dtype=np.float64)
    peak = int(np.argmax(line))
    half = line[peak] / 2
    edges = []
    for direction in (-1, 1):
        i = peak
        while line[i + direction] >= half:
            i += direction
        edges.append(i + direction * (line[i] - half) / (line[i] - line[i + direction]))
    return (edges[1] - edges[0]) * step


def axial_denominator(n: float, na: float) -> float:
    return n - math.sqrt(n * n - na * na)


def centroid(volume: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(volume))


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["widefield", "confocal", "mismatched"])
def test_model_psf_is_normalised_odd_centred_and_symmetric(kind: str) -> None:
    shape = (21, 31, 31)
    if kind == "confocal":
        psf = confocal_psf(shape, 0.1, 0.05, excitation=0.405, **WATER)
    elif kind == "mismatched":
        psf = widefield_psf(shape, 0.1, 0.05, ns=1.45, depth=5.0, **WATER)
    else:
        psf = widefield_psf(shape, 0.1, 0.05, **WATER)

    assert psf.shape == shape and psf.dtype == np.float32
    assert psf.min() >= 0 and psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(int(np.argmax(psf)), shape) == (10, 15, 15)
    np.testing.assert_array_equal(psf, psf[:, ::-1, :])
    np.testing.assert_array_equal(psf, psf[:, :, ::-1])
    np.testing.assert_allclose(psf, psf.transpose(0, 2, 1), rtol=0, atol=1e-6 * psf.max())
    if kind == "mismatched":  # spherical aberration: the axial profile is lopsided
        assert np.abs(psf - psf[::-1]).max() > 0.05 * psf.max()
    else:
        np.testing.assert_allclose(psf, psf[::-1], rtol=0, atol=1e-6 * psf.max())


def test_widefield_widths_are_the_textbook_ones() -> None:
    psf = widefield_psf(**FINE, **WATER)
    lateral = fwhm(psf[20, 20], FINE["dxy"])
    axial = fwhm(psf[:, 20, 20], FINE["dz"])

    assert lateral == pytest.approx(0.51 * 0.461 / 1.2, rel=0.15)  # 0.196 um
    assert axial == pytest.approx(0.88 * 0.461 / axial_denominator(1.333, 1.2), rel=0.15)  # 0.539 um
    assert axial > 2 * lateral


def test_confocal_widths_are_the_textbook_ones() -> None:
    psf = confocal_psf(**FINE, na=1.2, wavelength=0.5, excitation=0.5, ni=1.333)
    wide = widefield_psf(**FINE, na=1.2, wavelength=0.5, ni=1.333)
    lateral, axial = fwhm(psf[20, 20], FINE["dxy"]), fwhm(psf[:, 20, 20], FINE["dz"])

    assert lateral == pytest.approx(0.37 * 0.5 / 1.2, rel=0.15)
    assert axial == pytest.approx(0.64 * 0.5 / axial_denominator(1.333, 1.2), rel=0.15)
    assert lateral < fwhm(wide[20, 20], FINE["dxy"]) and axial < fwhm(wide[:, 20, 20], FINE["dz"])


def test_in_focus_plane_is_the_airy_pattern() -> None:
    psf = widefield_psf(**FINE, **WATER, pixel_average=False)
    x = (np.arange(41) - 20) * FINE["dxy"]
    v = 2 * math.pi / 0.461 * 1.2 * np.hypot(x[:, None], x[None, :])
    safe = np.where(v == 0, 1.0, v)
    airy = np.where(v == 0, 1.0, (2 * j1(safe) / safe) ** 2)

    np.testing.assert_allclose(psf[20] / psf[20].max(), airy, rtol=0, atol=1e-3)


def test_on_axis_intensity_is_the_closed_form_of_a_uniform_pupil() -> None:
    """On axis, E(z) = integral of u exp(i k0 z u) du over u in [sqrt(n^2 - NA^2), n] (u = n cos theta)."""
    n, na, wavelength, dz = 1.333, 1.2, 0.461, 0.02
    psf = widefield_psf((81, 3, 3), dz, 0.01, na=na, wavelength=wavelength, ni=n, pixel_average=False)
    low = math.sqrt(n * n - na * na)

    def field(a: float) -> complex:
        if a == 0:
            return (n * n - low * low) / 2
        antiderivative = lambda u: np.exp(1j * a * u) * (u / (1j * a) + 1 / a**2)
        return complex(antiderivative(n) - antiderivative(low))

    k0 = 2 * math.pi / wavelength
    expected = np.array([abs(field(k0 * z)) ** 2 for z in (np.arange(81) - 40) * dz])
    np.testing.assert_allclose(psf[:, 1, 1] / psf[:, 1, 1].max(), expected / expected.max(), rtol=0, atol=1e-4)


def test_pixel_average_is_the_mean_over_each_pixel() -> None:
    """At coarse pixels (0.3 um for a 0.2 um FWHM) each value is the Airy pattern averaged over the pixel."""
    d = 0.3
    psf = widefield_psf((1, 21, 21), 0.1, d, **WATER)[0]
    sub = (np.arange(101) - 50) / 101  # a plain 101 x 101 midpoint rule per pixel
    x = ((np.arange(21) - 10)[:, None] + sub).ravel() * d
    v = 2 * math.pi / 0.461 * 1.2 * np.hypot(x[:, None], x[None, :])
    safe = np.where(v == 0, 1.0, v)
    airy = np.where(v == 0, 1.0, (2 * j1(safe) / safe) ** 2).reshape(21, 101, 21, 101).mean(axis=(1, 3))

    np.testing.assert_allclose(psf, airy / airy.sum(), rtol=0, atol=1e-3 * psf.max())


def test_source_depth_without_index_mismatch_only_moves_the_focus() -> None:
    """ns == ni: a source 5 um deep is the same PSF, re-centred on its focus."""
    shallow = widefield_psf((21, 31, 31), 0.1, 0.05, **WATER)
    deep = widefield_psf((21, 31, 31), 0.1, 0.05, ns=1.333, depth=5.0, **WATER)

    np.testing.assert_allclose(deep, shallow, rtol=0, atol=1e-4 * shallow.max())


def test_index_mismatch_ns_has_no_effect_at_the_coverslip() -> None:
    np.testing.assert_array_equal(widefield_psf((11, 15, 15), 0.2, 0.1, ns=1.45, **WATER),
                                  widefield_psf((11, 15, 15), 0.2, 0.1, **WATER))


@pytest.mark.parametrize(("change", "where"), [
    ({"shape": (32, 65, 65)}, "shape"),
    ({"shape": (33, 0, 65)}, "shape"),
    ({"shape": (33, 65)}, "shape"),
    ({"shape": (MAX_SHAPE[0] + 2, 5, 5)}, "shape"),
    ({"na": 1.4}, "na"),
    ({"na": -0.5}, "na"),
    ({"wavelength": 0.0}, "wavelength"),
    ({"wavelength": math.nan}, "wavelength"),
    ({"ni": 0.5, "na": 0.3}, "ni"),
    ({"ns": 7.0}, "ns"),
    ({"depth": -1.0}, "depth"),
    ({"dz": 0.0}, "dz"),
    ({"dxy": math.inf}, "dxy"),
])
def test_bad_model_parameters_are_input_errors_naming_them(change: dict, where: str) -> None:
    request = {"shape": (33, 65, 65), "dz": 0.5, "dxy": 0.5, **WATER, **change}
    with pytest.raises(InputError) as caught:
        widefield_psf(**request)
    assert caught.value.where == where


def test_too_much_work_is_refused_before_it_starts() -> None:
    """The largest shape at 1 um pixels is refused at once (no table of radii x pupil samples is made)."""
    with pytest.raises(InputError, match="too much computation"):
        widefield_psf(MAX_SHAPE, 0.5, 1.0, **WATER)


def test_confocal_needs_a_valid_excitation() -> None:
    with pytest.raises(InputError) as caught:
        confocal_psf((11, 11, 11), 0.2, 0.1, excitation=-0.4, **WATER)
    assert caught.value.where == "excitation"


# --- measured beads ----------------------------------------------------------------------------


def gaussian_bead(shape: tuple[int, int, int], centre: tuple[float, float, float], sigma: tuple[float, ...],
                  background: float = 5.0) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float64)
    r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma))
    return background + 100.0 * np.exp(-r2 / 2)


def test_bead_psf_is_centred_on_the_bead_and_normalised() -> None:
    volume = gaussian_bead((31, 41, 45), (14.3, 19.6, 23.2), (2.0, 1.5, 1.5))

    psf = bead_psf(volume, (0.2, 0.1, 0.1), 0.2, 0.1, (15, 21, 21))

    assert psf.shape == (15, 21, 21) and psf.dtype == np.float32
    assert psf.sum() == pytest.approx(1.0, abs=1e-5) and psf.min() >= 0
    assert np.unravel_index(int(np.argmax(psf)), psf.shape) == (7, 10, 10)
    np.testing.assert_allclose(centroid(psf), (7, 10, 10), atol=0.05)


@pytest.mark.parametrize("scale", [0.5, 2.0, 3.0])
def test_resampling_keeps_the_bead_at_the_centre(scale: float) -> None:
    """Coarser (2x, 3x: box-averaged first) and finer (0.5x) output voxels: the centroid stays centred."""
    volume = gaussian_bead((41, 61, 61), (20.4, 29.7, 30.2), (3.0, 3.0, 3.0))
    hz, hy = round(1.0 / (0.1 * scale)), round(0.75 / (0.05 * scale))  # +-1 um in z, +-0.75 um in y and x

    psf = bead_psf(volume, (0.1, 0.05, 0.05), 0.1 * scale, 0.05 * scale, (2 * hz + 1, 2 * hy + 1, 2 * hy + 1))

    np.testing.assert_allclose(centroid(psf), (hz, hy, hy), atol=0.05)
    width = fwhm(psf[hz, hy], 0.05 * scale)  # the bead's 2.355 sigma, widened by the box average when coarser
    assert width == pytest.approx(2.355 * 3.0 * 0.05, rel=0.1 if scale < 3 else 0.2)


def test_default_shape_is_the_largest_odd_window_inside_the_stack() -> None:
    volume = gaussian_bead((21, 40, 40), (12.0, 15.0, 25.0), (1.5, 1.5, 1.5))

    psf = bead_psf(volume, (0.2, 0.1, 0.1), 0.2, 0.1)

    assert psf.shape == (17, 31, 29)  # room 8 planes, 15 rows, 14 columns each side
    assert np.unravel_index(int(np.argmax(psf)), psf.shape) == (8, 15, 14)


def test_a_hot_pixel_does_not_win_over_the_bead() -> None:
    volume = gaussian_bead((21, 31, 31), (10.0, 15.0, 15.0), (1.5, 2.0, 2.0))
    volume[3, 3, 3] = 140.0  # brighter than the bead's peak, one voxel

    psf = bead_psf(volume, (0.2, 0.1, 0.1), 0.2, 0.1, (7, 9, 9))

    np.testing.assert_allclose(centroid(psf), (3, 4, 4), atol=0.05)


@pytest.mark.parametrize(("volume", "shape", "message"), [
    (np.full((9, 9, 9), 7.0), None, "no signal"),
    (np.ones((9, 9)), None, "ZYX"),
    (gaussian_bead((9, 15, 15), (4.0, 7.0, 7.0), (1.0, 1.0, 1.0)), (9, 8, 9), "odd"),
    (gaussian_bead((9, 15, 15), (4.0, 7.0, 7.0), (1.0, 1.0, 1.0)), (9, 2001, 9), "at most"),
])
def test_bad_bead_inputs_are_input_errors(volume: np.ndarray, shape: tuple | None, message: str) -> None:
    with pytest.raises(InputError, match=message):
        bead_psf(volume, (0.2, 0.1, 0.1), 0.2, 0.1, shape)


def test_read_bead_psf_of_a_real_bead_stack(shared_data: Path) -> None:
    """bian_Bead_Image1_crop.tif: 41 x 150 x 150, 0.125 / 0.0225 um; PSF at 0.25 / 0.045 um."""
    psf = read_bead_psf(shared_data / "bian_Bead_Image1_crop.tif", 0.25, 0.045, (15, 31, 31))

    assert psf.shape == (15, 31, 31) and psf.sum() == pytest.approx(1.0, abs=1e-5)
    peak = np.unravel_index(int(np.argmax(psf)), psf.shape)
    assert all(abs(p - c) <= 1 for p, c in zip(peak, (7, 15, 15)))
    assert fwhm(psf[:, 15, 15], 0.25) > fwhm(psf[7, 15], 0.045)  # axially longer than wide


def test_read_bead_psf_needs_a_voxel_size_and_one_volume(tmp_path: Path) -> None:
    bead = gaussian_bead((9, 15, 15), (4.0, 7.0, 7.0), (1.0, 1.0, 1.0)).astype(np.float32)
    bare = write_stack(tmp_path / "bare.tif", bead, "ZYX")
    two = write_stack(tmp_path / "two.tif", np.stack([bead, bead], axis=1), "ZCYX", VoxelSize(0.2, 0.1, 0.1))

    with pytest.raises(InputError, match="no voxel size"):
        read_bead_psf(bare, 0.2, 0.1)
    with pytest.raises(InputError, match="2 volumes"):
        read_bead_psf(two, 0.2, 0.1)
    psf = read_bead_psf(two, 0.2, 0.1, (5, 7, 7), volume="c1")
    assert psf.shape == (5, 7, 7) and np.unravel_index(int(np.argmax(psf)), psf.shape) == (2, 3, 3)
