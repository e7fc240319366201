"""The deconvolution benchmark protocol: a result scored against a reference of the same specimen.

As in ``shared/notes/ZS_DECONVNET.md`` (widefield deconvolved, scored against confocal): both volumes have
their 1st percentile subtracted (clipped at 0); the reference is normalised so that its percentiles 0.1 and
99.9 become 0 and 1; the result is fitted to that by least squares (``a * result + b``, so that neither scale
nor offset counts). Then, with both clipped to [0, 1], the data range of both metrics: PSNR (data range 1)
and 3D SSIM (scikit-image defaults: a 7-voxel uniform window); and, unclipped, Pearson's r and the
correlation of the per-slice totals with the reference's (optical sectioning: widefield keeps the total
nearly flat through z). On ``neubias_dna_conf_wf.tif`` this gives the note's raw widefield row (r 0.534,
z-profile 0.424, SSIM 0.772) but 24.02 dB for its 24.00: the probe clipped the reference, not the fitted
result, for its PSNR, which cannot score a perfect linear copy as perfect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["Score", "fit_to_reference", "normalise_reference", "score_against_reference", "subtract_background"]

#: A fitted result whose RMSE to the reference is below this (float64 rounding of the fit) scores PSNR inf.
EXACT_RMSE = 1e-12


@dataclass(frozen=True)
class Score:
    """Scores of one result: PSNR (dB), SSIM, Pearson r and the z-profile r, all of the fitted result."""

    psnr: float
    ssim: float
    pearson: float
    z_profile: float


def subtract_background(volume: np.ndarray, percentile: float = 1.0) -> np.ndarray:
    """``volume`` minus its ``percentile``-th percentile, negative values set to 0 (float64)."""
    data = np.asarray(volume, dtype=np.float64)
    return np.clip(data - np.percentile(data, percentile), 0.0, None)


def normalise_reference(reference: np.ndarray, low: float = 0.1, high: float = 99.9) -> np.ndarray:
    """``reference`` mapped affinely so its ``low`` and ``high`` percentiles become 0 and 1 (not clipped)."""
    data = np.asarray(reference, dtype=np.float64)
    p_low, p_high = np.percentile(data, [low, high])
    if not p_high > p_low:
        raise ValueError(f"the reference is flat between its percentiles {low} and {high}")
    return (data - p_low) / (p_high - p_low)


def fit_to_reference(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``a * result + b`` with ``a`` and ``b`` minimising the squared difference to ``reference`` (float64)."""
    x = np.asarray(result, dtype=np.float64).ravel()
    y = np.asarray(reference, dtype=np.float64).ravel()
    x_mean, y_mean = x.mean(), y.mean()
    dx = x - x_mean
    variance = float(dx @ dx)
    slope = float(dx @ (y - y_mean)) / variance if variance > 0 else 0.0
    return (slope * (np.asarray(result, dtype=np.float64) - x_mean) + y_mean).reshape(np.shape(result))


def score_against_reference(result: np.ndarray, reference: np.ndarray) -> Score:
    """The protocol (module docstring) for one ZYX result against a ZYX reference of the same shape.

    Both are given raw: the background subtraction, normalisation and fit happen here. PSNR is inf when the
    fitted result matches the reference to :data:`EXACT_RMSE`.
    """
    result, reference = np.asarray(result), np.asarray(reference)
    if result.shape != reference.shape or result.ndim != 3:
        raise ValueError(f"expected two ZYX volumes of one shape, got {result.shape} and {reference.shape}")
    if min(result.shape) < 7:
        raise ValueError(f"3D SSIM needs at least 7 voxels along every axis, got {result.shape}")
    truth = normalise_reference(subtract_background(reference))
    fitted = fit_to_reference(subtract_background(result), truth)
    truth_01, fitted_01 = np.clip(truth, 0.0, 1.0), np.clip(fitted, 0.0, 1.0)
    rmse = math.sqrt(float(np.mean((fitted_01 - truth_01) ** 2)))
    psnr = math.inf if rmse <= EXACT_RMSE else 20 * math.log10(1.0 / rmse)
    ssim = float(structural_similarity(truth_01, fitted_01, data_range=1.0))
    return Score(psnr=psnr, ssim=ssim, pearson=_pearson(fitted, truth),
                 z_profile=_pearson(fitted.sum(axis=(1, 2)), truth.sum(axis=(1, 2))))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation (NaN when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel() - np.mean(a)
    b = np.asarray(b, dtype=np.float64).ravel() - np.mean(b)
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 0 else math.nan
