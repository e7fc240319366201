"""Bad inputs to ``zaugnet train``: one ``zaugnet: error:`` line naming the file or field, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from support import TINY_SET, listing

from zaugnet.cli import main

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "


# --- helpers -------------------------------------------------------------------------------


def train_argv(inputs: list[Path | str], run_dir: Path, *extra: str) -> list[str]:
    """``zaugnet train`` arguments for the tiny network and a single step (so an accidental run is quick)."""
    sets = [arg for override in TINY_SET for arg in ("--set", override)]
    return ["train", *map(str, inputs), "-o", str(run_dir), "--preset", "small", "--max-steps", "1",
            "--quiet", *sets, *extra]


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders), keyed by path."""
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def error_line(err: str, *needles: str) -> str:
    """Check that stderr is exactly one ``zaugnet: error:`` line containing every needle; return it."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith(PREFIX), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], run_dir: Path, *needles: str) -> str:
    """Run the CLI in-process; assert exit 2, one error line naming ``needles`` and no run directory."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR, err
    assert not run_dir.exists(), listing(run_dir)
    return error_line(err, *needles)


def uint16_stack(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 60000, shape, dtype=np.uint16)


# --- bad image files -----------------------------------------------------------------------


def write_2d(path: Path) -> str:
    tifffile.imwrite(path, uint16_stack((32, 32)))
    return "2D"


def write_two_slices(path: Path) -> str:
    tifffile.imwrite(path, uint16_stack((2, 32, 32)), photometric="minisblack")
    return "2 z-slice"


def write_rgb(path: Path) -> str:
    data = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric="rgb")
    return "RGB"


def write_truncated(path: Path) -> str:
    tifffile.imwrite(path, uint16_stack((6, 32, 32)), photometric="minisblack")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "truncated"


def write_truncated_imagej(path: Path) -> str:
    tifffile.imwrite(path, uint16_stack((6, 32, 32)), imagej=True, metadata={"axes": "ZYX"})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return "not a readable TIFF"


def write_text(path: Path) -> str:
    path.write_bytes(b"this is not a TIFF file\n" * 20)
    return "not a readable TIFF"


def write_nan(path: Path) -> str:
    data = np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)
    data[2, 5, 7] = np.nan
    tifffile.imwrite(path, data, photometric="minisblack")
    return "NaN"


def write_inf(path: Path) -> str:
    data = np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)
    data[4, 0, 0] = np.inf
    tifffile.imwrite(path, data, photometric="minisblack")
    return "infinite"


def write_int32(path: Path) -> str:
    tifffile.imwrite(path, np.zeros((5, 32, 32), np.int32), photometric="minisblack")
    return "int32"


def write_small_slices(path: Path) -> str:
    tifffile.imwrite(path, uint16_stack((5, 8, 8)), photometric="minisblack")
    return "too small"


BAD_FILES = {
    "2d_image": write_2d,
    "two_slices": write_two_slices,
    "rgb": write_rgb,
    "truncated": write_truncated,
    "truncated_imagej": write_truncated_imagej,
    "not_tiff": write_text,
    "float_nan": write_nan,
    "float_inf": write_inf,
    "int32": write_int32,
    "small_slices": write_small_slices,
}


@pytest.mark.parametrize("make", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], make) -> None:
    """A bad stack is named in one error line; exit 2; no run directory; the file is untouched."""
    bad = tmp_path / "data" / "x.tif"
    bad.parent.mkdir()
    problem = make(bad)
    before = snapshot(bad)
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([bad], run_dir), run_dir, str(bad), problem)

    assert snapshot(bad) == before
    assert listing(tmp_path) == ["data", "data/x.tif"]


@pytest.mark.parametrize("make", [write_two_slices, write_truncated, write_nan], ids=["two_slices", "truncated", "nan"])
def test_one_bad_file_among_good_ones_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path, make
) -> None:
    """Good stacks before a bad one: the bad one is named and nothing is trained or written."""
    bad = tmp_path / "bad.tif"
    make(bad)
    before = snapshot(phantom_dir, bad)
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir, bad], run_dir), run_dir, str(bad))

    assert snapshot(phantom_dir, bad) == before


def test_truncated_compressed_stack_is_reported_as_unreadable(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A half-written zlib stack (6 slices in its metadata) is refused as a damaged file, naming it."""
    bad = tmp_path / "zlib.tif"
    tifffile.imwrite(bad, uint16_stack((6, 32, 32)), photometric="minisblack", compression="zlib")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([bad], run_dir), run_dir, str(bad), "not a readable TIFF")


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without TIFF files is named."""
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no stacks here")
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([folder], run_dir), run_dir, str(folder), "no .tif")

    assert listing(tmp_path) == ["empty", "empty/notes.txt"]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """A missing input is named even when other inputs are fine."""
    missing = tmp_path / "nope.tif"
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir, missing], run_dir), run_dir, str(missing), "does not exist")

    assert listing(tmp_path) == []


