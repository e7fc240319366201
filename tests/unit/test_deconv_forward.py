"""The forward model and regularisers of ``zaugnet.deconv.forward``, and Richardson-Lucy.

References are computed another way: direct convolution (``scipy.ndimage.convolve``, with ``numpy.pad``
where the PSF outgrows the volume), scikit-image's Richardson-Lucy, finite differences worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

from zaugnet.deconv.forward import (
    FFTConvolver,
    convolve_fft,
    gap_amending_term,
    hessian_penalty,
    richardson_lucy,
    split_odd_even,
)

#: scipy.ndimage's name for each of our padding modes (its "mirror" is numpy's and our "reflect").
NDIMAGE_MODE = {"zeros": "constant", "reflect": "mirror"}


@pytest.fixture()
def volume(rng: np.random.Generator) -> np.ndarray:
    return rng.random((9, 14, 12))


@pytest.fixture()
def psf(rng: np.random.Generator) -> np.ndarray:
    """Asymmetric (a flipped kernel would show) and of a different odd size along each axis."""
    return rng.random((3, 5, 7))


def batch(array: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(array, dtype=dtype)[None, None]


# --- the FFT forward model -----------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_fft_convolution_equals_direct_convolution_everywhere(volume: np.ndarray, psf: np.ndarray,
                                                              padding: str) -> None:
    """Borders included: each padding mode is the boundary rule it documents."""
    expected = ndimage.convolve(volume, psf, mode=NDIMAGE_MODE[padding])

    in_float64 = convolve_fft(batch(volume), torch.as_tensor(psf), padding)[0, 0].numpy()
    in_float32 = convolve_fft(batch(volume, torch.float32), psf.astype(np.float32), padding)[0, 0].numpy()

    np.testing.assert_allclose(in_float64, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(in_float32, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_reflect_padding_repeats_where_the_psf_outgrows_the_volume(rng: np.random.Generator,
                                                                   volume: np.ndarray) -> None:
    """A 2n - 1 plane PSF (as for a whole stack): the mirror image is mirrored again, as numpy.pad does."""
    psf = rng.random((17, 29, 27))
    half = [(n // 2, n // 2) for n in psf.shape]
    padded = np.pad(volume, half, mode="reflect")
    expected = ndimage.convolve(padded, psf, mode="constant")[tuple(slice(h, -h) for h, _ in half)]

    result = convolve_fft(batch(volume), torch.as_tensor(psf), "reflect")[0, 0].numpy()

    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_a_delta_psf_leaves_the_volume_unchanged(volume: np.ndarray) -> None:
    delta = np.zeros((5, 5, 5))
    delta[2, 2, 2] = 1.0
    for padding in ("zeros", "reflect"):
        np.testing.assert_allclose(convolve_fft(batch(volume), delta, padding)[0, 0].numpy(), volume, atol=1e-12)


def test_every_volume_and_channel_of_a_batch_is_convolved_alike(rng: np.random.Generator, psf: np.ndarray) -> None:
    stack = torch.as_tensor(rng.random((2, 3, 8, 10, 11)))

    result = convolve_fft(stack, psf, "reflect")

    assert result.shape == stack.shape
    for b in range(2):
        for c in range(3):
            expected = ndimage.convolve(stack[b, c].numpy(), psf, mode="mirror")
            np.testing.assert_allclose(result[b, c].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_the_convolution_is_differentiable(rng: np.random.Generator, padding: str) -> None:
    x = torch.as_tensor(rng.random((1, 1, 4, 5, 6)), dtype=torch.float64).requires_grad_()
    k = torch.as_tensor(rng.random((3, 3, 5)), dtype=torch.float64).requires_grad_()

    assert torch.autograd.gradcheck(lambda a, b: convolve_fft(a, b, padding), (x, k))


def test_the_mirrored_convolver_is_the_adjoint_under_zero_padding(rng: np.random.Generator,
                                                                   psf: np.ndarray) -> None:
    """<H x, y> = <x, H~ y> for zero padding: what Richardson-Lucy's back-projection relies on."""
    forward = FFTConvolver(psf, (9, 14, 12), "zeros", dtype=torch.float64)
    x, y = (torch.as_tensor(rng.random((1, 1, 9, 14, 12))) for _ in range(2))

    left = float((forward(x) * y).sum())
    right = float((x * forward.mirrored()(y)).sum())
    assert left == pytest.approx(right, rel=1e-12)


@pytest.mark.parametrize("bad", [np.ones((2, 3, 3)), np.ones((3, 3)), np.ones((1, 2, 3, 3, 3))])
def test_a_psf_without_a_centre_voxel_is_refused(volume: np.ndarray, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="odd sizes"):
        convolve_fft(batch(volume), bad)


def test_an_unknown_padding_mode_is_refused(volume: np.ndarray, psf: np.ndarray) -> None:
    with pytest.raises(ValueError, match="padding"):
        convolve_fft(batch(volume), psf, "circular")


# --- the Hessian regulariser ---------------------------------------------------------------------


def grid(shape: tuple[int, int, int] = (6, 7, 8)) -> tuple[torch.Tensor, ...]:
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij")
    return z, y, x


def test_hessian_of_a_linear_ramp_is_zero() -> None:
    z, y, x = grid()
    assert float(hessian_penalty((3 * z - 2 * y + 0.5 * x + 7)[None, None])) == pytest.approx(0.0, abs=1e-20)


