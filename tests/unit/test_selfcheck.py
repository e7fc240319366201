"""The rule of ``--method auto`` (:mod:`zaugnet.evaluate.selfcheck`) on stacks and scores whose right answer is
known in advance: by construction, by hand, or computed here directly with numpy, scipy and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline
from skimage.metrics import peak_signal_noise_ratio

from zaugnet.evaluate.selfcheck import (
    FALLBACK,
    MIN_SLICES,
    MIN_TREND_SLICES,
    UNSURE_SHRINK,
    WEIGHTS,
    AutoMethod,
    SelfCheck,
    judge_self_checks,
    mix_weight,
    self_check,
)
from zaugnet.predict.baselines import interpolate_axial
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.predict.plan import plan_factor
from zaugnet.predict.volume import interpolate_volume

INF, NAN = math.inf, math.nan


class _Zero(torch.nn.Module):
    """A 'network' that returns 0 in the gap's normalised units: the gap's lowest input value, everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, 0:1])


class _Copy(torch.nn.Module):
    """A 'network' that returns slice_0, the slice before the gap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0:1]


def _net(module: torch.nn.Module, name: str) -> ModelInterpolator:
    return ModelInterpolator(module, "zaugnet", name=name)


def _cubic_in_z(n: int = 13) -> np.ndarray:
    """Every (y, x) column a cubic polynomial in z, its coefficients varying over the plane (none of them dyadic,
    so that no method's float32 result is exact by accident)."""
    yy, xx = np.mgrid[:20, :24].astype(np.float64)
    z = np.arange(n, dtype=np.float64)[:, None, None] - (n - 1) / 2
    return (3000 + 500 * np.sin(xx / 4) * np.cos(yy / 5) + (40.3 + 1.1 * yy) * z - (3.1 + 0.1 * xx) * z**2
            + (0.77 + 0.03 * yy) * z**3)


def _noisy_constant(n: int = 13, seed: int = 0) -> np.ndarray:
    """The same image in every slice plus independent Gaussian noise (sigma 20)."""
    yy, xx = np.mgrid[:64, :64]
    image = 1000 + 200 * np.sin(xx / 6) * np.cos(yy / 9)
    return image + np.random.default_rng(seed).normal(0, 20, (n, 64, 64))


def _midpoint_psnr(gt: np.ndarray) -> dict[str, float]:
    """Mean 8-bit PSNR (``gt``'s min/max mapped to 0..255, clipped) of predicting each odd slice of ``gt`` (an odd
    number of slices) from the even ones: by the mean of its two neighbours (linear), by the Keys stencil
    (-1, 9, 9, -1) / 16 with the edge slice repeated (cubic), by a not-a-knot cubic spline through the even slices
    (spline), by the slice before it (copy) and by a plane at the gap's lowest value (zero); written out here."""
    gt = np.asarray(gt, np.float64)
    assert len(gt) % 2 == 1
    kept = gt[::2]
    n = len(kept)
    lo, hi = gt.min(), gt.max()
    spline = CubicSpline(np.arange(n), kept, axis=0, bc_type="not-a-knot")
    scores: dict[str, list[float]] = {m: [] for m in ("linear", "cubic", "spline", "copy", "zero")}
    for g in range(n - 1):
        a, b, c, d = kept[max(g - 1, 0)], kept[g], kept[g + 1], kept[min(g + 2, n - 1)]
        preds = {"linear": (b + c) / 2, "cubic": (-a + 9 * b + 9 * c - d) / 16, "spline": spline(g + 0.5),
                 "copy": b, "zero": np.full(b.shape, min(b.min(), c.min()))}
        for m, p in preds.items():
            scores[m].append(peak_signal_noise_ratio(np.clip((gt[2 * g + 1] - lo) * 255 / (hi - lo), 0, 255),
                                                     np.clip((p - lo) * 255 / (hi - lo), 0, 255), data_range=255.0))
    return {m: float(np.mean(v)) for m, v in scores.items()}


# ------------------------------------------------------------------ constructed stacks
def test_a_stack_of_cubics_in_z_is_left_to_the_spline() -> None:
    """A not-a-knot spline through 4 or more samples of a cubic is that cubic: exact (up to float32 rounding) on
    every held-out slice, at 2x (7 kept slices) and at 4x (4 kept). Keys cubic is exact only at the inner gaps'
    midpoints (its stencil (-1, 9, 9, -1) / 16 is the cubic through 4 slices there), not in the first and last gaps,
    where it repeats the edge slice; linear nowhere. A model that predicts a flat plane is far worse: "spline"."""
    volume = _cubic_in_z()
    zero = _net(_Zero(), "zero")
    check = self_check(volume, zero)
    hand2, hand4 = _midpoint_psnr(volume), _midpoint_psnr(volume[::2])
    assert check.n_held_out == 6 and len(volume) >= MIN_TREND_SLICES
    assert check.psnr2["spline"] > 120 and check.psnr4["spline"] > 120
    for scores, hand in ((check.psnr2, hand2), (check.psnr4, hand4)):
        assert scores["linear"] == pytest.approx(hand["linear"], abs=1e-3) and hand["linear"] < 60
        assert scores["model"] == pytest.approx(hand["zero"], abs=1e-3) and hand["zero"] < 20
        assert scores["cubic"] < scores["spline"] - 20
    assert check.choice == "spline" and check.best_classical == "spline"
    assert check.margin < -100  # the model's 2x score (below 20 dB) minus the spline's (above 120)
    assert "zero " in check.message() and " dB over spline; " in check.message()
    assert check.message().endswith("; no mix with zero beats spline alone; using spline interpolation")
    messages: list[str] = []
    auto = AutoMethod(zero, report=messages.append)
    positions = plan_factor(len(volume), 2)
    out = interpolate_volume(volume, positions, auto)
    np.testing.assert_array_equal(out, interpolate_axial(volume, positions, "spline"))
    assert [c.choice for c in auto.checks] == ["spline"] and messages == [auto.checks[0].message()]


def test_noisy_copies_of_one_image_are_left_to_linear_interpolation() -> None:
    """Each slice is one image plus independent noise of variance s^2: a held-out slice predicted with weights w
    (summing to 1) over the kept ones is off by s^2 (1 + sum w^2) in expectation, least for the mean of its two
    neighbours (sum w^2 = 1/2); Keys, the spline and the slice before the gap (the model here) spread the weight
    less evenly. Every score is also computed by hand: linear is best, at 2x and 4x, and is chosen."""
    volume = _noisy_constant()
    n_kept = len(volume[::2])
    spline_weights = CubicSpline(np.arange(n_kept), np.eye(n_kept), bc_type="not-a-knot")(np.arange(n_kept - 1) + 0.5)
    expected_error = {"linear": [1 + 2 * 0.25] * (n_kept - 1), "copy": [2.0] * (n_kept - 1),
                      "cubic": [1 + (8**2 + 9**2 + 1) / 256] + [1 + (1 + 81 + 81 + 1) / 256] * (n_kept - 3)
                      + [1 + (8**2 + 9**2 + 1) / 256],
                      "spline": list(1 + (spline_weights**2).sum(axis=1))}
    assert all(min(expected_error[m]) > max(expected_error["linear"]) for m in ("copy", "cubic", "spline"))

    check = self_check(volume, _net(_Copy(), "copy"))
    hand2, hand4 = _midpoint_psnr(volume), _midpoint_psnr(volume[::2])
    for scores, hand in ((check.psnr2, hand2), (check.psnr4, hand4)):
        assert scores.keys() == {"model", "linear", "cubic", "spline"}
        for method in ("linear", "cubic", "spline"):
            assert scores[method] == pytest.approx(hand[method], abs=1e-3), method
        assert scores["model"] == pytest.approx(hand["copy"], abs=1e-3)
        assert hand["linear"] > max(hand["cubic"], hand["spline"], hand["copy"]) + 0.2
    assert check.choice == "linear" and check.best_classical == "linear"
    assert check.margin == pytest.approx(hand2["copy"] - hand2["linear"], abs=1e-3) and check.margin < -1
    assert check.message().endswith("; using linear interpolation") and "beats linear alone" in check.message()
    positions = plan_factor(len(volume), 2)
    out = interpolate_volume(volume, positions, AutoMethod(_net(_Copy(), "copy"), report=lambda text: None))
    np.testing.assert_array_equal(out, interpolate_axial(volume, positions, "linear"))


@pytest.mark.parametrize("n", [1, 2, MIN_SLICES - 1])
def test_too_few_slices_are_not_checked_and_get_linear_interpolation(n: int) -> None:
    volume = _noisy_constant(n)
    messages: list[str] = []
    auto = AutoMethod(_net(_Copy(), "copy"), report=messages.append)
    assert auto.resolve(volume) == "linear" == FALLBACK
    (check,) = auto.checks
    assert (check.choice, check.n_held_out, dict(check.psnr2), dict(check.psnr4)) == ("linear", 0, {}, {})
    assert math.isnan(check.margin) and check.weight == 0.0
    assert messages == [f"self-check volume 1: {n} slices, fewer than the 5 the check needs, nothing to check; "
                        "using linear interpolation"]


def test_a_constant_volume_is_not_checked_and_gets_linear_interpolation() -> None:
    check = self_check(np.full((9, 16, 16), 7.0, np.float32), _net(_Copy(), "copy"))
    assert (check.choice, check.n_held_out) == ("linear", 0)
    assert check.message() == ("self-check volume: the volume is constant (every voxel 7), nothing to check; using "
                               "linear interpolation")


def test_a_volume_whose_every_other_slice_is_blank_is_still_checked() -> None:
    """Even slices blank (0), odd ones not: at twice the spacing every method predicts a plane of zeros from the
    blank slices (the flat 'network' too: the gap's lowest value), so all four score the same and the model is not
    better; what the 4x check makes of the blank volume[::2] cannot change that."""
    volume = np.zeros((9, 16, 16), np.float32)
    volume[1::2] = np.random.default_rng(0).uniform(1, 2, (4, 16, 16))
    check = self_check(volume, _net(_Zero(), "zero"))
    hand = _midpoint_psnr(volume)
    assert check.n_held_out == 4
    for method in ("linear", "cubic", "spline", "model"):
        assert check.psnr2[method] == pytest.approx(hand["zero"], abs=1e-6)
    assert check.choice != "model"


# ------------------------------------------------------------------ the rule on hand-made scores
def _s(model: float, linear: float, cubic: float, spline: float) -> dict[str, float]:
    return {"model": model, "linear": linear, "cubic": cubic, "spline": spline}


def _mix(alone: float, peak: float, gain: float) -> tuple[float, ...]:
    """PSNR of each mix of WEIGHTS: ``alone`` for the classical method alone (weight 0), a parabola peaking ``gain``
    dB above it at weight ``peak``."""
    return tuple(alone + gain * (1 - ((w - peak) / peak) ** 2) for w in WEIGHTS)


@pytest.mark.parametrize(("mix2", "mix4", "expected"), [
    # the best mix (weight 0.6) gains 0.5 dB at 2x and at 4x: extrapolated 0.5 > 0.2
    pytest.param(_mix(30.0, 0.6, 0.5), _mix(26.0, 0.6, 0.5), 0.6, id="mix-steady"),
    # 0.5 dB at 2x, 1.25 at 4x: extrapolated to the real spacing 0.5 + (0.5 - 1.25) / 2 = 0.125 <= 0.2
    pytest.param(_mix(30.0, 0.6, 0.5), _mix(26.0, 0.6, 1.25), 0.0, id="gain-shrinking-fast"),
    # 0.5 dB at 2x, 0.875 at 4x: 0.5 + (0.5 - 0.875) / 2 = 0.3125 > 0.2 (a full linear extrapolation, 0.125, refuses)
    pytest.param(_mix(30.0, 0.6, 0.5), _mix(26.0, 0.6, 0.875), 0.6, id="gain-shrinking-by-half"),
    # the 4x gain is read at the 2x weight (0.6), where that parabola (peak 0.3) gives 0
    pytest.param(_mix(30.0, 0.6, 0.3), _mix(26.0, 0.3, 2.0), 0.6, id="4x-read-at-the-2x-weight"),
    pytest.param(_mix(30.0, 0.6, 0.15), _mix(26.0, 0.6, -1.0), 0.0, id="gain-0.15-growing"),
    pytest.param(_mix(30.0, 1.0, 0.5), _mix(26.0, 1.0, 0.5), 1.0, id="the-model-alone"),
    pytest.param(tuple(30.0 - w for w in WEIGHTS), _mix(26.0, 1.0, 3.0), 0.0, id="the-classical-method-alone"),
    pytest.param((30.0,) * len(WEIGHTS), (26.0,) * len(WEIGHTS), 0.0, id="tie"),
    # without the trend (5 to 8 slices): 0.1 dB needed at twice the spacing, and the weight halved
    pytest.param(_mix(30.0, 0.6, 0.4), (), UNSURE_SHRINK * 0.6, id="no-trend-gain-0.4"),
    pytest.param(_mix(30.0, 0.6, 0.08), (), 0.0, id="no-trend-gain-0.08"),
    # no evidence from 4x (the model's 4x score NaN): as without the trend
    pytest.param(_mix(30.0, 0.6, 0.3), (26.0,) + (NAN,) * (len(WEIGHTS) - 1), UNSURE_SHRINK * 0.6, id="nan-at-4x"),
    # an exact model (PSNR inf) wins, whatever the trend ...
    pytest.param((30.0,) * (len(WEIGHTS) - 1) + (INF,), (), 1.0, id="exact-no-trend"),
    pytest.param((30.0,) * (len(WEIGHTS) - 1) + (INF,), (26.0,) * len(WEIGHTS), 1.0, id="exact-at-2x-only"),
    # ... unless a classical method is exact too: classical
    pytest.param((INF,) * len(WEIGHTS), (INF,) * len(WEIGHTS), 0.0, id="exact-tie"),
    pytest.param((30.0,) + (NAN,) * (len(WEIGHTS) - 1), (), 0.0, id="no-model-score"),
])
def test_mix_weight_applies_the_rule_to_the_check_s_scores(mix2: tuple, mix4: tuple, expected: float) -> None:
    assert mix_weight(mix2, mix4) == pytest.approx(expected, abs=1e-12)


def test_self_check_properties_follow_the_scores() -> None:
    check = SelfCheck("v", "net", 4, _s(30.5, 29.0, 29.5, 30.0), _s(0.9, 0.8, 0.8, 0.8), _s(27.25, 26.0, 25.5, 25.0),
                      _mix(30.0, 0.6, 0.5), _mix(25.5, 0.6, 0.875))
    assert (check.best_classical, check.margin, check.weight, check.choice) == ("spline", 0.5, 0.6, "mix")
    assert check.used == "0.60 net + 0.40 spline"
    assert check.message() == (
        "self-check v: held-out slices predicted at twice / four times the spacing (4 at twice; PSNR dB, 8-bit "
        "scale): net 30.50 / 27.25, linear 29.00 / 26.00, cubic 29.50 / 25.50, spline 30.00 / 25.00; net +0.50 dB "
        "over spline; best mix 0.60 net (+0.50 dB at twice the spacing, +0.31 extrapolated to the real spacing); "
        "using 0.60 net + 0.40 spline")
    refused = SelfCheck("v", "net", 4, check.psnr2, check.ssim2, check.psnr4, _mix(30.0, 0.6, 0.5),
                        _mix(25.5, 0.6, 1.25))
    assert (refused.weight, refused.choice, refused.used) == (0.0, "spline", "spline interpolation")
    alone = SelfCheck("v", "net", 2, _s(30.625, 30.0, 29.0, 28.0), _s(0.9, 0.8, 0.8, 0.8), {}, _mix(30.0, 1.0, 0.625))
    assert (alone.best_classical, alone.margin, alone.weight, alone.choice) == ("linear", 0.625, 0.5, "mix")
    assert alone.message().endswith("at twice the spacing (2 at twice; PSNR dB, 8-bit scale): net 30.62, linear "
                                    "30.00, cubic 29.00, spline 28.00; net +0.62 dB over linear; best mix 1.00 net "
                                    "(+0.62 dB at twice the spacing); using 0.50 net + 0.50 linear")


# ------------------------------------------------------------------ judging the choice against the truth
def _rows(stack: str, true: dict[int, dict[str, float]]) -> list[dict]:
    """evaluate_volume-like rows: ``true[factor][method]`` is the 'all' row's 8-bit PSNR; each method also gets a
    row for position 0.5 (which the judge must ignore) scoring 99."""
    rows = []
    for f, scores in true.items():
        for method, value in scores.items():
            rows.append({"stack": stack, "method": method, "factor": f, "position": "all", "psnr_8bit": value})
            rows.append({"stack": stack, "method": method, "factor": f, "position": 0.5, "psnr_8bit": 99.0})
    return rows


def _check(choice: str, psnr2: dict[str, float], n_held_out: int = 4) -> SelfCheck:
    """A check whose rule chose ``choice``: the model (mixes scoring ever better towards it, at 2x and 4x) or a
    classical method (ever worse), raised to the best of ``psnr2`` if it is not."""
    mix = _mix(30.0, 1.0, 1.0) if choice == "model" else tuple(30.0 - w for w in WEIGHTS)
    if choice != "model" and psnr2[choice] < max(psnr2.values()):
        psnr2 = {**psnr2, choice: max(psnr2.values()) + 0.5}
    check = SelfCheck("volume 1", "net", n_held_out, psnr2, dict.fromkeys(psnr2, 0.5), dict(psnr2), mix, mix)
    assert check.choice == choice
    return check


def _true(net: float, linear: float, cubic: float, spline: float) -> dict[str, float]:
    return {"net": net, "linear": linear, "cubic": cubic, "spline": spline}


def test_judge_compares_each_choice_with_the_truly_best_method() -> None:
    auto = AutoMethod(_net(_Zero(), "net"), report=lambda text: None)
    stale = _check("linear", _s(1.0, 2.0, 3.0, 4.0))  # an earlier volume's check: not paired with these rows
    auto.checks += [stale, _check("model", _s(31.0, 30.0, 30.5, 29.0), 6),
                    _check("cubic", _s(20.0, 22.0, 23.0, 21.5), 2)]
    rows = _rows("cells.tif", {
        2: _true(30.0, 29.0, 30.0625, 29.5),  # best cubic, 0.0625 dB above the chosen model: within 0.1 dB
        4: _true(25.0, 24.0, 24.875, 25.0),   # model and spline tie: spline (classical) is best; cubic 0.125 below
    })
    judged = judge_self_checks(rows, auto)
    keys = ("stack", "factor", "model", "choice", "best", "right", "n_held_out")
    assert [tuple(j[k] for k in keys) for j in judged] == [("cells.tif", 2, "net", "model", "cubic", True, 6),
                                                           ("cells.tif", 4, "net", "cubic", "spline", False, 2)]
    assert [j["cost_db"] for j in judged] == [0.0625, 0.125]
    assert [j["check_margin_db"] for j in judged] == [0.5, -3.0]  # model minus the best classical on the check
    assert [j["true_margin_db"] for j in judged] == [-0.0625, 0.0]  # ... and in truth


@pytest.mark.parametrize(("true", "choice", "best", "right", "cost"), [
    pytest.param(_true(30.0, 29.0, 28.0, 30.0), "model", "spline", True, 0.0, id="tie-model-chosen"),
    pytest.param(_true(30.0, 29.0, 28.0, 30.0), "spline", "spline", True, 0.0, id="tie-spline-chosen"),
    pytest.param(_true(30.0, 29.9375, 28.0, 27.0), "linear", "model", True, 0.0625, id="within-0.1"),
    pytest.param(_true(30.0, 29.875, 28.0, 27.0), "linear", "model", False, 0.125, id="beyond-0.1"),
    pytest.param(_true(24.0, 29.0, 28.0, 27.0), "model", "linear", False, 5.0, id="model-wrongly-chosen"),
])
def test_judge_right_best_and_cost(true: dict[str, float], choice: str, best: str, right: bool, cost: float) -> None:
    auto = AutoMethod(_net(_Zero(), "net"), report=lambda text: None)
    auto.checks.append(_check(choice, _s(31.0, 30.0, 30.5, 29.0)))
    (judged,) = judge_self_checks(_rows("s", {2: true}), auto)
    assert (judged["choice"], judged["best"], judged["right"], judged["cost_db"]) == (choice, best, right, cost)


def test_judge_skips_a_factor_without_every_method_s_true_score() -> None:
    auto = AutoMethod(_net(_Zero(), "net"), report=lambda text: None)
    auto.checks += [_check("model", _s(31.0, 30.0, 30.5, 29.0)), _check("cubic", _s(20.0, 22.0, 23.0, 21.5))]
    rows = _rows("s", {2: _true(30.0, 29.0, 28.0, 27.0), 4: _true(NAN, 24.0, 25.0, 23.0)})
    assert [(j["factor"], j["choice"], j["right"]) for j in judge_self_checks(rows, auto)] == [(2, "model", True)]
    assert judge_self_checks(rows, AutoMethod(_net(_Zero(), "net"), report=lambda text: None)) == []  # no checks


def test_judge_an_exact_choice_is_right_at_no_cost() -> None:
    auto = AutoMethod(_net(_Zero(), "net"), report=lambda text: None)
    auto.checks.append(_check("model", _s(INF, 30.0, 30.5, 29.0)))
    (judged,) = judge_self_checks(_rows("s", {2: _true(INF, 29.0, 28.0, 27.0)}), auto)
    assert (judged["best"], judged["right"], judged["cost_db"]) == ("model", True, 0.0)
