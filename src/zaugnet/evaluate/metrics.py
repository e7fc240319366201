"""Image-quality metrics on slices (RMSE, PSNR, SSIM via scikit-image; a texture ratio) and the paper's 8-bit scale."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for the given ``data_range`` (inf for identical images)."""
    return float(peak_signal_noise_ratio(np.asarray(target, np.float64), np.asarray(pred, np.float64),
                                         data_range=data_range))


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of two 2D images (scikit-image defaults: 7x7 window)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    win = min(7, *pred.shape[-2:])
    win -= 1 - win % 2  # odd
    return float(structural_similarity(target, pred, data_range=data_range, win_size=win))


def to_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``values`` affinely from [low, high] to [0, 255], clipped, as float64 (no rounding)."""
    return np.clip((np.asarray(values, dtype=np.float64) - low) * 255.0 / (high - low), 0.0, 255.0)


#: Gaussian sigma (pixels) of the low-pass whose residual is a slice's high-frequency part.
TEXTURE_SIGMA = 1.0


def high_frequency_energy(image: np.ndarray) -> float:
    """Mean square of ``image`` minus its Gaussian blur (sigma :data:`TEXTURE_SIGMA` px): fine detail and noise."""
    image = np.asarray(image, dtype=np.float64)
    return float(np.mean((image - gaussian_filter(image, TEXTURE_SIGMA, mode="reflect")) ** 2))


def texture_ratio(pred: np.ndarray, target: np.ndarray) -> float:
    """High-frequency energy of a predicted slice over that of the true one: near 1, the new slice looks like
    an acquired one; below 1, smoother (averaging two noisy slices halves the noise's energy, hence the "scan
    lines" of interpolated stacks in XZ views); NaN for a true slice with no high frequencies."""
    reference = high_frequency_energy(target)
    return high_frequency_energy(pred) / reference if reference > 0 else float("nan")
