"""The self-check of ``zaugnet.deconv.selfcheck`` on constructed cases whose right answer is known.

A synthetic specimen (blobs) blurred by a known confocal PSF at 0.2 um z, with Poisson noise: the self-check
(odd slices deconvolved, re-blurred by the PSF at 0.4 um, compared with the even slices) must rank
Richardson-Lucy with the right PSF above the identity and above Richardson-Lucy with a wrong PSF, and a
moderate count above a far too long one on noisy data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from zaugnet.deconv.forward import convolve_fft
from zaugnet.deconv.predict import Affine, RLDeconvolver
from zaugnet.deconv.psf import confocal_psf
from zaugnet.deconv.selfcheck import (
    MODEL_MARGIN,
    Candidate,
    choose,
    reblur_error,
    rl_candidates,
    scored_rows,
    self_check,
    split_volume,
)

OPTICS = {"na": 1.2, "wavelength": 0.5, "excitation": 0.45, "ni": 1.333}
DZ, DXY = 0.2, 0.1


def _psf(planes: int, dz: float, **changes: float) -> np.ndarray:
    """A confocal PSF (compact in z, so that Richardson-Lucy converges on a small volume), 31 x 31 pixels."""
    return confocal_psf((planes, 31, 31), dz, DXY, **{**OPTICS, **changes})


def _identity(volume: np.ndarray) -> tuple[None, np.ndarray]:
    return None, np.asarray(volume, dtype=np.float32)


@pytest.fixture(scope="module")
def specimen() -> dict[str, np.ndarray]:
    """Blobs blurred by the PSF at DZ (zeros outside), at 2000 and at 50 photons at the brightest voxel."""
    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    obj = np.zeros(shape, np.float32)
    obj[tuple(rng.integers((4, 6, 6), (28, 42, 42), size=(30, 3)).T)] = 1.0
    obj = ndimage.gaussian_filter(obj, 2.0)
    blurred = convolve_fft(torch.from_numpy(obj)[None, None], _psf(21, DZ), padding="zeros")[0, 0].numpy()
    blurred = np.clip(blurred, 0, None) / blurred.max()
    out = {"psf_2dz": _psf(11, 2 * DZ)}  # the same extent in z (+- 2 um) at twice the spacing
    for name, photons in (("clean", 2000.0), ("noisy", 50.0)):
        out[name] = (rng.poisson(blurred * photons + 2.0) / photons).astype(np.float32)
    return out


def test_split_and_scored_rows() -> None:
    volume = np.arange(9)[:, None, None] * np.ones((1, 2, 2))
    odd, even = split_volume(volume)
    assert odd[:, 0, 0].tolist() == [0, 2, 4, 6] and even[:, 0, 0].tolist() == [1, 3, 5, 7]
    assert scored_rows(9).tolist() == [0, 1, 2]  # the last even slice (7) has no odd slice after it
    assert scored_rows(24, held_out=6).tolist() == [9, 10]  # raw slices 19 and 21, inside the last 6
    with pytest.raises(ValueError, match="no even slice"):
        scored_rows(4, held_out=1)


def test_reblur_error_known_values_with_a_point_psf() -> None:
    deconvolved = np.array([0.0, 2.0, 4.0])[:, None, None] * np.ones((1, 3, 3))
    even = np.array([1.0, 1.0, 1.0])[:, None, None] * np.ones((1, 3, 3))
    delta, affine, rows = np.ones((1, 1, 1)), Affine(offset=0.0, scale=2.0), [0, 1]

    aligned = reblur_error(deconvolved, even, delta, rows, affine=affine, aligned=True)
    midway = reblur_error(deconvolved, even, delta, rows, affine=affine, aligned=False)

    assert aligned == pytest.approx((abs(0 - 1) + abs(2 - 1)) / 2 / 2)  # rows 0, 1 directly, scale 2
    assert midway == pytest.approx((abs(1 - 1) + abs(3 - 1)) / 2 / 2)  # (0 + 2) / 2 and (2 + 4) / 2


def test_rl_with_the_right_psf_beats_the_identity_and_a_wrong_psf(specimen: dict[str, np.ndarray]) -> None:
    right = specimen["psf_2dz"]
    too_narrow = _psf(11, 2 * DZ, wavelength=0.3, excitation=0.28)  # a sharper microscope's
    too_wide = _psf(11, 2 * DZ, na=0.7)
    candidates = [Candidate("identity", _identity), Candidate("rl right", RLDeconvolver(right, 20), iterations=20),
                  Candidate("rl narrow", RLDeconvolver(too_narrow, 20), iterations=20),
                  Candidate("rl wide", RLDeconvolver(too_wide, 20), iterations=20)]
    volume = specimen["clean"]

    check = self_check(volume, candidates, right, Affine.from_volumes([volume]), padding="zeros")

    scores = check.scores
    assert check.choice == "rl right", scores
    assert scores["rl right"] < 0.8 * min(scores["identity"], scores["rl narrow"], scores["rl wide"]), scores


def test_over_iterated_rl_ranks_below_a_moderate_count_on_noisy_data(specimen: dict[str, np.ndarray]) -> None:
    psf, volume = specimen["psf_2dz"], specimen["noisy"]

    check = self_check(volume, rl_candidates(psf, (5, 300)), psf, Affine.from_volumes([volume]), padding="zeros")

    assert check.choice == "rl 5" and check.scores["rl 300"] > 1.03 * check.scores["rl 5"], check.scores


def test_a_model_trained_on_the_scored_slices_needs_the_margin() -> None:
    rl = {"rl 5": 1.0, "rl 20": 0.9}
    slightly, clearly = 0.9 * (1 - MODEL_MARGIN / 2), 0.9 * (1 - 2 * MODEL_MARGIN)

    assert choose({"model": slightly, **rl}, "model", trained_on=True) == "rl 20"
    assert choose({"model": clearly, **rl}, "model", trained_on=True) == "model"
    assert choose({"model": slightly, **rl}, "model", trained_on=False) == "model"  # held out: the lower wins
    assert choose({"model": 0.95, **rl}, "model", trained_on=False) == "rl 20"


def test_the_table_names_every_score_the_choice_and_the_caveat(specimen: dict[str, np.ndarray]) -> None:
    psf, volume = specimen["psf_2dz"], specimen["clean"]
    affine = Affine.from_volumes([volume])
    candidates = [Candidate("model", _identity, aligned=True), *rl_candidates(psf, (5,))]

    trained = self_check(volume, candidates, psf, affine, model="model", trained_on=True)
    held = self_check(volume, candidates, psf, affine, model="model", held_out=8)

    assert trained.trained_on and "trained on these slices" in trained.table()
    assert trained.table().endswith(f"-> {trained.choice}") and "rl 5 " in trained.table()
    assert held.held_out and not held.trained_on and "held-out slices 25-29" in held.table()
    with pytest.raises(ValueError, match="unique"):
        self_check(volume, [candidates[1], candidates[1]], psf, affine)
