"""The PSF forward model by FFT, the regularisers of ZS-DeconvNet's loss, and Richardson-Lucy.

Tensors are batched ``(B, C, Z, Y, X)``; every channel is convolved with the same PSF, a ``(Z', Y', X')``
tensor with odd sizes whose centre voxel is ``(Z' // 2, Y' // 2, X' // 2)``. Convolutions give the 'same'
output (the input's size, aligned with it) with one of two explicit padding modes (:data:`PADDING`):

- ``"zeros"``: the volume is 0 outside (linear convolution, as ``scipy.ndimage.convolve(mode="constant")``
  and ``scipy.signal.convolve(mode="same")``);
- ``"reflect"``: the volume is mirrored about its edge voxels, the edge voxel not repeated (``d c b | a b c d |
  c b a``; numpy's ``"reflect"``, scipy.ndimage's ``"mirror"``), repeatedly where the PSF is longer than the
  volume.

The volume is padded by the PSF's half size along each axis and circularly convolved at a fast FFT size at
least that large, which no wrap-around reaches; every step is differentiable.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PADDING", "FFTConvolver", "convolve_fft", "gap_amending_term", "hessian_penalty",
           "richardson_lucy", "split_odd_even"]

#: The padding modes of the convolutions.
PADDING = ("reflect", "zeros")
#: Added to the blurred estimate before dividing in Richardson-Lucy (scikit-image's value).
RL_EPSILON = 1e-12


class FFTConvolver:
    """Convolution of ``(B, C, Z, Y, X)`` volumes of one size with one PSF, its transfer function kept.

    Parameters
    ----------
    psf
        ``(Z', Y', X')`` (or ``(1, 1, Z', Y', X')``) tensor or array, odd sizes, centre at the middle voxel.
    shape
        The ``(Z, Y, X)`` size of the volumes it will convolve.
    padding
        One of :data:`PADDING` (see the module docstring).
    dtype, device
        Of the computation (default: the PSF's if it is a floating-point tensor, else float32 on the CPU).
    """

    def __init__(self, psf: torch.Tensor | np.ndarray, shape: tuple[int, int, int], padding: str = "reflect", *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        if padding not in PADDING:
            raise ValueError(f"padding must be one of {PADDING}, got {padding!r}")
        kernel = torch.as_tensor(psf)
        if kernel.ndim == 5 and kernel.shape[:2] == (1, 1):
            kernel = kernel[0, 0]
        if kernel.ndim != 3 or any(n % 2 == 0 for n in kernel.shape):
            raise ValueError(f"the PSF must be 3D with odd sizes, got shape {tuple(kernel.shape)}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (Z, Y, X) sizes, got {shape}")
        if dtype is None:
            dtype = kernel.dtype if kernel.is_floating_point() else torch.float32
        self.kernel = kernel.to(dtype=dtype, device=device)
        self.shape = tuple(int(n) for n in shape)
        self.padding = padding
        self.half = tuple(n // 2 for n in self.kernel.shape)
        self.fft_shape = tuple(_fast_length(n + 2 * h) for n, h in zip(self.shape, self.half))
        self.otf = torch.fft.rfftn(self.kernel, s=self.fft_shape)
        self._indices = [_reflect_indices(n, h, self.kernel.device) for n, h in zip(self.shape, self.half)]

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        """The 'same' convolution of ``volume`` (``(B, C, Z, Y, X)`` of :attr:`shape`) with the PSF."""
        if volume.ndim != 5 or tuple(volume.shape[2:]) != self.shape:
            raise ValueError(f"expected a (B, C, {', '.join(map(str, self.shape))}) tensor, got shape "
                             f"{tuple(volume.shape)}")
        if self.padding == "zeros":
            hz, hy, hx = self.half
            padded = F.pad(volume, (hx, hx, hy, hy, hz, hz))
        else:
            padded = volume
            for axis, index in zip((2, 3, 4), self._indices):
                padded = padded.index_select(axis, index.to(volume.device))
        spectrum = torch.fft.rfftn(padded, s=self.fft_shape, dim=(2, 3, 4)) * self.otf.to(volume.device)
        full = torch.fft.irfftn(spectrum, s=self.fft_shape, dim=(2, 3, 4))
        (z, y, x), (hz, hy, hx) = self.shape, self.half
        return full[:, :, 2 * hz:2 * hz + z, 2 * hy:2 * hy + y, 2 * hx:2 * hx + x]

    def mirrored(self) -> FFTConvolver:
        """The convolver with the PSF mirrored through its centre (a correlation with the PSF)."""
        return FFTConvolver(torch.flip(self.kernel, (0, 1, 2)), self.shape, self.padding,  # type: ignore[arg-type]
                            dtype=self.kernel.dtype, device=self.kernel.device)


def convolve_fft(volume: torch.Tensor, psf: torch.Tensor | np.ndarray, padding: str = "reflect") -> torch.Tensor:
    """The 'same' 3D convolution of a ``(B, C, Z, Y, X)`` tensor with a PSF, by FFT (differentiable).

    Parameters
    ----------
    volume
        The batch of volumes; the computation runs in its dtype and on its device.
    psf
        ``(Z', Y', X')`` PSF with odd sizes, centred on its middle voxel.
    padding
        ``"reflect"`` (mirrored about the edge voxels) or ``"zeros"``; see the module docstring.

    Returns
    -------
    torch.Tensor
        The blurred batch, the shape of ``volume``.
    """
    convolver = FFTConvolver(psf, tuple(volume.shape[2:]), padding, dtype=volume.dtype, device=volume.device)
    return convolver(volume)


def hessian_penalty(volume: torch.Tensor) -> torch.Tensor:
    """Mean squared second differences of a ``(B, C, Z, Y, X)`` batch over the 9 (zz, zy, ..., xx) pairs.

    ``(D_zz^2 + D_yy^2 + D_xx^2 + 2 D_zy^2 + 2 D_zx^2 + 2 D_yx^2) / 9``, each term the mean over the voxels
    where it is defined (no padding): pure second differences ``f[i+1] - 2 f[i] + f[i-1]``, mixed ones the
    forward difference of a forward difference, in voxel units (no voxel-size weighting). A linear ramp
    scores 0; ``c x^2`` scores ``4 c^2 / 9``; ``c x y`` scores ``2 c^2 / 9``.
    """
    if volume.ndim != 5 or min(volume.shape[2:]) < 3:
        raise ValueError(f"expected a (B, C, Z, Y, X) tensor with Z, Y, X >= 3, got shape {tuple(volume.shape)}")
    axes = (2, 3, 4)
    pure = [torch.diff(volume, n=2, dim=a).square().mean() for a in axes]
    mixed = [torch.diff(torch.diff(volume, dim=a), dim=b).square().mean()
             for i, a in enumerate(axes) for b in axes[i + 1:]]
    return (sum(pure) + 2 * sum(mixed)) / 9  # type: ignore[return-value]


def split_odd_even(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The odd (1st, 3rd, ...) and even (2nd, 4th, ...) slices of a ``(B, C, Z, Y, X)`` batch, ``Z // 2`` each.

    ZS-DeconvNet's 3D split: slices 0, 2, 4, ... are the input, 1, 3, 5, ... the target; an odd last slice
    is dropped.
    """
    if stack.ndim != 5 or stack.shape[2] < 2:
        raise ValueError(f"expected a (B, C, Z, Y, X) tensor with Z >= 2, got shape {tuple(stack.shape)}")
    half = stack.shape[2] // 2
    return stack[:, :, 0:2 * half:2], stack[:, :, 1:2 * half:2]


def gap_amending_term(output_odd: torch.Tensor, even: torch.Tensor, denoised_full: torch.Tensor,
                      norm: str = "l1") -> torch.Tensor:
    """ZS-DeconvNet's gap-amending regulariser (Neighbor2Neighbor along z).

    ``mean | f(S_odd y) - S_even y - (S_odd g(y) - S_even g(y)) |`` (squared for ``norm="l2"``), where
    ``output_odd`` is the network's output on the odd slices, ``even`` the even slices of the stack and
    ``denoised_full`` the denoiser's output ``g(y)`` on the whole interleaved stack, which carries no gradient
    (detached here), split by :func:`split_odd_even`. The reference code uses the L1 form.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    full_odd, full_even = split_odd_even(denoised_full.detach())
    if output_odd.shape != even.shape or even.shape != full_odd.shape:
        raise ValueError(f"shapes differ: output {tuple(output_odd.shape)}, even slices {tuple(even.shape)}, "
                         f"odd/even slices of the denoised stack {tuple(full_odd.shape)}")
    residual = output_odd - even - (full_odd - full_even)
    return residual.abs().mean() if norm == "l1" else residual.square().mean()


@overload
def richardson_lucy(volume: np.ndarray, psf: np.ndarray | torch.Tensor, iterations: int,
                    padding: str = ...) -> np.ndarray: ...
@overload
def richardson_lucy(volume: torch.Tensor, psf: np.ndarray | torch.Tensor, iterations: int,
                    padding: str = ...) -> torch.Tensor: ...
def richardson_lucy(volume: np.ndarray | torch.Tensor, psf: np.ndarray | torch.Tensor, iterations: int,
                    padding: str = "reflect") -> np.ndarray | torch.Tensor:
    """Richardson-Lucy deconvolution of a ZYX volume, both convolutions by FFT with ``padding``.

    ``u <- u * (PSF~ conv (volume / (PSF conv u + eps)))`` with ``PSF~`` the mirrored PSF and ``eps``
    :data:`RL_EPSILON`, from a constant start (after one iteration the result does not depend on it); no
    gradient is kept. With ``padding="zeros"`` this is scikit-image's ``richardson_lucy(clip=False)``. Volume
    and PSF must be non-negative.

    Parameters
    ----------
    volume
        ZYX array or tensor; float64 input is computed in float64, anything else in float32.
    psf
        Odd-sized ZYX PSF (normalised to sum 1 here).
    iterations
        Number of updates (0 returns the constant start).
    padding
        ``"reflect"`` or ``"zeros"`` (see the module docstring).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The estimate, of the type of ``volume``.
    """
    as_numpy = not isinstance(volume, torch.Tensor)
    data = torch.as_tensor(np.asarray(volume) if as_numpy else volume)
    dtype = torch.float64 if data.dtype == torch.float64 else torch.float32
    data = data.to(dtype)
    kernel = torch.as_tensor(psf).to(dtype=dtype, device=data.device)
    if data.ndim != 3:
        raise ValueError(f"expected a ZYX volume, got shape {tuple(data.shape)}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if not (torch.isfinite(data).all() and torch.isfinite(kernel).all()):
        raise ValueError("volume and PSF must be finite")
    if (data < 0).any() or (kernel < 0).any() or not kernel.sum() > 0:
        raise ValueError("Richardson-Lucy needs a non-negative volume and a non-negative, non-zero PSF")
    kernel = kernel / kernel.sum()
    forward = FFTConvolver(kernel, tuple(data.shape), padding, dtype=dtype, device=data.device)
    backward = forward.mirrored()
    observed = data[None, None]
    estimate = torch.full_like(observed, float(observed.mean()) if observed.numel() else 0.0)
    with torch.no_grad():
        for _ in range(iterations):
            estimate = estimate * backward(observed / (forward(estimate) + RL_EPSILON))
    result = estimate[0, 0]
    return result.cpu().numpy() if as_numpy else result


def _reflect_indices(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis mirrored about its edge voxels, ``pad`` each side (repeatedly if needed)."""
    positions = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(positions)
    period = 2 * (n - 1)
    folded = positions.remainder(period)
    return torch.where(folded < n, folded, period - folded)


def _fast_length(n: int) -> int:
    """The smallest length >= ``n`` with no prime factor above 7 (fast for every FFT library)."""
    best = 1 << max(0, (n - 1).bit_length())
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                length = p3
                while length < n:
                    length *= 2
                best = min(best, length)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best
