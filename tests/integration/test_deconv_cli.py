"""``zaugnet deconv train`` and ``zaugnet deconv predict``: a tiny run end to end, safe loading, one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from zaugnet.training.checkpoint import save_checkpoint
from zaugnet.training.deconv.checkpoint import load_deconv_network

from zaugnet.cli import main
from zaugnet.deconv.forward import convolve_fft
from zaugnet.deconv.predict import RLDeconvolver
from zaugnet.deconv.psf import widefield_psf
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack

EXIT_INPUT_ERROR = 2
PREFIX = "zaugnet: error: "
OPTICS = ["--na", "1.0", "--wavelength", "0.5", "--ni", "1.333"]
TINY_SET = ["--set", "net.channels=4", "--set", "net.head_channels=4", "--set", "net.groups=1", "--set",
            "net.blocks=1", "--set", "net.reduction=2", "--set", "data.patch=[5,24,24]", "--set",
            "train.val_every=5", "--set", "train.checkpoint_every=10", "--set", "train.lr=1e-3",
            "--set", "train.batch_size=2"]


def _synthetic(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    obj = np.zeros(shape, np.float32)
    obj[tuple(rng.integers(0, shape, size=(40, 3)).T)] = 1.0
    obj = ndimage.gaussian_filter(obj, 1.0) * 50
    psf = widefield_psf((9, 31, 31), 0.5, 0.2, na=1.0, wavelength=0.5, ni=1.333)
    blurred = convolve_fft(torch.from_numpy(obj)[None, None], psf)[0, 0].numpy()
    return rng.poisson(np.clip(blurred, 0, None) * 20 + 5).astype(np.uint16)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 24 x 40 x 40 uint16 stack and a 2-channel (ZCYX) one, z 0.5 um, xy 0.2 um."""
    folder = tmp_path_factory.mktemp("deconv_stacks")
    size = VoxelSize(0.5, 0.2, 0.2)
    single, two = folder / "single.tif", folder / "two.tif"
    write_stack(single, _synthetic((24, 40, 40), 0), "ZYX", size)
    write_stack(two, np.stack([_synthetic((24, 40, 40), 1), _synthetic((24, 40, 40), 2)], axis=1), "ZCYX", size)
    return {"single": single, "two": two}


