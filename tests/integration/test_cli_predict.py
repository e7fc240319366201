"""``zaugnet predict`` end to end: shapes, dtypes, exact originals, voxel sizes, ZAugNet+ positions,
non-uniform input spacing, 4D stacks, classical methods, bad inputs, and (slow) a trained model
beating linear, cubic and spline interpolation on a held-out phantom."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile
import torch
from support import listing
from zaugnet.export.load import from_checkpoint

from zaugnet.cli import main
from zaugnet.evaluate.metrics import psnr
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack
from zaugnet.phantoms import simulate_stack

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "
VOXEL = VoxelSize(0.6, 0.2, 0.25, "um")


# --- helpers -------------------------------------------------------------------------------------


def predict(*args: object) -> int:
    """``zaugnet predict ARGS`` in-process, on the CPU (so results compare with CPU references), quietly.

    With ``--model`` and no ``--method`` the model itself is run (``--method model``): these tests check
    the model's path; ``--method auto`` (the default) is tested on its own.
    """
    argv = [*map(str, args)]
    if "--model" in argv and "--method" not in argv:
        argv += ["--method", "model"]
    return main(["predict", *argv, "--device", "cpu", "--quiet"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def smooth_volume(n: int, shape: tuple[int, int] = (40, 44), seed: int = 0, lo: float = 2000,
                  hi: float = 50000) -> np.ndarray:
    """A z-correlated float64 volume in [lo, hi]: drifting sinusoids plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    z = np.arange(n)[:, None, None]
    base = np.sin(yy / 5.0 + 0.4 * z + seed) * np.cos(xx / 7.0 - 0.3 * z) + 0.2 * rng.normal(size=(n, *shape))
    base = (base - base.min()) / (base.max() - base.min())
    return lo + (hi - lo) * base


