"""The 3D ZS-DeconvNet loss (the paper's Eq. 6-8, with the reference code's L1 norms).

With ``odd, even`` the input and target slices of a window ``z`` (:func:`~zaugnet.deconv.forward.split_odd_even`),
``f'`` the denoiser, ``f`` the deconvolver (fed with ``f'(odd)``), ``PSF *`` the forward model by FFT and
``g(.) = a - even - (S_odd f'(z) - S_even f'(z))`` the gap-amending residual
(:func:`~zaugnet.deconv.forward.gap_amending_term`, the denoiser run on the whole window without gradient)::

    L_den = |f'(odd) - even| + gamma |g(f'(odd))|
    L_dec = |PSF * f(odd) - even| + gamma |g(PSF * f(odd))| + lambda Hessian(f(odd)) [+ mean(relu(-u))]
    L     = mu L_den + (1 - mu) L_dec

every ``|.|`` the mean absolute value. mu 0.5, lambda 0.1, gamma 1 in the paper. The bracketed term is ours, for a
deconvolver clamped at 0 (``net.positive``, :class:`~.nets.Clamped`: ``f = relu(u)``): the mean negative part of
``u`` before the clamp, which the clamp alone would leave without a gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zaugnet.deconv.forward import (
    FFTConvolver,
    gap_amending_term,
    hessian_penalty,
    split_odd_even,
)

from .config import DeconvTrainConfig
from .nets import Clamped, ZSDeconvNet3D

__all__ = ["DeconvLoss", "combine", "loss_terms", "swap_pairs"]


def loss_terms(denoised: Tensor, deconvolved: Tensor, even: Tensor, denoised_full: Tensor,
               forward_model: Callable[[Tensor], Tensor], unclamped: Tensor | None = None) -> dict[str, Tensor]:
    """The terms of the loss (module docstring), each a scalar tensor.

    Parameters
    ----------
    denoised, deconvolved
        The network's outputs on the odd slices, ``(B, 1, Z, Y, X)``.
    even
        The target slices, same shape.
    denoised_full
        The denoiser's output on the whole window, ``(B, 1, 2 Z, Y, X)`` (detached here).
    forward_model
        The PSF convolution of volumes of the outputs' size.
    unclamped
        A clamped deconvolver's output before the clamp (``deconvolved = relu(unclamped)``), or None.

    Returns
    -------
    dict
        ``den`` (L1 of the denoised), ``gap_den``, ``dec`` (L1 of the re-blurred deconvolved), ``gap_dec``,
        ``hessian``, ``negative`` (the mean negative part of ``unclamped``, else of ``deconvolved``).
    """
    blurred = forward_model(deconvolved)
    return {
        "den": (denoised - even).abs().mean(),
        "gap_den": gap_amending_term(denoised, even, denoised_full),
        "dec": (blurred - even).abs().mean(),
        "gap_dec": gap_amending_term(blurred, even, denoised_full),
        "hessian": hessian_penalty(deconvolved),
        "negative": torch.relu(-deconvolved if unclamped is None else -unclamped).mean(),
    }


def combine(terms: dict[str, Tensor], cfg: DeconvTrainConfig, clamped: bool = False) -> Tensor:
    """``mu (den + gamma gap_den) + (1 - mu) (dec + gamma gap_dec + lambda hessian [+ negative])``, the bracket
    for a clamped deconvolver only (``clamped``)."""
    dec = terms["dec"] + cfg.gamma * terms["gap_dec"] + cfg.lam * terms["hessian"]
    return cfg.mu * (terms["den"] + cfg.gamma * terms["gap_den"]) + (1 - cfg.mu) * (
        dec + terms["negative"] if clamped else dec)


class DeconvLoss:
    """The loss of a network on windows of slices, with one FFT forward model per window size.

    Parameters
    ----------
    psf
        The training PSF (ZYX, odd sizes, sum 1).
    cfg
        The loss weights.
    padding
        The forward model's boundary rule: one of :data:`zaugnet.deconv.forward.PADDING` on every axis, or
        ``"axial-zeros"``: zeros above and below, mirrored in y and x (for windows spanning a stack whose
        specimen lies inside it: a widefield PSF spreads the same energy over every plane, so with mirrored
        or unknown content above and below a patch the loss cannot tell in which plane the light was).
    """

    def __init__(self, psf: np.ndarray | Tensor, cfg: DeconvTrainConfig, padding: str = "reflect") -> None:
        self.psf = torch.as_tensor(np.asarray(psf, dtype=np.float32))
        self.cfg = cfg
        self.padding = padding
        self._models: dict[tuple[tuple[int, ...], str], Callable[[Tensor], Tensor]] = {}

    def forward_model(self, shape: tuple[int, int, int], device: torch.device | str = "cpu",
                      ) -> Callable[[Tensor], Tensor]:
        """The convolution of outputs of ``shape`` with the PSF (made once per shape and device)."""
        key = (tuple(shape), str(device))
        if key not in self._models:
            if self.padding == "axial-zeros":
                self._models[key] = _AxialZeros(self.psf, shape, device)
            else:
                self._models[key] = FFTConvolver(self.psf, shape, self.padding, device=device)
        return self._models[key]

    def __call__(self, network: ZSDeconvNet3D, window: Tensor, swap: bool = False) -> tuple[Tensor, dict[str, float]]:
        """The total loss on a ``(B, 1, 2 Z, Y, X)`` batch of windows, and every term as a float (``loss`` the
        total). With ``swap`` the roles change: the 2nd, 4th, ... slices are the input and the 1st, 3rd, ... the
        target (``train.alternate``)."""
        with torch.no_grad():
            denoised_full = network.denoiser(window)
        if swap:
            window, denoised_full = swap_pairs(window), swap_pairs(denoised_full)
        odd, even = split_odd_even(window)
        clamped = isinstance(network.deconvolver, Clamped)
        denoised = network.denoiser(odd)
        unclamped = network.deconvolver.stage(denoised) if clamped else None
        deconvolved = torch.relu(unclamped) if unclamped is not None else network.deconvolver(denoised)
        model = self.forward_model(tuple(odd.shape[2:]), window.device)  # type: ignore[arg-type]
        terms = loss_terms(denoised, deconvolved, even, denoised_full, model, unclamped)
        total = combine(terms, self.cfg, clamped)
        return total, {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def swap_pairs(window: Tensor) -> Tensor:
    """``window`` (``(B, C, 2 Z, Y, X)``) with slices ``2k`` and ``2k + 1`` exchanged, so that
    :func:`~zaugnet.deconv.forward.split_odd_even` returns its 2nd, 4th, ... slices as the input and its 1st,
    3rd, ... as the target: the target one slice above the input instead of one below."""
    b, c, z, y, x = window.shape
    if z % 2:
        raise ValueError(f"a window needs an even number of slices to swap pairs, got {z}")
    return window.reshape(b, c, z // 2, 2, y, x).flip(3).reshape(b, c, z, y, x)


class _AxialZeros:
    """PSF convolution with zeros outside along z and mirrored content in y and x (``"axial-zeros"``)."""

    def __init__(self, psf: Tensor, shape: tuple[int, int, int], device: torch.device | str) -> None:
        self.hy, self.hx = psf.shape[1] // 2, psf.shape[2] // 2
        if self.hy >= shape[1] or self.hx >= shape[2]:
            raise ValueError(f"the PSF {tuple(psf.shape)} is wider than the volume {shape} (mirroring needs less)")
        padded = (shape[0], shape[1] + 2 * self.hy, shape[2] + 2 * self.hx)
        self.convolver = FFTConvolver(psf, padded, "zeros", device=device)

    def __call__(self, volume: Tensor) -> Tensor:
        hy, hx = self.hy, self.hx
        out = self.convolver(F.pad(volume, (hx, hx, hy, hy, 0, 0), mode="reflect"))
        return out[..., hy:out.shape[-2] - hy, hx:out.shape[-1] - hx]