# --- bad configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.nonsense=1", "train.nonsense"),
        ("nonsense=1", "nonsense"),
        ("train.batch_size=abc", "train.batch_size"),
        ("train.lr=fast", "train.lr"),
        ("train.max_steps=0", "train.max_steps"),
        ("net.variant=zaugnet++", "net.variant"),
        ("net.block_widths=[15,12,8]", "net"),
        ("data.crop_size=8", "data.crop_size"),
        ("data.percentiles=[90,10]", "percentiles"),
        ("preset=huge", "preset"),
    ],
)
def test_bad_set_override(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path,
                          override: str, field: str) -> None:
    """A bad ``--set`` value is refused naming the field."""
    before = snapshot(phantom_dir)
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--set", override), run_dir, field)

    assert snapshot(phantom_dir) == before


def test_set_without_equals(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--set KEY`` without ``=VALUE`` is refused naming the option."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--set", "train.lr"), run_dir, "--set", "train.lr")


def test_set_with_malformed_yaml_value(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """A ``--set`` value that is not valid YAML is refused naming the key."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--set", "net.block_widths=[16,12"), run_dir,
            "net.block_widths")


def test_set_with_empty_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--set =5`` is refused naming the ``--set`` option."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--set", "=5"), run_dir, "--set")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train:\n  nonsense: 1\n", "train.nonsense"),
        ("bogus_section: {}\n", "bogus_section"),
        ("train: {lr: fast}\n", "train.lr"),
        ("train:\n  n_critic: abc\n", "train.n_critic"),
        ("version: 2\n", "version"),
        ("train: {lr: [1, 2\n", "YAML"),
        ("- 1\n- 2\n", "mapping"),
        ("\x00\x01binary", "YAML"),
    ],
    ids=["unknown_key", "unknown_section", "wrong_type_lr", "wrong_type_n_critic", "wrong_version",
         "malformed", "top_level_list", "binary"],
)
def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path,
                         text: str, needle: str) -> None:
    """A bad ``--config`` YAML is refused naming the file (and the field where there is one); the file is kept."""
    config = tmp_path / "cfg.yaml"
    config.write_text(text)
    before = snapshot(config, phantom_dir)
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--config", str(config)), run_dir, str(config), needle)

    assert snapshot(config, phantom_dir) == before


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """A ``--config`` path that does not exist is named."""
    config = tmp_path / "missing.yaml"
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--config", str(config)), run_dir, str(config), "not found")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--device cuda`` without CUDA is refused naming train.device."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--device", "cuda"), run_dir, "train.device")


def test_unknown_device(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--device nonsense`` is refused naming train.device."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--device", "nonsense"), run_dir, "train.device")


# --- the run directory ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["final.pt", "checkpoints/step_00000002.pt"])
def test_existing_run_is_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path,
                                      name: str) -> None:
    """A run directory that holds a run is refused without --resume/--overwrite; its files are untouched."""
    run_dir = tmp_path / "run"
    (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_bytes(b"previous checkpoint")
    (run_dir / "metrics.csv").write_text("step,val_psnr\n1,20.0\n")
    (run_dir / "notes.txt").write_text("mine")
    before, files = snapshot(run_dir), listing(run_dir)

    code = main(train_argv([phantom_dir], run_dir))

    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR, err
    error_line(err, str(run_dir), "--resume", "--overwrite")
    assert listing(run_dir) == files
    assert snapshot(run_dir) == before


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--resume`` into an empty run directory is refused and creates nothing."""
    run_dir = tmp_path / "run"

    refused(capsys, train_argv([phantom_dir], run_dir, "--resume"), run_dir, str(run_dir), "--resume")


def test_resume_from_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], phantom_dir: Path) -> None:
    """``--resume FILE`` naming a missing checkpoint ends with one error line naming it; nothing is written."""
    missing = tmp_path / "nope.pt"
    run_dir = tmp_path / "run"

    code = main(train_argv([phantom_dir], run_dir, "--resume", str(missing)))

    err = capsys.readouterr().err
    assert code == EXIT_INPUT_ERROR, err
    errors = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert errors == [err.strip().splitlines()[-1]]
    assert str(missing) in errors[0] and "not found" in errors[0]
    assert listing(tmp_path) == []


# --- through a real process ----------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zaugnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_subprocess_2d_image(tmp_path: Path) -> None:
    """``python -m zaugnet train`` on a 2D image exits 2 with one error line naming it."""
    write_2d(tmp_path / "flat.tif")
    before = snapshot(tmp_path / "flat.tif")

    proc = run_cli(*train_argv(["flat.tif"], Path("run")), cwd=tmp_path)

    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr
    error_line(proc.stderr, "flat.tif", "2D")
    assert "Traceback" not in proc.stderr
    assert listing(tmp_path) == ["flat.tif"]
    assert snapshot(tmp_path / "flat.tif") == before


def test_subprocess_truncated_tiff_gives_one_line(tmp_path: Path) -> None:
    """``python -m zaugnet train`` on a truncated TIFF prints only the one error line."""
    write_truncated(tmp_path / "cut.tif")

    proc = run_cli(*train_argv(["cut.tif"], Path("run")), cwd=tmp_path)

    assert proc.returncode == EXIT_INPUT_ERROR, proc.stderr
    error_line(proc.stderr, "cut.tif")
    assert listing(tmp_path) == ["cut.tif"]
