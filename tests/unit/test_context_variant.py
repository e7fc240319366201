"""ZAugNet-C (context variant): cubic + learned correction, K-slice inputs, and the --method auto self-check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import tiny_config
from zaugnet.training.data import TripletSampler, split_volumes
from zaugnet.training.nets import (
    ContextStudent,
    Generator,
    build_student,
    cubic_weights,
)

from zaugnet.evaluate.protocol import evaluate_volume
from zaugnet.evaluate.selfcheck import (
    MIN_SLICES,
    UNSURE_SHRINK,
    WEIGHTS,
    AutoMethod,
    judge_self_checks,
    self_check,
)
from zaugnet.gaps import context_indices
from zaugnet.predict.baselines import interpolate_axial, keys_weights
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.predict.plan import plan_factor, plan_relative
from zaugnet.predict.volume import interpolate_volume


def _context(k: int = 4) -> ContextStudent:
    cfg = tiny_config("zaugnet-c").net.model_copy(update={"context_slices": k})
    return build_student(cfg).eval()


def test_torch_cubic_weights_equal_the_baseline_s_keys_weights() -> None:
    z = np.linspace(0, 1, 11)
    ours = torch.stack(cubic_weights(torch.tensor(z))).T.numpy()
    np.testing.assert_allclose(ours, keys_weights(np.minimum(z, 1 - 1e-12)), atol=1e-9)


@pytest.mark.parametrize("k", [4, 6])
def test_untrained_context_model_is_exactly_cubic_interpolation(k: int, rng: np.random.Generator) -> None:
    """The head starts at zero: an untrained ZAugNet-C predicts what 4-point cubic interpolation does."""
    student = _context(k)
    assert student.in_channels == k + 1
    volume = rng.random((7, 21, 18)).astype(np.float32)
    model = ModelInterpolator(student, "zaugnet-c", normalization="none", n_slices=k)
    positions = plan_relative(7, [0.2, 0.5, 0.9])
    np.testing.assert_allclose(interpolate_volume(volume, positions, model),
                               interpolate_axial(volume, positions, "cubic"), atol=2e-6)


def test_context_model_is_not_clamped_to_the_inputs_range() -> None:
    """Cubic overshoot is kept: a ramp that bends up gives values above its inputs' maximum."""
    student = _context()
    x = torch.zeros(1, 5, 16, 16)
    x[:, :4] = torch.tensor([0.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1)
    x[:, 4] = 0.5
    with torch.no_grad():
        assert float(student(x).max()) > 0.0 and float(student(x).min()) >= 0.0
        x[:, :4] = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 4, 1, 1)
        assert float(student(x).max()) < 0.0  # 4-point cubic dips below the two zero inner slices


def test_context_generator_returns_the_flow_branch_prediction_too() -> None:
    gen = Generator(tiny_config("zaugnet-c").net)
    out = gen(torch.rand(2, 5, 32, 32), torch.rand(2, 1, 32, 32))
    assert set(out) == {"student", "flow", "teacher", "distill"}
    assert all(v.shape == (2, 1, 32, 32) for k, v in out.items() if k != "distill")
    sum(v.sum() for v in out.values()).backward()
    assert gen.student.head[-1].weight.grad is not None
    assert gen.student.flow.blocks[0].conv0[0][0].weight.grad is not None


def test_context_indices_repeat_the_edge_slices() -> None:
    np.testing.assert_array_equal(context_indices(np.array([0, 3, 8]), 1, 4, 0, 10),
                                  [[0, 0, 1, 2], [2, 3, 4, 5], [7, 8, 9, 9]])
    np.testing.assert_array_equal(context_indices(4, 3, 4, 2, 12), [2, 4, 7, 10])  # spacing 3, clipped at 2


