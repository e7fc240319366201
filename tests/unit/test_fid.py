"""Tests of zaugnet.evaluate.fid: the Fréchet distance against closed forms, and the feature pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from zaugnet.errors import InputError
from zaugnet.evaluate.fid import (
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
)


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def eigh_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# --- the Fréchet distance -----------------------------------------------------------------------


def test_identical_gaussians_are_at_distance_zero(rng: np.random.Generator) -> None:
    mu, sigma = rng.normal(size=16), random_spd(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_one_dimension_closed_form() -> None:
    # N(1, 2^2) vs N(3, 0.5^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[0.25]]) == pytest.approx(4.0 + 1.5**2)
    assert frechet_distance(1.0, 4.0, 3.0, 0.25) == pytest.approx(6.25)  # scalars count as D = 1


def test_diagonal_covariances_sum_the_one_dimensional_distances(rng: np.random.Generator) -> None:
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = sum((a - b) ** 2 + (np.sqrt(u) - np.sqrt(v)) ** 2 for a, b, u, v in zip(mu1, mu2, s1, s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_distance_is_symmetric(rng: np.random.Generator) -> None:
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    s1, s2 = random_spd(rng, 12), random_spd(rng, 12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


def test_commuting_covariances_in_many_dimensions(rng: np.random.Generator) -> None:
    d = 128
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    l1, l2 = rng.uniform(0.01, 5, d), rng.uniform(0.01, 5, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * l1) @ q.T, (q * l2) @ q.T  # same eigenvectors: sqrtm(S1 S2) = Q sqrt(L1 L2) Q^T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_general_covariances_match_a_symmetric_eigen_computation(rng: np.random.Generator) -> None:
    # Tr sqrt(S1 S2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix
    d = 64
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    r = eigh_sqrt(s1)
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_root
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_singular_covariances_give_a_finite_distance(rng: np.random.Generator) -> None:
    # fewer samples than dimensions, as with few slices and 2048 Inception features
    a, b = rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) + 1.0
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    assert np.linalg.matrix_rank(s1) == 4
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d > np.sum((mu1 - mu2) ** 2) * 0.5
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-4)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_by_hand() -> None:
    mu, sigma = feature_statistics(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
    assert mu.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(sigma, [[4 / 3, 0.0], [0.0, 4 / 3]])  # unbiased (N - 1)
    _, sigma1 = feature_statistics(np.array([[1.0], [3.0]]))
    assert sigma1.shape == (1, 1) and sigma1[0, 0] == pytest.approx(2.0)
    with pytest.raises(InputError, match="at least 2"):
        feature_statistics(np.ones((1, 4)))


# --- the feature pipeline with real TorchScript files ------------------------------------------


class TinyFeatures(nn.Module):
    """Eight features from a small conv net; logits unless ``return_features`` (as Inception's file)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=5, stride=4)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = torch.relu(self.conv(x / 127.5 - 1.0)).mean(dim=(2, 3))
        if return_features:
            return features
        return self.head(features)


class Probe(nn.Module):
    """A plain module reporting what it is fed: channels, height, width, min and max of each image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        size = torch.tensor([c, h, w], dtype=x.dtype).expand(n, 3)
        return torch.cat([size, x.amin(dim=(1, 2, 3))[:, None], x.amax(dim=(1, 2, 3))[:, None]], dim=1)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fid") / "tiny.pt"
    torch.jit.script(TinyFeatures()).save(str(path))
    return path


def textures(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Smooth random (n, 32, 32) images in [0, 1000] plus ``shift``."""
    coarse = rng.uniform(0, 1000, size=(n, 8, 8))
    return np.kron(coarse, np.ones((4, 4))) + shift


def test_features_of_a_file_taking_return_features(tiny_file: Path, rng: np.random.Generator) -> None:
    extractor = InceptionFeatures(tiny_file)
    assert extractor.takes_return_features
    features = extractor(rng.uniform(0, 255, size=(5, 20, 24)))
    assert features.shape == (5, 8) and features.dtype == np.float64


def test_images_are_fed_as_three_channel_299_in_the_8bit_range(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "probe.pt"
    torch.jit.script(Probe()).save(str(path))
    extractor = InceptionFeatures(path, batch_size=3)
    assert not extractor.takes_return_features
    images = np.zeros((4, 10, 12))
    images[:, 0, 0], images[:, -1, -1] = -50.0, 300.0  # the extractor clamps to [0, 255]
    np.testing.assert_allclose(extractor(images), np.tile([3, 299, 299, 0, 255], (4, 1)))
    # fid maps both sets by the real slices' range: 100..600 -> 0..255
    real = rng.uniform(100, 600, size=(3, 16, 16))
    real[:, 0, 0], real[:, 1, 1] = 100.0, 600.0
    seen: list[np.ndarray] = []

    def spy(x: np.ndarray) -> np.ndarray:
        seen.append(x)
        return extractor(x)

    fid(real, real + 1000.0, spy)  # type: ignore[arg-type]
    assert seen[0].min() == 0 and seen[0].max() == 255 and np.all(seen[1] == 255)


def test_fid_is_zero_for_the_same_slices_and_grows_with_a_shift(tiny_file: Path, rng: np.random.Generator) -> None:
    extractor = InceptionFeatures(tiny_file)
    real, other = textures(rng, 24), textures(rng, 24)
    same = fid(real, real, extractor)
    assert same == pytest.approx(0.0, abs=1e-6)
    sampled = fid(real, other, extractor)
    shifted = fid(real, other + 400.0, extractor, value_range=(0.0, 1400.0))
    assert same < sampled < shifted


def test_missing_or_foreign_weights_are_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Inception-v3 TorchScript.*cannot be downloaded") as info:
        InceptionFeatures(tmp_path / "inception-2015-12-05.pt")
    assert info.value.where.endswith("inception-2015-12-05.pt")
    (tmp_path / "notes.pt").write_text("not a model")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pt")
    for name in ("notes.pt", "state_dict.pt"):
        with pytest.raises(InputError, match="not a TorchScript module.*Inception-v3"):
            InceptionFeatures(tmp_path / name)
