"""``benchmarks/models.py`` end to end on a phantom stack: accuracy tables and figures, speed per runtime."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from support import benchmark_script, copying_checkpoint, staircase

from zaugnet.evaluate.metrics import to_8bit
from zaugnet.evaluate.protocol import evaluate_volume
from zaugnet.io.tiff import VoxelSize, read_stack, write_stack

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _row(rows: list[dict], stack: str, method: str, factor: int) -> dict:
    """The row of position "all" for one stack, method and factor (CSV values are strings)."""
    return next(r for r in rows if (r["stack"], r["method"], r["factor"], r["position"]) ==
                (stack, method, str(factor), "all"))


def test_benchmark_writes_accuracy_and_speed_for_every_method_and_runtime(
        tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from zaugnet.export.bioimageio import export_model

    package = export_model(tiny_checkpoints["zaugnet+"], tmp_path / "package", test=False)
    stack = tmp_path / "staircase.tif"
    write_stack(stack, staircase(), "ZYX", VoxelSize(0.6, 0.2, 0.2))
    copying = copying_checkpoint(tmp_path / "copy.pt")
    out = tmp_path / "results"
    status = benchmark_script("models").main([
        "--model", f"zaugnet={copying}", "--model", f"zaugnet+={package}", "--stacks", str(stack),
        "--factors", "2", "4", "--sizes", "32", "--pairs", "2", "--threads", "1", "--auto", "-o", str(out)])
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.csv", "accuracy.md", "accuracy.png", "speed.csv",
                                                     "speed.md", "speed.png"]

    # accuracy: every method x factor on the stack, and the overall mean
    rows = _rows(out / "accuracy.csv")
    methods = ["linear", "cubic", "spline", "zaugnet", "zaugnet+", "auto(zaugnet)", "auto(zaugnet+)"]
    scored = {(r["stack"], r["method"], r["factor"]) for r in rows if r["position"] == "all"}
    assert scored == {(name, m, f) for name in (stack.name, "overall") for m in methods for f in ("2", "4")}
    assert all(math.isfinite(float(r["psnr_8bit"])) and math.isfinite(float(r["ssim"])) for r in rows)

    # linear at 2x, by hand: odd slices predicted as the mean of their neighbours, scored on the 8-bit scale
    gt = read_stack(stack).data.astype(np.float64)
    truth = gt[:(len(gt) - 1) // 2 * 2 + 1]
    lo, hi = gt.min(), gt.max()
    pred = (truth[0:-1:2] + truth[2::2]) / 2
    rmse8 = [np.sqrt(np.mean((to_8bit(p, lo, hi) - to_8bit(t, lo, hi)) ** 2)) for p, t in zip(pred, truth[1::2])]
    linear2 = _row(rows, stack.name, "linear", 2)
    assert float(linear2["rmse_8bit"]) == pytest.approx(np.mean(rmse8), rel=1e-5)
    assert float(linear2["psnr_8bit"]) == pytest.approx(np.mean(20 * np.log10(255 / np.array(rmse8))), rel=1e-5)
    assert float(linear2["rmse"]) == pytest.approx(np.mean([np.sqrt(np.mean((p - t) ** 2))
                                                            for p, t in zip(pred, truth[1::2])]), rel=1e-5)
    # cubic at 4x, with the library's evaluation
    reference = evaluate_volume(read_stack(stack).data, {"cubic": "cubic"}, 4, name=stack.name)
    cubic4 = next(r for r in reference.rows if r["factor"] == 4 and r["position"] == "all")
    for key in ("psnr_8bit", "ssim_8bit", "rmse"):
        assert float(_row(rows, stack.name, "cubic", 4)[key]) == pytest.approx(cubic4[key], rel=1e-9)

    md = (out / "accuracy.md").read_text()
    assert "## 2x" in md and "## 4x" in md and "PSNR gain over best classical (dB)" in md
    assert f"| {stack.name} | cubic |" in md and "| **overall** | zaugnet+ |" in md
    # the gain is over the best of linear, cubic and spline on this stack and factor
    classical2 = {m: float(_row(rows, stack.name, m, 2)["psnr_8bit"]) for m in ("linear", "cubic", "spline")}
    gain = float(linear2["psnr_8bit"]) - max(classical2.values())
    assert f"| {stack.name} | linear | {float(linear2['psnr_8bit']):.2f} |" in md and f"| {gain:+.2f} |" in md
    assert "Command: `python benchmarks/models.py --model zaugnet=" in md
    # --auto: the copying model wins its self-check at 2x (on [::2], slices in pairs) and loses it at 4x, where the
    # reduced stack [::4] has 5 slices (no trend) and changes linearly: the classical method that best predicts
    # its every other slice is used. Copying is truly better at both factors, so only the first choice is right.
    reduced4 = read_stack(stack).data[:(len(gt) - 1) // 4 * 4 + 1][::4]
    check4 = evaluate_volume(reduced4, {m: m for m in ("linear", "cubic", "spline")}, 2, positions_check=())
    classical4 = max((r for r in check4.rows if r["position"] == "all"), key=lambda r: r["psnr_8bit"])["method"]
    for f, used, other in ((2, "zaugnet", classical4), (4, classical4, "zaugnet")):
        scores = lambda method: [_row(rows, stack.name, method, f)[k] for k in ("psnr_8bit", "ssim_8bit", "rmse")]  # noqa: E731
        assert scores("auto(zaugnet)") == scores(used) != scores(other), f
    assert md.count("## Self-check (`--method auto`)") == 1 and md.count("| zaugnet+ | ") >= 2
    section = md.split("## Self-check (`--method auto`)")[1]
    assert " of 4** cases" in section  # two factors for each of two models
    judged = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in section.splitlines()
              if line.startswith(f"| {stack.name} | ") and line.split("|")[3].strip() == "zaugnet"]
    assert [(j[1], j[3], j[4], j[5], j[9]) for j in judged] == [("2", "model", "1.00", "model", "yes"),
                                                                 ("4", classical4, "0.00", "model", "no")], judged
    (*_, cost2, margin2, true2, _), (*_, cost4, margin4, true4, _) = judged
    assert float(cost2) == 0 and float(margin2) > 30 and float(true2) > 20, judged
    psnr4 = {m: float(_row(rows, stack.name, m, 4)["psnr_8bit"]) for m in ("zaugnet", classical4)}
    assert float(margin4) < -10 and float(true4) > 30, judged
    assert float(cost4) == pytest.approx(psnr4["zaugnet"] - psnr4[classical4], abs=0.006), judged

    # speed: a checkpoint runs eager only, a package each of its runtimes; each measured in its own process
    speed = _rows(out / "speed.csv")
    assert [(r["model"], r["runtime"], r["size"]) for r in speed] == [
        ("zaugnet", "eager", "32"), ("zaugnet+", "eager", "32"), ("zaugnet+", "torchscript", "32"),
        ("zaugnet+", "onnx", "32")]
    for r in speed:
        assert r["note"] == "" and float(r["pairs_per_s"]) > 0 and r["pairs"] == "2" and r["threads"] == "1"
        assert float(r["peak_rss_mb"]) > 50 and 0 <= float(r["rss_increase_mb"]) < float(r["peak_rss_mb"])
    text = (out / "speed.md").read_text()
    assert "Hardware: " in text and "torch " in text and "onnxruntime " in text
    assert "| zaugnet+ | onnx | 32 x 32 | 2 |" in text
    for figure in ("accuracy.png", "speed.png"):
        data = (out / figure).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_benchmark_refuses_a_missing_stack_and_writes_nothing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    status = benchmark_script("models").main(["--stacks", str(tmp_path / "absent.tif"), "--skip-speed",
                                              "-o", str(out)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"benchmarks/models.py: error: {tmp_path / 'absent.tif'}: stack not found"]
    assert not out.exists()


def test_model_labels(tmp_path: Path) -> None:
    script = benchmark_script("models")
    assert script.parse_model("zaugnet+=runs/b/final.pt") == ("zaugnet+", "runs/b/final.pt")
    assert script.parse_model("runs/b/final.pt") == ("final", "runs/b/final.pt")
    with pytest.raises(ValueError, match="baseline"):
        script.parse_model("cubic=model.pt")


def test_folds_score_each_stack_with_the_model_that_names_it(tiny_checkpoints: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """One label, two folds: the copying model scores the staircase, the tiny ZAugNet the other stack; each stack's
    row is exactly that model's own row when it is benchmarked alone."""
    script = benchmark_script("models")
    first, second = tmp_path / "staircase.tif", tmp_path / "other.tif"
    write_stack(first, staircase(), "ZYX", VoxelSize(0.6, 0.2, 0.2))
    write_stack(second, staircase()[::-1].copy(), "ZYX", VoxelSize(0.6, 0.2, 0.2))
    copying = copying_checkpoint(tmp_path / "copy.pt")
    args = ["--skip-speed", "--factors", "2", "--threads", "1"]
    assert script.main(["--model", f"m={copying}@{first.name}", "--model",
                        f"m={tiny_checkpoints['zaugnet']}@{second.name}", "--stacks", str(first), str(second),
                        *args, "-o", str(tmp_path / "folds")]) == 0
    for model, stack in ((copying, first), (tiny_checkpoints["zaugnet"], second)):
        alone_dir = tmp_path / stack.stem
        assert script.main(["--model", f"m={model}", "--stacks", str(stack), *args, "-o", str(alone_dir)]) == 0
        alone = _row(_rows(alone_dir / "accuracy.csv"), stack.name, "m", 2)
        assert _row(_rows(tmp_path / "folds" / "accuracy.csv"), stack.name, "m", 2) == alone
    assert f"m = `{copying}` (on {first.name}); m = `{tiny_checkpoints['zaugnet']}` (on {second.name})" in (
        tmp_path / "folds" / "accuracy.md").read_text()


