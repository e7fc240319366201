"""The packaged network in eager PyTorch, TorchScript and ONNX Runtime, without bioimageio.core.

Parity is measured as the max abs difference relative to each input pair's intensity range
(:mod:`zaugnet.export.parity`), at sizes that are non-square and not multiples of 16.
"""

from __future__ import annotations

import importlib.util
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from zaugnet.export.architecture import (
    CALLABLE,
    architecture_kwargs,
    architecture_source,
)
from zaugnet.export.load import from_checkpoint
from zaugnet.export.onnx import (
    MAX_IR_VERSION,
    OPSET_RANGE,
    export_onnx,
    onnx_session,
    onnx_versions,
    run_onnx,
)
from zaugnet.export.parity import TOLERANCE, relative_error
from zaugnet.export.torchscript import (
    load_torchscript,
    save_torchscript,
    torchscript_format_version,
)
from zaugnet.export.wrapper import NormalizedStudent
from zaugnet.training.checkpoint import load_generator

SHAPES = [(1, 32, 32), (2, 48, 80), (1, 37, 53), (2, 100, 30), (1, 16, 16)]


def _wrapped(checkpoint: Path, normalization: str | None = None) -> tuple[NormalizedStudent, bool]:
    config, generator = load_generator(checkpoint)
    net = NormalizedStudent(generator.student.eval(), config.net.with_dpm, normalization or config.data.normalization,
                            config.data.percentiles, config.net.n_slices).eval()
    return net, config.net.with_dpm


def _inputs(shape: tuple[int, int, int], with_dpm: bool, seed: int = 0, n_slices: int = 2) -> np.ndarray:
    """uint16-like intensities (not in [0, 1]) of ``n_slices`` slices shifted along x, and, for ZAugNet+ and
    ZAugNet-C, a DPM plane per sample."""
    b, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = 800 + 600 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    slices = np.stack([np.roll(base, 2 * k, axis=1) for k in range(n_slices)])
    pair = (slices[None] + rng.normal(0, 30, (b, n_slices, h, w))).astype(np.float32)
    if not with_dpm:
        return pair
    dpm = np.stack([np.full((1, h, w), 0.25 + 0.5 * i, dtype=np.float32) for i in range(b)])
    return np.concatenate([pair, dpm], axis=1)


def _eager(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+", "zaugnet-c"])
def test_wrapper_in_intensity_units_equals_the_checkpoint_predictor(variant: str, tiny_checkpoints) -> None:
    """Normalising inside the network (joint min/max of all its slices, DPM untouched, output mapped back) =
    ModelInterpolator."""
    net, with_dpm = _wrapped(tiny_checkpoints[variant])
    model = from_checkpoint(str(tiny_checkpoints[variant]))
    k = model.n_slices
    assert net.n_slices == k == (4 if variant == "zaugnet-c" else 2)
    x = _inputs((2, 40, 56), with_dpm, n_slices=k)
    z = [0.25, 0.75] if with_dpm else [0.5, 0.5]
    want = model.predict_windows(x[:, :k], z)
    got = _eager(net, x)[:, 0]
    assert relative_error(got[:, None], want[:, None], x) <= 1e-6


def test_percentile_normalisation_matches_numpy_percentiles(tiny_checkpoints) -> None:
    """The in-network percentiles are numpy's linear-interpolation percentiles of the joint pair."""
    from zaugnet.gaps import normalize_pair

    net, _ = _wrapped(tiny_checkpoints["zaugnet"], "percentile")
    x = _inputs((2, 33, 47), False, seed=3)
    lo, scale = net.intensity_range(torch.from_numpy(x[:, :2]))
    for i in range(2):
        want_lo, want_scale = normalize_pair(x[i, :2], "percentile", (0.1, 99.9))
        assert float(lo[i]) == pytest.approx(want_lo, rel=1e-5)
        assert float(scale[i]) == pytest.approx(want_scale, rel=1e-5)


def test_constant_pair_gives_the_constant_and_the_dpm_is_not_rescaled(tiny_checkpoints) -> None:
    net, _ = _wrapped(tiny_checkpoints["zaugnet+"])
    flat = np.full((1, 3, 32, 32), 500.0, dtype=np.float32)
    flat[:, 2] = 0.5
    out = _eager(net, flat)
    assert np.all(np.isfinite(out)) and np.abs(out - 500.0).max() < 1e-2
    x = _inputs((1, 32, 48), True)
    at = [_eager(net, np.concatenate([x[:, :2], np.full_like(x[:, 2:], z)], 1)) for z in (0.1, 0.9)]
    assert not np.allclose(at[0], at[1])  # the DPM reached the network as given


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet+", "zaugnet-c"])
def test_torchscript_and_onnx_match_eager_at_many_sizes(variant: str, tiny_checkpoints, tmp_path: Path) -> None:
    net, with_dpm = _wrapped(tiny_checkpoints[variant])
    k = net.n_slices
    ts_path = save_torchscript(net, tmp_path / "model_ts.pt")
    example = torch.from_numpy(_inputs((1, 64, 64), with_dpm, n_slices=k))
    onnx_path = export_onnx(net, tmp_path / "model.onnx", example)
    ir, opset = onnx_versions(onnx_path)
    assert ir <= MAX_IR_VERSION and OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]
    scripted = load_torchscript(ts_path)
    session = onnx_session(onnx_path)
    for i, shape in enumerate(SHAPES):
        x = _inputs(shape, with_dpm, seed=i, n_slices=k)
        want = _eager(net, x)
        assert want.shape == (shape[0], 1, *shape[1:])
        assert relative_error(_eager(scripted, x), want, x) == 0.0, shape  # same kernels: identical
        assert relative_error(run_onnx(session, x), want, x) <= TOLERANCE, shape