def test_context_samples_take_slices_at_the_gap_s_spacing_inside_their_block(rng: np.random.Generator) -> None:
    vol = rng.integers(100, 4000, size=(20, 40, 50)).astype(np.uint16)
    split = split_volumes([20], 0.3)  # training block 0..13, validation 14..19
    cfg = tiny_config("zaugnet-c").data.model_copy(update={"augment": False})
    sampler = TripletSampler([vol], "zaugnet-c", cfg, 4, split.train + split.val)
    (_, a, b), = [(v, a, b) for v, a, b in split.train]
    x, gt = sampler.sample((0, 8, 10, 11), rng=None)  # gap 3: slices 5, 8, 11 and (14 -> clipped to 13)
    assert x.shape == (5, 32, 32) and b == 14
    y0, x0 = 4, 9
    raw = vol[[5, 8, 11, 13, 10], y0:y0 + 32, x0:x0 + 32].astype(np.float32)
    lo, hi = raw[:4].min(), raw[:4].max()
    np.testing.assert_allclose(x[:4], (raw[:4] - lo) / (hi - lo), atol=1e-6)
    np.testing.assert_allclose(gt[0], (raw[4] - lo) / (hi - lo), atol=1e-6)
    assert np.all(x[4] == pytest.approx(2 / 3))


def test_context_augmentation_reverses_all_slices_and_mirrors_z() -> None:
    vol = np.stack([np.full((32, 32), v, np.float32) for v in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)])
    cfg = tiny_config("zaugnet-c").data.model_copy(update={"p_jitter": 0.0})
    sampler = TripletSampler([vol], "zaugnet-c", cfg, 4)
    seen = set()
    for seed in range(16):
        x, gt = sampler.sample((0, 2, 3, 4), np.random.default_rng(seed))  # inputs 0, 2, 4, 6 (x2 spacing)
        levels = tuple(np.round(x[:4, 0, 0] * 6 + 1).astype(int))  # joint range of the inputs: 1..7
        seen.add((levels, round(float(x[4, 0, 0]), 6), int(round(gt[0, 0, 0] * 6 + 1))))
    assert seen == {((1, 3, 5, 7), 0.5, 4), ((7, 5, 3, 1), 0.5, 4)}


# ------------------------------------------------------------------ predict and self-check
class _Flip(torch.nn.Module):
    """A 'network' that returns 1 - slice_0: right on a stack alternating between an image and its negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x[:, 0:1]


class _Zero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, 0:1])


def _alternating(n: int = 13) -> np.ndarray:
    """Slices alternate between a ramp r and its negative: with every other slice held out the kept ones are
    all r, so cubic predicts r where the truth is the negative."""
    ramp = np.tile(np.linspace(0.0, 1.0, 24, dtype=np.float32), (20, 1)) * 1000 + 100
    neg = 1100 - ramp
    return np.stack([ramp if i % 2 == 0 else neg for i in range(n)])


def test_predict_windows_feeds_k_slices_with_edges_repeated() -> None:
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x[:, :4, 0, 0].clone())
            return x[:, 1:2]

    volume = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 16, 16), np.float32)
    model = ModelInterpolator(Spy(), "zaugnet-c", normalization="none", n_slices=4, batch_size=8)
    interpolate_volume(volume, plan_factor(5, 2), model)
    np.testing.assert_array_equal(torch.cat(seen).numpy(), [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]])
    with pytest.raises(ValueError, match="4 slices per gap"):
        model.predict(volume[:1], volume[1:2], [0.5])


def _classical_psnr(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean 8-bit PSNR (``truth``'s min/max mapped to 0..255) of ``predicted`` for each slice of ``truth``[1::2]."""
    from skimage.metrics import peak_signal_noise_ratio

    lo, hi = float(truth.min()), float(truth.max())
    return float(np.mean([peak_signal_noise_ratio((t - lo) * 255 / (hi - lo), (predicted - lo) * 255 / (hi - lo),
                                                  data_range=255.0) for t in np.asarray(truth[1::2], np.float64)]))