@pytest.mark.parametrize(("models", "problem"), [
    (["m=a.pt", "m=b.pt"], "'m' is given twice; folds name their stacks"),
    (["m=a.pt@x.tif", "m=b.pt"], "'m' is given twice; folds name their stacks"),
    (["m=a.pt@x.tif"], "'m' leaves a stack unscored: y.tif"),
    (["m=a.pt@x.tif,y.tif", "m=b.pt@y.tif"], "'m' scores a stack twice: y.tif"),
    (["m=a.pt@x.tif,y.tif,z.tif"], "'m' names a stack not benchmarked: z.tif"),
])
def test_folds_that_do_not_score_each_stack_once_are_refused(models: list[str], problem: str) -> None:
    script = benchmark_script("models")
    with pytest.raises(ValueError, match=problem):
        script.check_folds([script.parse_model(m) for m in models], [Path("x.tif"), Path("y.tif")])
    script.check_folds([script.parse_model(m) for m in ("m=a.pt@x.tif", "m=b.pt@y.tif", "n=c.pt")],
                       [Path("x.tif"), Path("y.tif")])
    script.check_folds([script.parse_model("m=a.pt@x.tif")], None)  # stacks unknown (--skip-accuracy): no coverage
    with pytest.raises(ValueError, match="'m' is given twice"):
        script.check_folds([script.parse_model(m) for m in ("m=a.pt", "m=b.pt")], None)


def test_split_fold_reads_the_stacks_after_the_last_at_sign() -> None:
    script = benchmark_script("models")
    assert script.split_fold("runs/a/final.pt@x.tif, y.TIFF") == ("runs/a/final.pt", ("x.tif", "y.TIFF"))
    assert script.split_fold("https://user@host/model.zip") == ("https://user@host/model.zip", ())
    assert script.split_fold("runs/a/final.pt") == ("runs/a/final.pt", ())
