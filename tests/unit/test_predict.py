"""Tests of zaugnet.predict (plan, interpolator, volume, baselines): output positions, dtype casting, axial
baselines, and the model interpolator (midpoint passes, DPM positions, joint normalisation, tiling with a halo,
test-time augmentation).

Expectations are computed by hand (or from simple closed forms), not by calling the code under test.
The "networks" in the interpolator tests are real torch modules with known behaviour in normalised
units (a 1x1 convolution averaging the two slices; a module blending them by the DPM channel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from zaugnet.export.load import from_checkpoint

from zaugnet.errors import InputError
from zaugnet.io.tiff import Stack, VoxelSize
from zaugnet.predict.interpolator import ModelInterpolator, _tiles
from zaugnet.predict.plan import (
    ZPlan,
    make_plan,
    plan_factor,
    plan_relative,
    plan_spacing,
)
from zaugnet.predict.volume import Blend, augment_stack, interpolate_volume, to_dtype

# --- real (hand-weighted) networks ---------------------------------------------------------------


class MidpointConv(nn.Module):
    """ZAugNet stand-in: a 1x1 convolution with weights (0.5, 0.5), i.e. the mean of the two slices.

    Counts the pairs it sees and records each sample's joint min / max of the two input channels.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.5, 0.5]).view(1, 2, 1, 1))
        self.pairs = 0
        self.ranges: list[tuple[float, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.float32 and x.shape[1] == 2
        self.pairs += x.shape[0]
        for sample in x:
            self.ranges.append((float(sample.min()), float(sample.max())))
        return self.conv(x)


class DpmBlend(nn.Module):
    """ZAugNet+ stand-in: ``(1 - z) * slice_0 + z * slice_1`` with ``z`` read from the DPM channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dpm_values: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3
        z = x[:, 2:3]
        for sample in z:
            assert float(sample.max() - sample.min()) == 0.0  # a constant plane
            self.dpm_values.append(float(sample[0, 0, 0]))
        return (1 - z) * x[:, 0:1] + z * x[:, 1:2]


def linear_reference(volume: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation along z at fractional positions, in float64 (independent of the code under test)."""
    vol = volume.astype(np.float64)
    out = []
    for p in positions:
        i = min(int(np.floor(p)), len(vol) - 2)
        t = p - i
        out.append((1 - t) * vol[i] + t * vol[i + 1])
    return np.array(out)


def uint16_volume(n: int = 5, shape: tuple[int, int] = (20, 24), seed: int = 0) -> np.ndarray:
    """uint16 values around 30000 (so the normalisation must map back to user units)."""
    return np.random.default_rng(seed).integers(28000, 32000, (n, *shape), dtype=np.uint16)


# --- plan_factor / plan_relative / plan_spacing ----------------------------------------------


@pytest.mark.parametrize("n, factor", [(2, 2), (5, 2), (5, 3), (4, 4), (3, 8)])
def test_plan_factor_count_and_originals(n: int, factor: int) -> None:
    pos = plan_factor(n, factor)
    assert len(pos) == (n - 1) * factor + 1
    assert pos[0] == 0 and pos[-1] == n - 1
    # originals at every factor-th output slice, exactly integer
    assert np.array_equal(pos[::factor], np.arange(n, dtype=float))
    np.testing.assert_allclose(np.diff(pos), 1 / factor, rtol=0, atol=1e-12)


def test_plan_factor_three_by_hand() -> None:
    np.testing.assert_allclose(plan_factor(3, 3), [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2], rtol=0, atol=1e-12)


def test_plan_factor_refuses_non_positive() -> None:
    with pytest.raises(InputError, match="--factor"):
        plan_factor(5, 0)


def test_plan_relative_by_hand() -> None:
    pos = plan_relative(3, [0.25, 0.5, 0.75])
    np.testing.assert_allclose(pos, [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2], rtol=0, atol=1e-12)
    assert pos[0] == 0 and pos[4] == 1 and pos[8] == 2  # originals exact
    np.testing.assert_allclose(plan_relative(3, [0.3]), [0, 0.3, 1, 1.3, 2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("relative", [[], [0.0], [1.0], [0.5, 0.5], [0.7, 0.3], [-0.1], [1.2]])
def test_plan_relative_refuses_bad_positions(relative: list[float]) -> None:
    with pytest.raises(InputError, match="--z-positions"):
        plan_relative(4, relative)


def test_plan_spacing_non_uniform_by_hand() -> None:
    # z = 0, 1, 3, 4; grid 0, 0.5, ..., 4. Between z=1 and z=3 (gap 2) each 0.5 um is a quarter of the gap.
    pos = plan_spacing([0, 1, 3, 4], 0.5)
    np.testing.assert_allclose(pos, [0, 0.5, 1, 1.25, 1.5, 1.75, 2, 2.5, 3], rtol=0, atol=1e-12)
    # grid points on input slices take them exactly (integer positions)
    assert pos[0] == 0 and pos[2] == 1 and pos[6] == 2 and pos[8] == 3


def test_plan_spacing_irregular_grid_by_hand() -> None:
    # z = 0, 0.7, 1.0, 2.2 with spacing 0.3: grid 0 .. 2.1 (8 points); 2.4 would pass the last slice
    pos = plan_spacing([0, 0.7, 1.0, 2.2], 0.3)
    expected = [0, 0.3 / 0.7, 0.6 / 0.7, 1 + 0.2 / 0.3, 2 + 0.2 / 1.2, 2 + 0.5 / 1.2, 2 + 0.8 / 1.2, 2 + 1.1 / 1.2]
    np.testing.assert_allclose(pos, expected, rtol=0, atol=1e-9)


def test_plan_spacing_snaps_grid_points_on_inputs() -> None:
    # 3 * 0.3 is 0.8999999999999999 in floating point; it still lands exactly on input slice 2 (z = 0.9)
    pos = plan_spacing([0, 0.3, 0.9, 1.2], 0.3)
    np.testing.assert_allclose(pos, [0, 1, 1.5, 2, 3], rtol=0, atol=1e-12)
    assert pos[1] == 1.0 and pos[3] == 2.0 and pos[4] == 3.0


def test_plan_spacing_uniform_input_is_a_factor() -> None:
    np.testing.assert_allclose(plan_spacing(np.arange(5) * 0.6, 0.2), plan_factor(5, 3), rtol=0, atol=1e-9)


@pytest.mark.parametrize("input_z, spacing, where", [
    ([0, 1, 1, 2], 0.5, "--input-z"),        # not strictly increasing
    ([0, 2, 1, 3], 0.5, "--input-z"),        # decreasing step
    ([0, 1, 2], 1.0, "--target-spacing"),    # not smaller than the input spacing
    ([0, 1, 2], 1.5, "--target-spacing"),    # larger
    ([0, 1, 2], 0.0, "--target-spacing"),
    ([0, 1, 2], -0.5, "--target-spacing"),
    ([0, np.nan, 2], 0.5, "--input-z"),
    ([0], 0.5, "--input-z"),
])
def test_plan_spacing_refusals(input_z: list[float], spacing: float, where: str) -> None:
    with pytest.raises(InputError) as err:
        plan_spacing(input_z, spacing)
    assert err.value.where == where


def test_plan_spacing_refuses_target_equal_to_uniform_spacing() -> None:
    with pytest.raises(InputError, match="--target-spacing"):
        make_plan(5, 0.6, target_spacing=0.6)


# --- make_plan ---------------------------------------------------------------------------------


def test_make_plan_factor_default_and_spacing() -> None:
    plan = make_plan(5, 0.6)
    assert isinstance(plan, ZPlan)
    assert len(plan.positions) == 9 and plan.z_spacing == pytest.approx(0.3)
    plan = make_plan(5, 0.6, factor=4)
    assert len(plan.positions) == 17 and plan.z_spacing == pytest.approx(0.15)
    assert make_plan(5, None, factor=2).z_spacing is None


@pytest.mark.parametrize("factor", [0, 1, -2])
def test_make_plan_refuses_small_factor(factor: int) -> None:
    with pytest.raises(InputError, match="--factor"):
        make_plan(5, 0.6, factor=factor)


def test_make_plan_relative_positions() -> None:
    plan = make_plan(3, 1.0, z_positions=[0.25, 0.5, 0.75])
    assert len(plan.positions) == 9 and plan.z_spacing == pytest.approx(0.25) and plan.note == ""
    uneven = make_plan(3, 1.0, z_positions=[0.3])
    assert uneven.z_spacing == pytest.approx(0.5) and "non-uniform" in uneven.note


def test_make_plan_target_spacing() -> None:
    # from the file's voxel size
    plan = make_plan(5, 0.6, target_spacing=0.2)
    assert len(plan.positions) == 13 and plan.z_spacing == 0.2
    # from explicit (non-uniform) coordinates, which override the voxel size
    plan = make_plan(4, 0.6, target_spacing=0.5, input_z=[0, 1, 3, 4])
    np.testing.assert_allclose(plan.positions, [0, 0.5, 1, 1.25, 1.5, 1.75, 2, 2.5, 3], atol=1e-12)
    assert plan.z_spacing == 0.5


def test_make_plan_target_spacing_refusals() -> None:
    with pytest.raises(InputError, match="--input-z"):
        make_plan(5, 0.6, target_spacing=0.2, input_z=[0, 1, 2])
    with pytest.raises(InputError, match="--target-spacing"):
        make_plan(5, None, target_spacing=0.2)


# --- to_dtype ----------------------------------------------------------------------------------


def test_to_dtype_uint8_rounds_and_clips() -> None:
    values = np.array([-300.0, -3.2, 0.4, 0.6, 1.49, 127.7, 254.6, 255.4, 1e6], dtype=np.float32)
    out = to_dtype(values, np.uint8)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 1, 1, 128, 255, 255, 255]


def test_to_dtype_uint16_rounds_and_clips() -> None:
    values = np.array([-1.0, 0.3, 29999.6, 30000.2, 65534.7, 65535.3, 70000.0], dtype=np.float32)
    out = to_dtype(values, np.dtype("uint16"))
    assert out.dtype == np.uint16
    assert out.tolist() == [0, 0, 30000, 30000, 65535, 65535, 65535]


def test_to_dtype_float32_keeps_values() -> None:
    values = np.array([-5.25, 0.1, 1e5, 3.75], dtype=np.float64)
    out = to_dtype(values, np.float32)
    assert out.dtype == np.float32
    assert np.array_equal(out, values.astype(np.float32))


# --- interpolate_volume with the classical methods ---------------------------------------------


@pytest.fixture()
def constant_slices() -> np.ndarray:
    """Five constant 3 x 4 slices with values 0, 10, 40, 20, 5."""
    return np.array([0, 10, 40, 20, 5], dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)


def test_linear_by_hand(constant_slices: np.ndarray) -> None:
    out = interpolate_volume(constant_slices, np.array([0, 0.5, 1 + 1 / 3, 2.75, 4]), "linear")
    assert out.dtype == np.float32 and out.shape == (5, 3, 4)
    np.testing.assert_allclose(out[:, 0, 0], [0, 5, 20, 25, 5], rtol=1e-6)


def test_a_blend_mixes_the_model_and_the_classical_method_by_hand(constant_slices: np.ndarray) -> None:
    """A 'model' returning the slice before the gap, mixed 1/4 with linear interpolation (3/4): at 0.5 between 0 and
    10, 0.25 * 0 + 0.75 * 5; the input slices stay exact."""
    class Before(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0:1]

    blend = Blend(ModelInterpolator(Before(), "zaugnet", normalization="none", name="before"), "linear", 0.25)
    out = interpolate_volume(constant_slices, np.array([0, 0.5, 1.5, 2, 3.5]), blend)
    np.testing.assert_allclose(out[:, 0, 0], [0, 3.75, 10 * 0.25 + 25 * 0.75, 40, 20 * 0.25 + 12.5 * 0.75], rtol=1e-6)
    assert out[0, 0, 0] == 0 and out[3, 0, 0] == 40 and blend.name == "0.25 before + 0.75 linear"


def test_cubic_by_hand(constant_slices: np.ndarray) -> None:
    # Keys (a = -0.5) weights of slices (i-1, i, i+1, i+2): t = 1/2 -> (-1/16, 9/16, 9/16, -1/16),
    # t = 1/3 -> (-2/27, 21/27, 9/27, -1/27); edge slices repeated at the first and last gap.
    out = interpolate_volume(constant_slices, np.array([0, 0.5, 1 + 1 / 3, 1.5, 3.5, 4]), "cubic")
    expected = [
        0,
        -0 / 16 + 9 * 0 / 16 + 9 * 10 / 16 - 40 / 16,   # 3.125 (slice -1 -> slice 0)
        (-2 * 0 + 21 * 10 + 9 * 40 - 1 * 20) / 27,      # 550 / 27
        -0 / 16 + 9 * 10 / 16 + 9 * 40 / 16 - 20 / 16,  # 26.875
        -40 / 16 + 9 * 20 / 16 + 9 * 5 / 16 - 5 / 16,   # 11.25 (slice 5 -> slice 4)
        5,
    ]
    np.testing.assert_allclose(out[:, 1, 2], expected, rtol=1e-6, atol=1e-5)


def test_cubic_reproduces_quadratics_inside() -> None:
    vol = (np.arange(6, dtype=np.float32) ** 2)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = interpolate_volume(vol, np.array([1.5, 2.25, 3 + 2 / 3]), "cubic")
    np.testing.assert_allclose(out[:, 0, 0], [2.25, 2.25**2, (11 / 3) ** 2], rtol=1e-5)


def test_spline_reproduces_cubics_which_keys_does_not() -> None:
    # a not-a-knot cubic spline through samples of a cubic polynomial is that polynomial, edges included
    z = np.arange(7, dtype=np.float64)
    cubic = lambda t: 0.5 * t**3 - 2 * t**2 + t + 3  # noqa: E731
    vol = (cubic(z)[:, None, None] * np.ones((1, 3, 2))).astype(np.float32)
    pos = np.array([0.5, 2.25, 5 + 2 / 3])
    np.testing.assert_allclose(interpolate_volume(vol, pos, "spline")[:, 1, 1], cubic(pos), rtol=1e-5)
    assert np.abs(interpolate_volume(vol, pos, "cubic")[:, 1, 1] - cubic(pos)).max() > 0.05


def test_spline_equals_scipy_make_interp_spline_in_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.interpolate import make_interp_spline

    from zaugnet.predict import baselines

    monkeypatch.setattr(baselines, "SPLINE_STRIP_VALUES", 500)  # a few rows per strip: strips must join exactly
    vol = uint16_volume(n=9)
    pos = plan_factor(9, 4)
    out = interpolate_volume(vol, pos, "spline")
    expected = make_interp_spline(np.arange(9), vol.astype(np.float64), k=3, axis=0)(pos)  # not-a-knot
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-3)
    assert np.array_equal(out[::4], vol.astype(np.float32))


@pytest.mark.parametrize("method", ["linear", "cubic", "spline"])
def test_baselines_copy_originals_exactly(method: str) -> None:
    vol = uint16_volume()
    out = interpolate_volume(vol, plan_factor(len(vol), 3), method)
    assert np.array_equal(out[::3], vol.astype(np.float32))
    assert np.array_equal(to_dtype(out[::3], np.uint16), vol)


def test_interpolate_volume_refusals() -> None:
    vol = uint16_volume()
    with pytest.raises(InputError, match="--method"):
        interpolate_volume(vol, plan_factor(5, 2), "nearest")
    for bad in ([0, 1, 1, 2], [-0.5, 1], [0, 4.5], []):
        with pytest.raises(InputError):
            interpolate_volume(vol, np.array(bad, dtype=float), "linear")


# --- ModelInterpolator with real simple networks -----------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_zaugnet_k_passes_equal_linear_at_dyadic_positions(k: int) -> None:
    vol = uint16_volume(n=4)
    net = MidpointConv()
    model = ModelInterpolator(net, "zaugnet", batch_size=3)
    pos = plan_factor(len(vol), 2**k)
    out = interpolate_volume(vol, pos, model)
    assert out.shape == (2**k * (len(vol) - 1) + 1, *vol.shape[1:]) and out.dtype == np.float32
    # k passes: pass p predicts one midpoint per gap of the current stack, (n - 1) * 2^p of them
    assert net.pairs == sum((len(vol) - 1) * 2**p for p in range(k))
    # a mean-of-two network halving recursively is linear interpolation at the dyadic positions,
    # in the user's units (values ~30000) up to float32 rounding
    np.testing.assert_allclose(out, linear_reference(vol, pos), rtol=0, atol=0.02)
    # originals exactly
    assert np.array_equal(out[:: 2**k], vol.astype(np.float32))
    assert np.array_equal(to_dtype(out, np.uint16)[:: 2**k], vol)


def test_network_sees_each_pair_jointly_min_max_normalised() -> None:
    vol = uint16_volume(n=3)
    net = MidpointConv()
    interpolate_volume(vol, plan_factor(3, 2), ModelInterpolator(net, "zaugnet"))
    assert len(net.ranges) == 2
    for lo, hi in net.ranges:
        assert lo == pytest.approx(0, abs=1e-6) and hi == pytest.approx(1, abs=1e-6)


def test_normalisation_round_trip_keeps_units() -> None:
    # slices far from zero and with different ranges: a network that returns slice_0 unchanged
    # must give slice_0 back in the user's units
    rng = np.random.default_rng(3)
    first = rng.uniform(29000, 31000, (2, 16, 20)).astype(np.float32)
    second = rng.uniform(30000, 36000, (2, 16, 20)).astype(np.float32)
    first_only = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        first_only.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    out = ModelInterpolator(first_only, "zaugnet").predict(first, second, [0.5, 0.5])
    np.testing.assert_allclose(out, first, rtol=0, atol=0.01)


def test_zaugnet_plus_predicts_each_position_from_its_bracketing_pair() -> None:
    vol = uint16_volume(n=4, seed=1)
    net = DpmBlend()
    model = ModelInterpolator(net, "zaugnet+", batch_size=4)
    pos = plan_factor(len(vol), 3)
    out = interpolate_volume(vol, pos, model)
    np.testing.assert_allclose(out, linear_reference(vol, pos), rtol=0, atol=0.02)
    assert np.array_equal(out[::3], vol.astype(np.float32))
    # one direct prediction per new slice (no passes), each with its relative position in the DPM
    np.testing.assert_allclose(sorted(net.dpm_values), sorted([1 / 3, 2 / 3] * 3), atol=1e-6)


def test_zaugnet_plus_non_uniform_input_spacing() -> None:
    # input z = 0, 1, 3, 4; target spacing 0.5 -> positions 0, .5, 1, 1.25, 1.5, 1.75, 2, 2.5, 3
    vol = uint16_volume(n=4, seed=2)
    net = DpmBlend()
    pos = plan_spacing([0, 1, 3, 4], 0.5)
    out = interpolate_volume(vol, pos, ModelInterpolator(net, "zaugnet+"))
    assert out.shape == (9, *vol.shape[1:])
    np.testing.assert_allclose(sorted(net.dpm_values), [0.25, 0.5, 0.5, 0.5, 0.75], atol=1e-6)
    ref = vol.astype(np.float64)
    np.testing.assert_allclose(out[3], 0.75 * ref[1] + 0.25 * ref[2], atol=0.02)
    np.testing.assert_allclose(out[5], 0.25 * ref[1] + 0.75 * ref[2], atol=0.02)
    for k, i in ((0, 0), (2, 1), (6, 2), (8, 3)):
        assert np.array_equal(out[k], vol[i].astype(np.float32))


def test_zaugnet_plus_relative_positions() -> None:
    vol = uint16_volume(n=3, seed=4)
    pos = plan_relative(3, [0.25, 0.5, 0.75])
    out = interpolate_volume(vol, pos, ModelInterpolator(DpmBlend(), "zaugnet+", batch_size=2))
    np.testing.assert_allclose(out, linear_reference(vol, pos), rtol=0, atol=0.02)


def test_midpoint_only_model_refuses_other_positions() -> None:
    vol = uint16_volume(n=4)
    net = MidpointConv()
    model = ModelInterpolator(net, "zaugnet")
    assert model.midpoint_only and not ModelInterpolator(DpmBlend(), "zaugnet+").midpoint_only
    for pos in (plan_factor(4, 3), plan_factor(4, 6), plan_relative(4, [0.3])):
        with pytest.raises(InputError, match="ZAugNet\\+") as err:
            interpolate_volume(vol, pos, model)
        assert err.value.where == "positions"
    assert net.pairs == 0  # refused before any work
    # relative position 0.5 is a midpoint: allowed
    out = interpolate_volume(vol, plan_relative(4, [0.5]), model)
    assert out.shape == (7, *vol.shape[1:])


def test_tile_must_be_a_multiple_of_16() -> None:
    for tile in (0, 20, -16):
        with pytest.raises(InputError, match="--tile"):
            ModelInterpolator(MidpointConv(), "zaugnet", tile=tile)


def test_tiles_cover_every_pixel_once_with_origins_on_16_grid() -> None:
    for size, tile, halo in [(330, 64, 128), (300, 32, 128), (100, 32, 20), (517, 48, 37)]:
        covered = np.zeros(size, int)
        tiles = list(_tiles(size, tile, halo))
        assert len(tiles) > 1
        for r0, r1, k0, k1 in tiles:
            assert r0 % 16 == 0 and 0 <= r0 <= k0 < k1 <= r1 <= size
            assert k0 - r0 >= min(halo, k0) and r1 - k1 >= min(halo, size - k1)
            covered[k0:k1] += 1
        assert np.all(covered == 1)
    assert list(_tiles(100, 32, 128)) == [(0, 100, 0, 100)]  # fits in one tile with its halo


def test_augment_stack_keeps_axes_dtype_and_updates_voxel_size() -> None:
    data = np.stack([uint16_volume(n=3, seed=s) for s in (0, 1)])  # T Z Y X
    stack = Stack(data, "TZYX", VoxelSize(0.6, 0.2, 0.25, "um"))
    plan = make_plan(3, 0.6, factor=2)
    out = augment_stack(stack, plan, ModelInterpolator(MidpointConv(), "zaugnet"), progress=False)
    assert out.axes == "TZYX" and out.data.shape == (2, 5, 20, 24) and out.data.dtype == np.uint16
    vs = out.voxel_size
    assert (vs.z, vs.y, vs.x, vs.unit) == (pytest.approx(0.3), 0.2, 0.25, "um")
    for t in range(2):
        assert np.array_equal(out.data[t, ::2], data[t])
        expected = np.rint(linear_reference(data[t], plan.positions))
        assert np.abs(out.data[t].astype(np.int64) - expected).max() <= 1


# --- a real (tiny, trained) checkpoint: tiled == untiled ---------------------------------------


@pytest.mark.parametrize("variant, shape, tile", [
    ("zaugnet", (100, 130), 32),    # small: fits in one tile with its 128-px halo
    ("zaugnet+", (100, 130), 48),
    ("zaugnet", (96, 330), 64),     # tiled along x (6 tiles)
    ("zaugnet+", (330, 96), 48),    # tiled along y (7 tiles)
    ("zaugnet+", (401, 410), 144),  # tiled along both (3 x 3 tiles)
])
def test_tiled_equals_untiled_on_a_trained_checkpoint(tiny_checkpoints: dict[str, Path], variant: str,
                                                      shape: tuple[int, int], tile: int) -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    smooth = 20000 + 8000 * np.sin(yy / 9.0) * np.cos(xx / 13.0)
    first = (smooth + rng.normal(0, 500, shape))[None].astype(np.float32)
    second = (np.roll(smooth, 3, axis=1) + rng.normal(0, 500, shape))[None].astype(np.float32)
    whole = from_checkpoint(str(tiny_checkpoints[variant]), tile=512, halo=128)
    tiled = from_checkpoint(str(tiny_checkpoints[variant]), tile=tile, halo=128, batch_size=3)
    assert whole.variant == variant and tiled.tile == tile
    assert len(list(_tiles(shape[0], 512, 128))) == len(list(_tiles(shape[1], 512, 128))) == 1
    z = [0.5] if variant == "zaugnet" else [0.3]
    a, b = whole.predict(first, second, z), tiled.predict(first, second, z)
    assert a.shape == b.shape == first.shape
    data_range = float(max(first.max(), second.max()) - min(first.min(), second.min()))
    assert np.abs(a - b).max() / data_range <= 1e-4


def test_from_checkpoint_variants(tiny_checkpoints: dict[str, Path]) -> None:
    zaug = from_checkpoint(str(tiny_checkpoints["zaugnet"]), batch_size=2, tile=64, halo=32)
    plus = from_checkpoint(str(tiny_checkpoints["zaugnet+"]))
    assert zaug.midpoint_only and not plus.midpoint_only
    assert (zaug.batch_size, zaug.tile, zaug.halo) == (2, 64, 32)
    vol = uint16_volume(n=3)
    out = interpolate_volume(vol, plan_factor(3, 2), zaug)
    assert out.shape == (5, 20, 24) and np.isfinite(out).all()
    assert np.array_equal(out[::2], vol.astype(np.float32))
    # a trained student's output is clamped to [0, 1] in normalised units: inside each pair's range
    for g in range(2):
        lo, hi = min(vol[g].min(), vol[g + 1].min()), max(vol[g].max(), vol[g + 1].max())
        assert out[2 * g + 1].min() >= lo - 0.05 and out[2 * g + 1].max() <= hi + 0.05
    with pytest.raises(InputError, match="ZAugNet\\+"):
        interpolate_volume(vol, plan_factor(3, 3), zaug)
    assert interpolate_volume(vol, plan_factor(3, 3), plus).shape == (7, 20, 24)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_non_positive_batch_size_is_refused(batch_size: int) -> None:
    vol = uint16_volume(n=3)
    with pytest.raises(InputError, match="--batch-size"):
        model = ModelInterpolator(MidpointConv(), "zaugnet", batch_size=batch_size)
        interpolate_volume(vol, plan_factor(3, 2), model)


class _SliceZero(nn.Module):
    """Returns the first input channel: slice_0, the slice before the gap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+"])
def test_tta_averages_the_network_over_rotations_mirrors_and_z_reversal(variant: str) -> None:
    # a network that copies slice_0 is blind to rotations and mirrors, and z reversal hands it slice_1 instead:
    # under TTA it predicts the mean of the two slices, exactly linear interpolation at the midpoint
    rng = np.random.default_rng(3)
    first, second = rng.random((2, 1, 32, 48), dtype=np.float32) * 1000
    plain = ModelInterpolator(_SliceZero(), variant, normalization="none")
    tta = ModelInterpolator(_SliceZero(), variant, normalization="none", tta=True)
    np.testing.assert_array_equal(plain.predict(first, second, [0.5]), first)
    np.testing.assert_allclose(tta.predict(first, second, [0.5]), (first + second) / 2, rtol=1e-6)


def test_tta_undoes_each_transform_of_a_network_that_is_not_rotation_invariant() -> None:
    # a network that shifts its input one pixel right: averaged over the 8 rotations and mirrors (each undone),
    # every output pixel is the mean of its 4 neighbours in the input (up, down, left, right), edges wrapped
    class ShiftRight(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.roll(x[:, :1], 1, dims=3)

    image = np.random.default_rng(4).random((1, 32, 32), dtype=np.float32)
    got = ModelInterpolator(ShiftRight(), "zaugnet", normalization="none", tta=True).predict(image, image, [0.5])
    neighbours = sum(np.roll(image, s, axis=a) for s in (1, -1) for a in (1, 2)) / 4
    np.testing.assert_allclose(got, neighbours, rtol=1e-5)
