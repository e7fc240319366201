"""``zaugnet evaluate`` from the command line: tables, figures, and the self-check rows of ``--methods auto``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from support import listing

from zaugnet.cli import main


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_scores_models_baselines_and_auto(tiny_checkpoints: dict[str, Path], phantom_dir: Path,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = min(phantom_dir.glob("*.tif"))
    out = tmp_path / "eval"
    assert main(["evaluate", str(stack), "-o", str(out), "--model", str(tiny_checkpoints["zaugnet"]),
                 "--methods", "linear", "cubic", "auto", "--factor", "4", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    rows = [r for r in _rows(out / "metrics.csv") if r["position"] == "all" and r["stack"] == stack.name]
    assert {(r["method"], r["factor"]) for r in rows} == {(m, f) for m in ("linear", "cubic", "zaugnet",
                                                                           "auto(zaugnet)") for f in ("2", "4")}
    by = {(r["method"], r["factor"]): r for r in rows}
    checks = _rows(out / "selfcheck.csv")
    assert [c["factor"] for c in checks] == ["2", "4"]
    for c in checks:
        used = "zaugnet" if c["choice"] == "model" else "cubic"
        assert by[("auto(zaugnet)", c["factor"])]["psnr_8bit"] == by[(used, c["factor"])]["psnr_8bit"]
        true_margin = float(by[("zaugnet", c["factor"])]["psnr_8bit"]) - float(by[("cubic", c["factor"])]["psnr_8bit"])
        assert float(c["true_margin_db"]) == pytest.approx(true_margin, abs=1e-9)
        assert c["right"] == str((c["choice"] == "model") == (true_margin > 0))
    assert "self-check (--method auto) chose the truly better of model and cubic in" in text
    assert (out / f"{stack.name}_orthoviews.png").is_file()


def test_auto_without_a_model_is_refused_and_writes_nothing(phantom_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate", str(phantom_dir), "-o", str(out), "--methods", "cubic", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zaugnet: error: --methods auto") and "--model" in err[0]
    assert not out.exists() or listing(out) == []