@pytest.mark.parametrize("n", [13, 7])
def test_self_check_leans_on_the_model_where_it_predicts_held_out_slices_far_better(n: int) -> None:
    """Every kept slice is the ramp, so linear, cubic and spline all predict the ramp where the truth is its negative;
    the flip of the gap's min-max normalised inputs predicts 1200 - ramp, 100 off the truth everywhere (the volume's
    range is 1100): 20 log10(11) dB. With 13 slices the 4x check runs on volume[::2], all ramps, which every classical
    method reproduces (at least 150 dB) and the flip gets wrong: the mix's gain shrinks from far below 0 at 4x to
    far above it at 2x, and extrapolated grows beyond any limit, so the best mix at 2x is used: the flip alone, which
    beats every mix with the ramp on the held-out slices (each tried here). With 7, only the 2x check counts, and the
    flip's weight is halved."""
    volume = _alternating(n)
    check = self_check(volume, ModelInterpolator(_Flip(), "zaugnet", name="flip"))
    ramp = volume[0]
    classical = _classical_psnr(volume, ramp)
    assert check.n_held_out == (n - 1) // 2 and check.psnr2["model"] == pytest.approx(20 * np.log10(11), abs=1e-4)
    for method in ("linear", "cubic", "spline"):
        assert check.psnr2[method] == pytest.approx(classical, abs=1e-4) and classical < 6
    assert check.margin == pytest.approx(20 * np.log10(11) - classical, abs=1e-4)
    by_hand = [_classical_psnr(volume, w * (1200 - ramp) + (1 - w) * ramp) for w in WEIGHTS]
    assert int(np.argmax(by_hand)) == len(WEIGHTS) - 1 and all(np.diff(by_hand) > 0)
    if n >= 9:
        flip_at_4x = _classical_psnr(np.stack([ramp] * 7), 1200 - ramp)  # volume[::2]: 7 ramps
        assert check.psnr4["model"] == pytest.approx(flip_at_4x, abs=1e-4) and flip_at_4x < 5
        assert min(check.psnr4[m] for m in ("linear", "cubic", "spline")) > 150
        assert "at twice / four times the spacing (6 at twice;" in check.message()
        assert (check.weight, check.choice) == (1.0, "model") and check.message().endswith("; using flip")
    else:
        assert check.psnr4 == {} and "at twice the spacing (3 at twice;" in check.message()
        assert (check.weight, check.choice) == (UNSURE_SHRINK, "mix")
        assert check.message().endswith(f"; using {UNSURE_SHRINK:.2f} flip + {1 - UNSURE_SHRINK:.2f} "
                                        f"{check.best_classical}")  # the three tie: whichever rounds highest


def test_auto_method_reports_and_uses_its_choice_per_volume() -> None:
    """One AutoMethod, three volumes: the alternating one (the flip is right, see above), one whose every column is
    a cubic in z (the not-a-knot spline reproduces it; the flip is far off) and the first 7 slices of the alternating
    one (no trend: half the flip, half a classical method): the model, spline interpolation, a mix."""
    messages: list[str] = []
    flip = ModelInterpolator(_Flip(), "zaugnet", name="flip")
    auto = AutoMethod(flip, report=messages.append)
    alternating = _alternating()
    z = np.arange(13, dtype=np.float64)[:, None, None] - 6
    cubic_in_z = alternating[0] + 30.3 * z - 2.7 * z**2 + 0.91 * z**3 + 500
    positions = plan_factor(13, 2)
    np.testing.assert_array_equal(interpolate_volume(alternating, positions, auto),
                                  interpolate_volume(alternating, positions, flip))
    np.testing.assert_array_equal(interpolate_volume(cubic_in_z, positions, auto),
                                  interpolate_axial(cubic_in_z, positions, "spline"))
    short, positions = alternating[:7], plan_factor(7, 2)
    mixed = interpolate_volume(short, positions, auto)
    classical = auto.checks[2].best_classical  # the three tie on the check (see above): whichever rounds highest
    expected = (interpolate_volume(short, positions, flip) + interpolate_axial(short, positions, classical)) / 2
    np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(mixed[::2], short)  # the input slices, exactly
    assert [c.choice for c in auto.checks] == ["model", "spline", "mix"]
    assert [c.volume for c in auto.checks] == ["volume 1", "volume 2", "volume 3"]
    assert messages == [c.message() for c in auto.checks]
    assert messages[0].endswith("using flip") and messages[1].endswith("using spline interpolation")
    assert messages[2].endswith(f"using 0.50 flip + 0.50 {classical}")
    assert self_check(alternating[:MIN_SLICES - 1], flip).choice == "linear"


