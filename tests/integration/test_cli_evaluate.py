"""``zaugnet evaluate`` from the command line: tables, figures, and the self-check rows of ``--methods auto``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import CubicSpline
from skimage.metrics import peak_signal_noise_ratio
from support import copying_checkpoint, listing, staircase

from zaugnet.cli import main
from zaugnet.evaluate.protocol import METRICS
from zaugnet.evaluate.selfcheck import JUDGEMENT_FIELDS
from zaugnet.io.tiff import VoxelSize, write_stack


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


CLASSICAL = ("linear", "cubic", "spline")


def psnr_by_hand(gt: np.ndarray, factor: int) -> dict[str, float]:
    """Mean 8-bit PSNR (the ground truth's min/max mapped to 0..255, clipped) of copying the slice before the
    gap and of linear, Keys cubic (a = -0.5, edge slices repeated) and not-a-knot cubic spline interpolation, on
    the slices that keeping every ``factor``-th slice removes: written out here with numpy, scipy and skimage."""
    gt = np.asarray(gt, np.float64)
    truth = gt[:(len(gt) - 1) // factor * factor + 1]
    kept = truth[::factor]
    spline = CubicSpline(np.arange(len(kept)), kept, axis=0, bc_type="not-a-knot")
    lo, hi = gt.min(), gt.max()
    scores: dict[str, list[float]] = {"copy": [], **{m: [] for m in CLASSICAL}}
    for z in (z for z in range(len(truth)) if z % factor):
        g, t = z // factor, (z % factor) / factor
        keys = np.array([(-t**3 + 2 * t**2 - t) / 2, (3 * t**3 - 5 * t**2 + 2) / 2,
                         (-3 * t**3 + 4 * t**2 + t) / 2, (t**3 - t**2) / 2])
        cubic = np.tensordot(keys, kept[np.clip([g - 1, g, g + 1, g + 2], 0, len(kept) - 1)], axes=1)
        preds = {"copy": kept[g], "linear": (1 - t) * kept[g] + t * kept[g + 1], "cubic": cubic,
                 "spline": spline(g + t)}
        for name, pred in preds.items():
            scores[name].append(peak_signal_noise_ratio(*(np.clip((v - lo) * 255.0 / (hi - lo), 0, 255)
                                                          for v in (truth[z], pred)), data_range=255.0))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def test_evaluate_scores_models_baselines_and_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model known to copy the slice before each gap, on a stack where that is right at 2x and 4x: the
    self-check picks it at 2x (right) and linear at 4x (wrong), and every score is the one computed by hand."""
    gt = staircase()
    stack = tmp_path / "staircase.tif"
    write_stack(stack, gt, "ZYX", VoxelSize(0.6, 0.2, 0.2))
    model = copying_checkpoint(tmp_path / "copy.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", str(stack), "-o", str(out), "--model", str(model), "--methods", *CLASSICAL,
                 "auto", "--factor", "4", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    rows = [r for r in _rows(out / "metrics.csv") if r["position"] == "all" and r["stack"] == stack.name]
    assert {(r["method"], r["factor"]) for r in rows} == {(m, f) for m in (*CLASSICAL, "zaugnet", "auto(zaugnet)")
                                                          for f in ("2", "4")}
    by = {(r["method"], int(r["factor"])): r for r in rows}
    checks = _rows(out / "selfcheck.csv")
    assert list(checks[0]) == list(JUDGEMENT_FIELDS)
    assert [(c["stack"], c["factor"], c["model"], c["choice"], c["best"], c["right"], c["n_held_out"])
            for c in checks] == [("staircase.tif", "2", "zaugnet", "model", "model", "True", "4"),
                                 ("staircase.tif", "4", "zaugnet", "linear", "model", "False", "2")]
    for c, checked in zip(checks, (gt[::2], gt[::4])):
        f = int(c["factor"])
        true, on_check = psnr_by_hand(gt, f), psnr_by_hand(checked, 2)
        assert float(by[("zaugnet", f)]["psnr_8bit"]) == pytest.approx(true["copy"], abs=1e-3)
        for method in CLASSICAL:
            assert float(by[(method, f)]["psnr_8bit"]) == pytest.approx(true[method], abs=1e-3), (method, f)
        best_classical = max(true[m] for m in CLASSICAL)
        assert float(c["true_margin_db"]) == pytest.approx(true["copy"] - best_classical, abs=1e-3)
        assert float(c["check_margin_db"]) == pytest.approx(
            on_check["copy"] - max(on_check[m] for m in CLASSICAL), abs=1e-3)
        chosen = true["copy"] if c["choice"] == "model" else true[c["choice"]]
        assert float(c["cost_db"]) == pytest.approx(true["copy"] - chosen, abs=1e-3)
    assert float(checks[1]["cost_db"]) > 10  # linear at 4x: far from the copy
    # --method auto scored what it chose: the model at 2x, linear at 4x (which differ from the others)
    for f, used in ((2, "zaugnet"), (4, "linear")):
        scores = lambda method: [by[(method, f)][k] for k in METRICS]  # noqa: E731
        assert all(scores("auto(zaugnet)") == scores(used) != scores(other)
                   for other in (*CLASSICAL, "zaugnet") if other != used)
    assert ("self-check (--method auto) came within 0.1 dB of the truly best of the model, linear, cubic and "
            "spline (or above it) in 1 of 2 cases") in text
    assert (out / f"{stack.name}_orthoviews.png").is_file()


def test_auto_is_judged_whichever_classical_methods_are_listed(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "staircase.tif"
    write_stack(stack, staircase(), "ZYX", VoxelSize(0.6, 0.2, 0.2))
    out = tmp_path / "eval"
    assert main(["evaluate", str(stack), "-o", str(out), "--model", str(copying_checkpoint(tmp_path / "copy.pt")),
                 "--methods", "cubic", "auto", "--factor", "4", "--device", "cpu"]) == 0
    assert "self-check (--method auto) came within 0.1 dB" in capsys.readouterr().out
    assert [(c["factor"], c["choice"], c["right"]) for c in _rows(out / "selfcheck.csv")] == [
        ("2", "model", "True"), ("4", "linear", "False")]


def test_auto_without_a_model_is_refused_and_writes_nothing(phantom_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(phantom_dir), "-o", str(out), "--methods", "cubic", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zaugnet: error: --methods auto") and "--model" in err[0]
    assert not out.exists() or listing(out) == []
