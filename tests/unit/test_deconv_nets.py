"""The two-stage 3D RCAN and U-Net of ZS-DeconvNet and the core's tiled prediction and intensity affine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from zaugnet.training.deconv.config import PRESETS, DeconvNetConfig, build_deconv_config
from zaugnet.training.deconv.nets import ZSDeconvNet3D, receptive_radius

from zaugnet.deconv.predict import (
    Affine,
    ModelDeconvolver,
    ParitySplit,
    auto_tile,
    deconvolve_stack,
    deconvolve_volume,
    tiles,
)
from zaugnet.errors import InputError
from zaugnet.io.tiff import Stack, VoxelSize

OPTICS = {"na": 1.2, "wavelength": 0.461, "ni": 1.333}
TINY = DeconvNetConfig(channels=4, groups=1, blocks=1, reduction=2, head_channels=4)


def _count(cfg: DeconvNetConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in ZSDeconvNet3D(cfg).parameters())


def test_the_paper_preset_has_2_00_million_parameters() -> None:
    cfg = build_deconv_config({"preset": "paper", "psf": OPTICS}).net
    # per stage, by hand: stem conv 1 -> 64 (27 * 64 + 64); 2 groups x 2 RCABs, each two 64 -> 64 convs
    # (27 * 64 * 64 + 64) and the attention 64 -> 4 -> 64 (64 * 4 + 4 + 4 * 64 + 64); head 64 -> 64 -> 1
    stem = 27 * 64 + 64
    rcab = 2 * (27 * 64 * 64 + 64) + (64 * 4 + 4) + (4 * 64 + 64)
    head = (27 * 64 * 64 + 64) + (27 * 64 + 1)
    assert _count(cfg) == 2 * (stem + 4 * rcab + head) == 2_003_490
    assert _count(cfg) == pytest.approx(2.00e6, rel=0.02)


def test_the_small_preset_is_the_u_net_counted_by_hand() -> None:
    cfg = build_deconv_config({"preset": "small", "psf": OPTICS}).net
    assert cfg == DeconvNetConfig(**PRESETS["small"]["net"]) and cfg.kind == "unet"

    def pair(i: int, o: int) -> int:  # two 3 x 3 x 3 convolutions i -> o -> o
        return (27 * i * o + o) + (27 * o * o + o)

    # widths 16, 32, 32 and the bottom 32; decoder inputs are the upsampled and the skip features
    encoder = pair(1, 16) + pair(16, 32) + pair(32, 32)
    decoder = pair(64, 32) + pair(64, 32) + pair(48, 16)
    assert _count(cfg) == 2 * (encoder + pair(32, 32) + decoder + 17) == 706_690


TINY_UNET = DeconvNetConfig(kind="unet", channels=2, levels=2)


@pytest.mark.parametrize("cfg", [TINY, TINY_UNET], ids=["rcan", "unet"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 7, 9), (2, 1, 5, 11, 3), (1, 1, 3, 1, 1), (1, 1, 13, 17, 16)])
def test_outputs_have_the_input_shape_for_any_size(shape: tuple[int, ...], cfg: DeconvNetConfig) -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(cfg)

    denoised, deconvolved = net(torch.rand(shape))

    assert denoised.shape == deconvolved.shape == shape


def test_stages_end_in_leaky_relu_and_the_deconvolver_is_fed_the_denoised() -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(TINY)
    for stage in (net.denoiser, net.deconvolver):
        last = stage.head[-1]
        assert isinstance(last, nn.LeakyReLU) and last.negative_slope == 0.2
    x = torch.rand(1, 1, 4, 8, 8)

    _, deconvolved = net(x)

    torch.testing.assert_close(deconvolved, net.deconvolver(net.denoiser(x)))
    with torch.no_grad():  # a negative bias before the head's LeakyReLU gives negative outputs (ReLU: 0)
        net.denoiser.head[-2].weight.zero_()
        net.denoiser.head[-2].bias.fill_(-1.0)
    assert torch.allclose(net.denoiser(x), torch.full_like(x, -0.2))


def test_a_positive_network_clamps_the_deconvolved_output_only_and_scripts() -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(TINY_UNET.model_copy(update={"positive": True})).eval()
    x = torch.randn(1, 1, 4, 16, 16)

    denoised, deconvolved = net(x)

    unclamped = net.deconvolver.stage(denoised)
    assert float(unclamped.min()) < 0 and float(denoised.min()) < 0  # the denoiser is not clamped
    torch.testing.assert_close(deconvolved, torch.relu(unclamped))
    torch.testing.assert_close(torch.jit.script(net.deconvolver)(denoised), deconvolved)  # as the packages hold it


def test_a_network_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, Z, Y, X\)"):
        ZSDeconvNet3D(TINY)(torch.rand(1, 2, 4, 8, 8))


def test_receptive_radius_by_hand() -> None:
    # per stage: stem 1 + 2 convs per block + head 2; two stages
    assert receptive_radius(TINY) == 2 * (1 + 2 + 2) == 10
    assert receptive_radius(DeconvNetConfig()) == 2 * (1 + 8 + 2) == 22


@torch.no_grad()
def test_a_u_net_output_never_depends_on_input_beyond_its_receptive_radius() -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(TINY_UNET).eval()
    radius = receptive_radius(TINY_UNET)
    assert radius == 2 * ((4 + 0) + (8 + 1) + 2 * 4) == 42
    x = torch.rand(1, 1, 5, 2 * radius + 12, 2 * radius + 12)
    changed = x.clone()
    changed[0, 0, 2, 6, 6] += 10.0  # one voxel near a corner

    diff = (net(changed)[1] - net(x)[1]).abs()[0, 0].amax(dim=0)  # over z

    yy, xx = np.indices(diff.shape)
    reach = np.maximum(np.abs(yy - 6), np.abs(xx - 6))
    assert float(diff[torch.from_numpy(reach > radius)].max()) == 0.0
    assert float(diff[torch.from_numpy(reach <= 2)].max()) > 0.0


# --- the core: tiles, affine ------------------------------------------------------------------------------


def _fixed_attention(net: ZSDeconvNet3D) -> ZSDeconvNet3D:
    """The channel attention's gain made constant (its excitation weights zeroed), so the network is local."""
    with torch.no_grad():
        for module in net.modules():
            if hasattr(module, "excite"):
                module.excite.weight.zero_()
                module.excite.bias.uniform_(-1, 1)
    return net.eval()