def test_hessian_of_quadratics_is_the_known_constant() -> None:
    """c x^2: D_xx = 2c, so (2c)^2 / 9; c x y: D_xy = D_yx = c, so 2 c^2 / 9; c z^2 + c y^2: 8 c^2 / 9."""
    z, y, x = grid()
    c = 1.5
    assert float(hessian_penalty((c * x**2)[None, None])) == pytest.approx(4 * c**2 / 9, rel=1e-12)
    assert float(hessian_penalty((c * x * y)[None, None])) == pytest.approx(2 * c**2 / 9, rel=1e-12)
    assert float(hessian_penalty((c * z**2 + c * y**2)[None, None])) == pytest.approx(8 * c**2 / 9, rel=1e-12)


def test_hessian_has_a_gradient() -> None:
    x = grid()[2]
    field = (x**2).clone().requires_grad_()
    hessian_penalty(field[None, None]).backward()
    assert field.grad is not None and field.grad.abs().sum() > 0


# --- the gap-amending term -------------------------------------------------------------------------


def test_split_odd_even_takes_alternate_slices_and_drops_a_last_odd_one() -> None:
    stack = torch.arange(7.0).reshape(1, 1, 7, 1, 1).expand(1, 1, 7, 2, 2)
    odd, even = split_odd_even(stack)
    assert odd[0, 0, :, 0, 0].tolist() == [0.0, 2.0, 4.0]
    assert even[0, 0, :, 0, 0].tolist() == [1.0, 3.0, 5.0]


def test_gap_amending_term_is_zero_for_an_identity_denoiser(rng: np.random.Generator) -> None:
    stack = torch.as_tensor(rng.random((2, 1, 10, 8, 8)))
    odd, even = split_odd_even(stack)
    identity = lambda v: v

    for norm in ("l1", "l2"):
        assert float(gap_amending_term(identity(odd), even, identity(stack), norm)) == 0.0


def test_gap_amending_term_of_a_zero_denoiser_is_the_even_slices_mean(rng: np.random.Generator) -> None:
    """f = 0: | 0 - even - (0 - 0) | averages to mean(|even|), and to mean(even^2) squared."""
    stack = torch.as_tensor(rng.random((1, 1, 8, 6, 6)))
    odd, even = split_odd_even(stack)
    zero = torch.zeros_like(odd)

    assert float(gap_amending_term(zero, even, torch.zeros_like(stack))) == pytest.approx(float(even.mean()))
    assert float(gap_amending_term(zero, even, torch.zeros_like(stack), "l2")) == pytest.approx(
        float((even**2).mean()))


def test_gap_amending_term_sends_no_gradient_into_the_full_stack_pass(rng: np.random.Generator) -> None:
    stack = torch.as_tensor(rng.random((1, 1, 8, 6, 6)))
    odd, even = split_odd_even(stack)
    output = (odd * 0.9).requires_grad_()
    full = (stack * 1.1).requires_grad_()

    gap_amending_term(output, even, full).backward()

    assert output.grad is not None and full.grad is None


# --- Richardson-Lucy -----------------------------------------------------------------------------


def blurred_scene(psf: np.ndarray) -> np.ndarray:
    scene = np.zeros((12, 20, 18))
    scene[[2, 5, 9, 7], [3, 10, 15, 17], [4, 12, 6, 1]] = 1.0  # a few points, one near a border
    scene[4:7, 8:12, 5:9] += 0.5  # and a block
    return ndimage.convolve(scene, psf / psf.sum(), mode="constant") + 0.01


def test_richardson_lucy_matches_scikit_image(psf: np.ndarray) -> None:
    """With zero padding, the same algorithm as scikit-image's (clip=False), in float64 and float32.

    Both compute identical arithmetic; only the FFT libraries' rounding differs (about 1e-16 relative per
    convolution in float64, 1e-7 in float32), carried multiplicatively through 10 updates. 1e-9 (float64) and
    1e-4 (float32) of the maximum leave room for that while a flipped or shifted PSF, another padding or a
    missing epsilon differ by 1e-2 or more.
    """
    observed = blurred_scene(psf)
    kernel = psf / psf.sum()

    expected = skimage_richardson_lucy(observed, kernel, 10, clip=False)
    ours = richardson_lucy(observed, psf, 10, padding="zeros")
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9 * expected.max())

    expected32 = skimage_richardson_lucy(observed.astype(np.float32), kernel.astype(np.float32), 10, clip=False)
    ours32 = richardson_lucy(observed.astype(np.float32), psf, 10, padding="zeros")
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32, expected32, rtol=0, atol=1e-4 * expected32.max())


def test_richardson_lucy_with_reflect_padding_is_another_answer(psf: np.ndarray) -> None:
    """The reflect-padded result is a different (valid) answer: so the comparison above is not vacuous."""
    observed = blurred_scene(psf)
    expected = skimage_richardson_lucy(observed, psf / psf.sum(), 10, clip=False)
    reflected = richardson_lucy(observed, psf, 10, padding="reflect")

    assert np.abs(reflected - expected).max() > 1e-2 * expected.max()
    assert reflected.min() >= 0


def test_richardson_lucy_sharpens_and_keeps_tensor_inputs_tensors() -> None:
    """A blurred point grows back towards a point; a torch input gives a torch output."""
    kernel = np.exp(-np.sum((np.indices((7, 7, 7)) - 3.0) ** 2, axis=0) / 4.0)
    point = np.zeros((11, 11, 11))
    point[5, 5, 5] = 1.0
    observed = torch.as_tensor(ndimage.convolve(point, kernel / kernel.sum(), mode="constant") + 1e-6)

    result = richardson_lucy(observed, kernel, 30)

    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64
    assert float(result[5, 5, 5]) > 3 * float(observed[5, 5, 5])


def test_richardson_lucy_refuses_negative_data(psf: np.ndarray) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        richardson_lucy(-np.ones((5, 5, 5)), psf, 3)
