"""How close two runtimes' predictions are, in the units that matter to a user."""

from __future__ import annotations

import numpy as np

from zaugnet.variants import image_channels

#: Largest accepted difference between runtimes, as a fraction of each input's intensity range (its slices).
TOLERANCE = 1e-4


def intensity_span(inputs: np.ndarray) -> np.ndarray:
    """Per-sample joint range (max - min) of the image channels of ``(B, C, Y, X)`` inputs (> 0): the range the
    network normalises with (:func:`zaugnet.variants.image_channels`)."""
    inputs = np.asarray(inputs, dtype=np.float64)
    images = inputs[:, :image_channels(inputs.shape[1])].reshape(len(inputs), -1)
    return np.maximum(images.max(axis=1) - images.min(axis=1), 1e-12)


def relative_error(got: np.ndarray, want: np.ndarray, inputs: np.ndarray) -> float:
    """Max abs difference of two ``(B, 1, Y, X)`` predictions, per sample relative to the input's range."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {want.shape}")
    diff = np.abs(got - want).reshape(len(got), -1).max(axis=1)
    return float((diff / intensity_span(inputs)).max())