def as_dtype(volume: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.rint(volume / volume.max() * 250).astype(np.uint8)
    if dtype == "uint16":
        return np.rint(volume).astype(np.uint16)
    return volume.astype(np.float32)


def write_input(path: Path, data: np.ndarray, axes: str = "ZYX", voxel: VoxelSize = VOXEL) -> Path:
    write_stack(path, data, axes, voxel)
    return path


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def imagej_spacing(path: Path) -> float:
    """z spacing as ImageJ stores it (read with tifffile, not with zaugnet)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        return float(tif.imagej_metadata["spacing"])


def ome_physical_sizes(path: Path) -> dict[str, float]:
    """PhysicalSizeZ/Y/X from the OME-XML (read with tifffile and ElementTree, not with zaugnet)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        root = ElementTree.fromstring(tif.ome_metadata)
    pixels = next(e for e in root.iter() if e.tag.endswith("Pixels"))
    return {axis: float(pixels.get(f"PhysicalSize{axis}")) for axis in "ZYX"}


def model_slice(ckpt: Path, first: np.ndarray, second: np.ndarray, z: float) -> np.ndarray:
    """One slice predicted by the checkpoint's network from a single pair, float32 in the input's units."""
    model = from_checkpoint(str(ckpt), device="cpu")
    return model.predict(first[None], second[None], [z])[0]


def error_line(err: str, *needles: str) -> str:
    """stderr is exactly one ``zaugnet: error:`` line containing every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith(PREFIX), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(input folder, output folder), both existing and separate."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    dst.mkdir()
    return src, dst


# --- ZAugNet: factor 2^k ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2])
def test_zaugnet_power_of_two_factor(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str], k: int) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(5), "uint16")
    inp = write_input(src / "stack.tif", data)
    before = sha256(inp)
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet"], "--factor", 2**k) == 0
    assert "wrote" in capsys.readouterr().out
    result = read_stack(out)
    n_out = 2**k * (5 - 1) + 1
    assert result.axes == "ZYX" and result.data.shape == (n_out, 40, 44) and result.data.dtype == np.uint16
    assert bitwise_equal(np.ascontiguousarray(result.data[:: 2**k]), data)
    assert result.voxel_size.z == pytest.approx(0.6 / 2**k)
    assert (result.voxel_size.y, result.voxel_size.x) == (pytest.approx(0.2), pytest.approx(0.25))
    assert imagej_spacing(out) == pytest.approx(0.6 / 2**k)
    # the midpoints of the first pass are the network's predictions from each original pair
    if k == 1:
        mid = model_slice(tiny_checkpoints["zaugnet"], data[1].astype(np.float32), data[2].astype(np.float32), 0.5)
        assert np.abs(result.data[3].astype(np.int64) - np.rint(mid)).max() <= 1
    assert sha256(inp) == before
    assert listing(dst) == ["aug.tif"]  # no temporary files left


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_dtype_and_originals_preserved(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                       dtype: str) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(4, seed=3), dtype)
    inp = write_input(src / f"{dtype}.tif", data)
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet"], "--factor", 2) == 0
    result = read_stack(out).data
    assert result.dtype == np.dtype(dtype) and result.shape == (7, 40, 44)
    assert bitwise_equal(np.ascontiguousarray(result[::2]), data)
    # new slices stay in the intensity units of their pair (the network's output is in [0, 1] per pair)
    for g in range(3):
        lo = min(float(data[g].min()), float(data[g + 1].min()))
        hi = max(float(data[g].max()), float(data[g + 1].max()))
        new = result[2 * g + 1].astype(np.float64)
        assert lo - 1 <= new.min() and new.max() <= hi + 1
        assert new.max() - new.min() > 0.2 * (hi - lo)  # not collapsed to [0, 1] or a constant


@pytest.mark.parametrize("in_suffix, out_suffix", [(".tif", ".ome.tif"), (".ome.tif", ".tif"),
                                                   (".ome.tif", ".ome.tif")])
def test_voxel_size_updated_in_imagej_and_ome(folders: tuple[Path, Path], in_suffix: str, out_suffix: str) -> None:
    src, dst = folders
    inp = write_input(src / f"stack{in_suffix}", as_dtype(smooth_volume(4), "uint16"))
    out = dst / f"aug{out_suffix}"
    assert predict(inp, "-o", out, "--method", "linear", "--factor", 4) == 0
    vs = read_stack(out).voxel_size
    assert (vs.z, vs.y, vs.x, vs.unit) == (pytest.approx(0.15), pytest.approx(0.2), pytest.approx(0.25), "um")
    if out_suffix == ".ome.tif":
        sizes = ome_physical_sizes(out)
        assert sizes == {"Z": pytest.approx(0.15), "Y": pytest.approx(0.2), "X": pytest.approx(0.25)}
    else:
        assert imagej_spacing(out) == pytest.approx(0.15)


# --- ZAugNet+: any factor, relative positions, non-uniform spacing ----------------------------------


def test_zaugnet_plus_factor_three(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(5, seed=1), "float32")
    inp = write_input(src / "stack.tif", data)
    out = dst / "aug.ome.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet+"], "--factor", 3) == 0
    result = read_stack(out)
    assert result.data.shape == (13, 40, 44) and result.data.dtype == np.float32
    assert bitwise_equal(np.ascontiguousarray(result.data[::3]), data)
    assert result.voxel_size.z == pytest.approx(0.2)
    tol = 1e-5 * float(data.max() - data.min())
    for gap in (0, 3):
        for j, z in ((1, 1 / 3), (2, 2 / 3)):
            expected = model_slice(tiny_checkpoints["zaugnet+"], data[gap], data[gap + 1], z)
            np.testing.assert_allclose(result.data[3 * gap + j], expected, rtol=0, atol=tol)
    # the two new slices of a gap differ (the DPM position reaches the network)
    assert np.abs(result.data[1] - result.data[2]).max() > 100 * tol


def test_zaugnet_plus_relative_positions(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(4, seed=2), "float32")
    inp = write_input(src / "stack.tif", data)
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet+"], "--z-positions", 0.25, 0.5, 0.75) == 0
    result = read_stack(out)
    assert result.data.shape == (13, 40, 44)
    assert bitwise_equal(np.ascontiguousarray(result.data[::4]), data)
    assert result.voxel_size.z == pytest.approx(0.15)
    tol = 1e-5 * float(data.max() - data.min())
    for j, z in ((1, 0.25), (2, 0.5), (3, 0.75)):
        expected = model_slice(tiny_checkpoints["zaugnet+"], data[1], data[2], z)
        np.testing.assert_allclose(result.data[4 + j], expected, rtol=0, atol=tol)


@pytest.mark.parametrize("as_file", [False, True])
def test_non_uniform_input_spacing(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                   as_file: bool) -> None:
    # input z = 0, 1, 3, 4 (um); target 0.5 -> grid 0, 0.5, ..., 4: 9 slices at input positions
    # 0, 0.5, 1, 1.25, 1.5, 1.75, 2, 2.5, 3 (the wide gap 1 -> 3 gets three new slices)
    src, dst = folders
    data = as_dtype(smooth_volume(4, seed=5), "float32")
    inp = write_input(src / "stack.tif", data, voxel=VoxelSize(1.0, 0.2, 0.2))
    input_z = "0,1,3,4"
    if as_file:
        (src / "z.txt").write_text("0\n1\n3\n4\n")
        input_z = str(src / "z.txt")
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet+"], "--target-spacing", 0.5,
                   "--input-z", input_z) == 0
    result = read_stack(out)
    assert result.data.shape == (9, 40, 44)
    assert result.voxel_size.z == pytest.approx(0.5)
    for k, i in ((0, 0), (2, 1), (6, 2), (8, 3)):
        assert bitwise_equal(result.data[k], data[i])
    tol = 1e-5 * float(data.max() - data.min())
    ckpt = tiny_checkpoints["zaugnet+"]
    for k, (i, z) in {1: (0, 0.5), 3: (1, 0.25), 4: (1, 0.5), 5: (1, 0.75), 7: (2, 0.5)}.items():
        np.testing.assert_allclose(result.data[k], model_slice(ckpt, data[i], data[i + 1], z), rtol=0, atol=tol)


def test_non_uniform_input_spacing_linear(folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(4, seed=6), "uint16")
    inp = write_input(src / "stack.tif", data)
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--method", "linear", "--target-spacing", 0.5, "--input-z", "0, 1, 3, 4") == 0
    result = read_stack(out).data.astype(np.int64)
    assert result.shape == (9, 40, 44)
    ref = data.astype(np.float64)
    expected = [ref[0], (ref[0] + ref[1]) / 2, ref[1], 0.75 * ref[1] + 0.25 * ref[2], (ref[1] + ref[2]) / 2,
                0.25 * ref[1] + 0.75 * ref[2], ref[2], (ref[2] + ref[3]) / 2, ref[3]]
    assert np.abs(result - np.array(expected)).max() <= 0.5 + 1e-3


def test_target_spacing_from_the_voxel_size(folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(5), "uint16")
    inp = write_input(src / "stack.tif", data)  # z 0.6
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--method", "cubic", "--target-spacing", 0.2) == 0
    result = read_stack(out)
    assert result.data.shape == (13, 40, 44) and result.voxel_size.z == pytest.approx(0.2)
    assert bitwise_equal(np.ascontiguousarray(result.data[::3]), data)


def test_small_tiles_equal_untiled(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(3, (48, 330), seed=8), "float32")
    inp = write_input(src / "wide.tif", data)
    whole, tiled = dst / "whole.tif", dst / "tiled.tif"
    ckpt = tiny_checkpoints["zaugnet"]
    assert predict(inp, "-o", whole, "--model", ckpt) == 0
    assert predict(inp, "-o", tiled, "--model", ckpt, "--tile", 64, "--halo", 128, "--batch-size", 3) == 0
    a, b = read_stack(whole).data, read_stack(tiled).data
    assert a.shape == b.shape == (5, 48, 330)
    assert np.abs(a - b).max() <= 1e-4 * float(data.max() - data.min())
    assert bitwise_equal(np.ascontiguousarray(b[::2]), data)


# --- 4D stacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("axes, suffix, variant, extra, n_out", [
    ("TZYX", ".tif", "zaugnet", ["--factor", "4"], 13),
    ("TZYX", ".ome.tif", "zaugnet+", ["--z-positions", "0.25", "0.5", "0.75"], 13),
    ("ZCYX", ".ome.tif", "zaugnet", ["--factor", "2"], 7),
    ("ZCYX", ".tif", "zaugnet+", ["--factor", "3"], 10),
])
def test_4d_stacks_are_predicted_per_volume(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                            axes: str, variant: str, extra: list[str], n_out: int,
                                            suffix: str) -> None:
    src, dst = folders
    volumes = [as_dtype(smooth_volume(4, (32, 36), seed=s), "uint16") for s in (10, 11)]
    data = np.stack(volumes, axis=axes.index("T" if "T" in axes else "C"))
    inp = write_input(src / f"stack{suffix}", data, axes)
    out = dst / f"aug{suffix}"
    ckpt = tiny_checkpoints[variant]
    assert predict(inp, "-o", out, "--model", ckpt, *extra) == 0
    result = read_stack(out)
    assert result.axes == axes
    outer = axes.index("T" if "T" in axes else "C")
    expected_shape = list(data.shape)
    expected_shape[axes.index("Z")] = n_out
    assert result.data.shape == tuple(expected_shape) and result.data.dtype == np.uint16
    assert result.voxel_size.z == pytest.approx(0.6 * 3 / (n_out - 1))
    for i, volume in enumerate(volumes):
        alone_in = write_input(src / f"alone_{i}.tif", volume)
        alone_out = dst / f"alone_{i}.tif"
        assert predict(alone_in, "-o", alone_out, "--model", ckpt, *extra) == 0
        alone = read_stack(alone_out).data
        assert bitwise_equal(np.ascontiguousarray(np.take(result.data, i, axis=outer)), alone)


# --- classical methods --------------------------------------------------------------------------


def test_method_linear_and_cubic_by_hand(folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(5, seed=7), "float32")
    inp = write_input(src / "stack.tif", data)
    a = data.astype(np.float64)
    for method in ("linear", "cubic"):
        out = dst / f"{method}.tif"
        assert predict(inp, "-o", out, "--method", method) == 0
        result = read_stack(out).data
        assert result.shape == (9, 40, 44) and result.dtype == np.float32
        assert bitwise_equal(np.ascontiguousarray(result[::2]), data)
        padded = np.concatenate([a[:1], a, a[-1:]])  # edge slices repeated (index shift of 1)
        for g in range(4):
            if method == "linear":
                expected = (a[g] + a[g + 1]) / 2
            else:
                expected = (-padded[g] + 9 * padded[g + 1] + 9 * padded[g + 2] - padded[g + 3]) / 16
            np.testing.assert_allclose(result[2 * g + 1], expected, rtol=1e-6, atol=1e-6 * a.max())


def test_cubic_overshoot_is_clipped_to_uint8(folders: tuple[Path, Path]) -> None:
    src, dst = folders
    profile = np.array([0, 0, 255, 255, 0, 0], dtype=np.float64)
    data = (profile[:, None, None] * np.ones((1, 16, 16))).astype(np.uint8)
    inp = write_input(src / "step.tif", data)
    out = dst / "aug.tif"
    assert predict(inp, "-o", out, "--method", "cubic") == 0
    result = read_stack(out).data
    assert result.dtype == np.uint8
    # Keys midpoints: (-p[i-1] + 9 p[i] + 9 p[i+1] - p[i+2]) / 16 -> -15.9 (gap 0-1), 271.9 (gap 2-3)
    padded = np.concatenate([profile[:1], profile, profile[-1:]])
    mids = [(-padded[g] + 9 * padded[g + 1] + 9 * padded[g + 2] - padded[g + 3]) / 16 for g in range(5)]
    assert min(mids) < 0 and max(mids) > 255
    assert result[1::2, 0, 0].tolist() == np.clip(np.rint(mids), 0, 255).astype(int).tolist()
    assert bitwise_equal(np.ascontiguousarray(result[::2]), data)


# --- bad input -----------------------------------------------------------------------------------


def _stack(src: Path, n: int = 5) -> Path:
    return write_input(src / "stack.tif", as_dtype(smooth_volume(n), "uint16"))


def case_single_slice(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    path = src / "one.tif"
    tifffile.imwrite(path, as_dtype(smooth_volume(1), "uint16"), imagej=True, metadata={"axes": "ZYX"})
    return path, ["--method", "linear"], ["one.tif"]


def case_2d(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    path = src / "plane.tif"
    tifffile.imwrite(path, as_dtype(smooth_volume(1), "uint16")[0])
    return path, ["--method", "linear"], ["plane.tif", "2D"]


def case_input_z_count(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--target-spacing", "0.3", "--input-z", "0,1,2"], ["--input-z"]


def case_input_z_not_increasing(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--target-spacing", "0.3", "--input-z", "0,1,3,2,4"], ["--input-z"]


def case_input_z_repeated(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--target-spacing", "0.3", "--input-z", "0,1,1,2,3"], ["--input-z"]


def case_target_spacing_too_large(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--target-spacing", "0.9"], ["--target-spacing"]


def case_target_spacing_equal(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--target-spacing", "0.6"], ["--target-spacing"]


def case_model_text_file(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    model = src / "notes.pt"
    model.write_text("this is not a model\n")
    return _stack(src), ["--model", str(model)], ["notes.pt"]


def case_model_tiff_renamed(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    stack = _stack(src)
    model = src / "image.pt"
    model.write_bytes(stack.read_bytes())
    return stack, ["--model", str(model)], ["image.pt"]


def case_model_without_format_tag(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    model = src / "weights.pt"
    state = torch.load(ckpts["zaugnet"], map_location="cpu", weights_only=True)
    state.pop("format")
    torch.save(state, model)
    return _stack(src), ["--model", str(model)], ["weights.pt"]


def case_model_missing(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--model", str(src / "absent.pt")], ["absent.pt"]


def case_zaugnet_factor_3(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--model", str(ckpts["zaugnet"]), "--factor", "3"], ["--factor", "ZAugNet+"]


def case_zaugnet_z_positions(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--model", str(ckpts["zaugnet"]), "--z-positions", "0.3"], ["--z-positions", "ZAugNet+"]


def case_factor_one(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--method", "linear", "--factor", "1"], ["--factor"]


def case_bad_z_positions(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--model", str(ckpts["zaugnet+"]), "--z-positions", "0.5", "1.2"], ["--z-positions"]


def case_missing_input(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return src / "absent.tif", ["--method", "linear"], ["absent.tif"]


def case_tile_not_multiple_of_16(src: Path, ckpts: dict[str, Path]) -> tuple[Path, list[str], list[str]]:
    return _stack(src), ["--model", str(ckpts["zaugnet"]), "--tile", "40"], ["--tile"]


CASES = [case_single_slice, case_2d, case_input_z_count, case_input_z_not_increasing, case_input_z_repeated,
         case_target_spacing_too_large,
         case_target_spacing_equal,
         case_model_text_file,
         case_model_tiff_renamed,
         case_model_without_format_tag, case_model_missing, case_zaugnet_factor_3, case_zaugnet_z_positions,
         case_factor_one, case_bad_z_positions, case_missing_input,
         case_tile_not_multiple_of_16]


@pytest.mark.parametrize("make", CASES)
def test_bad_input_is_refused(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                              capsys: pytest.CaptureFixture[str], make) -> None:
    src, dst = folders
    inp, options, needles = make(src, tiny_checkpoints)
    before = {p.name: sha256(p) for p in src.iterdir()}
    out = dst / "aug.tif"
    code = predict(inp, "-o", out, *options)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR, err
    error_line(err, *needles)
    assert listing(dst) == []  # no output, no temporary file
    assert {p.name: sha256(p) for p in src.iterdir()} == before


def test_both_model_and_method_give_one_error_line(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    code = predict(inp, "-o", dst / "aug.tif", "--model", tiny_checkpoints["zaugnet"], "--method", "linear")
    assert code == EXIT_INPUT_ERROR
    error_line(capsys.readouterr().err, "--model", "--method")


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--batch-size", "-1"], ["--halo", "-16", "--tile", "16"]])
def test_bad_numeric_model_options_are_refused(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    code = predict(inp, "-o", dst / "aug.tif", "--model", tiny_checkpoints["zaugnet"], *option)
    assert code == EXIT_INPUT_ERROR
    error_line(capsys.readouterr().err, option[0])
    assert listing(dst) == []


def test_bad_output_name_leaves_nothing(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    assert predict(inp, "-o", dst / "aug.png", "--method", "linear") == EXIT_INPUT_ERROR
    error_line(capsys.readouterr().err, "aug.png")
    assert listing(dst) == []


# --- never overwrite the input; existing outputs only with --overwrite ------------------------------


def test_existing_output_needs_overwrite(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    out = dst / "aug.tif"
    out.write_bytes(b"previous")
    assert predict(inp, "-o", out, "--method", "linear") == EXIT_INPUT_ERROR
    error_line(capsys.readouterr().err, "aug.tif", "--overwrite")
    assert out.read_bytes() == b"previous"
    assert predict(inp, "-o", out, "--method", "linear", "--overwrite") == 0
    assert read_stack(out).data.shape == (9, 40, 44)
    assert listing(dst) == ["aug.tif"]


def test_input_is_never_overwritten(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    before = sha256(inp)
    link = dst / "link.tif"
    os.symlink(inp, link)
    for target in (inp, src / ".." / "in" / "stack.tif", link):
        assert predict(inp, "-o", target, "--method", "linear", "--overwrite") == EXIT_INPUT_ERROR
        error_line(capsys.readouterr().err, "input")
        assert sha256(inp) == before
    assert listing(src) == ["stack.tif"]


def test_input_unchanged_after_model_prediction(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path]) -> None:
    src, dst = folders
    inp = write_input(src / "stack.ome.tif", as_dtype(smooth_volume(5), "uint16"))
    before, mtime = sha256(inp), inp.stat().st_mtime_ns
    assert predict(inp, "-o", dst / "aug.ome.tif", "--model", tiny_checkpoints["zaugnet+"], "--factor", 3) == 0
    assert sha256(inp) == before and inp.stat().st_mtime_ns == mtime
    assert listing(src) == ["stack.ome.tif"]


# --- a real subprocess -------------------------------------------------------------------------


def test_subprocess_predict(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path]) -> None:
    src, dst = folders
    data = as_dtype(smooth_volume(4), "uint16")
    inp = write_input(src / "stack.tif", data)
    out = dst / "aug.tif"
    run = subprocess.run([sys.executable, "-m", "zaugnet", "predict", str(inp), "-o", str(out), "--model",
                          str(tiny_checkpoints["zaugnet"]), "--factor", "4", "--device", "cpu", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout
    result = read_stack(out)
    assert result.data.shape == (13, 40, 44) and result.voxel_size.z == pytest.approx(0.15)
    assert bitwise_equal(np.ascontiguousarray(result.data[::4]), data)
    assert listing(dst) == ["aug.tif"]


# --- real data ---------------------------------------------------------------------------------


def test_real_stack(tiny_checkpoints: dict[str, Path], shared_data: Path, tmp_path: Path) -> None:
    inp = shared_data / "neubias_chromosomes.tif"
    if not inp.is_file():
        pytest.skip(f"{inp.name} not in {shared_data}")
    before = sha256(inp)
    original = read_stack(inp)
    out = tmp_path / "chromosomes_x2.tif"
    assert predict(inp, "-o", out, "--model", tiny_checkpoints["zaugnet"], "--factor", 2) == 0
    result = read_stack(out)
    n, h, w = original.data.shape
    assert result.axes == "ZYX" and result.data.shape == (2 * n - 1, h, w)
    assert result.data.dtype == original.data.dtype == np.uint16
    assert bitwise_equal(np.ascontiguousarray(result.data[::2]), np.asarray(original.data))
    assert result.voxel_size.z == pytest.approx(original.voxel_size.z / 2, rel=1e-6)
    assert result.voxel_size.y == pytest.approx(original.voxel_size.y, rel=1e-6)
    assert result.voxel_size.x == pytest.approx(original.voxel_size.x, rel=1e-6)
    assert sha256(inp) == before


# --- --method auto, the context variant, the figure -------------------------------------------------
def known_checkpoint(path: Path, variant: str, behaviour: str) -> Path:
    """A checkpoint of the tiny network whose student, whatever its other weights, returns slice_0 (the slice
    before the gap: ``"copy"``) or 0 (``"zero"``) in the gap's normalised units.

    ZAugNet (and ZAugNet-C's flow branch): each flow block's last layer gives no flow and a mask logit of +30,
    so the blend is slice_0 alone; the refinement U-Net's output layer gives a residual of 0, or of -1 for
    ``"zero"`` (the clamp to [0, 1] then gives 0). ZAugNet-C: the head is a chain of centre-tap identities
    (PReLU slopes 1) computing slice_0 - cubic (``"copy"``) or -cubic (``"zero"``), which the network adds to
    its cubic estimate.
    """
    from support import tiny_config
    from zaugnet.training.checkpoint import save_checkpoint
    from zaugnet.training.nets import Generator

    cfg = tiny_config(variant)
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in Generator(cfg.net).state_dict().items()}
    flow = "student."
    if variant == "zaugnet-c":
        k, flow = cfg.net.n_slices, "student.flow."
        for i in range(4):
            weight = state[f"student.head.{i}.0.weight"].zero_()
            state[f"student.head.{i}.0.bias"].zero_()
            state[f"student.head.{i}.1.weight"].fill_(1.0)
            if i:
                weight[0, 0, 1, 1] = 1.0
            else:  # inputs: K slices, the DPM, the cubic estimate, the flow branch's prediction
                weight[0, k + 1, 1, 1] = -1.0
                weight[0, k // 2 - 1, 1, 1] = 1.0 if behaviour == "copy" else 0.0
        state["student.head.4.weight"].zero_()[0, 0, 1, 1] = 1.0
        state["student.head.4.bias"].zero_()
    for i in range(3):
        state[f"{flow}blocks.{i}.last.weight"].zero_()
        state[f"{flow}blocks.{i}.last.bias"].copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 30.0]))
    state[f"{flow}unet.out.weight"].zero_()
    state[f"{flow}unet.out.bias"].fill_(-30.0 if behaviour == "zero" and variant != "zaugnet-c" else 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, {"config": cfg.to_dict(), "generator": state, "step": 0})


def _paired_stack(src: Path, n: int = 9) -> Path:
    """uint16 slices in pairs (each unrelated image twice, with a little noise): with every other slice held
    out, the slice before each gap is right and cubic interpolation between two unrelated images is not."""
    rng = np.random.default_rng(5)
    images = rng.uniform(2000, 50000, size=((n + 1) // 2, 40, 44))
    data = np.repeat(images, 2, axis=0)[:n] + rng.normal(0, 20, size=(n, 40, 44))
    return write_input(src / "stack.tif", np.rint(data).astype(np.uint16))


def _cubic_in_z_stack(src: Path, n: int = 9) -> Path:
    """uint16, every (y, x) column a cubic polynomial in z (rounded): the not-a-knot spline through the kept slices
    reproduces it (up to the rounding) on every held-out slice; Keys cubic only inside (its (-1, 9, 9, -1) / 16 stencil
    is the cubic through four slices), not in the first and last gaps, where it repeats the edge slice."""
    yy, xx = np.mgrid[:40, :44].astype(np.float64)
    z = np.arange(n, dtype=np.float64)[:, None, None] - (n - 1) / 2
    data = (25000 + 8000 * np.sin(xx / 5) * np.cos(yy / 7) + (300.3 + 10.1 * yy) * z - (150.7 + 5.3 * xx) * z**2
            + (60.1 + 1.3 * yy) * z**3)
    return write_input(src / "stack.tif", np.rint(data).astype(np.uint16))


def _noisy_stack(src: Path, n: int = 9) -> Path:
    """uint16, one image in every slice plus independent noise: the mean of the two slices around a held-out one is
    the least noisy guess of it (its error variance 1.5 noise variances; Keys' and the spline's stencils more)."""
    yy, xx = np.mgrid[:40, :44]
    data = 20000 + 5000 * np.sin(xx / 6) * np.cos(yy / 9) + np.random.default_rng(0).normal(0, 500, (n, 40, 44))
    return write_input(src / "stack.tif", np.rint(data).astype(np.uint16))


@pytest.mark.parametrize("variant", ["zaugnet", "zaugnet-c"])
@pytest.mark.parametrize(("behaviour", "make_stack", "chosen"), [
    pytest.param("copy", _paired_stack, "model", id="copy-paired"),
    pytest.param("zero", _cubic_in_z_stack, "spline", id="zero-cubic-in-z"),
    pytest.param("zero", _noisy_stack, "linear", id="zero-noisy"),
])
def test_auto_reports_its_self_check_and_uses_what_it_chose(variant: str, behaviour: str, make_stack: object,
                                                           chosen: str, folders: tuple[Path, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A model built to be right on the stack (copying the slice before each gap, on slices in pairs) is used alone;
    one built to be wrong (zeros) is not used at all, not even in a mix, and the classical method that is best on
    the stack by construction is used instead: the spline on cubics in z, linear on noise around one image. The
    output is bitwise that of --method model, resp. of that classical method, and differs from the others'."""
    src, dst = folders
    ckpt = known_checkpoint(src.parent / "models" / f"{behaviour}.pt", variant, behaviour)
    inp = make_stack(src)  # type: ignore[operator]
    outs = {}
    for method in ("auto", "model", "linear", "cubic", "spline"):
        outs[method] = dst / f"{method}.tif"
        model = ["--model", ckpt] if method in ("auto", "model") else []
        assert predict(inp, "-o", outs[method], *model, "--method", method, "--factor", 2) == 0
    err = capsys.readouterr().err
    line = next(text for text in err.splitlines() if text.startswith("self-check"))
    # 9 slices: the 4 odd ones held out at twice the spacing, and 2 of volume[::2] at four times
    assert "held-out slices predicted at twice / four times the spacing (4 at twice;" in line, line
    if chosen == "model":
        assert f"; {variant} +" in line and f"; best mix 1.00 {variant} (+" in line, line
        assert line.endswith(f" extrapolated to the real spacing); using {variant}"), line
    else:
        assert f"; {variant} -" in line and f" dB over {chosen}; " in line, line
        assert line.endswith(f"; no mix with {variant} beats {chosen} alone; using {chosen} interpolation"), line
    got = {method: read_stack(path).data for method, path in outs.items()}
    assert bitwise_equal(got["auto"], got[chosen])
    assert not any(bitwise_equal(got["auto"], got[other]) for other in got if other not in ("auto", chosen))


def test_auto_and_figure_need_a_tiff_output(tiny_checkpoints: dict[str, Path], folders: tuple[Path, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = folders
    inp = _stack(src)
    for extra, needle in ((["--method", "auto"], "--method auto"), (["--method", "model", "--figure",
                                                                     dst / "f.png"], "--figure")):
        code = predict(inp, "-o", dst / "out.zarr", "--model", tiny_checkpoints["zaugnet"], *extra)
        assert code == EXIT_INPUT_ERROR
        error_line(capsys.readouterr().err, needle)
    assert listing(dst) == []


def test_figure_shows_the_stack_before_and_after(folders: tuple[Path, Path]) -> None:
    src, dst = folders
    inp = _stack(src)
    figure = dst / "views.png"
    assert predict(inp, "-o", dst / "out.tif", "--method", "cubic", "--factor", 4, "--figure", figure) == 0
    from matplotlib.image import imread

    image = imread(figure)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and float(image[..., :3].std()) > 0.05


# --- slow: a trained model beats linear, cubic and spline on a held-out phantom ------------------


@pytest.mark.slow
def test_trained_model_beats_linear_cubic_and_spline(small_model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    truth = simulate_stack((17, 96, 96), kind="membrane", seed=42, z_step_um=0.6)
    inp = write_input(tmp_path / "every_second.tif", truth[::2], voxel=VoxelSize(1.2, 0.2, 0.2))
    data_range = float(truth.max()) - float(truth.min())
    scores, results = {}, {}
    for name, how in (("model", ["--model", small_model / "final.pt"]), ("linear", ["--method", "linear"]),
                      ("cubic", ["--method", "cubic"]), ("spline", ["--method", "spline"]),
                      ("auto", ["--model", small_model / "final.pt", "--method", "auto"])):
        out = tmp_path / f"{name}.tif"
        assert predict(inp, "-o", out, *how, "--factor", 2) == 0
        result = read_stack(out)
        assert result.data.shape == truth.shape and result.voxel_size.z == pytest.approx(0.6)
        assert bitwise_equal(np.ascontiguousarray(result.data[::2]), truth[::2])
        results[name] = result.data
        scores[name] = float(np.mean([psnr(result.data[i], truth[i], data_range) for i in range(1, 17, 2)]))
    print("mean PSNR on the removed slices (dB): " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    assert scores["model"] > scores["linear"], scores
    assert scores["model"] > scores["cubic"], scores
    assert scores["model"] > scores["spline"], scores
    # the model beats every classical method here, so --method auto must have found that on the input and used it,
    # alone or mixed with the best classical method on the check; either way it beats every classical method too
    line = next(text for text in capsys.readouterr().err.splitlines() if text.startswith("self-check"))
    assert "held-out slices predicted at twice / four times the spacing (4 at twice;" in line, line
    used = re.search(r"; using (?:(\d\.\d\d) zaugnet \+ \d\.\d\d (linear|cubic|spline)|zaugnet)$", line)
    assert used is not None and "; zaugnet +" in line, line
    weight, classical = (float(used[1]), used[2]) if used[1] else (1.0, "linear")
    assert weight >= 0.5, line
    mixed = weight * results["model"].astype(np.float64) + (1 - weight) * results[classical].astype(np.float64)
    assert np.abs(results["auto"] - mixed).max() <= 1.0  # each output rounded to uint16 on its own
    assert scores["auto"] > max(scores["linear"], scores["cubic"], scores["spline"]), scores


def test_zarr_output_is_written_out_of_core_and_equals_the_tiff_result(tiny_checkpoints: dict[str, Path],
                                                                         phantom_dir: Path, tmp_path: Path) -> None:
    """``-o OUT.zarr`` goes through the block-wise dask path and gives the in-memory result."""
    from zaugnet.io.omezarr import read_ome_zarr

    src = sorted(phantom_dir.glob("*.tif"))[0]
    ckpt = str(tiny_checkpoints["zaugnet+"])
    common = ["--model", ckpt, "--method", "model", "--factor", "3", "--quiet", "--tile", "32"]
    assert main(["predict", str(src), "-o", str(tmp_path / "a.tif"), *common]) == 0
    assert main(["predict", str(src), "-o", str(tmp_path / "a.zarr"), *common]) == 0
    tif, zarr = read_stack(tmp_path / "a.tif"), read_ome_zarr(tmp_path / "a.zarr")
    assert zarr.data.shape == tif.data.shape and zarr.data.dtype == tif.data.dtype
    span = float(tif.data.max()) - float(tif.data.min())
    assert np.abs(zarr.data.astype(float) - tif.data).max() <= 1 + 1e-4 * span
    assert zarr.voxel_size.z == pytest.approx(tif.voxel_size.z)


def test_zarr_output_keeps_the_axes_given_for_a_tiff_input(tmp_path: Path) -> None:
    """``--axes`` reaches the out-of-core reader too: a bare (Z, C, Y, X) TIFF read as ZCYX is augmented
    along its 4 z-slices per channel, as the in-memory path does."""
    from zaugnet.io.omezarr import read_ome_zarr

    data = np.random.default_rng(3).integers(0, 1000, (4, 2, 24, 24)).astype(np.uint16)
    src = tmp_path / "bare.tif"
    tifffile.imwrite(src, data)  # no axes metadata: the reader would guess
    common = ["--axes", "ZCYX", "--method", "linear", "--factor", "2", "--quiet"]
    assert main(["predict", str(src), "-o", str(tmp_path / "a.tif"), *common]) == 0
    assert main(["predict", str(src), "-o", str(tmp_path / "a.zarr"), *common]) == 0
    tif, zarr = read_stack(tmp_path / "a.tif"), read_ome_zarr(tmp_path / "a.zarr")
    assert tif.data.shape[tif.axes.index("Z")] == 7
    assert zarr.data.shape == tif.data.shape and np.array_equal(zarr.data, tif.data)