def test_tiled_equals_untiled_with_a_halo_of_the_receptive_radius() -> None:
    torch.manual_seed(0)
    net = _fixed_attention(ZSDeconvNet3D(TINY))
    volume = np.random.default_rng(0).gamma(2.0, 50.0, (11, 23, 19)).astype(np.float32) + 100
    affine = Affine(offset=100.0, scale=300.0)
    radius = receptive_radius(TINY)

    whole = deconvolve_volume(volume, net, affine)
    tiled = deconvolve_volume(volume, net, affine, tile=(4, 8, 7), halo=(radius,) * 3)

    for a, b in zip(whole, tiled):
        assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())
    short = deconvolve_volume(volume, net, affine, tile=(4, 8, 7), halo=(1, 1, 1))  # too little context differs
    assert np.abs(short[1] - whole[1]).max() > 1e-3 * (whole[1].max() - whole[1].min())


def test_a_u_net_tiled_on_its_pooling_grid_equals_one_piece() -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(TINY_UNET).eval()
    volume = np.random.default_rng(1).gamma(2.0, 50.0, (4, 130, 120)).astype(np.float32) + 100
    affine = Affine(offset=100.0, scale=300.0)
    halo = (receptive_radius(TINY_UNET),) * 3

    whole = deconvolve_volume(volume, net, affine)
    tiled = deconvolve_volume(volume, net, affine, tile=(4, 37, 41), halo=halo, align=(1, 4, 4))

    for a, b in zip(whole, tiled):
        assert np.abs(a - b).max() <= 1e-6 * (a.max() - a.min())
    off_grid = deconvolve_volume(volume, net, affine, tile=(4, 37, 41), halo=halo)  # windows off the grid
    assert np.abs(off_grid[1] - whole[1]).max() > 1e-5 * (whole[1].max() - whole[1].min())


