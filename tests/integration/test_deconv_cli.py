"""``zaugnet deconv train`` and ``zaugnet deconv predict``: a tiny run end to end, safe loading, one-line refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from zaugnet.training.checkpoint import save_checkpoint
from zaugnet.training.deconv.checkpoint import (
    load_deconv_checkpoint,
    load_deconv_network,
)

from zaugnet.cli import main
from zaugnet.deconv.forward import convolve_fft
from zaugnet.deconv.predict import ParitySplit, RLDeconvolver
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
                 "--method", "model", "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    denoised, deconvolved = read_stack(tmp_path / "result_denoised.tif"), read_stack(out)
    raw = read_stack(stacks["single"]).data.astype(np.float32)
    for result in (denoised, deconvolved):
        assert result.data.shape == raw.shape and result.data.dtype == np.float32
        assert result.voxel_size.z == pytest.approx(0.5) and result.voxel_size.x == pytest.approx(0.2)
    # the same numbers as the model run directly on the normalised stack, mapped back by the stored affine
    want = _model_outputs(run, raw)
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


def _self_check_line(out: str) -> tuple[dict[str, float], str]:
    """The scores and the choice of the one self-check line of ``deconv predict --method auto``."""
    lines = [line for line in out.splitlines() if line.startswith("self-check")]
    assert len(lines) == 1, out
    table, choice = lines[0].split("): ", 1)[1].rsplit(" -> ", 1)
    scores = {}
    for cell in table.split(" | "):
        name, value = cell.rsplit(" ", 1)
        scores[name] = float(value)
    return scores, choice


def _model_outputs(run: Path, raw: np.ndarray) -> list[np.ndarray]:
    """--method model's outputs on ``raw`` (denoised, deconvolved), computed directly: the network on the odd and
    on the even slices of the zero-padded, normalised stack (ParitySplit), mapped back by the stored affine."""
    model = load_deconv_network(run / "final.pt")
    with torch.no_grad():
        x = torch.from_numpy(np.pad(model.affine.normalise(raw), [(4, 4), (16, 16), (16, 16)]))[None, None]
        return [model.affine.restore(t[0, 0, 4:-4, 16:-16, 16:-16].numpy()) for t in ParitySplit(model.network)(x)]


def test_auto_is_the_default_with_a_model_and_runs_what_the_self_check_chose(
        run: Path, stacks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--model", str(run / "final.pt"),
                 "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    scores, choice = _self_check_line(printed)
    assert list(scores) == ["model", "rl 5", "rl 10", "rl 20", "rl 40"]
    assert "held-out slices 19-21" in printed  # 6 of 24 slices held out (val_fraction 0.15): even slices 19, 21
    assert choice == min(scores, key=lambda name: scores[name])  # held out: no margin, the lowest wins
    raw = read_stack(stacks["single"]).data.astype(np.float32)
    if choice == "model":
        np.testing.assert_allclose(read_stack(out).data, _model_outputs(run, raw)[1], rtol=1e-4,
                                   atol=1e-3 * np.ptp(raw))
    else:  # Richardson-Lucy at the count chosen, with the model's optics at the stack's spacing, the extent of
        # the model's PSF (the one checked): twice its planes, its rows and columns
        loss_psf = load_deconv_checkpoint(run / "final.pt")[1]["psf"]
        shape = (2 * loss_psf.shape[0] - 1, *loss_psf.shape[1:])
        assert f"PSF {' x '.join(map(str, shape))}" in printed
        psf = widefield_psf(shape, 0.5, 0.2, na=1.0, wavelength=0.5, ni=1.333)
        _, expected = RLDeconvolver(psf, int(choice.split()[1]), padding="zeros")(raw)
        np.testing.assert_allclose(read_stack(out).data, expected, rtol=1e-5, atol=1e-4)
        assert not (tmp_path / "auto_denoised.tif").exists() and f"{choice.split()[1]} iterations" in printed


def test_auto_writes_both_outputs_when_the_model_wins(run: Path, stacks: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from zaugnet.deconv import selfcheck

    monkeypatch.setattr(selfcheck, "choose", lambda *args, **kwargs: "model")
    out = tmp_path / "auto.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--model", str(run / "final.pt"),
                 "--method", "auto", "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    assert _self_check_line(capsys.readouterr().out)[1] == "model"
    raw = read_stack(stacks["single"]).data.astype(np.float32)
    want = _model_outputs(run, raw)
    for path, expected in zip((tmp_path / "auto_denoised.tif", out), want):
        np.testing.assert_allclose(read_stack(path).data, expected, rtol=1e-4, atol=1e-3 * np.ptp(raw))


def test_auto_says_when_the_model_trained_on_every_slice_and_then_needs_the_margin(
        stacks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["deconv", "train", str(stacks["single"]), "-o", str(run), *OPTICS, "--preset", "small",
                 "--max-steps", "2", "--quiet", "--threads", "1", *TINY_SET, "--set", "data.val_fraction=0"]) == 0
    capsys.readouterr()

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(tmp_path / "o.tif"), "--model",
                 str(run / "final.pt"), "--quiet", "--threads", "1"])

    assert code == 0
    printed = capsys.readouterr().out
    scores, choice = _self_check_line(printed)
    assert "trained on these slices" in printed and "slices 1-21" in printed
    best_rl = min(v for k, v in scores.items() if k != "model")
    assert choice != "model" or scores["model"] < 0.9 * best_rl
    assert scores[choice] <= best_rl  # never a result the self-check scores below Richardson-Lucy


def test_auto_without_a_model_is_rl_at_the_count_the_self_check_picks(
        stacks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rl.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), *OPTICS, "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    scores, choice = _self_check_line(capsys.readouterr().out)
    assert list(scores) == ["rl 5", "rl 10", "rl 20", "rl 40"] and choice == min(scores, key=lambda n: scores[n])
    raw = read_stack(stacks["single"]).data
    # checked with 2 x 12 - 1 planes at 1.0 um (the odd slices), run with twice the planes at 0.5 um
    psf = widefield_psf((45, 65, 65), 0.5, 0.2, na=1.0, wavelength=0.5, ni=1.333)
    _, expected = RLDeconvolver(psf, int(choice.split()[1]), padding="zeros")(raw)
    np.testing.assert_allclose(read_stack(out).data, expected, rtol=1e-5, atol=1e-4)


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
    (["predict", "{single}", "-o", "{out_tif}", "--model", "{single}", *OPTICS], ("--na", "the model's PSF")),
    (["predict", "{single}", "-o", "{out_tif}", "--method", "auto", *OPTICS, "--iterations", "3"],
     ("--iterations", "--method rl")),
    (["predict", "{single}", "-o", "{out_tif}", *OPTICS, "--tile", "8", "8", "8"], ("--tile", "--method")),
    (["predict", "{single}", "-o", "{out_tif}", "--method", "model", "--model", "{single}", "--padding", "zeros"],
     ("--padding", "--method rl")),
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


def test_the_gpu_script_refuses_without_cuda_in_one_line() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "train_deconv_gpu.sh"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}

    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == EXIT_INPUT_ERROR and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], done.stderr


def test_auto_without_a_model_takes_a_psf_file(stacks: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    psf_file = tmp_path / "psf.tif"
    write_stack(psf_file, widefield_psf((31, 41, 41), 0.25, 0.2, na=1.0, wavelength=0.5, ni=1.333), "ZYX",
                VoxelSize(0.25, 0.2, 0.2))
    out = tmp_path / "rl.tif"

    code = main(["deconv", "predict", str(stacks["single"]), "-o", str(out), "--psf", str(psf_file),
                 "--psf-background", "0", "--quiet", "--threads", "1"])

    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    _, choice = _self_check_line(printed)
    assert choice.startswith("rl ") and read_stack(out).data.shape == (24, 40, 40)
    # resampled from the file to 1.0 um for the check (7 planes inside it), then cropped to 13 planes at 0.5 um
    assert "PSF 13 x " in printed
