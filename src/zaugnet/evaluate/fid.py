"""Fréchet Inception Distance (Heusel et al. 2017) between real and predicted slices.

The distance between two Gaussians fitted to Inception-v3 features is
``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The feature extractor is a TorchScript
Inception-v3 read from a local file (no download): the commonly distributed
``inception-2015-12-05.pt`` takes (N, 3, H, W) float images in [0, 255] and returns (N, 2048)
features when called with ``return_features=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from ..errors import InputError
from .metrics import to_8bit

__all__ = ["INCEPTION_SIZE", "InceptionFeatures", "feature_statistics", "fid", "frechet_distance"]

#: Side of the square images Inception-v3 is fed.
INCEPTION_SIZE = 299

_NEEDS_WEIGHTS = (
    "FID needs a local Inception-v3 TorchScript weights file (e.g. inception-2015-12-05.pt); "
    "it cannot be downloaded here"
)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Parameters
    ----------
    mu1, mu2
        Means, shape (D,).
    sigma1, sigma2
        Covariances, shape (D, D).
    eps
        Added to both diagonals when ``sigma1 @ sigma2`` is too singular for an accurate square root.

    Returns
    -------
    float
        The distance (>= 0; rounding error below 0 is returned as 0).

    Raises
    ------
    ValueError
        If the shapes do not match, the square root has a large imaginary part, or the result is
        not finite.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shapes do not match: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    root = _sqrtm_product(s1, s2)
    if root is None:
        offset = eps * np.eye(d)
        root = _sqrtm_product(s1 + offset, s2 + offset, accept_inaccurate=True)
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > 1e-3 * max(1.0, np.abs(np.diagonal(root).real).max()):
            raise ValueError(f"the matrix square root has a large imaginary component ({imag:.3g})")
        root = root.real
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))
    if not np.isfinite(value):
        raise ValueError("the Fréchet distance is not finite (non-finite statistics?)")
    return max(value, 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features.

    Raises
    ------
    InputError
        If there are fewer than 2 feature vectors.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise InputError("FID", f"needs at least 2 images on each side, got features of shape {features.shape}")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


class InceptionFeatures:
    """Inception-v3 features of grey images, from a local TorchScript file.

    Parameters
    ----------
    weights_path
        A TorchScript module: either one whose ``forward`` takes ``return_features`` (as the
        ``inception-2015-12-05.pt`` file), called as ``model(x, return_features=True)``, or a plain
        module returning (N, D) features from ``model(x)``.
    device
        Where to run it.
    batch_size
        Images per forward pass.

    Raises
    ------
    InputError
        If the file is missing or not a TorchScript module.
    """

    def __init__(self, weights_path: str | Path, *, device: str = "cpu", batch_size: int = 32) -> None:
        path = Path(weights_path)
        if not path.is_file():
            raise InputError(path, f"file does not exist; {_NEEDS_WEIGHTS}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
                model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(path, f"not a TorchScript module ({reason}); {_NEEDS_WEIGHTS}") from exc
        self.path = path
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = model.eval().to(self.device)
        self.takes_return_features = _has_argument(model, "return_features")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features (N, D) as float64 of (N, H, W) grey images already on the 8-bit scale [0, 255]."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected (N, H, W) grey images, got shape {images.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = torch.from_numpy(images[start:start + self.batch_size]).to(self.device)[:, None]
                x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
                x = x.clamp(0.0, 255.0).expand(-1, 3, -1, -1).contiguous()
                y = self.model(x, return_features=True) if self.takes_return_features else self.model(x)
                out.append(y.reshape(y.shape[0], -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 0))


def fid(
    real_slices: np.ndarray,
    fake_slices: np.ndarray,
    extractor: InceptionFeatures,
    *,
    value_range: tuple[float, float] | None = None,
) -> float:
    """FID between two sets of (N, Y, X) slices in the same units.

    Both sets are mapped to [0, 255] by the same affine transform (from ``value_range``, by default the
    real slices' min and max; clipped), then fed to ``extractor``.
    """
    real, fake = np.asarray(real_slices), np.asarray(fake_slices)
    low, high = value_range if value_range is not None else (float(real.min()), float(real.max()))
    if not high > low:
        raise InputError("FID", "the real slices are constant; the 8-bit mapping needs a non-zero range")
    mu1, s1 = feature_statistics(extractor(to_8bit(real, low, high)))
    mu2, s2 = feature_statistics(extractor(to_8bit(fake, low, high)))
    return frechet_distance(mu1, s1, mu2, s2)


def _sqrtm_product(s1: np.ndarray, s2: np.ndarray, accept_inaccurate: bool = False) -> np.ndarray | None:
    """``sqrtm(s1 @ s2)``, or None if it is not finite or inaccurate (a singular product)."""
    product = s1 @ s2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(product)
    if accept_inaccurate:
        return root
    if not np.isfinite(root).all():
        return None
    scale = np.linalg.norm(product)
    if scale > 0 and np.linalg.norm(root @ root - product) > 1e-6 * scale:
        return None
    return root


def _has_argument(model: torch.nn.Module, name: str) -> bool:
    """Whether the module's forward takes an argument called ``name``."""
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:
        return any(arg.name == name for arg in schema.arguments)
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