def test_torchscript_archive_is_portable(tiny_checkpoints, tmp_path: Path) -> None:
    """Format version recorded; F.interpolate's body (with ops only new torch has) is not in the archive."""
    net, _ = _wrapped(tiny_checkpoints["zaugnet"])
    path = save_torchscript(net, tmp_path / "ts.pt")
    assert 1 <= torchscript_format_version(path) <= 10
    with zipfile.ZipFile(path) as zf:
        code = "\n".join(zf.read(n).decode() for n in zf.namelist() if n.endswith(".py"))
    assert "upsample_bilinear2d" in code
    assert "_upsample_lanczos2d_aa" not in code and "upsample_bicubic2d" not in code


@pytest.mark.parametrize("variant", ["zaugnet+", "zaugnet-c"])
def test_architecture_file_stands_alone_and_rebuilds_the_network(variant: str, tiny_checkpoints,
                                                                 tmp_path: Path) -> None:
    """The shipped architecture source imports with torch only and, with the state dict, gives the same output
    (ZAugNet-C: its kwargs carry context_slices and head_width)."""
    config, _ = load_generator(tiny_checkpoints[variant])
    net, _ = _wrapped(tiny_checkpoints[variant])
    kwargs = architecture_kwargs(config)
    assert ("context_slices" in kwargs) == ("head_width" in kwargs) == (variant == "zaugnet-c")
    source = tmp_path / "arch_standalone.py"
    source.write_text(architecture_source())
    spec = importlib.util.spec_from_file_location(f"arch_standalone_{variant.replace('+', 'p').replace('-', '_')}",
                                                  source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = getattr(module, CALLABLE)(**kwargs)
    rebuilt.load_state_dict(net.state_dict())
    x = _inputs((1, 48, 40), True, n_slices=net.n_slices)
    assert relative_error(_eager(rebuilt.eval(), x), _eager(net, x), x) == 0.0


@pytest.mark.parametrize("variant", ["zaugnet+", "zaugnet-c"])
def test_torchscript_runs_in_an_old_torch(variant: str, tiny_checkpoints, old_torch: Path, tmp_path: Path) -> None:
    """A fresh export's archive loads and runs in torch 2.0.1 (deepImageJ's libtorch is 2.0.0; the ``old_torch``
    environment, or ``ZAUGNET_OLD_TORCH_PYTHON``), within the tolerance."""
    net, with_dpm = _wrapped(tiny_checkpoints[variant])
    path = save_torchscript(net, tmp_path / "ts.pt")
    x = _inputs((2, 48, 80), with_dpm, n_slices=net.n_slices)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, torch\n"
              "m = torch.jit.load(sys.argv[1], map_location='cpu').eval()\n"
              "with torch.no_grad():\n"
              "    np.save(sys.argv[3], m(torch.from_numpy(np.load(sys.argv[2]))).numpy())\n"
              "print(torch.__version__)\n")
    run = subprocess.run([str(old_torch), "-c", script, str(path), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], check=True, capture_output=True, text=True, timeout=300)
    old = run.stdout.strip().splitlines()[-1]
    assert tuple(int(part) for part in old.split("+")[0].split(".")[:2]) < (2, 1), (
        f"{old_torch} runs torch {old}, not an old torch (deepImageJ's is 2.0.0)")
    assert relative_error(np.load(tmp_path / "y.npy"), _eager(net, x), x) <= TOLERANCE



def test_percentile_normalisation_survives_onnx(tiny_checkpoints, tmp_path: Path) -> None:
    """The sort-based percentiles trace to ONNX with the number of pixels taken from the data (any size)."""
    net, with_dpm = _wrapped(tiny_checkpoints["zaugnet+"], "percentile")
    onnx_path = export_onnx(net, tmp_path / "pct.onnx", torch.from_numpy(_inputs((1, 48, 48), with_dpm)))
    session = onnx_session(onnx_path)
    for shape in ((2, 37, 53), (1, 64, 32)):
        x = _inputs(shape, with_dpm, seed=5)
        assert relative_error(run_onnx(session, x), _eager(net, x), x) <= TOLERANCE, shape