@pytest.fixture(scope="module")
def run(stacks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of 20 training steps of a tiny network."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("deconv_cli") / "run"
    code = main(["deconv", "train", str(stacks["single"]), "-o", str(out), *OPTICS, "--preset", "small",
                 "--max-steps", "20", "--quiet", "--threads", "1", *TINY_SET])
    assert code == 0
    return out


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith(PREFIX), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def exit_code(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refusing an option
        return exc.code


def test_train_writes_a_run_whose_loss_decreases(run: Path) -> None:
    assert {p.name for p in run.iterdir()} == {"config.yaml", "checkpoints", "final.pt", "metrics.csv"}
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) and float(rows[-1]["val_loss"]) > 0


def test_predict_writes_both_outputs_in_the_input_units_with_its_voxel_size(
        run: Path, stacks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--model", str(run / "final.pt"),
                 "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    denoised, deconvolved = read_stack(tmp_path / "result_denoised.tif"), read_stack(out)
    raw = read_stack(stacks["single"]).data.astype(np.float32)
    for result in (denoised, deconvolved):
        assert result.data.shape == raw.shape and result.data.dtype == np.float32
        assert result.voxel_size.z == pytest.approx(0.5) and result.voxel_size.x == pytest.approx(0.2)
    # the same numbers as the model run directly on the normalised stack, mapped back by the stored affine
    model = load_deconv_network(run / "final.pt")
    with torch.no_grad():
        x = torch.from_numpy(np.pad(model.affine.normalise(raw), [(4, 4), (16, 16), (16, 16)]))[None, None]
        want = [model.affine.restore(t[0, 0, 4:-4, 16:-16, 16:-16].numpy()) for t in model.network(x)]
    np.testing.assert_allclose(denoised.data, want[0], rtol=1e-4, atol=1e-3 * np.ptp(raw))
    np.testing.assert_allclose(deconvolved.data, want[1], rtol=1e-4, atol=1e-3 * np.ptp(raw))
    assert str(out) in capsys.readouterr().out


def test_resume_latest_continues_a_run(run: Path, stacks: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoints").mkdir()
    (copy / "checkpoints" / "step_00000010.pt").write_bytes((run / "checkpoints" / "step_00000010.pt").read_bytes())

    code = main(["deconv", "train", str(stacks["single"]), "-o", str(copy), *OPTICS, "--preset", "small",
                 "--max-steps", "20", "--quiet", "--threads", "1", "--resume", *TINY_SET])

    assert code == 0
    a, b = load_deconv_network(copy / "final.pt"), load_deconv_network(run / "final.pt")
    for x, y in zip(a.network.state_dict().values(), b.network.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_predict_rl_equals_the_method_and_selects_a_channel(stacks: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rl.ome.tif"

    code = main(["deconv", "predict", str(stacks["two"]), "--channel", "c1", "-o", str(out), "--method", "rl",
                 *OPTICS, "--iterations", "5", "--quiet", "--threads", "1"])

    assert code == 0
    result = read_stack(out)
    assert result.axes == "ZYX" and not (tmp_path / "rl_denoised.ome.tif").exists()
    volume = read_stack(stacks["two"]).data[:, 1]
    psf = widefield_psf((47, 65, 65), 0.5, 0.2, na=1.0, wavelength=0.5, ni=1.333)
    _, expected = RLDeconvolver(psf, 5, padding="zeros")(volume)
    np.testing.assert_allclose(result.data, expected, rtol=1e-5, atol=1e-4)


class _RunsCode:
    """Unpickling this would create a file (what a hostile checkpoint could do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(stacks: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    marker, hostile = tmp_path / "ran", tmp_path / "hostile.pt"
    torch.save({"format": "zaugnet-checkpoint", "kind": "zs-deconvnet-3d", "payload": _RunsCode(marker)}, hostile)
    out = tmp_path / "out.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--model", str(hostile), "--quiet"])

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, str(hostile), "refused to load")
    assert not marker.exists() and not out.exists()


def test_a_zaugnet_checkpoint_is_refused_with_a_hint(stacks: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    other = save_checkpoint(tmp_path / "zaugnet.pt", {"generator": {}, "config": {}})

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(tmp_path / "o.tif"), "--model", str(other)])

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, "ZAugNet checkpoint", "zaugnet predict")


@pytest.mark.parametrize(("argv", "needles"), [
    (["train", "{missing}", "-o", "{out}", *OPTICS], ("missing.tif",)),
    (["train", "{single}", "-o", "{out}"], ("--psf", "--na")),
    (["train", "{single}", "-o", "{out}", "--psf", "{single}", "--na", "1.2"], ("--psf", "not both")),
    (["train", "{single}", "-o", "{out}", "--na", "1.2"], ("--wavelength",)),
    (["train", "{single}", "-o", "{out}", *OPTICS, "--set", "net.channels=100000"], ("net.channels",)),
    (["train", "{two}", "-o", "{out}", *OPTICS, *TINY_SET], ("2 channels", "--channel")),
    (["train", "{two}", "-o", "{out}", *OPTICS, "--channel", "c5", *TINY_SET], ("no channel 'c5'",)),
    (["train", "{single}", "-o", "{out}", *OPTICS, "--preset", "paper"], ("24 slices", "data.patch")),
    (["train", "{single}", "-o", "{out}", "--na", "4.0", "--wavelength", "0.5", "--ni", "1.333", *TINY_SET],
     ("psf.na",)),
    (["predict", "{single}", "-o", "{out_tif}"], ("--model",)),
    (["predict", "{single}", "-o", "{out_tif}", "--model", "{missing}"], ("missing.tif", "not found")),
    (["predict", "{single}", "-o", "{out_tif}", "--method", "rl"], ("--psf",)),
    (["predict", "{single}", "-o", "{out_tif}", "--method", "rl", *OPTICS, "--model", "{single}"],
     ("--model", "--method model")),
    (["predict", "{single}", "-o", "{out_tif}", "--model", "{single}", "--iterations", "3"],
     ("--iterations", "--method rl")),
    (["predict", "{single}", "-o", "{out_tif}", "--model", "{single}", "--tile", "0", "8", "8"], ("--tile",)),
    (["predict", "{single}", "-o", "{out}/x.png", "--model", "{single}"], (".tif",)),
    (["predict", "{single}", "-o", "{single}", "--model", "{single}"], ("input file",)),
    (["predict", "{two}", "-o", "{out_tif}", "--method", "rl", *OPTICS], ("--channel",)),
])
def test_bad_input_exits_2_with_one_line_before_any_work(
        argv: list[str], needles: tuple[str, ...], stacks: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    names = {"missing": tmp_path / "missing.tif", "out": tmp_path / "out", "out_tif": tmp_path / "out.tif",
             **stacks}
    full = ["deconv"] + [a.format(**names) for a in argv] + ["--quiet"]

    code = exit_code(full)

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, *needles)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tif").exists()


def test_existing_outputs_need_overwrite(run: Path, stacks: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.tif"
    (tmp_path / "r_denoised.tif").write_bytes(b"old")

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--model", str(run / "final.pt")])

    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, "r_denoised.tif", "--overwrite")
    assert (tmp_path / "r_denoised.tif").read_bytes() == b"old" and not out.exists()
    code = main(["deconv", "train", str(stacks["single"]), "-o", str(run), *OPTICS, *TINY_SET, "--quiet"])
    assert code == EXIT_INPUT_ERROR
    one_error_line(capsys.readouterr().err, "already holds a run", "--resume")
