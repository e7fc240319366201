"""The CLI refuses hostile or mistaken requests with one line and exit 2, before any work, and leaves
nothing behind: non-finite numbers, impossible sizes, outputs that cannot be written, a figure that
cannot be drawn, a model that cannot serve the factor, SIGTERM during a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import listing

from zaugnet.cli import main
from zaugnet.io.tiff import VoxelSize, write_stack

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "
VOXEL = VoxelSize(0.6, 0.2, 0.2, "um")


def _stack(folder: Path, n: int = 9, shape: tuple[int, int] = (32, 32), constant: bool = False,
           name: str = "stack.tif") -> Path:
    rng = np.random.default_rng(n)
    data = np.full((n, *shape), 700, np.uint16) if constant else rng.integers(100, 4000, (n, *shape), np.uint16)
    return write_stack(folder / name, data, "ZYX", VOXEL)


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    """Run ``zaugnet ARGV``; assert exit 2 with one ``zaugnet: error:`` line that names each of ``names``."""
    try:
        code = main(argv)
    except SystemExit as exc:  # refused while the options were parsed
        code = exc.code
    assert code == EXIT_INPUT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(PREFIX), err
    for name in names:
        assert name in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("option, values", [
    ("--z-positions", ["nan"]), ("--z-positions", ["0.5", "inf"]), ("--target-spacing", ["nan"]),
    ("--target-spacing", ["-inf"]), ("--factor", ["nan"]), ("--input-z", ["nan"]),
])
def test_non_finite_numbers_are_refused_where_parsed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, values: list[str]) -> None:
    stack = _stack(tmp_path)
    out = tmp_path / "out" / "x.tif"
    _refused(capsys, ["predict", str(stack), "-o", str(out), "--method", "linear", option, *values], option)
    assert not out.parent.exists()


def test_non_finite_input_z_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path, n=3)
    out = tmp_path / "x.tif"
    _refused(capsys, ["predict", str(stack), "-o", str(out), "--method", "cubic", "--target-spacing", "0.2",
                      "--input-z", "0,nan,1.2"], "--input-z", "finite")
    assert not out.exists()


def test_a_spacing_that_would_make_millions_of_slices_is_refused_before_allocating(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    line = _refused(capsys, ["predict", str(stack), "-o", str(tmp_path / "x.tif"), "--method", "linear",
                             "--target-spacing", "1e-7"], "--target-spacing")
    assert "48,000,001 output slices" in line  # 8 gaps of 0.6 um at 1e-7 um


def test_a_result_larger_than_memory_is_refused_with_the_out_of_core_advice(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path, n=3, shape=(1024, 1024))
    line = _refused(capsys, ["predict", str(stack), "-o", str(tmp_path / "x.tif"), "--method", "linear",
                             "--factor", "49999"], "x.tif", "memory")  # 99,999 slices of 2 MB: 200 GB
    assert ".zarr" in line
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.parametrize("output", ["views.png", "out.tif.gz", "out"])
def test_an_output_that_is_not_a_stack_is_refused_before_the_model_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str) -> None:
    stack = _stack(tmp_path)
    # the model does not exist: refusing the output first proves the model was never looked at
    _refused(capsys, ["predict", str(stack), "-o", str(tmp_path / output), "--model", str(tmp_path / "no.pt")],
             output, "must end with .tif")


def test_an_output_below_a_regular_file_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for output in (blocker / "x.tif", blocker / "sub" / "x.zarr"):
        _refused(capsys, ["predict", str(stack), "-o", str(output), "--model", str(tmp_path / "no.pt")],
                 "is a file, not a folder")
    _refused(capsys, ["evaluate", str(stack), "-o", str(blocker)], str(blocker), "is a file")


def test_a_figure_that_cannot_be_written_leaves_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "out.tif"
    _refused(capsys, ["predict", str(stack), "-o", str(out), "--method", "cubic", "--figure",
                      str(blocker / "views.png")], "views.png")
    _refused(capsys, ["predict", str(stack), "-o", str(out), "--method", "cubic", "--figure",
                      str(tmp_path / "views.pdf")], "views.pdf", ".png")
    assert not out.exists()
    assert listing(tmp_path) == ["file", "stack.tif"]


def test_figure_and_output_are_written_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    out, figure = tmp_path / "out.tif", tmp_path / "views.png"
    assert main(["predict", str(stack), "-o", str(out), "--method", "cubic", "--figure", str(figure),
                 "--quiet"]) == 0
    assert out.stat().st_size > 0 and figure.read_bytes()[:4] == b"\x89PNG"
    assert listing(tmp_path) == ["out.tif", "stack.tif", "views.png"]  # no temporary file left


def test_a_midpoint_model_and_factor_3_is_refused_naming_the_factor_before_the_self_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoints: dict[str, Path]) -> None:
    stack = _stack(tmp_path)
    out = tmp_path / "x.tif"
    line = _refused(capsys, ["predict", str(stack), "-o", str(out), "--model", str(tiny_checkpoints["zaugnet"]),
                             "--factor", "3", "--device", "cpu"], "--factor", "only midpoints")
    assert "self-check" not in line
    line = _refused(capsys, ["predict", str(stack), "-o", str(out), "--model", str(tiny_checkpoints["zaugnet"]),
                             "--factor", "2048", "--device", "cpu"], "--factor", "11 midpoint passes")
    assert "power of two" not in line
    _refused(capsys, ["predict", str(stack), "-o", str(out), "--model", str(tiny_checkpoints["zaugnet"]),
                      "--z-positions", "0.3", "--device", "cpu"], "--z-positions", "only midpoints")
    assert not out.exists()


def test_an_unknown_device_is_blamed_on_the_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    _refused(capsys, ["predict", str(stack), "-o", str(tmp_path / "x.tif"), "--model", str(tmp_path / "no.pt"),
                      "--device", "foo"], "--device", "'foo'")


def test_restart_applies_to_zarr_outputs_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(tmp_path)
    _refused(capsys, ["predict", str(stack), "-o", str(tmp_path / "x.tif"), "--method", "cubic", "--restart"],
             "--restart", ".zarr")


def test_weight_format_choices_are_the_loaders() -> None:
    from zaugnet.export.load import WEIGHT_FORMATS as LOADER_FORMATS

    from zaugnet.cli import WEIGHT_FORMATS

    assert set(WEIGHT_FORMATS) == set(LOADER_FORMATS) == {"pytorch_state_dict", "onnx", "torchscript"}


def test_classical_method_choices_are_the_baselines() -> None:
    from zaugnet.cli import CLASSICAL
    from zaugnet.predict.baselines import BASELINES

    assert CLASSICAL == BASELINES == ("linear", "cubic", "spline")


def test_a_constant_stack_is_reported_as_constant_not_as_too_short(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoints: dict[str, Path]) -> None:
    stack = _stack(tmp_path, constant=True)
    assert main(["predict", str(stack), "-o", str(tmp_path / "x.tif"), "--model", str(tiny_checkpoints["zaugnet"]),
                 "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "the volume is constant (every voxel 700)" in err and "fewer than" not in err


def test_evaluate_leaves_nothing_when_a_later_stack_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _stack(tmp_path / "in", name="a.tif")
    flat = _stack(tmp_path / "in", constant=True, name="b.tif")
    out = tmp_path / "results"
    _refused(capsys, ["evaluate", str(good), str(flat), "-o", str(out)], "b.tif", "constant")
    assert not out.exists()
    assert listing(tmp_path) == ["in", "in/a.tif", "in/b.tif"]


def test_export_refuses_an_archive_name_and_a_figure_that_is_not_an_image(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoints: dict[str, Path]) -> None:
    checkpoint = str(tiny_checkpoints["zaugnet"])
    _refused(capsys, ["export", checkpoint, "-o", str(tmp_path / "out.tar.gz")], "out.tar.gz", ".zip")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    _refused(capsys, ["export", checkpoint, "-o", str(tmp_path / "pkg.zip"), "--figure", str(notes)],
             "notes.txt", "PNG or JPEG")
    assert listing(tmp_path) == ["notes.txt"]


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path: Path,
                                                     tiny_checkpoints: dict[str, Path]) -> None:
    """A job scheduler's SIGTERM during the model's pass: exit 143, no output, no temporary file."""
    stack = _stack(tmp_path / "in", n=33, shape=(256, 256))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zaugnet", "predict", str(stack), "-o", str(out_dir / "x.tif"), "--model",
         str(tiny_checkpoints["zaugnet+"]), "--factor", "64", "--device", "cpu", "--batch-size", "1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen = ""
    while "new slices" not in seen and time.monotonic() < deadline:  # the progress bar of the model
        seen += proc.stderr.read(1)
    assert "new slices" in seen, seen
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 143, seen + rest
    assert "zaugnet: terminated" in rest
    assert listing(out_dir) == []
    assert not [p for p in Path("/tmp").glob(f"zaugnet-model-{proc.pid}-*")]
