"""``zaugnet simulate`` (phantom stacks on disk) and ``zaugnet --version``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from support import listing

from zaugnet import __version__
from zaugnet.cli import main
from zaugnet.io.tiff import read_stack

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "
SHAPE = ("4", "24", "20")


def simulate(out: Path, *extra: str, shape: tuple[str, ...] = SHAPE) -> int:
    return main(["simulate", "-o", str(out), "--shape", *shape, *extra])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith(PREFIX), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# --- what is written -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("suffix", [".tif", ".ome.tif"])
def test_writes_requested_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: str, suffix: str) -> None:
    """Shape, dtype and voxel size read back as requested, for ImageJ and OME output."""
    out = tmp_path / f"phantom{suffix}"

    code = simulate(out, "--dtype", dtype, "--z-step", "0.7", "--xy-step", "0.15", "--kind", "nuclei")

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out) in captured.out
    stack = read_stack(out)
    assert stack.axes == "ZYX"
    assert stack.data.shape == (4, 24, 20)
    assert stack.data.dtype == np.dtype(dtype)
    assert np.isfinite(stack.data).all()
    assert stack.data.max() > stack.data.min()
    assert stack.voxel_size.unit == "um"
    assert stack.voxel_size.z == pytest.approx(0.7, rel=1e-6)
    assert stack.voxel_size.y == pytest.approx(0.15, rel=1e-6)
    assert stack.voxel_size.x == pytest.approx(0.15, rel=1e-6)
    assert listing(tmp_path) == [out.name]  # no temporary files left beside it


def test_ome_output_is_ome(tmp_path: Path) -> None:
    """``.ome.tif`` output carries OME-XML with the physical sizes; ``.tif`` output is ImageJ."""
    ome, imagej = tmp_path / "p.ome.tif", tmp_path / "p.tif"

    assert simulate(ome, "--z-step", "1.25", "--xy-step", "0.5") == 0
    assert simulate(imagej, "--z-step", "1.25", "--xy-step", "0.5") == 0

    with tifffile.TiffFile(ome) as tif:
        assert tif.is_ome
        xml = tif.ome_metadata
    assert 'PhysicalSizeZ="1.25"' in xml and 'PhysicalSizeX="0.5"' in xml and 'PhysicalSizeY="0.5"' in xml
    with tifffile.TiffFile(imagej) as tif:
        assert tif.is_imagej and not tif.is_ome
    assert read_stack(ome).voxel_size == read_stack(imagej).voxel_size


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    """The seed alone decides the data."""
    paths = {name: tmp_path / f"{name}.tif" for name in ("a", "b", "c")}

    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert simulate(paths[name], "--seed", seed) == 0

    a, b, c = (read_stack(p).data for p in paths.values())
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_no_noise_differs_from_noisy(tmp_path: Path) -> None:
    """``--no-noise`` writes the blurred scene only."""
    clean, noisy = tmp_path / "clean.tif", tmp_path / "noisy.tif"

    assert simulate(clean, "--no-noise", "--dtype", "float32") == 0
    assert simulate(noisy, "--dtype", "float32") == 0

    assert not np.array_equal(read_stack(clean).data, read_stack(noisy).data)


# --- refusals ------------------------------------------------------------------------------


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing file is kept (exit 2) unless --overwrite is given."""
    out = tmp_path / "p.tif"
    assert simulate(out, "--seed", "1") == 0
    before = digest(out)
    capsys.readouterr()

    code = simulate(out, "--seed", "2")

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, str(out), "--overwrite")
    assert digest(out) == before
    assert listing(tmp_path) == ["p.tif"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    """``--overwrite`` replaces the file with the new stack."""
    out, reference = tmp_path / "p.tif", tmp_path / "ref.tif"
    assert simulate(out, "--seed", "1") == 0
    assert simulate(reference, "--seed", "2") == 0

    code = simulate(out, "--seed", "2", "--overwrite")

    assert code == 0
    np.testing.assert_array_equal(read_stack(out).data, read_stack(reference).data)
    assert listing(tmp_path) == ["p.tif", "ref.tif"]


def test_does_not_write_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output path that is a directory is refused, with or without --overwrite."""
    out = tmp_path / "folder.tif"
    out.mkdir()

    codes = [simulate(out), simulate(out, "--overwrite")]

    assert codes == [EXIT_INPUT_ERROR, EXIT_INPUT_ERROR]
    for line in capsys.readouterr().err.strip().splitlines():
        one_error_line(line, str(out))
    assert out.is_dir() and listing(tmp_path) == ["folder.tif"]


@pytest.mark.parametrize(
    ("extra", "shape", "needle"),
    [
        ((), ("2", "32", "32"), "--shape"),
        ((), ("3", "0", "32"), "--shape"),
        ((), ("3", "32", "-4"), "--shape"),
        (("--seed", "-1"), SHAPE, "seed"),
        (("--z-step", "0"), SHAPE, "z_step"),
        (("--xy-step", "-0.2"), SHAPE, "xy_step"),
        (("--z-step", "nan"), SHAPE, "z_step"),
    ],
    ids=["two_slices", "zero_y", "negative_x", "negative_seed", "zero_z_step", "negative_xy_step", "nan_z_step"],
)
def test_bad_options_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
                                   shape: tuple[str, ...], needle: str) -> None:
    """Impossible shapes, seeds and voxel sizes: exit 2, one error line naming the option, no file."""
    out = tmp_path / "p.tif"

    code = simulate(out, *extra, shape=shape)

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, needle)
    assert listing(tmp_path) == []


def test_bad_output_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An output that is not .tif/.ome.tif is refused naming it."""
    out = tmp_path / "p.png"

    code = simulate(out)

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, str(out), ".tif")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("args", [["--dtype", "int32"], ["--kind", "blobs"], ["--shape", "3", "32"]])
def test_argparse_rejects_bad_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """Invalid choices and arity are usage errors (exit 2) and write nothing."""
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "-o", str(tmp_path / "p.tif"), *args])

    assert exc.value.code == EXIT_INPUT_ERROR
    assert "error:" in capsys.readouterr().err
    assert listing(tmp_path) == []


# --- version and a real process ------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``zaugnet --version`` prints ``zaugnet <version>`` and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])

    assert exc.value.code == 0
    assert capsys.readouterr().out == f"zaugnet {__version__}\n"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zaugnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_subprocess_refuses_two_slices_then_writes(tmp_path: Path) -> None:
    """Through ``python -m zaugnet``: a 2-slice shape exits 2 with one error line; a valid one exits 0."""
    bad = run_cli("simulate", "-o", "p.tif", "--shape", "2", "32", "32", cwd=tmp_path)
    assert bad.returncode == EXIT_INPUT_ERROR
    one_error_line(bad.stderr, "--shape")
    assert "Traceback" not in bad.stderr
    assert listing(tmp_path) == []

    good = run_cli("simulate", "-o", "p.tif", "--shape", "3", "16", "16", cwd=tmp_path)

    assert good.returncode == 0, good.stderr
    assert read_stack(tmp_path / "p.tif").data.shape == (3, 16, 16)


def test_subprocess_version(tmp_path: Path) -> None:
    """``python -m zaugnet --version`` exits 0 and prints the version."""
    proc = run_cli("--version", cwd=tmp_path)

    assert proc.returncode == 0
    assert proc.stdout.strip() == f"zaugnet {__version__}"