@torch.no_grad()
@pytest.mark.parametrize("z", [10, 9])
def test_parity_split_runs_odd_and_even_slices_apart_and_interleaves_them(z: int) -> None:
    torch.manual_seed(0)
    net = ZSDeconvNet3D(TINY_UNET).eval()
    x = torch.rand(2, 1, z, 21, 19)

    denoised, deconvolved = ParitySplit(net)(x)

    assert denoised.shape == deconvolved.shape == x.shape
    odd = net(x[:, :, 0::2])
    torch.testing.assert_close(deconvolved[:, :, 0::2], odd[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(denoised[:, :, 0::2], odd[0], rtol=0, atol=1e-6)
    even = x[:, :, 1::2] if z % 2 == 0 else torch.cat([x[:, :, 1::2], x[:, :, -1:]], 2)  # last slice repeated
    torch.testing.assert_close(deconvolved[:, :, 1::2], net(even)[1][:, :, :z // 2], rtol=0, atol=1e-6)


def test_a_split_model_tiled_on_its_grids_equals_one_piece() -> None:
    torch.manual_seed(0)
    net = ParitySplit(ZSDeconvNet3D(TINY_UNET)).eval()
    volume = np.random.default_rng(2).gamma(2.0, 50.0, (13, 130, 47)).astype(np.float32) + 100
    affine = Affine(offset=100.0, scale=300.0)
    r = receptive_radius(TINY_UNET)

    whole = deconvolve_volume(volume, net, affine)
    tiled = deconvolve_volume(volume, net, affine, tile=(3, 17, 50), halo=(2 * r, r, r), align=(2, 4, 4))

    for a, b in zip(whole, tiled):
        assert np.abs(a - b).max() <= 1e-6 * (a.max() - a.min())


def test_tiles_cover_the_region_once_and_stay_inside() -> None:
    region, bounds = [(2, 9), (3, 20), (0, 5)], (12, 24, 5)

    plan = list(tiles(region, bounds, (3, 8, 5), (2, 4, 1)))

    hits = np.zeros(bounds, int)
    for piece in plan:
        hits[piece.core] += 1
        for core, window, n in zip(piece.core, piece.window, bounds):
            assert 0 <= window.start <= core.start and core.stop <= window.stop <= n
    expected = np.zeros(bounds, int)
    expected[2:9, 3:20, 0:5] = 1
    np.testing.assert_array_equal(hits, expected)


def test_auto_tile_keeps_small_volumes_whole_and_splits_large_ones() -> None:
    assert auto_tile((40, 100, 100), (4, 16, 16), 10**7) == (40, 100, 100)
    tile = auto_tile((200, 1000, 1000), (4, 16, 16), 10**6)
    assert tile[0] <= 64 and np.prod([t + 2 * h for t, h in zip(tile, (4, 16, 16))]) <= 10**6


def test_affine_from_known_percentiles_and_round_trip() -> None:
    volume = np.arange(1001, dtype=np.uint16).reshape(7, 11, 13)  # 0 .. 1000: p0.1 = 1, p99.9 = 999

    affine = Affine.from_volumes([volume])

    assert (affine.offset, affine.scale) == pytest.approx((1.0, 998.0))
    assert affine.normalise(np.array([1.0, 999.0])) == pytest.approx([0.0, 1.0])
    np.testing.assert_allclose(affine.restore(affine.normalise(volume)), volume, rtol=1e-6, atol=1e-4)
    assert Affine.from_dict(affine.to_dict()) == affine


def test_affine_refuses_flat_data_and_bad_stored_values() -> None:
    with pytest.raises(InputError, match="flat"):
        Affine.from_volumes([np.full((3, 4, 4), 7.0)], where="x.tif")
    for bad in ({"offset": 0.0, "scale": 0.0}, {"offset": float("nan"), "scale": 1.0}, {"scale": 1.0}, None):
        with pytest.raises(InputError, match="normalisation"):
            Affine.from_dict(bad, "ckpt.pt")


def test_an_identity_network_returns_the_volume_in_its_own_units() -> None:
    """No stretch anywhere: the affine in, its inverse out, whatever the tiles."""
    volume = np.random.default_rng(1).uniform(200, 5000, (6, 20, 21)).astype(np.float32)

    def identity(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, 2 * x

    affine = Affine(offset=180.0, scale=4000.0)
    method = ModelDeconvolver(identity, affine, tile=(2, 7, 9), halo=(1, 2, 3))

    denoised, deconvolved = method(volume)

    np.testing.assert_allclose(denoised, volume, rtol=1e-5)
    np.testing.assert_allclose(deconvolved, 2 * volume - 180.0, rtol=1e-5)


def test_deconvolve_stack_keeps_time_points_drops_the_chosen_channel_and_keeps_the_voxel_size() -> None:
    data = np.random.default_rng(2).uniform(0, 100, (2, 5, 3, 8, 9)).astype(np.float32)  # T Z C Y X
    stack = Stack(data=data, axes="TZCYX", voxel_size=VoxelSize(0.4, 0.1, 0.1), imagej={"min": 0.0, "Info": "x"})

    def method(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return volume + 1, volume * 2

    denoised, deconvolved = deconvolve_stack(stack, method, channel="c2")

    assert denoised is not None and denoised.axes == deconvolved.axes == "TZYX"
    np.testing.assert_array_equal(denoised.data, data[:, :, 2] + 1)
    np.testing.assert_array_equal(deconvolved.data, data[:, :, 2] * 2)
    assert deconvolved.voxel_size == stack.voxel_size and deconvolved.imagej == {"Info": "x"}
    whole_denoised, whole = deconvolve_stack(Stack(data[:, :, :1], "TZCYX", VoxelSize()), method)
    assert whole.axes == "TZCYX" and whole_denoised is not None
    np.testing.assert_array_equal(whole.data, data[:, :, :1] * 2)
    with pytest.raises(InputError, match="3 channels"):
        deconvolve_stack(stack, method)
    with pytest.raises(InputError, match="no channel 'c3'"):
        deconvolve_stack(stack, method, channel="c3")
