"""Fast paths: ``warp``'s sampling grid under bfloat16 autocast and in other dtypes; the predictor's forward passes.

Under CPU bfloat16 autocast the convolutions return bfloat16, so the context net warps bfloat16 feature
maps. bfloat16 holds integers exactly only up to 256: a grid built in the image's dtype (the old ``warp``,
kept below as ``_old_warp``) moves samples by up to 2 pixels on a 1024-pixel slice. ``warp`` builds its grid
in float32 whatever the dtype and autocast state, so it matches float32 ``warp`` without autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from zaugnet.training.nets import ContextNet, warp

from zaugnet.predict.interpolator import MAX_BATCH_PIXELS, ModelInterpolator, _passes

Warp = Callable[[Tensor, Tensor], Tensor]
#: Largest deviation from float32 ``warp`` without autocast, as a fraction of the image's range.
TOLERANCE = 1e-6


def _old_warp(image: Tensor, flow: Tensor) -> Tensor:
    """``warp`` before the fix (grid in the image's dtype; eager branch only), the reference for the defect."""
    b, _, h, w = image.shape
    ys = torch.arange(h, device=image.device, dtype=image.dtype).view(1, h, 1).expand(b, h, w)
    xs = torch.arange(w, device=image.device, dtype=image.dtype).view(1, 1, w).expand(b, h, w)
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _wide_image(width: int = 1024, height: int = 8) -> Tensor:
    """A smooth-plus-noise image, exactly representable in bfloat16 (as a bfloat16 feature map is)."""
    torch.manual_seed(0)
    x = torch.linspace(0, 12.0, width).view(1, 1, 1, width)
    image = torch.sin(x) + 0.5 * torch.rand(1, 1, height, width)
    return image.bfloat16()


def _deviation(fn: Warp, image: Tensor, flow: Tensor) -> float:
    """Max |fn under bfloat16 autocast - float32 warp without autocast| over the image's range."""
    reference = warp(image.float(), flow.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(image, flow)
    span = float(image.float().max() - image.float().min())
    return float((out.float() - reference).abs().max()) / span


def _subpixel_flow(image: Tensor) -> Tensor:
    """0.37 px in x and -0.21 px in y, only where x > 512 (zero elsewhere)."""
    flow = torch.zeros(image.shape[0], 2, *image.shape[2:])
    flow[:, 0, :, 513:] = 0.37
    flow[:, 1, :, 513:] = -0.21
    return flow


def test_zero_flow_under_bfloat16_autocast_is_the_float32_identity() -> None:
    """A 1024-px-wide bfloat16 image, zero flow: what float32 ``warp`` gives (the image, to float32 rounding)."""
    image = _wide_image()
    flow = torch.zeros(1, 2, *image.shape[2:])
    assert _deviation(warp, image, flow) < TOLERANCE
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(image, flow)
    assert out.dtype == torch.float32  # as autocast's grid_sample returns
    assert float((out - image.float()).abs().max()) < 1e-4  # float32 normalisation round trip at W = 1024


def test_subpixel_flow_beyond_x_512_under_bfloat16_autocast_matches_float32() -> None:
    """Sub-pixel flow where bfloat16 coordinates are 4 px apart: the float32 result."""
    image = _wide_image()
    assert _deviation(warp, image, _subpixel_flow(image)) < TOLERANCE


@pytest.mark.parametrize("flow_kind", ["zero", "subpixel"])
def test_the_old_bfloat16_grid_fails_the_same_check(flow_kind: str) -> None:
    """The defect the fix removes: the old grid, in bfloat16, misses by far more than the tolerance."""
    image = _wide_image()
    flow = torch.zeros(1, 2, *image.shape[2:]) if flow_kind == "zero" else _subpixel_flow(image)
    assert _deviation(_old_warp, image, flow) > 1e-3


def test_context_net_under_autocast_keeps_its_features_in_place() -> None:
    """ContextNet on a 1024-px slice with zero flow, bfloat16 autocast: each level's warped features are its
    unwarped features (bfloat16 maps up to 512 px wide), to float32 identity-warp rounding."""
    torch.manual_seed(0)
    net = ContextNet(4).eval()
    image = torch.rand(1, 1, 32, 1024)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        warped = net(image, torch.zeros(1, 2, 32, 1024))
        plain, x = [], image
        for level in net.levels:
            x = level(x)
            plain.append(x)
    for got, want in zip(warped, plain):
        assert want.dtype == torch.bfloat16
        span = float(want.float().max() - want.float().min())
        assert float((got.float() - want.float()).abs().max()) / span < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtype_of_the_result_follows_the_inputs_and_scripting_agrees(dtype: torch.dtype) -> None:
    """Without autocast: the inputs' dtype back (a bfloat16 or float16 network keeps running), float64 stays
    float64 (its grid too), and the TorchScript function gives the eager result."""
    torch.manual_seed(1)
    image = torch.rand(2, 3, 20, 300).to(dtype)
    flow = (torch.rand(2, 2, 20, 300) * 4 - 2).to(dtype)
    out = warp(image, flow)
    assert out.dtype == dtype
    assert torch.equal(torch.jit.script(warp)(image, flow), out)
    reference = warp(image.double(), flow.double())  # the float64 grid of the same (rounded) inputs
    tol = {torch.float64: 1e-12, torch.float32: 1e-4}.get(dtype, 1e-2)  # the result's own rounding
    assert float((out.double() - reference).abs().max()) < tol


# --- the predictor's forward passes: pixel-capped batches, channels-last --------------------------------------


def test_passes_batch_small_tiles_and_run_large_ones_alone() -> None:
    """Every job once; one shape per pass; up to ``batch_size`` small tiles together, a large tile alone."""
    small, large = (256, 256), (640, 640)
    shapes = [small] * 6 + [large] * 3 + [small, (256, 240)]
    passes = _passes(shapes, 4, MAX_BATCH_PIXELS)
    assert sorted(j for p in passes for j in p) == list(range(len(shapes)))
    assert all(len({shapes[j] for j in p}) == 1 for p in passes)
    assert [len(p) for p in passes if shapes[p[0]] == small] == [4, 3]
    assert [len(p) for p in passes if shapes[p[0]] == large] == [1, 1, 1]
    assert _passes(shapes, 2, None) == [[0, 1], [2, 3], [4, 5], [9], [6, 7], [8], [10]]  # no cap: batch_size


class _Recorder(torch.nn.Module):
    """A 3x3 convolution that records the batch size and memory format of what it is given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 1, 3, padding=1)
        self.seen: list[tuple[int, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((x.shape[0], x.is_contiguous(memory_format=torch.channels_last)))
        return torch.sigmoid(self.conv(x))


def test_default_predictor_runs_large_tiles_one_by_one_and_matches_the_old_settings() -> None:
    """A 1024-px gap is one tile (tile 1024) and four gaps run one per pass (contiguous; channels-last when asked);
    the results are the old defaults' (tile 512, four tiles per pass) to float32 rounding."""
    rng = np.random.default_rng(0)
    windows = rng.random((4, 2, 1024, 1024), dtype=np.float32) * 1000
    old = ModelInterpolator(_Recorder(), "zaugnet", tile=512, batch_size=4, max_batch_pixels=None)
    before = old.predict_windows(windows, [0.5] * 4)
    assert old.network.seen == [(4, False)] * 4  # 16 tiles of 640 x 640, four per pass
    for channels_last in (False, True):
        model = ModelInterpolator(_Recorder(), "zaugnet", channels_last=channels_last)
        now = model.predict_windows(windows, [0.5] * 4)
        assert model.network.seen == [(1, channels_last)] * 4
        assert float(np.abs(now - before).max()) / 1000 < 1e-6


def test_channels_last_only_for_eager_modules_on_the_cpu() -> None:
    """Off by default; asked for, an eager module is converted, TorchScript and plain callables are left as they are."""
    scripted = torch.jit.script(torch.nn.Conv2d(2, 1, 3, padding=1))
    assert not ModelInterpolator(scripted, "zaugnet", channels_last=True)._channels_last
    assert not ModelInterpolator(lambda x: x[:, :1], "zaugnet", channels_last=True)._channels_last
    assert not ModelInterpolator(_Recorder(), "zaugnet")._channels_last
    model = ModelInterpolator(_Recorder(), "zaugnet", channels_last=True)
    assert model._channels_last and model.network.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="max_batch_pixels"):
        ModelInterpolator(_Recorder(), "zaugnet", max_batch_pixels=0)
    assert model.predict_windows(np.ones((1, 2, 32, 32), np.float32), [0.5]).shape == (1, 32, 32)
