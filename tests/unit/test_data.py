"""Triplets, splits, normalisation, sampling and augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import tiny_config
from zaugnet.training.data import (
    TripletSampler,
    collect_triplets,
    midpoint_triplets,
    split_volumes,
    window_triplets,
)

from zaugnet.gaps import normalize_pair


def test_midpoint_triplet_count() -> None:
    assert len(midpoint_triplets(10)) == 8
    assert midpoint_triplets(3) == [(0, 1, 2)]
    assert midpoint_triplets(2) == []


@pytest.mark.parametrize("n", [3, 4, 6, 8])
def test_window_triplets_are_all_combinations_when_the_stack_fits_the_window(n: int) -> None:
    """With n3 - n1 <= 7 and n <= 8 slices every combination n1 < n2 < n3 qualifies: C(n, 3)."""
    assert len(window_triplets(n, 7)) == math.comb(n, 3)


def test_window_triplets_count_for_a_long_stack() -> None:
    """For span s = n3 - n1 there are (N - s) choices of n1 and (s - 1) of n2."""
    n, window = 36, 7
    expected = sum((n - s) * (s - 1) for s in range(2, window + 1))
    got = window_triplets(n, window)
    assert len(got) == expected == len(set(got))
    assert all(0 <= a < b < c < n and c - a <= window for a, b, c in got)
    assert window_triplets(10, 2) == midpoint_triplets(10)


def test_split_by_stack_never_shares_a_stack() -> None:
    split = split_volumes([20, 20, 20, 20, 20], val_fraction=0.4, seed=3)
    train_ids = {v for v, _, _ in split.train}
    val_ids = {v for v, _, _ in split.val}
    assert len(val_ids) == 2 and len(train_ids) == 3 and not train_ids & val_ids
    assert split == split_volumes([20] * 5, 0.4, seed=3)  # deterministic


def test_single_stack_is_split_into_contiguous_z_blocks() -> None:
    split = split_volumes([30], val_fraction=0.2)
    assert split.train == [(0, 0, 24)] and split.val == [(0, 24, 30)]
    train = collect_triplets(split.train, "zaugnet+", 7)
    val = collect_triplets(split.val, "zaugnet+", 7)
    train_slices = {n for t in train for n in t[1:]}
    val_slices = {n for t in val for n in t[1:]}
    assert not train_slices & val_slices


def test_at_least_one_stack_stays_for_training() -> None:
    split = split_volumes([10, 10], val_fraction=0.9)
    assert len(split.train) == 1 and len(split.val) == 1


def test_normalize_pair_minmax_and_percentile() -> None:
    pair = np.stack([np.linspace(10, 20, 100).reshape(10, 10), np.full((10, 10), 15.0)])
    assert normalize_pair(pair) == (10.0, 10.0)
    pair[0, 0, 0] = 1e6  # a hot pixel
    lo, scale = normalize_pair(pair, "percentile", (1, 99))
    assert scale < 20
    assert normalize_pair(np.zeros((2, 4, 4)))[1] > 0  # flat images do not divide by zero


def _volume(rng: np.random.Generator, dtype=np.uint16) -> np.ndarray:
    return rng.integers(100, 4000, size=(9, 40, 50)).astype(dtype)


@pytest.mark.parametrize("variant,channels", [("zaugnet", 2), ("zaugnet+", 3)])
def test_sample_layout_normalisation_and_dpm(rng: np.random.Generator, variant: str, channels: int) -> None:
    vol = _volume(rng)
    cfg = tiny_config(variant).data.model_copy(update={"augment": False})
    sampler = TripletSampler([vol], variant, cfg)
    x, gt = sampler.sample((0, 2, 3, 6), rng=None)
    assert x.shape == (channels, 32, 32) and gt.shape == (1, 32, 32)
    y0, x0 = (40 - 32) // 2, (50 - 32) // 2
    raw = vol[[2, 6, 3], y0:y0 + 32, x0:x0 + 32].astype(np.float32)
    lo, hi = raw[:2].min(), raw[:2].max()
    np.testing.assert_allclose(x[0], (raw[0] - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(x[1], (raw[1] - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(gt[0], (raw[2] - lo) / (hi - lo), atol=1e-6)
    if variant == "zaugnet+":
        assert np.all(x[2] == pytest.approx(1 / 4))


def test_augmentation_is_identical_across_the_three_slices(rng: np.random.Generator) -> None:
    """Identical slices stay identical after augmentation; a swap moves z to 1 - z."""
    plane = rng.random((40, 50)).astype(np.float32)
    vol = np.stack([plane] * 5)
    cfg = tiny_config("zaugnet+").data.model_copy(update={"p_jitter": 1.0})
    sampler = TripletSampler([vol], "zaugnet+", cfg)
    zs = set()
    for seed in range(20):
        x, gt = sampler.sample((0, 0, 1, 4), np.random.default_rng(seed))
        np.testing.assert_array_equal(x[0], x[1])
        np.testing.assert_array_equal(x[0], gt[0])
        zs.add(float(x[2, 0, 0]))
    assert zs == {0.25, 0.75}


def test_batches_are_reproducible_by_seed_and_step(rng: np.random.Generator) -> None:
    sampler = TripletSampler([_volume(rng)], "zaugnet", tiny_config().data)
    triplets = collect_triplets([(0, 0, 9)], "zaugnet", 7)
    a = sampler.batch(triplets, 4, seed=1, step=5)
    b = sampler.batch(triplets, 4, seed=1, step=5)
    c = sampler.batch(triplets, 4, seed=1, step=6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype.is_floating_point and a[0].shape == (4, 2, 32, 32)


def test_crop_is_a_multiple_of_16_and_fits_the_volume(rng: np.random.Generator) -> None:
    vol = rng.random((5, 40, 100)).astype(np.float32)
    cfg = tiny_config().data.model_copy(update={"crop_size": 64})
    assert TripletSampler([vol], "zaugnet", cfg).crop == 32
