"""ZAugNet-C (context variant): cubic + learned correction, K-slice inputs, and the --method auto self-check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import tiny_config

from zaugnet.training.baselines import interpolate_axial, keys_weights
from zaugnet.training.data import TripletSampler, context_indices, split_volumes
from zaugnet.training.nets import ContextStudent, Generator, build_student, cubic_weights
from zaugnet.training.predict import ModelInterpolator, interpolate_volume, plan_factor, plan_relative
from zaugnet.training.selfcheck import MIN_SLICES, AutoMethod, judge_self_checks, self_check


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


def test_self_check_picks_the_model_only_where_it_predicts_held_out_slices_better() -> None:
    volume = _alternating()
    good = ModelInterpolator(_Flip(), "zaugnet", name="flip")
    check = self_check(volume, good)
    assert check.choice == "model" and check.n_held_out == 6 and check.margin > 10
    assert "using flip" in check.message()
    bad = ModelInterpolator(_Zero(), "zaugnet", name="zero")
    smooth = _alternating()[0] * (1.0 + 0.1 * np.arange(13, dtype=np.float32))[:, None, None]  # cubic is exact
    check = self_check(smooth, bad)
    assert check.choice == "cubic" and check.margin < 0 and "using cubic interpolation" in check.message()
    assert self_check(volume[:MIN_SLICES - 1], good).choice == "cubic"


def test_auto_method_reports_and_uses_its_choice_per_volume() -> None:
    messages: list[str] = []
    auto = AutoMethod(ModelInterpolator(_Zero(), "zaugnet", name="zero"), report=messages.append)
    volume = _alternating()[0] * (1.0 + 0.1 * np.arange(13, dtype=np.float32))[:, None, None]
    out = interpolate_volume(volume, plan_factor(len(volume), 2), auto)
    np.testing.assert_array_equal(out, interpolate_axial(volume, plan_factor(len(volume), 2), "cubic"))
    assert len(messages) == 1 and "zero" in messages[0] and auto.checks[0].choice == "cubic"


def test_judge_self_checks_compares_the_choice_with_the_true_scores() -> None:
    from zaugnet.training.evaluate import evaluate_volume

    volume = np.concatenate([_alternating(13), _alternating(12)])  # 25 slices: x2 and x4 both scorable
    flip = ModelInterpolator(_Flip(), "zaugnet", name="flip")
    auto = AutoMethod(flip, report=lambda text: None)
    ev = evaluate_volume(volume, {"flip": flip, "cubic": "cubic", auto.name: auto}, 4, positions_check=())
    judged = judge_self_checks(ev.rows, auto)
    assert [j["factor"] for j in judged] == [2, 4]
    for j in judged:
        truly_model = j["true_margin_db"] > 0
        assert j["right"] == ((j["choice"] == "model") == truly_model)