class _Copy(torch.nn.Module):
    """A 'network' that returns slice_0, the slice before the gap: right where slices come in runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0:1]


def _staircase(n: int = 17, seed: int = 0) -> np.ndarray:
    """Each of five smooth images four times in a row, plus a little noise (so that no prediction is exact):
    at 2x and 4x the slice before a gap is the best prediction of those inside it; every other slice of
    ``[::2]`` repeats the one before it, while ``[::4]`` changes linearly from image to image."""
    yy, xx = np.mgrid[:20, :24]
    base = 2000 + 1500 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    step = 3000 + 40.0 * xx
    clean = np.stack([base + (i // 4) * step for i in range(n)])
    return clean + np.random.default_rng(seed).normal(0, 5, clean.shape)


def _noisy(n: int = 17, seed: int = 0) -> np.ndarray:
    """One image in every slice plus independent noise: whatever the spacing, the mean of the two slices around a
    gap (linear) is the least noisy guess (see tests/unit/test_selfcheck.py)."""
    yy, xx = np.mgrid[:64, :64]
    return 1000 + 200 * np.sin(xx / 6) * np.cos(yy / 9) + np.random.default_rng(seed).normal(0, 20, (n, 64, 64))


def _keys_by_hand(t: float) -> np.ndarray:
    """Keys cubic convolution (a = -0.5) weights of slices i - 1, i, i + 1, i + 2 at offset t, written out."""
    return np.array([(-t**3 + 2 * t**2 - t) / 2, (3 * t**3 - 5 * t**2 + 2) / 2, (-3 * t**3 + 4 * t**2 + t) / 2,
                     (t**3 - t**2) / 2])


CLASSICAL = ("linear", "cubic", "spline")


def _psnr_by_hand(gt: np.ndarray, factor: int, model: str) -> dict[str, float]:
    """Mean 8-bit PSNR of ``model`` ("copy": the slice before the gap; "zero": a plane at the gap's lowest
    input value, what a network returning 0 gives at every pass) and of linear, Keys cubic (edge slices repeated)
    and not-a-knot spline interpolation on the slices that keeping every ``factor``-th slice of ``gt`` removes;
    computed here with numpy, scipy and skimage."""
    from scipy.interpolate import CubicSpline
    from skimage.metrics import peak_signal_noise_ratio

    gt = np.asarray(gt, np.float64)
    truth = gt[:(len(gt) - 1) // factor * factor + 1]
    kept = truth[::factor]
    spline = CubicSpline(np.arange(len(kept)), kept, axis=0, bc_type="not-a-knot")
    lo, hi = gt.min(), gt.max()

    def to8(v: np.ndarray) -> np.ndarray:
        return np.clip((v - lo) * 255.0 / (hi - lo), 0.0, 255.0)

    scores: dict[str, list[float]] = {model: [], **{m: [] for m in CLASSICAL}}
    for z in range(len(truth)):
        g, r = divmod(z, factor)
        if r == 0:
            continue
        t = r / factor
        idx = np.clip([g - 1, g, g + 1, g + 2], 0, len(kept) - 1)
        preds = {"copy": lambda: kept[g], "zero": lambda: np.full(kept[g].shape, min(kept[g].min(), kept[g + 1].min())),
                 "linear": lambda: (1 - t) * kept[g] + t * kept[g + 1],
                 "cubic": lambda: np.tensordot(_keys_by_hand(t), kept[idx], axes=1), "spline": lambda: spline(g + t)}
        for name in scores:
            scores[name].append(peak_signal_noise_ratio(to8(truth[z]), to8(preds[name]()), data_range=255.0))
    return {name: float(np.mean(values)) for name, values in scores.items()}


@pytest.mark.parametrize(("model", "volume", "expected"), [
    # The check at 2x runs on [::2] (pairs of each image): the copy is right at its 2x (gaps of 2 in [::2]) and at
    # its 4x ([::4], changing linearly image to image, where linear wins), so its margin grows as the spacing
    # shrinks: the model, rightly (the truth comes in runs of four). At 4x it runs on [::4] (5 slices: no trend),
    # where linear is exact up to the noise and the copy is not: linear, wrongly.
    ("copy", _staircase(), [(2, "model", True, "model"), (4, "linear", False, "model")]),
    # noise around one image: linear is best on every check and in truth
    ("zero", _noisy(), [(2, "linear", True, "linear"), (4, "linear", True, "linear")]),
])
def test_judge_self_checks_compares_the_choice_with_the_true_scores(model: str, volume: np.ndarray,
                                                                    expected: list[tuple[int, str, bool, str]]) -> None:
    net = ModelInterpolator({"copy": _Copy, "zero": _Zero}[model](), "zaugnet", name=model)
    auto = AutoMethod(net, report=lambda text: None)
    ev = evaluate_volume(volume, {model: net, **{m: m for m in CLASSICAL}, auto.name: auto}, 4, positions_check=())
    judged = judge_self_checks(ev.rows, auto)
    assert [(j["factor"], j["choice"], j["right"], j["best"]) for j in judged] == expected
    psnr8 = {(r["method"], r["factor"]): r["psnr_8bit"] for r in ev.rows}
    for j, checked in zip(judged, (volume[::2], volume[::4])):
        f = j["factor"]
        assert j["n_held_out"] == (len(checked) - 1) // 2
        on_check, true = _psnr_by_hand(checked, 2, model), _psnr_by_hand(volume, f, model)
        for method in (model, *CLASSICAL):
            assert psnr8[(method, f)] == pytest.approx(true[method], abs=1e-3), (method, f)
        assert j["check_margin_db"] == pytest.approx(on_check[model] - max(on_check[m] for m in CLASSICAL), abs=1e-3)
        assert j["true_margin_db"] == pytest.approx(true[model] - max(true[m] for m in CLASSICAL), abs=1e-3)
        used = model if j["choice"] == "model" else j["choice"]  # known above; the auto row is that method's
        assert j["cost_db"] == pytest.approx(true[model if j["best"] == "model" else j["best"]] - true[used], abs=1e-3)
        assert psnr8[(auto.name, f)] == psnr8[(used, f)]
        assert all(psnr8[(auto.name, f)] != psnr8[(other, f)] for other in (model, *CLASSICAL) if other != used)


def test_a_model_exact_on_every_held_out_slice_wins_the_self_check() -> None:
    """Slices alternate between a ramp 0..16 and 16 - ramp: the flip of the normalised gap is exact on every held-out
    slice (PSNR inf) where the classical methods predict the ramp; at 4x (volume[::2], all ramps) they are exact and
    the flip is not. An exact model wins."""
    ramp = np.tile(np.arange(17, dtype=np.float32), (16, 1))  # 0..16: normalised, flipped and back exactly
    volume = np.stack([ramp if i % 2 == 0 else 16 - ramp for i in range(9)])
    check = self_check(volume, ModelInterpolator(_Flip(), "zaugnet", name="flip"))
    classical = _classical_psnr(volume, ramp)
    assert check.psnr2["model"] == np.inf and classical < 10
    assert all(check.psnr2[m] == pytest.approx(classical, abs=1e-6) for m in CLASSICAL)
    assert all(check.psnr4[m] == np.inf for m in CLASSICAL)  # small integers, unchanged along z: exactly
    assert check.psnr4["model"] == pytest.approx(_classical_psnr(np.stack([ramp] * 5), 16 - ramp), abs=1e-6)
    assert check.choice == "model" and check.weight == 1.0 and check.message().endswith("; using flip")
