"""Analytic phantoms: reproducible, renderable at any depth, varying but smooth along z."""

from __future__ import annotations

import numpy as np
import pytest

from zaugnet.phantoms import Phantom, acquire, make_phantom, simulate_stack

KINDS = ("membrane", "nuclei")
EXTENT = (16.0, 25.6, 25.6)
YX = (128, 128)  # 0.2 um pixels over the default box


def _psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB for data on [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((estimate.astype(np.float64) - truth) ** 2)))


def _nmad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference, relative to the mean absolute deviation (contrast) of `a`."""
    return float(np.mean(np.abs(a - b)) / np.mean(np.abs(a - a.mean())))


@pytest.fixture(scope="module", params=KINDS)
def phantom(request: pytest.FixtureRequest) -> Phantom:
    return make_phantom(request.param, EXTENT, seed=1)


def test_same_seed_same_scene_other_seed_other_scene(phantom: Phantom) -> None:
    z = np.array([4.0, 8.25])
    first = phantom.render(z, (64, 64))
    again = make_phantom(phantom.kind, EXTENT, seed=1).render(z, (64, 64))
    other = make_phantom(phantom.kind, EXTENT, seed=2).render(z, (64, 64))
    np.testing.assert_array_equal(first, again)
    assert np.mean(np.abs(first - other)) > 0.05


def test_phantom_is_cheap_value_object() -> None:
    a = make_phantom("nuclei", (8, 10, 10), seed=3)
    b = Phantom("nuclei", (8.0, 10.0, 10.0), seed=3)
    assert a == b and hash(a) == hash(b)
    assert "_scene" not in vars(a)  # objects are drawn on first render only
    with pytest.raises(ValueError, match="kind"):
        make_phantom("cells")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extent_um"):
        make_phantom("membrane", (0.0, 10.0, 10.0))


def test_any_z_sampling(phantom: Phantom) -> None:
    """A slice depends only on its own depth: two depths alone equal the same depths in a fine stack."""
    fine_z = 3.0 + 0.05 * np.arange(41)  # 3.0 ... 5.0 um
    fine = phantom.render(fine_z, YX)
    a, b = fine_z[7], fine_z[33]
    pair = phantom.render(np.array([b, a]), YX)
    np.testing.assert_allclose(pair[0], fine[33], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pair[1], fine[7], rtol=0, atol=1e-6)
    np.testing.assert_allclose(phantom.render(a, YX)[0], fine[7], rtol=0, atol=1e-6)


def test_values_finite_in_range_and_structured(phantom: Phantom) -> None:
    signal = phantom.render(np.linspace(0.0, EXTENT[0], 9), YX)
    assert signal.shape == (9, *YX) and signal.dtype == np.float32
    assert np.all(np.isfinite(signal))
    assert signal.min() >= 0.0 and signal.max() <= 1.0
    assert signal.max() > 0.8  # bright structures exist
    assert 0.02 < signal.mean() < 0.5  # ... on a dark background, not a flat field


def test_signal_varies_along_z_but_smoothly(phantom: Phantom) -> None:
    """Slices 0.5 um apart differ clearly; slices 0.05 um apart hardly.

    Measured over seeds 0-5 at depths 3-11 um (normalised mean abs difference, see `_nmad`):
    0.5 um apart: membrane >= 0.45, nuclei >= 0.17; 0.05 um apart: membrane <= 0.10, nuclei <= 0.04,
    and the ratio (0.05 um) / (0.5 um) was <= 0.14. Thresholds leave a margin.
    """
    z0 = np.array([3.0, 7.0, 11.0])
    slices = phantom.render(np.concatenate([z0, z0 + 0.05, z0 + 0.5]), YX).reshape(3, len(z0), *YX)
    for i in range(len(z0)):
        near = _nmad(slices[0, i], slices[1, i])
        far = _nmad(slices[0, i], slices[2, i])
        assert far > 0.12, f"slices 0.5 um apart at z={z0[i]} are too similar ({far:.3f})"
        assert near < 0.25 * far, f"not smooth at z={z0[i]}: {near:.3f} vs {far:.3f}"


def test_linear_interpolation_is_clearly_imperfect(phantom: Phantom) -> None:
    """The midpoint of slices 1 um apart is not their average.

    Measured PSNR of linear interpolation (noise-free, [0, 1], 0.2 um pixels, seeds 0-3):
    1 um spacing: membrane 15.6-16.6 dB, nuclei 26.1-27.8 dB;
    0.5 um spacing: membrane 22.6-23.9 dB, nuclei 34.3-36.4 dB.
    """
    z0 = np.arange(2.0, 14.0, 1.0)
    r = phantom.render(np.concatenate([z0, z0 + 0.5, z0 + 1.0]), YX).reshape(3, len(z0), *YX)
    psnr = _psnr(0.5 * (r[0] + r[2]), r[1])
    assert 12.0 < psnr < 32.0, f"{phantom.kind}: linear interpolation PSNR {psnr:.1f} dB at 1 um"
    assert not np.allclose(0.5 * (r[0] + r[2]), r[1], atol=0.05)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_acquire_keeps_shape_and_dtype(dtype: str) -> None:
    signal = make_phantom("nuclei", (4.0, 6.4, 6.4), seed=0).render([1.0, 2.0, 3.0], (32, 32))
    image = acquire(signal, pixel_um=0.2, dtype=dtype)
    assert image.shape == signal.shape and image.dtype == np.dtype(dtype)
    assert acquire(signal[0], pixel_um=0.2, dtype=dtype).shape == signal.shape[1:]


def test_acquire_clips_integers() -> None:
    bright = np.ones((2, 16, 16), dtype=np.float32)
    assert np.all(acquire(bright, pixel_um=0.2, photons=1e6) == np.iinfo(np.uint16).max)
    dark = np.zeros((2, 16, 16), dtype=np.float32)
    low = acquire(dark, pixel_um=0.2, background=0.0, read_noise=5.0, dtype="float32")
    assert low.min() < 0  # read noise goes below zero ...
    assert acquire(dark, pixel_um=0.2, background=0.0, read_noise=5.0).min() == 0  # ... clipped in uint16


def test_acquire_deterministic_by_seed_and_independent_per_slice() -> None:
    signal = np.full((3, 32, 32), 0.5, dtype=np.float32)
    a = acquire(signal, pixel_um=0.2, seed=4)
    np.testing.assert_array_equal(a, acquire(signal, pixel_um=0.2, seed=4))
    assert not np.array_equal(a, acquire(signal, pixel_um=0.2, seed=5))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])


def test_acquire_noise_is_poisson_plus_read_noise() -> None:
    """Variance = background + photons * signal + read_noise**2 (counts), so the std grows with signal."""
    photons, background, read_noise = 200.0, 10.0, 2.0
    stds = []
    for level in (0.1, 0.9):
        signal = np.full((4, 64, 64), level, dtype=np.float32)
        counts = acquire(signal, pixel_um=0.2, seed=1, dtype="float32")
        expected_mean = background + photons * level
        assert counts.mean() == pytest.approx(expected_mean, rel=0.01)
        assert counts.var() == pytest.approx(expected_mean + read_noise**2, rel=0.05)
        stds.append(counts.std())
    assert stds[1] > 2 * stds[0]


def test_acquire_without_noise_is_blurred_scaled_signal() -> None:
    signal = np.zeros((1, 33, 33), dtype=np.float32)
    signal[0, 16, 16] = 1.0
    clean = acquire(signal, pixel_um=0.1, psf_sigma_um=0.2, dtype="float32", noise=False)
    assert clean.sum() == pytest.approx(10.0 * 33 * 33 + 200.0, rel=1e-5)  # blur keeps the photons
    assert clean[0, 16, 16] == pytest.approx(10.0 + 200.0 / (2 * np.pi * 2.0**2), rel=1e-3)
    with pytest.raises(ValueError, match="dtype"):
        acquire(signal, pixel_um=0.1, dtype="int32")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_simulate_stack_shape_and_dtype(kind: str, dtype: str) -> None:
    stack = simulate_stack((6, 40, 48), kind=kind, seed=2, dtype=dtype)
    assert stack.shape == (6, 40, 48) and stack.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(stack)) and stack.std() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_simulate_stack_matches_phantom_and_acquire(kind: str) -> None:
    shape, z_step, xy_step = (5, 32, 32), 0.8, 0.25
    clean = simulate_stack(shape, kind=kind, seed=3, z_step_um=z_step, xy_step_um=xy_step, noise=False)
    phantom = make_phantom(kind, (5 * z_step, 32 * xy_step, 32 * xy_step), seed=3)
    signal = phantom.render((np.arange(5) + 0.5) * z_step, (32, 32))
    np.testing.assert_array_equal(clean, acquire(signal, pixel_um=xy_step, noise=False))
    noisy = simulate_stack(shape, kind=kind, seed=3, z_step_um=z_step, xy_step_um=xy_step)
    np.testing.assert_array_equal(noisy, simulate_stack(shape, kind=kind, seed=3, z_step_um=z_step, xy_step_um=xy_step))
    assert not np.array_equal(noisy, clean)
