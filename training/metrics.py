"""Image-quality metrics (RMSE, PSNR, SSIM) on slices, via scikit-image."""

from __future__ import annotations

import numpy as np
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
