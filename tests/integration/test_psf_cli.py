"""``zaugnet psf simulate``: a simulated PSF on disk, and one-line refusals of bad options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import listing

from zaugnet.cli import main
from zaugnet.deconv.psf import confocal_psf, widefield_psf
from zaugnet.io.tiff import read_stack

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "
OPTICS = ["--na", "1.2", "--wavelength", "0.461", "--ni", "1.333", "--ns", "1.36", "--dz", "0.499",
          "--dxy", "0.512"]


def simulate(out: Path, *extra: str, optics: list[str] = OPTICS, shape: tuple[str, ...] = ("9", "17", "17")) -> int:
    return main(["psf", "simulate", *optics, "--shape", *shape, "-o", str(out), *extra])


def exit_code(argv: list[str]) -> int | str | None:
    """``main(argv)``'s status, also where argparse refuses the options while parsing them (SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith(PREFIX), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def test_writes_a_widefield_psf_with_its_voxel_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "psf.tif"

    code = simulate(out)

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out) in captured.out
    stack = read_stack(out)
    assert stack.axes == "ZYX" and stack.data.shape == (9, 17, 17) and stack.data.dtype == np.float32
    assert stack.voxel_size.z == pytest.approx(0.499) and stack.voxel_size.unit == "um"
    assert stack.voxel_size.y == pytest.approx(0.512) and stack.voxel_size.x == pytest.approx(0.512)
    assert float(stack.data.sum()) == pytest.approx(1.0, abs=1e-5)
    expected = widefield_psf((9, 17, 17), 0.499, 0.512, na=1.2, wavelength=0.461, ni=1.333, ns=1.36)
    np.testing.assert_array_equal(stack.data, expected)


def test_writes_a_confocal_psf(tmp_path: Path) -> None:
    out = tmp_path / "confocal.tif"

    assert simulate(out, "--confocal", "--excitation", "0.405") == 0

    expected = confocal_psf((9, 17, 17), 0.499, 0.512, na=1.2, wavelength=0.461, excitation=0.405, ni=1.333,
                            ns=1.36)
    np.testing.assert_array_equal(read_stack(out).data, expected)


def test_overwrite_replaces_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "psf.tif"
    out.write_bytes(b"old")

    assert simulate(out) == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, str(out), "--overwrite")
    assert out.read_bytes() == b"old"
    assert simulate(out, "--overwrite") == 0
    assert read_stack(out).data.shape == (9, 17, 17)


@pytest.mark.parametrize(("extra", "shape", "optics", "needles"), [
    ((), ("8", "17", "17"), OPTICS, ("--shape", "odd")),
    ((), ("9", "17", "2001"), OPTICS, ("--shape", "at most")),
    ((), ("9", "17"), OPTICS, ("--shape",)),
    ((), ("9", "17", "17"), [*OPTICS, "--na", "1.4"], ("--na", "below")),
    ((), ("9", "17", "17"), [*OPTICS, "--na", "nan"], ("--na", "finite")),
    ((), ("9", "17", "17"), [*OPTICS, "--wavelength", "-0.5"], ("--wavelength",)),
    ((), ("9", "17", "17"), [*OPTICS, "--dxy", "0"], ("--dxy",)),
    ((), ("9", "17", "17"), [*OPTICS, "--depth", "-3"], ("--depth",)),
    ((), ("9", "17", "17"), OPTICS[2:], ("--na",)),  # missing --na
    (("--excitation", "0.405"), ("9", "17", "17"), OPTICS, ("--excitation", "--confocal")),
    (("--confocal",), ("9", "17", "17"), OPTICS, ("--confocal", "--excitation")),
    (("--confocal", "--excitation", "0"), ("9", "17", "17"), OPTICS, ("--excitation",)),
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], shape: tuple[str, ...],
        optics: list[str], needles: tuple[str, ...]) -> None:
    out = tmp_path / "out" / "psf.tif"

    code = exit_code(["psf", "simulate", *optics, "--shape", *shape, "-o", str(out), *extra])

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, *needles)
    assert listing(tmp_path) == []


def test_a_wrong_output_suffix_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(tmp_path / "psf.png") == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, "psf.png", ".tif")
    assert listing(tmp_path) == []


def test_psf_without_an_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["psf"]) == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, "ACTION")
