"""Tests of zaugnet.evaluate.protocol (the paper's evaluation protocol) and its figures."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from zaugnet.errors import InputError
from zaugnet.evaluate.metrics import to_8bit
from zaugnet.evaluate.protocol import (
    FIELDS,
    evaluate_stack,
    evaluate_volume,
    format_table,
    summarize,
)
from zaugnet.figures import plot_orthogonal_views, plot_per_slice_psnr
from zaugnet.io.tiff import Stack, VoxelSize
from zaugnet.phantoms import simulate_stack
from zaugnet.predict.interpolator import ModelInterpolator
from zaugnet.tables import write_csv

BASELINES = {"linear": "linear", "cubic": "cubic"}


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return simulate_stack((17, 32, 32), kind="membrane", seed=0, z_step_um=0.6, xy_step_um=0.2)


def analytic(n: int, power: int) -> np.ndarray:
    """Integer-valued ``base(y, x) + slope(y, x) * (z - c)^power`` volume, shape (n, 16, 16)."""
    yy, xx = np.mgrid[:16, :16]
    base = 100 + 3 * yy + 2 * xx
    slope = 1 + (yy + xx) % 4
    z = np.arange(n)[:, None, None] - (n // 2 if power == 2 else 0)
    return (base + slope * z**power).astype(np.float64)


def linear_network(x: torch.Tensor) -> torch.Tensor:
    """A 'trained' network that interpolates linearly: (1 - z) a + z b, z from the DPM channel (else 0.5)."""
    z = x[:, 2:3] if x.shape[1] == 3 else torch.full_like(x[:, :1], 0.5)
    return (1 - z) * x[:, 0:1] + z * x[:, 1:2]


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["method"], r["factor"], r["position"]): r for r in rows}


# --- rows ---------------------------------------------------------------------------------------


def test_rows_fields_counts_and_per_position_rows(phantom: np.ndarray) -> None:
    result = evaluate_volume(phantom, BASELINES, factor=4, name="phantom")
    assert len(result.rows) == 2 * (1 + 4)  # factor 2: "all"; factor 4: "all", 0.25, 0.5, 0.75
    assert all(tuple(r) == FIELDS for r in result.rows)
    rows = by_key(result.rows)
    for method in BASELINES:
        assert rows[method, 2, "all"]["n_slices"] == 8
        assert rows[method, 4, "all"]["n_slices"] == 12
        for pos in (0.25, 0.5, 0.75):
            assert rows[method, 4, pos]["n_slices"] == 4
        # equal group sizes: the "all" mean is the mean of the three positions
        for key in ("rmse", "psnr_8bit", "ssim"):
            parts = [rows[method, 4, p][key] for p in (0.25, 0.5, 0.75)]
            assert rows[method, 4, "all"][key] == pytest.approx(np.mean(parts))
        for row in (rows[method, 2, "all"], rows[method, 4, "all"]):
            assert row["stack"] == "phantom" and row["note"] == ""
            assert 0 < row["rmse"] and math.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1
    assert set(result.per_slice) == set(result.predictions) == set(BASELINES)
    z, values = result.per_slice["linear"]
    assert list(z) == list(range(1, 17, 2)) and values.shape == (8,)
    assert np.mean(values) == pytest.approx(rows["linear", 2, "all"]["psnr_8bit"])
    assert result.predictions["cubic"].shape == phantom.shape


def test_last_slices_beyond_the_factor_grid_are_dropped(phantom: np.ndarray) -> None:
    rows = by_key(evaluate_volume(phantom[:16], {"linear": "linear"}, factor=4).rows)
    assert rows["linear", 4, "all"]["n_slices"] == 9  # slices 0..12 used: 3 gaps of 3 predicted slices
    assert rows["linear", 2, "all"]["n_slices"] == 7  # slices 0..14 used


def test_factor_2_alone_gives_one_row_per_method(phantom: np.ndarray) -> None:
    rows = evaluate_volume(phantom, BASELINES, factor=2).rows
    assert [(r["method"], r["factor"], r["position"]) for r in rows] == [("linear", 2, "all"), ("cubic", 2, "all")]


# --- scores against independent expectations ----------------------------------------------------


def test_linear_method_is_exact_on_a_volume_linear_in_z() -> None:
    rows = evaluate_volume(analytic(13, 1), BASELINES, factor=4).rows
    for row in rows:
        if row["method"] == "linear":
            assert row["rmse"] == 0 and row["rmse_8bit"] == 0
            assert row["psnr"] == math.inf and row["ssim"] == pytest.approx(1.0)


def test_cubic_beats_linear_on_a_volume_quadratic_in_z() -> None:
    result = evaluate_volume(analytic(17, 2), BASELINES, factor=4)
    rows = by_key(result.rows)
    for f in (2, 4):
        assert rows["cubic", f, "all"]["rmse"] < rows["linear", f, "all"]["rmse"]
        assert rows["cubic", f, "all"]["psnr_8bit"] > rows["linear", f, "all"]["psnr_8bit"]
    # Keys cubic convolution reproduces quadratics exactly away from the edge gaps; linear never does
    z, cubic = result.per_slice["cubic"]
    assert np.all(cubic[(z > 1) & (z < 15)] > 100)
    assert np.all(result.per_slice["linear"][1] < 60)


def test_8bit_mapping_by_hand() -> None:
    mapped = to_8bit(np.array([0.0, 10.0, 60.0, 110.0, 130.0]), 10.0, 110.0)
    assert mapped.tolist() == [0.0, 0.0, 127.5, 255.0, 255.0]  # clipped, not rounded


def test_scores_of_a_hand_computed_example() -> None:
    # kept slices 10 and 110 everywhere: linear predicts 60; the truth is 20 or 100, so every error is 40
    gt = np.empty((3, 8, 8))
    gt[0], gt[2] = 10.0, 110.0
    gt[1] = np.where(np.indices((8, 8)).sum(axis=0) % 2, 20.0, 100.0)
    (row,) = evaluate_volume(gt, {"linear": "linear"}).rows
    assert row["n_slices"] == 1
    assert row["rmse"] == pytest.approx(40.0)
    assert row["rmse_8bit"] == pytest.approx(40.0 * 255 / 100)
    assert row["psnr"] == pytest.approx(20 * math.log10(100 / 40))  # data range 110 - 10
    assert row["psnr_8bit"] == pytest.approx(20 * math.log10(255 / 102))


def test_kept_slices_are_never_scored(phantom: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    gt = phantom.astype(np.float64)

    def oracle(volume: np.ndarray, positions: np.ndarray, method: object, progress: bool = False) -> np.ndarray:
        """Right on every predicted slice, wrong (zero) on every kept one."""
        f = round((len(positions) - 1) / (len(volume) - 1))
        out = gt[np.round(positions * f).astype(int)].astype(np.float32)
        out[positions == np.round(positions)] = 0.0
        return out

    with monkeypatch.context() as patch:
        patch.setattr("zaugnet.evaluate.protocol.interpolate_volume", oracle)
        rows = evaluate_volume(gt, {"oracle": "oracle"}, factor=4).rows
    assert len(rows) == 5
    for row in rows:
        assert row["rmse"] == 0 and row["psnr"] == math.inf and row["psnr_8bit"] == math.inf
    # and real methods, exact on kept slices, get finite PSNRs: no exact slice enters the mean
    for row in evaluate_volume(gt, BASELINES, factor=4).rows:
        assert math.isfinite(row["psnr"]) and math.isfinite(row["psnr_8bit"])


def test_model_interpolators_are_scored_and_unsupported_factors_are_na(phantom: np.ndarray) -> None:
    methods = {
        "linear": "linear",
        "zaugnet": ModelInterpolator(network=linear_network, variant="zaugnet"),
        "zaugnet+": ModelInterpolator(network=linear_network, variant="zaugnet+"),
    }
    rows = by_key(evaluate_volume(phantom, methods, factor=4).rows)
    for key in ("rmse", "psnr_8bit", "ssim"):  # both models interpolate linearly
        for pos in ("all", 0.25, 0.5, 0.75):
            assert rows["zaugnet+", 4, pos][key] == pytest.approx(rows["linear", 4, pos][key], rel=1e-4)
        assert rows["zaugnet", 2, "all"][key] == pytest.approx(rows["linear", 2, "all"][key], rel=1e-4)

    rows = by_key(evaluate_volume(phantom, methods, factor=3, positions_check=(1 / 3, 2 / 3)).rows)
    assert {k for k in rows if k[0] == "zaugnet"} == {("zaugnet", 2, "all"), ("zaugnet", 3, "all"),
                                                      ("zaugnet", 3, 1 / 3), ("zaugnet", 3, 2 / 3)}
    na = rows["zaugnet", 3, "all"]
    assert na["note"].startswith("n/a:") and "midpoint" in na["note"] and math.isnan(na["psnr"])
    assert na["n_slices"] == 10
    assert math.isfinite(rows["zaugnet+", 3, 1 / 3]["psnr"]) and rows["zaugnet+", 3, 1 / 3]["n_slices"] == 5
    assert "n/a" in format_table(list(rows.values()))


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "factor", "needed"), [(4, 4, 5), (2, 2, 3), (8, 8, 9)])
def test_too_short_a_stack_is_an_input_error(n: int, factor: int, needed: int) -> None:
    with pytest.raises(InputError, match=f"at least {needed}") as info:
        evaluate_volume(np.random.default_rng(0).random((n, 16, 16)), BASELINES, factor, name="short.tif")
    assert info.value.where == "short.tif"


@pytest.mark.parametrize("factor", [1, 0, 2.5, True])
def test_bad_factor_is_an_input_error(phantom: np.ndarray, factor: object) -> None:
    with pytest.raises(InputError, match="integer >= 2") as info:
        evaluate_volume(phantom, BASELINES, factor)  # type: ignore[arg-type]
    assert info.value.where == "--factor"  # the one factor rule (zaugnet.predict.plan.check_factor)


def test_constant_or_2d_ground_truth_is_an_input_error() -> None:
    with pytest.raises(InputError, match="constant"):
        evaluate_volume(np.ones((5, 8, 8)), BASELINES, name="flat")
    with pytest.raises(InputError, match="3D"):
        evaluate_volume(np.ones((8, 8)), BASELINES, name="flat")


# --- several stacks, table, CSV -----------------------------------------------------------------


def test_evaluate_stack_names_each_volume() -> None:
    data = np.stack([simulate_stack((9, 16, 16), kind="nuclei", seed=s) for s in (0, 1)])
    pairs = list(evaluate_stack(Stack(data, "TZYX", VoxelSize(), Path("cells.tif")), {"linear": "linear"}))
    assert all(np.array_equal(volume, data[t]) for t, (volume, _) in enumerate(pairs))
    results = [r for _, r in pairs]
    assert [r.stack for r in results] == ["cells.tif[t0]", "cells.tif[t1]"]
    assert [r.rows[0]["stack"] for r in results] == ["cells.tif[t0]", "cells.tif[t1]"]


def test_summarize_averages_over_stacks(tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1):
        gt = simulate_stack((9, 24, 24), kind="nuclei", seed=seed)
        rows += evaluate_volume(gt, BASELINES, factor=4, name=f"s{seed}").rows
    overall = by_key(summarize(rows))
    assert len(overall) == len(rows) // 2
    for (method, f, pos), row in overall.items():
        members = [r for r in rows if (r["method"], r["factor"], r["position"]) == (method, f, pos)]
        assert row["stack"] == "overall" and row["n_slices"] == sum(m["n_slices"] for m in members)
        assert row["ssim_8bit"] == pytest.approx((members[0]["ssim_8bit"] + members[1]["ssim_8bit"]) / 2)

    table = format_table(rows + summarize(rows))
    lines = table.splitlines()
    assert len(lines) == len(rows) + len(overall) + 2
    assert lines[0].split() == list(FIELDS[:-1])  # no note column when no row has a note
    assert "overall" in table and "cubic" in table

    path = write_csv(rows, tmp_path / "out" / "scores.csv", FIELDS)
    with open(path, newline="") as handle:
        back = list(csv.DictReader(handle))
    assert tuple(back[0]) == FIELDS and len(back) == len(rows)
    assert float(back[3]["psnr"]) == pytest.approx(rows[3]["psnr"])
    assert [p.name for p in path.parent.iterdir()] == ["scores.csv"]  # no temporary file left


# --- figures ------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figures_are_written_as_png(phantom: np.ndarray, tmp_path: Path) -> None:
    result = evaluate_volume(phantom, BASELINES, factor=2)
    views = plot_orthogonal_views(phantom, result.predictions, VoxelSize(0.6, 0.2, 0.2), tmp_path / "views.png")
    width, height = png_size(views)
    assert 600 <= width <= 2000 and 150 <= height <= 1600
    curve = plot_per_slice_psnr(result.per_slice, tmp_path / "psnr.png")
    assert (400, 200) <= png_size(curve) <= (2000, 1600)
    # exact slices (inf PSNR) and unknown voxel sizes are fine
    exact = evaluate_volume(analytic(9, 1), {"linear": "linear"})
    plot_per_slice_psnr(exact.per_slice, tmp_path / "inf.png")
    plot_orthogonal_views(analytic(9, 1), exact.predictions, (None, None, None), tmp_path / "iso.png", y=3, x=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inf.png", "iso.png", "psnr.png", "views.png"]
